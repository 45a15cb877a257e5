//! `jota layout show` end to end on the shipped T234 layouts and a user file.

use predicates::prelude::*;
use serde_json::Value;

mod common;
use common::jota;

fn show_json(args: &[&str]) -> Value {
    let out = jota()
        .args(["layout", "show", "--json"])
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

fn part<'a>(dev: &'a Value, name: &str) -> &'a Value {
    dev["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("{name}"))
}

#[test]
fn t234_qspi_layout() {
    let j = show_json(&["builtin:t234-qspi"]);
    let d = &j[0];
    assert_eq!(d["type"], "spi");
    assert_eq!(d["size"], 64u64 << 20);
    assert_eq!(part(d, "A_cpu-bootloader")["start"], 0x0C20000);
    assert_eq!(part(d, "B_cpu-bootloader")["start"], 0x0C20000 + 0x1EC0000);
    assert_eq!(part(d, "worm")["start"], 0x3F70000);
    assert_eq!(part(d, "A_VER")["start"], 0x3FE0000);
    assert_eq!(part(d, "secondary_gpt")["start"], 0x3FF0000);
    assert_eq!(part(d, "secondary_gpt")["size"], 0x10000);
}

#[test]
fn t234_nvme_rootfs_ab_layout_with_placeholders() {
    let j = show_json(&[
        "builtin:t234-nvme-rootfs-ab",
        "--device",
        "nvme",
        "--set",
        "APPSIZE=17179869184",
        "--set",
        "RECSIZE=83886080",
        "--set",
        "RECNAME=recovery",
        "--set",
        "RECDTB-NAME=recovery-dtb",
        "--set",
        "EXT_NUM_SECTORS=1000215216",
    ]);
    let d = &j[0];
    assert_eq!(part(d, "A_kernel")["start"], 40 * 512);
    assert_eq!(part(d, "UDA")["start"], 1248832u64 * 512);
    assert_eq!(part(d, "APP")["start"], 3050048u64 * 512);
    assert_eq!(part(d, "APP")["number"], 1);
    assert_eq!(part(d, "APP_b")["number"], 2);
    assert_eq!(part(d, "APP_b")["start"], 3050048u64 * 512 + 17179869184);
    assert_eq!(part(d, "recovery")["number"], 9);
    assert_eq!(
        part(d, "secondary_gpt")["start"],
        (1000215216u64 - 33) * 512
    );
    let pairs = d["ab_pairs"].as_array().unwrap();
    assert!(pairs.iter().any(|p| p["a"] == "APP" && p["b"] == "APP_b"));

    // the text table shows the same numbers
    jota()
        .args([
            "layout",
            "show",
            "builtin:t234-nvme-rootfs-ab",
            "--set",
            "APPSIZE=17179869184",
            "--set",
            "RECSIZE=83886080",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("0x5d148000"))
        .stdout(predicate::str::contains("APP (APP/APP_b)"));
}

#[test]
fn real_device_size_grows_the_fill_partition() {
    let j = show_json(&[
        "builtin:t234-nvme",
        "--set",
        "RECSIZE=83886080",
        "--device-size",
        &(1953525168u64 * 512).to_string(),
    ]);
    let app = part(&j[0], "APP");
    assert_eq!(app["start"], 3050048u64 * 512);
    assert_eq!(app["size"], (1953525127u64 + 1 - 3050048) * 512);
    assert_eq!(app["fill_to_end"], true);
}

#[test]
fn errors_name_what_is_missing_or_wrong() {
    jota()
        .args(["layout", "show", "builtin:t234-nvme-rootfs-ab"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("APPSIZE (APP, APP_b)"));
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("bad.xml");
    std::fs::write(
        &f,
        "<partition_layout>\n <device type=\"spi\" num_sectors=\"131072\">\n  <partition name=\"a\" type=\"data\">\n   <size> 0x10000 </size>\n  </partition>\n  <partition name=\"b\" type=\"data\">\n   <size> 512 </size>\n   <start_location> 0x8000 </start_location>\n  </partition>\n </device>\n</partition_layout>\n",
    )
    .unwrap();
    jota()
        .args(["layout", "show"])
        .arg(&f)
        .assert()
        .failure()
        .stderr(predicate::str::contains("partition b (line 6)"))
        .stderr(predicate::str::contains("overlaps"));
    jota()
        .args(["layout", "show"])
        .arg(&f)
        .args(["--device", "nvme"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("has no nvme device"));
}
