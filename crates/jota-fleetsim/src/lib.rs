//! A fleet of simulated Jetsons, each running the real agent ([`jota_agent::fleet`]) against
//! a fleet server: what `jota demo` shows and what the fleet tests drive.
//!
//! The simulator plays the hardware and the OS around the agent: it powers a device on
//! (the firmware's A/B logic in [`jota_sim::firmware`]), runs boot validation as
//! `jota-validate.service` would, starts the agent, reboots when the agent asks and powers
//! the device back on after an injected power cut. The application's health is a file the
//! "OS" writes at boot when the simulator says the booted release is healthy, checked by the
//! agent's ordinary `file` health check.

use jota_agent::config::{Check, Config};
use jota_agent::fleet::{Fleet, Next, TickReport};
use jota_bootctl::DeviceRoot;
use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
use jota_bundle::sign::Signer;
use jota_bundle::{ComponentType, SecretKey};
use jota_sim::firmware::{boot, Outcome};
use jota_sim::release::{make_release, ReleaseOptions};
use jota_sim::{CreateOptions, Model, SimDevice};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong setting up or running a simulated device.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

fn e(what: &str) -> impl Fn(&dyn std::fmt::Display) -> Error + '_ {
    move |x| Error(format!("{what}: {x}"))
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Where the simulated OS records that its application is up (the agent's health check).
pub const APP_HEALTH_FILE: &str = "/run/jota-sim/app-healthy";

/// Builds a release the simulator boots (ext4 rootfs made by `mke2fs -d`, kernel, DTB,
/// capsule) for `model` into `out`.
pub fn release(model: &str, version: &str, rootfs_size: u64, out: &Path) -> Result<PathBuf> {
    let m = Model::get(model).ok_or_else(|| Error(format!("no simulated model `{model}`")))?;
    make_release(
        &ReleaseOptions {
            version: version.into(),
            model: m,
            l4t: None,
            fails_health_check: false,
            rootfs_size,
            capsule_key: None,
        },
        out,
    )
    .map_err(|x| e("making a release")(&x))?;
    Ok(out.to_path_buf())
}

/// Signs a bundle of a release (rootfs, kernel, DTB, and the capsule or BUP) for the
/// hardware patterns `hw`.
pub fn bundle(
    rel: &Path,
    out: &Path,
    version: &str,
    hw: &[String],
    key: &SecretKey,
) -> Result<PathBuf> {
    let m = jota_sim::release::load(rel).map_err(|x| e("reading the release")(&x))?;
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut b =
        Builder::new(dir, Options::default(), BaseKeys::default()).map_err(|x| e("bundle")(&x))?;
    let raw = |name: &str, part: &str| {
        let mut s = ComponentSpec::new(name, ComponentType::RawImage);
        s.partition = Some(part.into());
        s
    };
    let mut parts = vec![
        (raw("rootfs", "APP"), rel.join(&m.rootfs.name)),
        (raw("kernel", "kernel"), rel.join(&m.kernel.name)),
        (raw("kernel-dtb", "kernel-dtb"), rel.join(&m.dtb.name)),
    ];
    if let Some(c) = &m.capsule {
        parts.push((
            ComponentSpec::new("capsule", ComponentType::UefiCapsule),
            rel.join(&c.name),
        ));
    } else if let Some(c) = &m.bup {
        parts.push((
            ComponentSpec::new("bup", ComponentType::TegraBup),
            rel.join(&c.name),
        ));
    }
    for (spec, file) in parts {
        b.add(spec, &file, &NoProgress)
            .map_err(|x| e("bundle")(&x))?;
    }
    let signers: [&dyn Signer; 1] = [key];
    b.finish(
        Release {
            version: version.into(),
            hardware_compatibility: hw.to_vec(),
            ..Release::default()
        },
        &signers,
        out,
    )
    .map_err(|x| e("bundle")(&x))?;
    Ok(out.to_path_buf())
}

/// One simulated Jetson to make.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Model (`orin-nano-8gb`, ...).
    pub model: String,
    /// Module serial number.
    pub serial: String,
    /// MAC of eth0.
    pub mac: String,
    /// Release flashed into both slots.
    pub release: PathBuf,
    /// Size of each rootfs slot.
    pub rootfs_slot: u64,
}

