//! Shared helpers for bundle tests.
#![allow(dead_code)]

use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
use jota_bundle::sign::Signer;
use jota_bundle::{ComponentType, Keyring, Manifest, PublicKey, SecretKey};
use std::path::{Path, PathBuf};

pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

pub fn key(name: &str) -> SecretKey {
    SecretKey::load(&keys_dir().join(format!("{name}.key.pem"))).unwrap()
}

pub fn public(name: &str) -> PublicKey {
    PublicKey::load(&keys_dir().join(format!("{name}.pub.pem"))).unwrap()
}

pub fn keyring(names: &[&str]) -> Keyring {
    Keyring::from_keys(names.iter().map(|n| public(n)).collect())
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

/// An "image": random blocks, zero runs, repeated blocks, compressible text, and a
/// partial last block.
pub fn image(seed: u64, blocks: usize, tail: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(blocks * 4096 + tail);
    for i in 0..blocks {
        match i % 7 {
            0 | 1 => v.extend(std::iter::repeat_n(0u8, 4096)),
            2 => v.extend_from_slice(&noise(seed, 4096)), // the same block again and again
            3 => v.extend(
                format!("line {i} of seed {seed}\n")
                    .bytes()
                    .cycle()
                    .take(4096),
            ),
            _ => v.extend_from_slice(&noise(seed * 1000 + i as u64, 4096)),
        }
    }
    v.extend_from_slice(&noise(seed + 7, tail));
    v
}

pub fn opts() -> Options {
    Options {
        chunk_blocks: 8,
        new_chunk_blocks: 16,
        threads: 2,
        ..Options::default()
    }
}

pub fn release(v: &str) -> Release {
    Release {
        version: v.into(),
        hardware_compatibility: vec!["3767-0005".into()],
        ..Release::default()
    }
}

/// Builds a bundle of `parts` (name, type, partition/path, bytes) into `out`.
pub fn build(
    dir: &Path,
    out: &Path,
    parts: &[(&str, ComponentType, &str, Vec<u8>)],
    base: BaseKeys,
    signers: &[&dyn Signer],
    version: &str,
) -> Manifest {
    let mut b = Builder::new(dir, opts(), base).unwrap();
    for (name, kind, target, data) in parts {
        let src = dir.join(format!("{name}.src"));
        std::fs::write(&src, data).unwrap();
        let mut spec = ComponentSpec::new(name, *kind);
        if target.starts_with('/') {
            spec.path = Some(target.to_string());
        } else if !target.is_empty() {
            spec.partition = Some(target.to_string());
        }
        b.add(spec, &src, &NoProgress).unwrap();
    }
    b.finish(release(version), signers, out).unwrap()
}
