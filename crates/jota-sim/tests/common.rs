//! Shared fixtures: releases built once per test binary.
#![allow(dead_code)]

use jota_bootctl::{BootControl, DeviceRoot};
use jota_sim::device::Component;
use jota_sim::firmware::{self, BootReport, Outcome};
use jota_sim::release::{make_release, ReleaseOptions};
use jota_sim::{CreateOptions, Model, SimDevice};
use jota_tegra::efivar::Slot;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub struct Releases {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

/// Builds (once) the releases a test binary needs, keyed by name.
pub fn release(model: &str, name: &str, version: &str, l4t: Option<&str>, fails: bool) -> PathBuf {
    static DIR: OnceLock<Releases> = OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let r = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        Releases {
            root: d.path().to_path_buf(),
            _dir: d,
        }
    });
    let _g = LOCK.lock().unwrap();
    let out = r.root.join(format!("{model}-{name}"));
    if !out.join("release.json").exists() {
        make_release(
            &ReleaseOptions {
                version: version.into(),
                model: Model::get(model).unwrap(),
                l4t: l4t.map(|v| v.parse().unwrap()),
                fails_health_check: fails,
                rootfs_size: 8 << 20,
                capsule_key: None,
            },
            &out,
        )
        .unwrap();
    }
    out
}

pub fn device(model: &str, rel: &Path) -> (tempfile::TempDir, SimDevice) {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("dev");
    let dev = SimDevice::create(
        &dir,
        &CreateOptions {
            model: Model::get(model).unwrap(),
            l4t: None,
            layouts: vec![],
            vars: Default::default(),
            rootfs_size: 12 << 20,
            serial: Some("1421000000001".into()),
            release: Some(rel.to_path_buf()),
            retry_count_max: 3,
        },
    )
    .unwrap();
    (d, dev)
}

pub fn boot(dev: &SimDevice) -> BootReport {
    firmware::boot(dev, false).unwrap()
}

pub fn booted(r: &BootReport) -> (Slot, Slot, String) {
    match &r.outcome {
        Outcome::Booted {
            chain,
            slot,
            version,
        } => (*chain, *slot, version.clone()),
        o => panic!("did not boot: {o:?}\n{:#?}", r.events),
    }
}

pub fn bootctl(dev: &SimDevice) -> Box<dyn BootControl> {
    jota_bootctl::open(&DeviceRoot::at(&dev.dir), &jota_bootctl::BackendKind::Auto).unwrap()
}

pub const ALL: &[Component] = &[
    Component::Bootloader,
    Component::Kernel,
    Component::Dtb,
    Component::Rootfs,
];
pub const OS: &[Component] = &[Component::Kernel, Component::Dtb, Component::Rootfs];
