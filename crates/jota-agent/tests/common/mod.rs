//! Simulated Jetsons, releases and bundles for the agent tests.
#![allow(dead_code)]

use jota_agent::config::{Check, Config};
use jota_agent::install::{install, InstallOptions, InstallReport};
use jota_agent::validate::{validate, ValidateReport};
use jota_agent::{AgentError, Device};
use jota_bootctl::DeviceRoot;
use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
use jota_bundle::sign::Signer;
use jota_bundle::{ComponentType, SecretKey};
use jota_sim::firmware::{boot, Outcome};
use jota_sim::release::{make_release, ReleaseOptions};
use jota_sim::{CreateOptions, Model, SimDevice};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
}

/// A keyring directory trusting the ed25519 test key.
pub fn keyring() -> &'static Path {
    static K: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &K.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keyring");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::copy(
            keys_dir().join("ed25519.pub.pem"),
            p.join("ed25519.pub.pem"),
        )
        .unwrap();
        (d, p)
    })
    .1
}

pub const ROOTFS: u64 = 6 << 20;

/// Releases per (model, version, broken), built once per test binary.
pub fn release(model: &str, version: &str, broken: bool) -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let d = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let out = d.path().join(format!(
        "{model}-{version}{}",
        if broken { "-broken" } else { "" }
    ));
    let _g = LOCK.lock().unwrap();
    if !out.join("release.json").exists() {
        make_release(
            &ReleaseOptions {
                version: version.into(),
                model: Model::get(model).unwrap(),
                l4t: None,
                fails_health_check: broken,
                rootfs_size: ROOTFS,
                capsule_key: None,
            },
            &out,
        )
        .unwrap();
    }
    out
}

/// A bundle of a release: rootfs, kernel, DTB and the release's capsule or BUP.
pub fn bundle_of(rel: &Path, out: &Path, version: &str, hw: &[&str], min: Option<&str>) -> PathBuf {
    build(rel, out, version, hw, min, None)
}

/// A bundle of a release grouped against `base` (delta-friendly).
pub fn bundle_with_base(rel: &Path, base: &Path, out: &Path, version: &str) -> PathBuf {
    build(rel, out, version, &[], None, Some(base))
}

fn build(
    rel: &Path,
    out: &Path,
    version: &str,
    hw: &[&str],
    min: Option<&str>,
    base: Option<&Path>,
) -> PathBuf {
    let m = jota_sim::release::load(rel).unwrap();
    let (opts, keys) = match base {
        Some(b) => (
            Options {
                threads: 2,
                ..Options::default()
            },
            jota_bundle::read::base_keys(
                &jota_bundle::Bundle::open(b, jota_bundle::Trust::Unchecked).unwrap(),
            ),
        ),
        None => (
            Options {
                chunk_blocks: 32,
                threads: 2,
                ..Options::default()
            },
            BaseKeys::default(),
        ),
    };
    let mut b = Builder::new(out.parent().unwrap(), opts, keys).unwrap();
    let raw = |name: &str, part: &str| {
        let mut s = ComponentSpec::new(name, ComponentType::RawImage);
        s.partition = Some(part.into());
        s
    };
    b.add(raw("rootfs", "APP"), &rel.join(&m.rootfs.name), &NoProgress)
        .unwrap();
    b.add(
        raw("kernel", "kernel"),
        &rel.join(&m.kernel.name),
        &NoProgress,
    )
    .unwrap();
    b.add(
        raw("kernel-dtb", "kernel-dtb"),
        &rel.join(&m.dtb.name),
        &NoProgress,
    )
    .unwrap();
    if let Some(c) = &m.capsule {
        b.add(
            ComponentSpec::new("capsule", ComponentType::UefiCapsule),
            &rel.join(&c.name),
            &NoProgress,
        )
        .unwrap();
    } else if let Some(c) = &m.bup {
        b.add(
            ComponentSpec::new("bup", ComponentType::TegraBup),
            &rel.join(&c.name),
            &NoProgress,
        )
        .unwrap();
    }
    let key = SecretKey::load(&keys_dir().join("ed25519.key.pem")).unwrap();
    let signers: [&dyn Signer; 1] = [&key];
    b.finish(
        Release {
            version: version.into(),
            hardware_compatibility: hw.iter().map(|s| s.to_string()).collect(),
            minimum_version: min.map(str::to_string),
            ..Release::default()
        },
        &signers,
        out,
    )
    .unwrap();
    out.to_path_buf()
}

/// A simulated device flashed with `rel` in both slots and booted.
pub fn device(dir: &Path, model: &str, rel: &Path) -> SimDevice {
    let dev = SimDevice::create(
        dir,
        &CreateOptions {
            model: Model::get(model).unwrap(),
            l4t: None,
            layouts: Vec::new(),
            vars: Default::default(),
            rootfs_size: 8 << 20,
            serial: None,
            release: Some(rel.to_path_buf()),
            retry_count_max: 3,
        },
    )
    .unwrap();
    booted(&dev);
    dev
}

