//! `jota bup` end to end: create → inspect --json → extract, with TNSPEC selection.

use predicates::prelude::*;
use serde_json::Value;
use std::path::Path;

mod common;
use common::jota;

const NANO8: &str = "3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-";
const NANO4: &str = "3767-300-0004-K.2-1-1-jetson-orin-nano-devkit-";
const NX16: &str = "3767-300-0000-K.2-1-1-jetson-orin-nano-devkit-";
const NANO8_UNFUSED: &str = "3767-300-0005-K.2-0-1-jetson-orin-nano-devkit-";

/// Writes images and an entry list shaped like an L4T multi-spec Orin payload.
fn setup(d: &Path) {
    for (name, body) in [
        ("bct.bin", "bct-common"),
        ("mb1_dev.bin", "mb1 for unfused parts"),
        ("mb1_prod.bin", "mb1 for fused parts"),
        ("mb1bct_nano8.bin", "MB1_BCT of 3767-0005"),
        ("mb1bct_nano4.bin", "MB1_BCT of 3767-0004"),
        ("mb1bct_nx16.bin", "MB1_BCT of 3767-0000"),
        ("uefi.bin", "L4TLauncher+UEFI"),
    ] {
        std::fs::write(d.join(name), body).unwrap();
    }
    std::fs::write(
        d.join("entries.toml"),
        r#"
format = "v3"
[[entry]]
file = "bct.bin"
partition = "BCT"
version = "0x3643"
[[entry]]
file = "mb1_dev.bin"
partition = "mb1"
version = "0x3643"
op_mode = "dev"
[[entry]]
file = "mb1_prod.bin"
partition = "mb1"
version = "0x3643"
op_mode = 2
[[entry]]
file = "mb1bct_nano4.bin"
partition = "MB1_BCT"
version = "0x3643"
spec = "3767--0004--1--jetson-orin-nano-devkit-"
[[entry]]
file = "mb1bct_nano8.bin"
partition = "MB1_BCT"
version = "0x3643"
spec = "3767--0005--1--jetson-orin-nano-devkit-"
[[entry]]
file = "mb1bct_nx16.bin"
partition = "MB1_BCT"
version = "0x3643"
spec = "3767-000-0000--1--jetson-orin-nano-devkit-"
[[entry]]
file = "uefi.bin"
partition = "cpu-bootloader"
version = "0x3643"
spec = "common"
"#,
    )
    .unwrap();
}

