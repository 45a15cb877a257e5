//! Seed 001 §19.1's test matrix on simulated Jetsons: updates, rollbacks, rejections.

mod common;
use common::*;
use jota_agent::journal::DataDir;
use jota_agent::validate::Verdict;
use jota_agent::AgentError;
use jota_bootctl::storage::Storage;
use jota_bootctl::DeviceRoot;
use jota_tegra::efivar::Slot;

const ORIN: &str = "orin-nano-8gb";

fn last_status(dev: &jota_sim::SimDevice) -> jota_agent::journal::StatusFiles {
    let st = Storage::new(&DeviceRoot::at(&dev.dir));
    DataDir::new(&st, "/data/ota").status()
}

/// Installs, reboots, validates: the device must end up committed on `version`.
fn update(
    dev: &jota_sim::SimDevice,
    c: &jota_agent::Config,
    bundle: &std::path::Path,
    version: &str,
) -> Slot {
    let r = try_install(dev, c, bundle).unwrap();
    assert!(r.switched);
    let (slot, v) = booted(dev);
    assert_eq!((slot, v.as_str()), (r.target_slot, version));
    let rep = try_validate(dev, c).unwrap();
    assert!(matches!(rep.verdict, Verdict::Committed { .. }), "{rep:?}");
    slot
}

#[test]
fn a_to_b_to_a_and_skipping_a_version() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let c = config();
    let b2 = bundle_of(
        &release(ORIN, "2.0.0", false),
        &d.path().join("v2.jota"),
        "2.0.0",
        &["3767-0005"],
        None,
    );
    let b3 = bundle_of(
        &release(ORIN, "3.0.0", false),
        &d.path().join("v3.jota"),
        "3.0.0",
        &["3767-000[0-5]"],
        Some("2.0.0"),
    );
    // v(N-1) → vN: A → B.
    assert_eq!(update(&dev, &c, &b2, "2.0.0"), Slot::B);
    // vN → vN+1: B → A (both slots used, the target is the inactive one again).
    assert_eq!(update(&dev, &c, &b3, "3.0.0"), Slot::A);
    let s = last_status(&dev);
    assert_eq!(s.last_status.as_deref(), Some("success"));
    assert_eq!(s.installed_version.as_deref(), Some("3.0.0"));
    assert_eq!(s.min_version.as_deref(), Some("2.0.0"));
    // v(N-2) → vN on a second device.
    let dev2 = device(
        &d.path().join("jetson2"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    assert_eq!(update(&dev2, &c, &b3, "3.0.0"), Slot::B);
}

#[test]
fn a_failing_new_version_rolls_back_to_the_old_one() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let c = config();
    let bad = bundle_of(
        &release(ORIN, "2.0.0", true),
        &d.path().join("bad.jota"),
        "2.0.0",
        &[],
        None,
    );
    let r = try_install(&dev, &c, &bad).unwrap();
    assert_eq!(r.target_slot, Slot::B);
    assert_eq!(booted(&dev), (Slot::B, "2.0.0".to_string()));
    // Validation fails: slot B is marked bad and the device reboots into A.
    let rep = try_validate(&dev, &c).unwrap();
    assert!(
        matches!(&rep.verdict, Verdict::Failed { action, .. } if action == "marked-bad"),
        "{rep:?}"
    );
    assert!(rep.reboot);
    assert_eq!(booted(&dev), (Slot::A, "1.0.0".to_string()));
    let rep = try_validate(&dev, &c).unwrap();
    assert!(
        matches!(rep.verdict, Verdict::RolledBack { slot: Slot::A, .. }),
        "{rep:?}"
    );
    let s = last_status(&dev);
    assert_eq!(
        (s.last_status.as_deref(), s.rollback_count),
        (Some("rolled-back"), 1)
    );
    // A good update afterwards still targets B.
    let good = bundle_of(
        &release(ORIN, "2.0.1", false),
        &d.path().join("good.jota"),
        "2.0.1",
        &[],
        None,
    );
    assert_eq!(update(&dev, &c, &good, "2.0.1"), Slot::B);
}

