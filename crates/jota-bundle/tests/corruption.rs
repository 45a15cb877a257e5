//! Bad input: every changed byte, truncation, lying length fields, hostile names and
//! paths, wrong keys are rejected with an error naming what is wrong (never a panic).

mod common;
use common::*;
use jota_bundle::build::BaseKeys;
use jota_bundle::format::{Front, Header};
use jota_bundle::read::Trust;
use jota_bundle::sign::Signer;
use jota_bundle::{Bundle, ComponentType};
use std::path::Path;

fn sample_bundle(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("b.jota");
    let parts = vec![
        (
            "rootfs",
            ComponentType::RawImage,
            "kernel-dtb",
            image(21, 120, 0),
        ),
        (
            "kernel",
            ComponentType::RawImage,
            "kernel",
            image(22, 30, 77),
        ),
        (
            "cfg",
            ComponentType::File,
            "/etc/app.conf",
            b"a = 1\n".to_vec(),
        ),
    ];
    build(
        dir,
        &out,
        &parts,
        BaseKeys::default(),
        &[&key("ed25519")],
        "3.1",
    );
    out
}

fn check(path: &Path) -> Result<(), String> {
    let b =
        Bundle::open(path, Trust::Keyring(&keyring(&["ed25519"]))).map_err(|e| e.to_string())?;
    b.verify_payload(2, &|_| {}).map_err(|e| e.to_string())
}

/// Flip one byte at a time: every byte of the front, and a sample across the payload.
#[test]
fn every_single_byte_corruption_is_caught() {
    let d = tempfile::tempdir().unwrap();
    let p = sample_bundle(d.path());
    check(&p).unwrap();
    let orig = std::fs::read(&p).unwrap();
    let h = Header::parse(&orig).unwrap();
    let mut positions: Vec<usize> = (0..h.payload_offset() as usize).collect();
    let payload = h.payload_offset() as usize..orig.len();
    let mut s = 0x1234_5678_9abc_def1u64;
    for _ in 0..1500 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        positions.push(payload.start + (s as usize) % payload.len());
    }
    let bad = d.path().join("bad.jota");
    let mut caught = 0;
    let mut messages = std::collections::BTreeMap::new();
    for (n, &i) in positions.iter().enumerate() {
        let mut c = orig.clone();
        // A different value at every position: vary the XOR mask, never zero.
        c[i] ^= [0x01, 0x20, 0x80, 0xff, 0x10][n % 5];
        std::fs::write(&bad, &c).unwrap();
        match check(&bad) {
            Err(e) => {
                caught += 1;
                let kind: String = e
                    .split_whitespace()
                    .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" ");
                *messages.entry(kind).or_insert(0) += 1;
            }
            Ok(()) => panic!(
                "flipping byte {i} (front ends at {}) was not caught",
                h.payload_offset()
            ),
        }
    }
    println!(
        "{caught}/{} single-byte corruptions caught; kinds: {messages:#?}",
        positions.len()
    );
    assert_eq!(caught, positions.len());
}

#[test]
fn truncation_is_named() {
    let d = tempfile::tempdir().unwrap();
    let p = sample_bundle(d.path());
    let orig = std::fs::read(&p).unwrap();
    let h = Header::parse(&orig).unwrap();
    let bad = d.path().join("bad.jota");
    for (len, want) in [
        (0usize, "shorter than the 64-byte header"),
        (40, "shorter than the 64-byte header"),
        (100, "ends inside the manifest"),
        (
            h.signatures_offset() as usize + 3,
            "ends inside the signatures",
        ),
        (h.index_offset() as usize + 1, "ends inside the block index"),
        (orig.len() - 1, "truncated"),
    ] {
        std::fs::write(&bad, &orig[..len]).unwrap();
        let e = check(&bad).unwrap_err();
        assert!(e.contains(want), "{len}: {e}");
    }
    let mut longer = orig.clone();
    longer.push(0);
    std::fs::write(&bad, &longer).unwrap();
    assert!(check(&bad).unwrap_err().contains("trailing bytes"));
}

#[test]
fn oversize_header_lengths_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = sample_bundle(d.path());
    let orig = std::fs::read(&p).unwrap();
    let bad = d.path().join("bad.jota");
    for (off, want) in [
        (16, "manifest length"),
        (24, "signatures length"),
        (32, "index length"),
        (40, "payload length"),
    ] {
        let mut c = orig.clone();
        c[off..off + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&bad, &c).unwrap();
        let e = check(&bad).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
}