/// The agent configuration of a simulated fleet device: the server, a fast poll, the
/// simulated application's health file as the boot check.
pub fn agent_config(server: &str, provision_token: &str, poll_seconds: u64) -> Config {
    let mut c = Config {
        write_block_kib: 256,
        ..Config::default()
    };
    c.validate.watchdog = String::new();
    c.validate.deadline_s = 30;
    c.validate.checks = vec![Check {
        name: "application".into(),
        file: Some(APP_HEALTH_FILE.into()),
        ..Check::default()
    }];
    c.server.url = server.into();
    c.server.provision_token = provision_token.into();
    c.server.poll_seconds = poll_seconds;
    c.server.max_backoff_seconds = 4;
    c.server.telemetry_seconds = 10;
    c
}

/// Creates a simulated Jetson in `dir`, flashed with the spec's release, with its agent's
/// configuration, the bundle keyring and the fleet CA to pin.
pub fn create(
    dir: &Path,
    spec: &Spec,
    config: &Config,
    keyring_pem: &[u8],
    fleet_ca: Option<&[u8]>,
) -> Result<SimDevice> {
    let model = Model::get(&spec.model)
        .ok_or_else(|| Error(format!("no simulated model `{}`", spec.model)))?;
    let dev = SimDevice::create(
        dir,
        &CreateOptions {
            model,
            l4t: None,
            layouts: Vec::new(),
            vars: Default::default(),
            rootfs_size: spec.rootfs_slot,
            serial: Some(spec.serial.clone()),
            release: Some(spec.release.clone()),
            retry_count_max: 3,
        },
    )
    .map_err(|x| e("creating a simulated device")(&x))?;
    let root = DeviceRoot::at(dir);
    let write = |abs: &str, data: &[u8]| -> Result<()> {
        let p = root.path(abs);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(|x| e(abs)(&x))?;
        }
        std::fs::write(&p, data).map_err(|x| e(abs)(&x))
    };
    write(
        "/sys/class/net/eth0/address",
        format!("{}\n", spec.mac).as_bytes(),
    )?;
    write(jota_agent::config::CONFIG_FILE, toml_of(config)?.as_bytes())?;
    write(&format!("{}/fleet.pem", config.keyring), keyring_pem)?;
    if let Some(ca) = fleet_ca {
        write(&config.server.ca, ca)?;
    }
    Ok(dev)
}

fn toml_of(c: &Config) -> Result<String> {
    // The configuration type serialises to TOML through serde; serde_json → toml would lose
    // nothing either, but agent.toml is what a real device has.
    jota_agent::config::to_toml(c).map_err(|x| e("agent.toml")(&x))
}

/// What a simulated device did, for a live view.
#[derive(Clone, Debug)]
pub enum Event {
    /// It booted (after power-on or a reboot): slot and version, or why not.
    Booted {
        /// Rootfs slot and version, if an OS came up.
        running: Option<(String, String)>,
        /// Cold start (after power loss).
        cold: bool,
    },
    /// Boot validation ran.
    Validated {
        /// The verdict, in words.
        verdict: String,
    },
    /// One agent tick.
    Tick(TickReport),
    /// The power was cut during an install.
    PowerCut,
    /// Something the device could not do.
    Error(String),
}

/// How a simulated device misbehaves.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Cut the power on this write counted from when the agent first starts.
    pub power_cut_after_writes: Option<u64>,
    /// While set, the device is offline (its agent does not run).
    pub offline: Option<Arc<AtomicBool>>,
    /// The application fails its health check on this release version.
    pub fail_health_on: Option<String>,
    /// Longest sleep between ticks (the server's poll interval is honoured up to this).
    pub max_sleep: Option<Duration>,
}

/// Runs a simulated device until `stop`: power on, validate, the agent's ticks, reboots and
/// power cuts. Events go to `events` with the device's name.
pub fn run(
    name: String,
    dir: PathBuf,
    config: Config,
    behaviour: Behaviour,
    events: Sender<(String, Event)>,
    stop: Arc<AtomicBool>,
) {
    let send = |ev: Event| {
        let _ = events.send((name.clone(), ev));
    };
    if let Err(x) = run_inner(&dir, &config, &behaviour, &send, &stop) {
        send(Event::Error(x.to_string()));
    }
}

fn offline(b: &Behaviour) -> bool {
    b.offline.as_ref().is_some_and(|f| f.load(Ordering::SeqCst))
}