#[test]
fn retry_mode_leaves_it_to_the_retry_counter() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let mut c = config();
    c.validate.on_failure = jota_agent::config::OnFailure::Retry;
    let bad = bundle_of(
        &release(ORIN, "2.0.0", true),
        &d.path().join("bad.jota"),
        "2.0.0",
        &[],
        None,
    );
    try_install(&dev, &c, &bad).unwrap();
    // Each boot of B fails validation; after the retries the firmware falls back to A.
    let mut boots = 0;
    loop {
        let (slot, _) = booted(&dev);
        boots += 1;
        let rep = try_validate(&dev, &c).unwrap();
        if slot == Slot::A {
            assert!(matches!(rep.verdict, Verdict::RolledBack { .. }), "{rep:?}");
            break;
        }
        assert!(
            matches!(&rep.verdict, Verdict::Failed { action, .. } if action == "left-for-retry")
        );
        assert!(boots < 10, "never rolled back");
    }
    assert!(boots >= 3, "rolled back after {boots} boots");
}

#[test]
fn bad_bundles_are_rejected_and_nothing_is_written() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "2.0.0", false),
    );
    let c = config();
    let nvme = dev.dir.join("nvme.img");
    let before = std::fs::read(&nvme).unwrap();
    let rel = release(ORIN, "3.0.0", false);
    let good = bundle_of(
        &rel,
        &d.path().join("good.jota"),
        "3.0.0",
        &["3767-0005"],
        None,
    );
    let reject = |b: &std::path::Path, why: &str| {
        let e = try_install(&dev, &c, b).unwrap_err();
        assert!(matches!(e, AgentError::Rejected(_)), "{e}");
        assert!(e.to_string().contains(why), "{why}: {e}");
        assert!(
            std::fs::read(&nvme).unwrap() == before,
            "{why}: the disk changed"
        );
    };
    // Wrong hardware.
    reject(
        &bundle_of(&rel, &d.path().join("agx.jota"), "3.0.0", &["3701-*"], None),
        "this device is 3767-0005",
    );
    // Downgrade.
    reject(
        &bundle_of(
            &release(ORIN, "1.0.0", false),
            &d.path().join("old.jota"),
            "1.0.0",
            &[],
            None,
        ),
        "downgrade",
    );
    // A flipped bit in the payload.
    let mut bytes = std::fs::read(&good).unwrap();
    let n = bytes.len();
    bytes[n - 1000] ^= 1;
    let flipped = d.path().join("flipped.jota");
    std::fs::write(&flipped, &bytes).unwrap();
    reject(&flipped, "payload sha256");
    // Unsigned, and signed by a key the device does not trust.
    let b = jota_bundle::Bundle::open(&good, jota_bundle::Trust::Unchecked).unwrap();
    let unsigned = strip_signatures(&good, &d.path().join("stripped.jota"));
    reject(&unsigned, "not signed");
    let other_key = jota_bundle::SecretKey::load(&keys_dir().join("p256.key.pem")).unwrap();
    let wrong = d.path().join("wrong.jota");
    let sig = jota_bundle::sign::Signature {
        algorithm: other_key.public().algorithm(),
        key: other_key.public().id(),
        signature: other_key.sign_bytes(&b.parsed.manifest_bytes).unwrap(),
    };
    drop(b);
    jota_bundle::Bundle::open(&unsigned, jota_bundle::Trust::Unchecked)
        .unwrap()
        .add_signatures(&[sig], &wrong)
        .unwrap();
    reject(&wrong, "keyring");
    // The good one installs.
    try_install(&dev, &c, &good).unwrap();
}

/// A copy of `b` with no signatures.
fn strip_signatures(b: &std::path::Path, out: &std::path::Path) -> std::path::PathBuf {
    let raw = std::fs::read(b).unwrap();
    let le = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap()) as usize;
    let (m, s) = (le(16), le(24));
    let mut v = raw[..64 + m].to_vec();
    v[24..32].copy_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&raw[64 + m + s..]);
    std::fs::write(out, v).unwrap();
    out.to_path_buf()
}

#[test]
fn anti_rollback_floor_and_concurrent_installs() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let mut c = config();
    c.allow_downgrade = true;
    let b2 = bundle_of(
        &release(ORIN, "2.0.0", false),
        &d.path().join("v2.jota"),
        "2.0.0",
        &[],
        Some("2.0.0"),
    );
    update(&dev, &c, &b2, "2.0.0");
    // Downgrades are allowed by this config, but not below the committed floor.
    let b1 = bundle_of(
        &release(ORIN, "1.0.0", false),
        &d.path().join("v1.jota"),
        "1.0.0",
        &[],
        None,
    );
    let e = try_install(&dev, &c, &b1).unwrap_err();
    assert!(e.to_string().contains("anti-rollback"), "{e}");
    // Two installs at once: one runs, the other is told so.
    let b3 = bundle_of(
        &release(ORIN, "3.0.0", false),
        &d.path().join("v3.jota"),
        "3.0.0",
        &[],
        None,
    );
    let st = Storage::new(&DeviceRoot::at(&dev.dir));
    let data = DataDir::new(&st, "/data/ota");
    let lock = jota_agent::install::InstallLock::take(&data).unwrap();
    let e = try_install(&dev, &c, &b3).unwrap_err();
    assert!(
        matches!(e, AgentError::Busy(_)) && e.to_string().contains("another install"),
        "{e}"
    );
    drop(lock);
    try_install(&dev, &c, &b3).unwrap();
    // Switched and not rebooted: a second install is refused until the reboot.
    let e = try_install(&dev, &c, &b3).unwrap_err();
    assert!(matches!(e, AgentError::Busy(_)), "{e}");
}