/// The agent configuration the tests use: small writes (many fault points), the simulated
/// release's own health as the check.
pub fn config() -> Config {
    let mut c = Config {
        write_block_kib: 64,
        ..Config::default()
    };
    c.validate.watchdog = String::new();
    c.validate.checks = vec![Check {
        name: "app".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            // The simulator records whether the booted release is healthy.
            r#"! grep -q '"fails_health_check": true' "$JOTA_ROOT/sim/state.json""#.into(),
        ],
        ..Check::default()
    }];
    c
}

pub fn agent(dev: &SimDevice, c: &Config) -> Device {
    Device::open(DeviceRoot::at(&dev.dir), c.clone()).unwrap()
}

pub fn try_install(
    dev: &SimDevice,
    c: &Config,
    bundle: &Path,
) -> Result<InstallReport, AgentError> {
    let mut a = agent(dev, c);
    install(
        &mut a,
        &InstallOptions {
            bundle: bundle.to_path_buf(),
            source: bundle.display().to_string(),
            keyring: Some(keyring().to_path_buf()),
            no_switch: false,
            threads: 1,
        },
        &|_, _, _| {},
    )
}

pub fn try_validate(dev: &SimDevice, c: &Config) -> Result<ValidateReport, AgentError> {
    validate(&mut agent(dev, c))
}

/// Boots and expects an OS: (slot, version).
pub fn booted(dev: &SimDevice) -> (jota_tegra::efivar::Slot, String) {
    let r = boot(dev, false).unwrap();
    match r.outcome {
        Outcome::Booted { slot, version, .. } => (slot, version),
        o => panic!("device did not boot: {o:?}\n{:#?}", r.events),
    }
}

/// Copies a device directory (sparse images stay sparse).
pub fn clone_device(from: &Path, to: &Path) -> SimDevice {
    let st = std::process::Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
    SimDevice::open(to).unwrap()
}

/// How the test HTTP server behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serve {
    /// Byte ranges, like any static server or CDN.
    Ranges,
    /// Ignores Range: always the whole file.
    NoRanges,
    /// Serves this many requests, then answers 500.
    FailAfter(usize),
}

/// What the server sent.
#[derive(Debug, Default)]
pub struct Served {
    pub requests: std::sync::atomic::AtomicUsize,
    pub bytes: std::sync::atomic::AtomicU64,
}

/// Serves `data` over HTTP on 127.0.0.1 (a thread per connection).
pub fn serve(data: Vec<u8>, mode: Serve) -> (String, std::sync::Arc<Served>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/bundle.jota", l.local_addr().unwrap());
    let served = std::sync::Arc::new(Served::default());
    let data = std::sync::Arc::new(data);
    let s2 = std::sync::Arc::clone(&served);
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            let (data, served) = (std::sync::Arc::clone(&data), std::sync::Arc::clone(&s2));
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                loop {
                    let mut range = None;
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            let (a, b) = v.trim().split_once('-').unwrap();
                            let a: usize = a.parse().unwrap();
                            let b: usize = if b.is_empty() {
                                data.len() - 1
                            } else {
                                b.parse().unwrap()
                            };
                            range = Some((a, b.min(data.len() - 1)));
                        }
                    }
                    let n = served.requests.fetch_add(1, Ordering::SeqCst);
                    if let Serve::FailAfter(k) = mode {
                        if n >= k {
                            let _ = c.write_all(
                                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                            );
                            continue;
                        }
                    }
                    let (head, body) = match range {
                        Some((a, b)) if mode != Serve::NoRanges => (
                            format!(
                                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\n\r\n",
                                b + 1 - a,
                                data.len()
                            ),
                            &data[a..=b],
                        ),
                        _ => (
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", data.len()),
                            &data[..],
                        ),
                    };
                    served.bytes.fetch_add(body.len() as u64, Ordering::SeqCst);
                    if c.write_all(head.as_bytes())
                        .and_then(|()| c.write_all(body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, served)
}

pub fn install_opts(bundle: &str) -> InstallOptions {
    InstallOptions {
        bundle: PathBuf::from(bundle),
        source: bundle.to_string(),
        keyring: Some(keyring().to_path_buf()),
        no_switch: false,
        threads: 1,
    }
}

/// Slot B holds `rel2`'s rootfs byte for byte, boots as 2.0.0 and validates.
pub fn slot_b_is_v2(dev: &SimDevice, rel2: &Path) {
    use jota_agent::validate::Verdict;
    let a = agent(dev, &config());
    let part = a.label("APP", jota_tegra::efivar::Slot::B).unwrap();
    let want = std::fs::read(rel2.join("rootfs.ext4")).unwrap();
    let got = jota_agent::install::hash_partition(&a.storage, &part, want.len() as u64).unwrap();
    assert_eq!(got, jota_bundle::Digest::of(&want));
    assert_eq!(
        booted(dev),
        (jota_tegra::efivar::Slot::B, "2.0.0".to_string())
    );
    let rep = try_validate(dev, &config()).unwrap();
    assert!(matches!(rep.verdict, Verdict::Committed { .. }), "{rep:?}");
}