fn sleep(d: Duration, stop: &AtomicBool) {
    let end = std::time::Instant::now() + d;
    while !stop.load(Ordering::SeqCst) {
        let now = std::time::Instant::now();
        if now >= end {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn run_inner(
    dir: &Path,
    config: &Config,
    b: &Behaviour,
    send: &dyn Fn(Event),
    stop: &AtomicBool,
) -> Result<()> {
    let sim = SimDevice::open(dir).map_err(|x| e("opening the device")(&x))?;
    if let Some(v) = &b.fail_health_on {
        let f = sim.faults().map_err(|x| e("faults")(&x))?;
        f.update(|p| {
            p.health_fail_version = Some(v.clone());
            Ok(())
        })
        .map_err(|x| e("faults")(&x))?;
    }
    let root = DeviceRoot::at(dir);
    power_on(&sim, config, false, send)?;
    while offline(b) && !stop.load(Ordering::SeqCst) {
        sleep(Duration::from_millis(100), stop);
    }
    let mut fleet = loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        match Fleet::connect(root.clone(), config.clone()) {
            Ok(f) => break f,
            Err(x) => {
                send(Event::Error(format!("connecting: {x}")));
                sleep(Duration::from_secs(1), stop);
            }
        }
    };
    if let Err(x) = fleet.after_boot() {
        send(Event::Error(format!("after boot: {x}")));
    }
    if let Some(n) = b.power_cut_after_writes {
        let f = sim.faults().map_err(|x| e("faults")(&x))?;
        f.update(|p| {
            p.power_cut_after_writes = Some(n.max(1));
            p.writes_seen = 0;
            Ok(())
        })
        .map_err(|x| e("faults")(&x))?;
    }
    let max_sleep = b.max_sleep.unwrap_or(Duration::from_secs(2));
    while !stop.load(Ordering::SeqCst) {
        if offline(b) {
            sleep(Duration::from_millis(100), stop);
            continue;
        }
        let (next, report) = fleet.tick();
        send(Event::Tick(report));
        match next {
            Next::Sleep(d) => sleep(d.min(max_sleep), stop),
            Next::Reboot => {
                power_on(&sim, config, false, send)?;
                if let Err(x) = fleet.after_boot() {
                    send(Event::Error(format!("after boot: {x}")));
                }
            }
            Next::PowerLost => {
                send(Event::PowerCut);
                power_on(&sim, config, true, send)?;
                if let Err(x) = fleet.after_boot() {
                    send(Event::Error(format!("after boot: {x}")));
                }
            }
        }
    }
    Ok(())
}

/// Powers the device on (or resets it) and runs what its OS runs at boot: the application
/// (its health file) and boot validation; reboots again while validation asks for it.
pub fn power_on(sim: &SimDevice, config: &Config, cold: bool, send: &dyn Fn(Event)) -> Result<()> {
    let root = DeviceRoot::at(&sim.dir);
    let mut cold = cold;
    for _ in 0..8 {
        let r = boot(sim, cold).map_err(|x| e("boot")(&x))?;
        let running = match &r.outcome {
            Outcome::Booted { slot, version, .. } => Some((slot.to_string(), version.clone())),
            _ => None,
        };
        send(Event::Booted {
            running: running.clone(),
            cold,
        });
        if running.is_none() {
            return Err(Error(format!("the device did not boot: {:?}", r.outcome)));
        }
        let health = root.path(APP_HEALTH_FILE);
        let healthy = matches!(jota_sim::firmware::health(sim), Ok(Ok(_)));
        if healthy {
            if let Some(p) = health.parent() {
                std::fs::create_dir_all(p).map_err(|x| e("health file")(&x))?;
            }
            std::fs::write(&health, b"ok\n").map_err(|x| e("health file")(&x))?;
        } else {
            let _ = std::fs::remove_file(&health);
        }
        let mut dev = jota_agent::Device::open(root.clone(), config.clone())
            .map_err(|x| e("opening the device")(&x))?;
        let rep = jota_agent::validate::validate(&mut dev).map_err(|x| e("validation")(&x))?;
        send(Event::Validated {
            verdict: format!("{:?}", rep.verdict),
        });
        if !rep.reboot {
            return Ok(());
        }
        cold = false;
    }
    Err(Error("the device keeps rebooting".into()))
}

/// Reads the signing key a demo or test made.
pub fn load_key(path: &Path) -> Result<SecretKey> {
    SecretKey::load(path).map_err(|x| e("signing key")(&x))
}
