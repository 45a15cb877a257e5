//! Build → open → verify → extract, with every algorithm, and the chunk grouping against a
//! base release.

mod common;
use common::*;
use jota_bundle::build::BaseKeys;
use jota_bundle::read::Trust;
use jota_bundle::{Bundle, ComponentType};

#[test]
fn round_trip_with_every_algorithm() {
    let d = tempfile::tempdir().unwrap();
    let rootfs = image(1, 300, 0);
    let kernel = image(2, 40, 1234);
    let tiny = b"hello".to_vec();
    let empty = Vec::new();
    let parts = vec![
        (
            "rootfs",
            ComponentType::RawImage,
            "kernel-dtb",
            rootfs.clone(),
        ),
        ("kernel", ComponentType::RawImage, "kernel", kernel.clone()),
        ("motd", ComponentType::File, "/etc/motd", tiny.clone()),
        ("empty", ComponentType::File, "/etc/empty", empty.clone()),
    ];
    for alg in ["ed25519", "p256", "rsa4096"] {
        let k = key(alg);
        let out = d.path().join(format!("{alg}.jota"));
        let m = build(d.path(), &out, &parts, BaseKeys::default(), &[&k], "1.0");
        let r = m.component("rootfs").unwrap();
        assert_eq!(r.size, rootfs.len() as u64);
        // 2 of 7 blocks are zero; one random block repeats; text blocks differ by index.
        assert_eq!(r.blocks.zero, 300 / 7 * 2 + 2);
        assert!(r.blocks.stored < 300 - r.blocks.zero - 30, "{:?}", r.blocks);
        let b = Bundle::open(&out, Trust::Keyring(&keyring(&[alg]))).unwrap();
        assert_eq!(b.signature_checks.len(), 1);
        assert_eq!(b.signature_checks[0].valid, Some(true));
        b.verify_payload(2, &|_| {}).unwrap();
        for (i, want) in [&rootfs, &kernel, &tiny, &empty].into_iter().enumerate() {
            let mut got = Vec::new();
            b.extract(i, &mut got, 2, &|_| {}).unwrap();
            assert_eq!(&got, want, "component {i} with {alg}");
        }
    }
}

#[test]
fn several_signatures_rotate_keys() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("b.jota");
    let (old, new) = (key("p256"), key("ed25519"));
    let parts = vec![("k", ComponentType::RawImage, "kernel", image(3, 20, 0))];
    build(
        d.path(),
        &out,
        &parts,
        BaseKeys::default(),
        &[&old, &new],
        "2.0",
    );
    // Devices that trust only the old key, only the new one, or both accept it.
    for ring in [&["p256"][..], &["ed25519"], &["p256", "ed25519"]] {
        let b = Bundle::open(&out, Trust::Keyring(&keyring(ring))).unwrap();
        let valid = b
            .signature_checks
            .iter()
            .filter(|c| c.valid == Some(true))
            .count();
        assert_eq!(valid, ring.len());
    }
    // A device that trusts neither names who signed and what it trusts.
    let e = Bundle::open(&out, Trust::Keyring(&keyring(&["rsa4096"])))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no signature is by a trusted key"), "{e}");
    assert!(
        e.contains(&jota_bundle::sign::short(&public("p256").id())),
        "{e}"
    );
}

#[test]
fn unsigned_bundles_are_refused_but_inspectable() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("b.jota");
    let parts = vec![("k", ComponentType::RawImage, "kernel", image(4, 10, 0))];
    build(d.path(), &out, &parts, BaseKeys::default(), &[], "1.0");
    let e = Bundle::open(&out, Trust::Keyring(&keyring(&["ed25519"])))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "bundle is not signed");
    let b = Bundle::open(&out, Trust::Unchecked).unwrap();
    assert_eq!(b.manifest().version, "1.0");
}

/// Chunks are grouped against a base: a device holding v1 needs exactly the chunks not
/// marked `in_base`, and those hold exactly the blocks v1 lacks.
#[test]
fn chunks_group_against_a_base() {
    let d = tempfile::tempdir().unwrap();
    let k = key("ed25519");
    let v1 = image(10, 400, 0);
    let mut v2 = v1.clone();
    // Change 30 scattered blocks and append 20 new ones.
    for i in (5..400).step_by(13).take(30) {
        v2[i * 4096..i * 4096 + 4096].copy_from_slice(&noise(99 + i as u64, 4096));
    }
    v2.extend_from_slice(&noise(1234, 20 * 4096));
    let b1 = d.path().join("v1.jota");
    build(
        d.path(),
        &b1,
        &[("rootfs", ComponentType::RawImage, "kernel", v1.clone())],
        BaseKeys::default(),
        &[&k],
        "1",
    );
    let base = jota_bundle::read::base_keys(&Bundle::open(&b1, Trust::Unchecked).unwrap());
    let b2 = d.path().join("v2.jota");
    let m2 = build(
        d.path(),
        &b2,
        &[("rootfs", ComponentType::RawImage, "kernel", v2.clone())],
        base,
        &[&k],
        "2",
    );
    assert_eq!(m2.base.as_ref().unwrap().version, "1");
    let c = &m2.components[0];
    // Which blocks of v2 are absent from v1 (by content)?
    let v1_blocks: std::collections::HashSet<&[u8]> = v1.chunks(4096).collect();
    let mut missing: Vec<&[u8]> = v2
        .chunks(4096)
        .filter(|b| !v1_blocks.contains(b) && b.iter().any(|&x| x != 0))
        .collect();
    missing.sort();
    missing.dedup();
    let b = Bundle::open(&b2, Trust::Keyring(&keyring(&["ed25519"]))).unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    for (i, ch) in c.chunks.iter().enumerate() {
        if !ch.in_base {
            let data = b.read_chunk(0, i).unwrap();
            got.extend(data.chunks(4096).map(|x| x.to_vec()));
        }
    }
    got.sort();
    assert_eq!(got.len(), missing.len());
    assert!(got.iter().zip(&missing).all(|(a, b)| a == b));
    let mut out = Vec::new();
    b.extract(0, &mut out, 2, &|_| {}).unwrap();
    assert_eq!(out, v2);
}