fn inspect_json(bup: &Path, spec: &str) -> Value {
    let out = jota()
        .args(["bup", "inspect", "--json", "--spec", spec])
        .arg(bup)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

fn extract(bup: &Path, part: &str, spec: &str, out: &Path) -> String {
    jota()
        .args(["bup", "extract"])
        .arg(bup)
        .arg(part)
        .arg("-o")
        .arg(out)
        .args(["--spec", spec])
        .assert()
        .success();
    std::fs::read_to_string(out).unwrap()
}

#[test]
fn create_inspect_extract_round_trip_with_tnspec_selection() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let bup = d.path().join("bl_only_payload");
    jota()
        .args(["bup", "create", "-o"])
        .arg(&bup)
        .arg("--entries")
        .arg(d.path().join("entries.toml"))
        .assert()
        .success();

    let j = inspect_json(&bup, NANO8);
    assert_eq!(j["header"]["format"], "v3");
    assert_eq!(j["header"]["header_size"], 48);
    assert_eq!(j["header"]["entry_count"], 7);
    assert_eq!(j["version_text"], "v3.1-2022.6-0");
    assert_eq!(
        j["target"]["compat_spec"],
        "3767--0005--1--jetson-orin-nano-devkit-"
    );
    let entries = j["entries"].as_array().unwrap();
    assert_eq!(
        entries[4]["spec"],
        "3767--0005--1--jetson-orin-nano-devkit-"
    );
    assert_eq!(entries[6]["spec"], "");
    // every entry's hash is the hash of its source file
    use sha2::Digest;
    let h = hex::encode(sha2::Sha256::digest(
        std::fs::read(d.path().join("uefi.bin")).unwrap(),
    ));
    assert_eq!(entries[6]["sha256"], h);
    let sel = j["selection"].as_array().unwrap();
    let chosen = |p: &str| sel.iter().find(|s| s["partition"] == p).unwrap()["entry"].clone();
    assert_eq!(chosen("MB1_BCT"), 4);
    assert_eq!(chosen("mb1"), 2);
    assert_eq!(chosen("BCT"), 0);
    assert_eq!(j["missing"].as_array().unwrap().len(), 0);

    // the right entry for each SKU, and the dev/prod image by fusing
    let out = d.path().join("x.bin");
    assert_eq!(
        extract(&bup, "MB1_BCT", NANO8, &out),
        "MB1_BCT of 3767-0005"
    );
    assert_eq!(
        extract(&bup, "MB1_BCT", NANO4, &out),
        "MB1_BCT of 3767-0004"
    );
    assert_eq!(extract(&bup, "MB1_BCT", NX16, &out), "MB1_BCT of 3767-0000");
    assert_eq!(extract(&bup, "mb1", NANO8, &out), "mb1 for fused parts");
    assert_eq!(
        extract(&bup, "mb1", NANO8_UNFUSED, &out),
        "mb1 for unfused parts"
    );

    // an AGX Orin has no MB1_BCT in this payload: inspect says so, extract refuses
    let j = inspect_json(&bup, "3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-");
    assert_eq!(j["missing"], serde_json::json!(["MB1_BCT"]));
    jota()
        .args(["bup", "extract"])
        .arg(&bup)
        .args(["MB1_BCT", "-o"])
        .arg(&out)
        .args(["--spec", "3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no `MB1_BCT` entry matches spec"));
    // without a spec, an ambiguous partition is refused with the candidate specs listed
    jota()
        .args(["bup", "extract"])
        .arg(&bup)
        .args(["MB1_BCT", "-o"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("choose one with --spec"));
}

#[test]
fn create_from_tuples_matches_create_from_list() {
    let d = tempfile::tempdir().unwrap();
    setup(d.path());
    let a = d.path().join("a.bup");
    let b = d.path().join("b.bup");
    jota()
        .current_dir(d.path())
        .args(["bup", "create", "-o"])
        .arg(&a)
        .args(["--entries", "entries.toml"])
        .assert()
        .success();
    jota()
        .current_dir(d.path())
        .args(["bup", "create", "-o"])
        .arg(&b)
        .args([
            "bct.bin BCT 3643 0 common; mb1_dev.bin mb1 3643 1 common; mb1_prod.bin mb1 3643 2 common",
            "mb1bct_nano4.bin MB1_BCT 3643 0 3767--0004--1--jetson-orin-nano-devkit-",
            "mb1bct_nano8.bin MB1_BCT 3643 0 3767--0005--1--jetson-orin-nano-devkit-",
            "mb1bct_nx16.bin MB1_BCT 3643 0 3767-000-0000--1--jetson-orin-nano-devkit-",
            "uefi.bin cpu-bootloader 3643 0 common",
        ])
        .assert()
        .success();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn v2_payload_for_r32() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cboot.bin"), b"cboot").unwrap();
    let p = d.path().join("bl_update_payload");
    jota()
        .current_dir(d.path())
        .args(["bup", "create", "--format", "v2", "-o"])
        .arg(&p)
        .arg("cboot.bin cpu-bootloader 3271 0 3448-400-0000-B.0-1-0-jetson-nano-qspi-sd-mmcblk0p1")
        .assert()
        .success();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..16], b"NVIDIA__BLOB__V2");
    assert_eq!(bytes.len(), 40 + 120 + 5);
    let out = jota()
        .args(["bup", "inspect", "--json"])
        .arg(&p)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let j: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(j["header"]["format"], "v2");
    assert_eq!(j["entries"][0]["version"], 0x3271);
}

#[test]
fn bad_input_is_named_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("junk");
    std::fs::write(
        &junk,
        b"NVIDIA__BLOB__V3 but not really a payload at all..........",
    )
    .unwrap();
    jota()
        .args(["bup", "inspect"])
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicate::str::contains("is not a valid BUP"))
        .stderr(predicate::str::contains("offset"));
    // a missing input file: no output file is left behind
    let out = d.path().join("never.bup");
    jota()
        .current_dir(d.path())
        .args(["bup", "create", "-o"])
        .arg(&out)
        .arg("missing.bin mb1 3643 0 common")
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.bin"));
    assert!(!out.exists());
    // a partition name the firmware could not read
    std::fs::write(d.path().join("x.bin"), b"x").unwrap();
    jota()
        .current_dir(d.path())
        .args(["bup", "create", "-o"])
        .arg(&out)
        .arg(format!("x.bin {} 1 0 common", "p".repeat(40)))
        .assert()
        .failure()
        .stderr(predicate::str::contains("at most 39"));
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "no temp files left"
    );
}