#[test]
fn r32_devices_take_native_bup_writes() {
    for model in ["xavier-r32", "nano-r32"] {
        let d = tempfile::tempdir().unwrap();
        let dev = device(
            &d.path().join("jetson"),
            model,
            &release(model, "1.0.0", false),
        );
        let c = config();
        let b2 = bundle_of(
            &release(model, "2.0.0", false),
            &d.path().join("v2.jota"),
            "2.0.0",
            &[],
            None,
        );
        assert_eq!(update(&dev, &c, &b2, "2.0.0"), Slot::B, "{model}");
        let b3 = bundle_of(
            &release(model, "3.0.0", false),
            &d.path().join("v3.jota"),
            "3.0.0",
            &[],
            None,
        );
        assert_eq!(update(&dev, &c, &b3, "3.0.0"), Slot::A, "{model}");
    }
}

#[test]
fn preflight_refuses_low_battery_no_power_and_a_full_disk() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let b2 = bundle_of(
        &release(ORIN, "2.0.0", false),
        &d.path().join("v2.jota"),
        "2.0.0",
        &[],
        None,
    );
    let ps = dev.dir.join("sys/class/power_supply");
    for (name, files) in [
        ("battery", [("type", "Battery"), ("capacity", "12")]),
        ("ac", [("type", "Mains"), ("online", "0")]),
    ] {
        std::fs::create_dir_all(ps.join(name)).unwrap();
        for (f, v) in files {
            std::fs::write(ps.join(name).join(f), format!("{v}\n")).unwrap();
        }
    }
    let nvme = std::fs::read(dev.dir.join("nvme.img")).unwrap();
    let refuse = |c: &jota_agent::Config, why: &str| {
        let e = try_install(&dev, c, &b2).unwrap_err();
        assert!(
            matches!(e, AgentError::Precheck(_)) && e.to_string().contains(why),
            "{why}: {e}"
        );
        assert!(std::fs::read(dev.dir.join("nvme.img")).unwrap() == nvme);
    };
    let mut c = config();
    c.precheck.min_battery_pct = 30;
    refuse(&c, "battery at 12%");
    c.precheck.min_battery_pct = 10;
    c.precheck.require_ac = true;
    refuse(&c, "external power");
    c.precheck.require_ac = false;
    c.precheck.min_free_space_mb = u64::MAX >> 21;
    refuse(&c, "MiB free on the data partition");
    c.precheck.min_free_space_mb = 1;
    std::fs::write(ps.join("ac/online"), "1\n").unwrap();
    try_install(&dev, &c, &b2).unwrap();
}

#[test]
fn a_mounted_target_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let dev = device(
        &d.path().join("jetson"),
        ORIN,
        &release(ORIN, "1.0.0", false),
    );
    let b2 = bundle_of(
        &release(ORIN, "2.0.0", false),
        &d.path().join("v2.jota"),
        "2.0.0",
        &[],
        None,
    );
    // Someone mounted slot B's rootfs (by its partition label).
    std::fs::create_dir_all(dev.dir.join("proc")).unwrap();
    std::fs::write(
        dev.dir.join("proc/mounts"),
        "/dev/nvme0n1p1 / ext4 rw 0 0\n/dev/disk/by-partlabel/APP_b /mnt ext4 ro 0 0\n",
    )
    .unwrap();
    let e = try_install(&dev, &config(), &b2).unwrap_err();
    assert!(
        matches!(e, AgentError::Rejected(_)) && e.to_string().contains("APP_b is mounted"),
        "{e}"
    );
    std::fs::write(
        dev.dir.join("proc/mounts"),
        "/dev/nvme0n1p1 / ext4 rw 0 0\n",
    )
    .unwrap();
    try_install(&dev, &config(), &b2).unwrap();
}