/// Rewrites a bundle's manifest with `edit` and re-signs it with `signer`, so the
/// structural checks (not the signature) must catch the problem.
fn resign(path: &Path, out: &Path, signer: &dyn Signer, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let f = Front::read(&mut &bytes[..]).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&f.manifest).unwrap();
    edit(&mut v);
    let m = serde_json::to_vec(&v).unwrap();
    let sig = jota_bundle::sign::encode_signatures(&[signer.sign(&m).unwrap()]);
    let h = Header {
        manifest_len: m.len() as u64,
        signatures_len: sig.len() as u64,
        ..f.header
    };
    let mut o = h.encode().to_vec();
    o.extend_from_slice(&m);
    o.extend_from_slice(&sig);
    o.extend_from_slice(&bytes[f.header.index_offset() as usize..]);
    std::fs::write(out, o).unwrap();
}

#[test]
fn signed_but_hostile_manifests_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = sample_bundle(d.path());
    let bad = d.path().join("bad.jota");
    let k = key("ed25519");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["components"][0]["name"] = "../../etc/passwd".into()),
            "must not start with",
        ),
        (
            Box::new(|v| v["components"][0]["name"] = "a/../../x".into()),
            "may hold only letters",
        ),
        (
            Box::new(|v| v["components"][2]["path"] = "/etc/../root/.ssh/authorized_keys".into()),
            "path traversal",
        ),
        (
            Box::new(|v| v["components"][2]["path"] = "etc/app.conf".into()),
            "must be absolute",
        ),
        (
            Box::new(|v| v["components"][0]["chunks"][0]["length"] = (1u64 << 40).into()),
            "does not match",
        ),
        (
            Box::new(|v| {
                v["components"][0]["chunks"][0]["blocks"] = (1u64 << 30).into();
                v["components"][0]["chunks"][0]["length"] = (1u64 << 42).into();
            }),
            "limit",
        ),
        (
            Box::new(|v| v["components"][0]["size"] = (1u64 << 50).into()),
            "over 16 TiB",
        ),
        (
            Box::new(|v| v["components"][1]["chunks"][0]["offset"] = 7.into()),
            "tile the payload",
        ),
        (Box::new(|v| v["payload"]["length"] = 5.into()), "payload"),
        (
            Box::new(|v| v["format"] = 2.into()),
            "format 2 is not supported",
        ),
        (
            Box::new(|v| v["hardware_compatibility"][0] = "3767".into()),
            "hardware-compatibility",
        ),
        (
            Box::new(|v| v["minimum_version"] = "9.0".into()),
            "below its own minimum_version",
        ),
        (
            Box::new(|v| v["components"][1]["name"] = "rootfs".into()),
            "appears twice",
        ),
        (
            Box::new(|v| v["components"][0]["blocks"]["zero"] = 0.into()),
            "zero",
        ),
        (Box::new(|v| v["surprise"] = 1.into()), "unknown field"),
    ];
    for (edit, want) in cases {
        resign(&p, &bad, &k, edit);
        let e = check(&bad).unwrap_err();
        assert!(e.contains(want), "want {want:?}: {e}");
    }
}

#[test]
fn wrong_or_swapped_signatures_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = sample_bundle(d.path());
    let bad = d.path().join("bad.jota");
    // Signed by a key the device does not trust.
    resign(&p, &bad, &key("p256"), |_| {});
    let e = check(&bad).unwrap_err();
    assert!(e.contains("no signature is by a trusted key"), "{e}");
    // A trusted key's signature over a different manifest.
    let bytes = std::fs::read(&p).unwrap();
    let f = Front::read(&mut &bytes[..]).unwrap();
    let mut sig = key("ed25519").sign(b"another manifest").unwrap();
    sig.key = public("ed25519").id();
    let sb = jota_bundle::sign::encode_signatures(&[sig]);
    let h = Header {
        signatures_len: sb.len() as u64,
        ..f.header
    };
    let mut o = h.encode().to_vec();
    o.extend_from_slice(&f.manifest);
    o.extend_from_slice(&sb);
    o.extend_from_slice(&bytes[f.header.index_offset() as usize..]);
    std::fs::write(&bad, o).unwrap();
    let e = check(&bad).unwrap_err();
    assert!(e.contains("does not match the manifest"), "{e}");
}
