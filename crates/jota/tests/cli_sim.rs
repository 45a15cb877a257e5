//! `jota sim` and `jota bootctl` end to end, against real peer tools where they exist:
//! sgdisk/sfdisk read the simulated disks, libubootenv's fw_printenv/fw_setenv share the
//! U-Boot environment, RAUC 1.8 drives `jota bootctl rauc-backend`.

use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{jota, jota_bin, output_bounded, sim_releases, tool};

/// Two releases each of an Orin Nano (R36) and a Nano (R32).
fn releases() -> &'static Path {
    static F: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    sim_releases(
        &F,
        &[
            ("orin-nano-8gb", "o1", "1.0.0"),
            ("orin-nano-8gb", "o2", "2.0.0"),
            ("nano-r32", "n1", "1.0.0"),
            ("nano-r32", "n2", "2.0.0"),
        ],
    )
}

fn create(model: &str, rel: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("jetson");
    jota()
        .args([
            "sim",
            "create",
            "--model",
            model,
            "--rootfs-size",
            "12M",
            "--release",
        ])
        .arg(releases().join(rel))
        .arg(&dir)
        .assert()
        .success();
    (d, dir)
}

fn sim_boot(dir: &Path) -> Value {
    let out = jota()
        .args(["sim", "boot", "--json"])
        .arg(dir)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn bootctl(dir: &Path, args: &[&str]) -> String {
    let out = jota()
        .arg("bootctl")
        .arg("--root")
        .arg(dir)
        .args(args)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap()
}

#[test]
fn simulated_disks_are_real_gpt_disks() {
    let (_t, dir) = create("orin-nano-8gb", "o1");
    let out = std::process::Command::new(tool("sgdisk"))
        .arg("-p")
        .arg(dir.join("nvme.img"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "APP",
        "APP_b",
        "A_kernel",
        "B_kernel",
        "A_kernel-dtb",
        "B_kernel-dtb",
        "esp",
        "UDA",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().last() == Some(name)),
            "sgdisk lacks {name}:\n{text}"
        );
    }
    let out = std::process::Command::new(tool("sfdisk"))
        .arg("--json")
        .arg(dir.join("nvme.img"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let parts = j["partitiontable"]["partitions"].as_array().unwrap();
    let app = parts.iter().find(|p| p["name"] == "APP").unwrap();
    // APP is entry 1 although it lies last, as on a flashed Orin
    assert!(
        app["node"].as_str().unwrap().ends_with("nvme.img1"),
        "{app}"
    );
    let esp = parts.iter().find(|p| p["name"] == "esp").unwrap();
    assert_eq!(esp["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    // the kernel partition is where the L4T layout puts it
    let k = parts.iter().find(|p| p["name"] == "A_kernel").unwrap();
    assert_eq!(k["start"], 40);
}

#[test]
fn bootctl_speaks_nvbootctrl() {
    let (_t, dir) = create("orin-nano-8gb", "o1");
    jota()
        .args(["sim", "boot"])
        .arg(&dir)
        .assert()
        .success()
        .stdout(predicate::str::contains("booted: release 1.0.0"));
    let text = bootctl(&dir, &["dump-slots-info"]);
    assert_eq!(
        text,
        "Current version: 36.4.3\nCapsule update status: 0\nCurrent bootloader slot: A\nActive bootloader slot: A\nnum_slots: 2\nslot: 0,             status: normal\nslot: 1,             status: normal\n"
    );
    let rootfs = bootctl(&dir, &["-t", "rootfs", "dump-slots-info"]);
    assert!(matches!(
        jota_tegra::nvbootctrl::SlotsInfo::parse(&rootfs).unwrap(),
        jota_tegra::nvbootctrl::SlotsInfo::Rootfs(_)
    ));
    // `-t` after the command works too, as with nvbootctrl
    assert_eq!(bootctl(&dir, &["dump-slots-info", "-t", "rootfs"]), rootfs);
    assert_eq!(bootctl(&dir, &["get-current-slot"]), "0\n");
    assert_eq!(bootctl(&dir, &["get-number-slots"]), "2\n");
    assert_eq!(bootctl(&dir, &["get-suffix", "1"]), "_b\n");
    // set-active-boot-slot is silent and moves both chains
    assert_eq!(bootctl(&dir, &["set-active-boot-slot", "1"]), "");
    assert_eq!(bootctl(&dir, &["get-active-boot-slot"]), "1\n");
    assert_eq!(
        bootctl(&dir, &["-t", "rootfs", "get-active-boot-slot"]),
        "1\n"
    );
    // yes/no queries answer through the exit status (0 / 70)
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["-t", "rootfs", "is-slot-bootable", "1"])
        .assert()
        .code(0);
    bootctl(&dir, &["-t", "rootfs", "set-slot-as-unbootable", "1"]);
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["-t", "rootfs", "is-slot-bootable", "1"])
        .assert()
        .code(70);
    // JSON for scripts
    let st: Value = serde_json::from_str(&bootctl(&dir, &["status"])).unwrap();
    assert_eq!(st["backend"], "l4t-uefi");
    assert_eq!(st["rootfs"]["slots"][1]["bootable"], false);
}

/// NVIDIA's nvbootctrl cannot exist here; `jota bootctl` speaks its language, so the
/// nvbootctrl backend is exercised against it, wrapped as the tool would be installed.
#[test]
fn nvbootctrl_backend_drives_the_tool() {
    let (t, dir) = create("orin-nano-8gb", "o1");
    sim_boot(&dir);
    let fake = t.path().join("nvbootctrl");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nexec {} bootctl --root {} \"$@\"\n",
            jota_bin().display(),
            dir.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&fake).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let other = tempfile::tempdir().unwrap();
    let via_tool = |args: &[&str]| {
        jota()
            .arg("bootctl")
            .arg("--root")
            .arg(other.path())
            .args(["--backend", "nvbootctrl", "--nvbootctrl"])
            .arg(&fake)
            .args(args)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone()
    };
    assert_eq!(
        String::from_utf8(via_tool(&["-t", "rootfs", "dump-slots-info"])).unwrap(),
        bootctl(&dir, &["-t", "rootfs", "dump-slots-info"])
    );
    via_tool(&["set-active-boot-slot", "1"]);
    assert_eq!(bootctl(&dir, &["get-active-boot-slot"]), "1\n");
    let r = sim_boot(&dir);
    assert_eq!(r["outcome"]["slot"], "B", "{r}");
    // mark successful through the tool: `nvbootctrl verify` on R35+
    via_tool(&["verify"]);
    let d = bootctl(&dir, &["-t", "rootfs", "dump-slots-info"]);
    assert!(d.contains("slot: 1,             retry_count: 3"), "{d}");
}

#[test]
fn sim_cli_create_boot_fault_health_status() {
    let (_t, dir) = create("orin-nano-8gb", "o1");
    let r = sim_boot(&dir);
    assert_eq!(r["outcome"]["result"], "booted");
    jota().args(["sim", "health"]).arg(&dir).assert().success();
    jota()
        .args(["sim", "fault", "--health", "fail"])
        .arg(&dir)
        .assert()
        .success();
    jota()
        .args(["sim", "health"])
        .arg(&dir)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("unhealthy"));
    // a torn write to slot B, the device stays on A
    jota()
        .args(["sim", "fault", "--clear", "--power-cut-after-writes", "3"])
        .arg(&dir)
        .assert()
        .success();
    jota()
        .args([
            "sim",
            "flash",
            "--slot",
            "b",
            "--component",
            "rootfs",
            "--release",
        ])
        .arg(releases().join("o2"))
        .arg(&dir)
        .assert()
        .failure()
        .stderr(predicate::str::contains("simulated power cut"));
    // while the power is out nothing can be written
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["set-active-boot-slot", "1"])
        .assert()
        .failure();
    let r = sim_boot(&dir);
    assert_eq!(r["cold"], true);
    assert_eq!(r["outcome"]["slot"], "A");
    let st: Value = serde_json::from_slice(
        &jota()
            .args(["sim", "status", "--json"])
            .arg(&dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(st["state"]["booted"]["version"], "1.0.0");
    assert_eq!(st["backend"], "l4t-uefi");
    jota()
        .args(["sim", "create", "--model", "nope"])
        .arg(dir.with_extension("x"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown model"));
    jota()
        .args(["sim", "create"])
        .arg(&dir)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not empty"));
}

fn fw_config(dir: &Path) -> PathBuf {
    // the device's fw_env.config names /dev/mmcblk0 inside the device; the host tools get
    // the same lines with the simulated disk's path
    let cfg = std::fs::read_to_string(dir.join("etc/fw_env.config")).unwrap();
    let host = dir.join("fw_env.host.config");
    std::fs::write(
        &host,
        cfg.replace(
            "/dev/mmcblk0",
            &dir.join("dev/mmcblk0").display().to_string(),
        ),
    )
    .unwrap();
    host
}

fn printenv(cfg: &Path) -> String {
    let out = std::process::Command::new(tool("fw_printenv"))
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn uboot_env_is_shared_with_fw_printenv_and_fw_setenv() {
    let (_t, dir) = create("nano-r32", "n1");
    let cfg = fw_config(&dir);
    // jota's freshly created environment reads with the real tool
    let env = printenv(&cfg);
    assert!(
        env.contains("BOOT_ORDER=A B\n") && env.contains("BOOT_A_LEFT=3\n"),
        "{env}"
    );
    // the simulated U-Boot decrements A; fw_printenv sees it
    assert_eq!(sim_boot(&dir)["outcome"]["slot"], "A");
    assert!(printenv(&cfg).contains("BOOT_A_LEFT=2\n"));
    // jota writes, fw_printenv reads
    bootctl(&dir, &["set-active-boot-slot", "1"]);
    let env = printenv(&cfg);
    assert!(
        env.contains("BOOT_ORDER=B A\n") && env.contains("BOOT_B_LEFT=3\n"),
        "{env}"
    );
    // fw_setenv writes, jota reads (and keeps alternating the redundant copies)
    let st = std::process::Command::new(tool("fw_setenv"))
        .arg("-c")
        .arg(&cfg)
        .args(["BOOT_ORDER", "A B"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(bootctl(&dir, &["get-active-boot-slot"]), "0\n");
    bootctl(&dir, &["mark-boot-successful"]);
    assert!(printenv(&cfg).contains("BOOT_A_LEFT=3\n"));
    let st = std::process::Command::new(tool("fw_setenv"))
        .arg("-c")
        .arg(&cfg)
        .args(["BOOT_B_LEFT", "0"])
        .status()
        .unwrap();
    assert!(st.success());
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["-t", "rootfs", "is-slot-bootable", "1"])
        .assert()
        .code(70);
}

#[test]
fn rauc_drives_jota_as_its_custom_bootloader_backend() {
    let rauc = tool("rauc");
    let unshare = tool("unshare");
    tool("dbus-daemon");
    let (t, dir) = create("orin-nano-8gb", "o1");
    sim_boot(&dir);
    let handler = t.path().join("jota-rauc-backend");
    std::fs::write(
        &handler,
        format!(
            "#!/bin/sh\nexec {} bootctl --root {} rauc-backend \"$@\"\n",
            jota_bin().display(),
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &handler,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let conf = t.path().join("system.conf");
    std::fs::write(
        &conf,
        format!(
            "[system]\ncompatible=jota-sim-orin\nbootloader=custom\nstatusfile={}\n\n[handlers]\nbootloader-custom-backend={}\n\n[slot.rootfs.0]\ndevice={}\ntype=raw\nbootname=A\n\n[slot.rootfs.1]\ndevice={}\ntype=raw\nbootname=B\n",
            t.path().join("status.raucs").display(),
            handler.display(),
            dir.join("nvme.img").display(),
            dir.join("nvme.img").display()
        ),
    )
    .unwrap();
    // RAUC 1.8 learns the booted slot from rauc.slot= on the kernel command line: give it
    // the simulated device's command line in a private mount namespace, and its own D-Bus
    // for the rauc service the CLI talks to.
    let cmdline = t.path().join("cmdline");
    let run = |args: &str| {
        std::fs::write(
            &cmdline,
            format!(
                "{} rauc.slot=A\n",
                std::fs::read_to_string(dir.join("proc/cmdline"))
                    .unwrap()
                    .trim()
            ),
        )
        .unwrap();
        let script = format!(
            "mount --bind {cl} /proc/cmdline || exit 90\n\
             OUT=$(dbus-daemon --session --fork --print-address=1 --print-pid=1) || exit 91\n\
             export DBUS_SYSTEM_BUS_ADDRESS=$(echo \"$OUT\" | head -n1)\n\
             BUS=$(echo \"$OUT\" | tail -n1)\n\
             {rauc} service --conf={conf} >/dev/null 2>&1 &\n\
             SVC=$!\n\
             for i in $(seq 100); do {rauc} status >/dev/null 2>&1 && break; sleep 0.05; done\n\
             {rauc} {args}\n\
             rc=$?\n\
             kill $SVC $BUS\n\
             exit $rc\n",
            cl = cmdline.display(),
            rauc = rauc.display(),
            conf = conf.display(),
        );
        let out = output_bounded(
            std::process::Command::new(&unshare).args(["-m", "sh", "-c", &script]),
            std::time::Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "rauc {args}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let st: Value = serde_json::from_str(&run("status --output-format=json")).unwrap();
    assert_eq!(st["booted"], "A");
    assert_eq!(st["boot_primary"], "rootfs.0");
    run("status mark-active other");
    assert_eq!(bootctl(&dir, &["get-active-boot-slot"]), "1\n");
    let st: Value = serde_json::from_str(&run("status --output-format=json")).unwrap();
    assert_eq!(st["boot_primary"], "rootfs.1");
    run("status mark-bad other");
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["-t", "rootfs", "is-slot-bootable", "1"])
        .assert()
        .code(70);
    let st: Value = serde_json::from_str(&run("status --output-format=json")).unwrap();
    let slots = st["slots"].as_array().unwrap();
    let b = slots.iter().find_map(|s| s.get("rootfs.1")).unwrap();
    assert_eq!(b["boot_status"], "bad", "{st}");
    run("status mark-good");
    let d = bootctl(&dir, &["-t", "rootfs", "dump-slots-info"]);
    assert!(
        d.contains("slot: 0,             retry_count: 3,             status: normal"),
        "{d}"
    );
}

#[test]
fn swupdate_handler_get_set_confirm() {
    let (_t, dir) = create("orin-nano-8gb", "o1");
    sim_boot(&dir);
    assert_eq!(bootctl(&dir, &["swupdate", "get"]), "A\n");
    jota()
        .args(["sim", "flash", "--slot", "b", "--release"])
        .arg(releases().join("o2"))
        .arg(&dir)
        .assert()
        .success();
    bootctl(&dir, &["swupdate", "set", "B"]);
    assert_eq!(bootctl(&dir, &["get-active-boot-slot"]), "1\n");
    let r = sim_boot(&dir);
    assert_eq!(r["outcome"]["version"], "2.0.0", "{r}");
    assert_eq!(bootctl(&dir, &["swupdate", "get"]), "B\n");
    let d = bootctl(&dir, &["-t", "rootfs", "dump-slots-info"]);
    assert!(
        d.contains("slot: 1,             retry_count: 2,             status: normal"),
        "{d}"
    );
    bootctl(&dir, &["swupdate", "confirm"]);
    let d = bootctl(&dir, &["-t", "rootfs", "dump-slots-info"]);
    assert!(
        d.contains("slot: 1,             retry_count: 3,             status: normal"),
        "{d}"
    );
    jota()
        .arg("bootctl")
        .arg("--root")
        .arg(&dir)
        .args(["swupdate", "set", "C"])
        .assert()
        .failure();
}

#[test]
fn real_size_l4t_layouts_place_partitions_like_the_flash_tools() {
    let layouts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-tegra/layouts");
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("jetson");
    jota()
        .args([
            "sim",
            "create",
            "--model",
            "orin-nano-8gb",
            "--rootfs-size",
            "12M",
            "--layout",
        ])
        .arg(layouts.join("t234_qspi.xml"))
        .arg("--layout")
        .arg(layouts.join("t234_nvme_rootfs_ab.xml"))
        .args(["--set", "RECSIZE=83886080", "--release"])
        .arg(releases().join("o1"))
        .arg(&dir)
        .assert()
        .success();
    let out = std::process::Command::new(tool("sgdisk"))
        .arg("-p")
        .arg(dir.join("nvme.img"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let start = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{name}:\n{text}"))
    };
    // the offsets of a real Orin NVMe flashed with this layout (RECSIZE 80 MiB)
    assert_eq!(start("A_kernel"), 40);
    assert_eq!(start("UDA"), 1248832);
    assert_eq!(start("APP"), 3050048);
    let r = sim_boot(&dir);
    assert_eq!(r["outcome"]["result"], "booted", "{r}");
    // the QSPI image carries NVIDIA's partition map with only the backup GPT
    let st = jota_bootctl::storage::Storage::new(&jota_bootctl::DeviceRoot::at(&dir));
    assert_eq!(
        st.find("B_cpu-bootloader").unwrap().offset,
        0x0C20000 + 0x1EC0000
    );
    assert_eq!(st.find("worm").unwrap().offset, 0x3F70000);
}
