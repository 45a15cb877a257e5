//! `jota sim`: simulated Jetsons.

use crate::util::{parse_u64, print_json};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jota_bootctl::faults::FaultPlan;
use jota_sim::device::Component;
use jota_sim::firmware::{self, Outcome};
use jota_sim::release::{self, ReleaseOptions};
use jota_sim::{CreateOptions, Model, SimDevice, MODELS};
use jota_tegra::efivar::Slot;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `jota sim`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Parses 24M, 512K, 1G or plain bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    parse_u64(num).map(|n| n * mul)
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a simulated device in DIR (real GPT disk images, efivars, ESP, device tree).
    Create {
        /// Directory (must not exist or be empty).
        dir: PathBuf,
        /// Model (see `jota sim models`).
        #[arg(long, default_value = "orin-nano-8gb")]
        model: String,
        /// L4T version (default: the model's).
        #[arg(long)]
        l4t: Option<String>,
        /// Flash-layout XML to use instead of the compact built-in layouts (repeatable).
        #[arg(long)]
        layout: Vec<PathBuf>,
        /// Layout placeholder value NAME=VALUE (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Size of each rootfs slot.
        #[arg(long, default_value = "24M", value_parser = parse_size)]
        rootfs_size: u64,
        /// Serial number.
        #[arg(long)]
        serial: Option<String>,
        /// Release (from `jota sim make-release`) to flash into both slots.
        #[arg(long)]
        release: Option<PathBuf>,
        /// Boot attempts per slot before fallback (RootfsRetryCountMax; max 3 on UEFI).
        #[arg(long, default_value_t = 3)]
        retry_count: u32,
        /// Print the device record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a release the simulator recognises: ext4 rootfs, kernel, DTB, BUP and capsule.
    MakeRelease {
        /// Release version.
        #[arg(long)]
        version: String,
        /// Output directory.
        #[arg(short, long)]
        output: PathBuf,
        /// Model whose payloads to build.
        #[arg(long, default_value = "orin-nano-8gb")]
        model: String,
        /// L4T version (default: the model's).
        #[arg(long)]
        l4t: Option<String>,
        /// Once booted, this release's health checks fail.
        #[arg(long)]
        fails_health_check: bool,
        /// Rootfs image size.
        #[arg(long, default_value = "16M", value_parser = parse_size)]
        rootfs_size: u64,
        /// Capsule signing key (PEM; default: the public jota-sim test key).
        #[arg(long, requires = "capsule_cert")]
        capsule_key: Option<PathBuf>,
        /// Capsule signing certificate (PEM).
        #[arg(long, requires = "capsule_key")]
        capsule_cert: Option<PathBuf>,
        /// Print release.json.
        #[arg(long)]
        json: bool,
    },
    /// Power the device on (or reset it if it runs): firmware, capsules, slot choice, boot.
    Boot {
        /// Device directory.
        dir: PathBuf,
        /// Pull the plug first (scratch registers lost).
        #[arg(long)]
        cold: bool,
        /// JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Cut the power (the next boot is a cold boot).
    PowerOff {
        /// Device directory.
        dir: PathBuf,
    },
    /// Show what runs and the state of both slots.
    Status {
        /// Device directory.
        dir: PathBuf,
        /// JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inject faults; kept in the device directory so every jota process obeys them.
    Fault {
        /// Device directory.
        dir: PathBuf,
        /// Cut power on the N-th write to any simulated storage from now (it is torn, later ones are lost).
        #[arg(long)]
        power_cut_after_writes: Option<u64>,
        /// Health checks of the booted OS: pass, fail or clear (the release decides).
        #[arg(long, value_parser = ["pass", "fail", "clear"])]
        health: Option<String>,
        /// Health checks fail while this release version runs (other versions are healthy).
        #[arg(long)]
        health_fail_version: Option<String>,
        /// Hardware watchdog timeout in seconds (0: disabled).
        #[arg(long)]
        watchdog_timeout: Option<u64>,
        /// Seconds the OS takes to boot.
        #[arg(long)]
        boot_time: Option<u64>,
        /// Remove every injected fault.
        #[arg(long)]
        clear: bool,
        /// Print the plan.
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if the running OS passes its (simulated) health checks, 1 if not.
    Health {
        /// Device directory.
        dir: PathBuf,
    },
    /// Write a release (or parts) into slots, through the device's storage (faults apply).
    Flash {
        /// Device directory.
        dir: PathBuf,
        /// Release directory.
        #[arg(long)]
        release: PathBuf,
        /// a, b or both.
        #[arg(long, default_value = "both")]
        slot: String,
        /// Components (comma-separated): rootfs, kernel, dtb, bootloader.
        #[arg(
            long,
            default_value = "bootloader,kernel,dtb,rootfs",
            value_delimiter = ','
        )]
        component: Vec<String>,
    },
    /// List the built-in models.
    Models,
}

/// Runs `jota sim`; returns the exit status.
pub fn run(a: Args) -> Result<u8> {
    match a.cmd {
        Cmd::Create {
            dir,
            model,
            l4t,
            layout,
            set,
            rootfs_size,
            serial,
            release,
            retry_count,
            json,
        } => {
            let m = model_of(&model)?;
            let mut vars = BTreeMap::new();
            for s in &set {
                let (k, v) = s
                    .split_once('=')
                    .with_context(|| format!("--set {s}: expected NAME=VALUE"))?;
                vars.insert(k.to_string(), v.to_string());
            }
            let o = CreateOptions {
                model: m,
                l4t: l4t.map(|v| v.parse()).transpose()?,
                layouts: layout,
                vars,
                rootfs_size,
                serial,
                release,
                retry_count_max: retry_count,
            };
            let dev = SimDevice::create(&dir, &o)
                .with_context(|| format!("creating {}", dir.display()))?;
            if json {
                print_json(&dev.meta)?;
            } else {
                outln!(
                    "created {} ({}, L4T {}, serial {})",
                    dir.display(),
                    m.product,
                    dev.meta.l4t,
                    dev.meta.serial
                );
                for d in &dev.meta.disks {
                    outln!("  {} -> {} ({} bytes)", d.device, d.image, d.size);
                }
            }
        }
        Cmd::MakeRelease {
            version,
            output,
            model,
            l4t,
            fails_health_check,
            rootfs_size,
            capsule_key,
            capsule_cert,
            json,
        } => {
            let o = ReleaseOptions {
                version,
                model: model_of(&model)?,
                l4t: l4t.map(|v| v.parse()).transpose()?,
                fails_health_check,
                rootfs_size,
                capsule_key: capsule_key.zip(capsule_cert),
            };
            let m = release::make_release(&o, &output)
                .with_context(|| format!("building release in {}", output.display()))?;
            if json {
                print_json(&m)?;
            } else {
                outln!(
                    "release {} (L4T {}, id {}) in {}",
                    m.version,
                    m.l4t,
                    m.release_id,
                    output.display()
                );
                for (k, f) in release::files(&m) {
                    outln!("  {k:<8} {} ({} bytes)", f.name, f.size);
                }
            }
        }
        Cmd::Boot { dir, cold, json } => {
            let dev = SimDevice::open(&dir)?;
            let r = firmware::boot(&dev, cold)?;
            if json {
                print_json(&r)?;
            } else {
                for e in &r.events {
                    outln!("  {e}");
                }
                match &r.outcome {
                    Outcome::Booted {
                        chain,
                        slot,
                        version,
                    } => {
                        outln!(
                            "booted: release {version} on rootfs slot {slot} (boot chain {chain})"
                        )
                    }
                    o => outln!("did not boot: {}", serde_json::to_string(o)?),
                }
            }
            return Ok(if matches!(r.outcome, Outcome::Booted { .. }) {
                0
            } else {
                3
            });
        }
        Cmd::PowerOff { dir } => firmware::power_off(&SimDevice::open(&dir)?)?,
        Cmd::Status { dir, json } => status(&dir, json)?,
        Cmd::Fault {
            dir,
            power_cut_after_writes,
            health,
            health_fail_version,
            watchdog_timeout,
            boot_time,
            clear,
            json,
        } => {
            let dev = SimDevice::open(&dir)?;
            let f = dev.faults()?;
            let plan = f.update(|p| {
                if clear {
                    *p = FaultPlan::default();
                }
                if let Some(n) = power_cut_after_writes {
                    p.power_cut_after_writes = Some(n.max(1));
                    p.writes_seen = 0;
                }
                match health.as_deref() {
                    Some("pass") => p.health_ok = Some(true),
                    Some("fail") => p.health_ok = Some(false),
                    Some(_) => p.health_ok = None,
                    None => {}
                }
                if let Some(v) = &health_fail_version {
                    p.health_fail_version = Some(v.clone());
                }
                if let Some(w) = watchdog_timeout {
                    p.watchdog_timeout_s = (w > 0).then_some(w);
                }
                if let Some(b) = boot_time {
                    p.boot_time_s = Some(b);
                }
                Ok(p.clone())
            })?;
            if json {
                print_json(&plan)?;
            }
        }
        Cmd::Health { dir } => {
            let dev = SimDevice::open(&dir)?;
            return Ok(match firmware::health(&dev)? {
                Ok(m) => {
                    outln!("{m}");
                    0
                }
                Err(m) => {
                    eprintln!("unhealthy: {m}");
                    1
                }
            });
        }
        Cmd::Flash {
            dir,
            release,
            slot,
            component,
        } => {
            let dev = SimDevice::open(&dir)?;
            let slots = match slot.to_ascii_lowercase().as_str() {
                "both" => vec![Slot::A, Slot::B],
                s => vec![s.parse::<Slot>().map_err(anyhow::Error::msg)?],
            };
            let comps = component
                .iter()
                .map(|c| c.parse::<Component>().map_err(anyhow::Error::msg))
                .collect::<Result<Vec<_>>>()?;
            let m = dev.flash(&release, &slots, &comps)?;
            eprintln!("flashed release {} into slot(s) {slot}", m.version);
        }
        Cmd::Models => {
            for m in MODELS {
                outln!(
                    "{:<14} {:?}  L4T {}  {}",
                    m.name,
                    m.firmware,
                    m.l4t,
                    m.product
                );
            }
        }
    }
    Ok(0)
}

fn model_of(name: &str) -> Result<&'static Model> {
    Model::get(name).with_context(|| {
        format!(
            "unknown model `{name}` (have: {})",
            MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        )
    })
}

fn status(dir: &std::path::Path, json: bool) -> Result<()> {
    let dev = SimDevice::open(dir)?;
    let state = dev.state()?;
    let plan = dev.faults()?.load()?;
    let root = dev.root();
    let bc = jota_bootctl::open(&root, &jota_bootctl::BackendKind::Auto).ok();
    let slots = bc
        .as_ref()
        .and_then(|b| b.status(jota_bootctl::Target::Rootfs).ok());
    if json {
        return print_json(&serde_json::json!({
            "meta": dev.meta,
            "state": state,
            "faults": plan,
            "backend": bc.as_ref().map(|b| b.name()),
            "rootfs": slots,
        }));
    }
    outln!(
        "{} ({}), L4T {}, serial {}",
        dir.display(),
        dev.meta.model,
        dev.meta.l4t,
        dev.meta.serial
    );
    match &state.booted {
        Some(b) => outln!(
            "running: release {} on slot {} (chain {}), boot #{}",
            b.version,
            b.slot,
            b.chain,
            b.boot
        ),
        None if state.power_on => outln!("powered, no OS running"),
        None => outln!("powered off"),
    }
    if let Some(s) = slots {
        for x in &s.slots {
            outln!(
                "  slot {}: {}{}",
                x.slot,
                if x.bootable { "bootable" } else { "unbootable" },
                x.retry_count
                    .map(|r| format!(", {r} tries left"))
                    .unwrap_or_default()
            );
        }
        outln!("  next boot: slot {}", s.active);
    }
    if plan != FaultPlan::default() {
        outln!("  faults: {}", serde_json::to_string(&plan)?);
    }
    if state.booted.is_none() && !state.power_on {
        bail_if_never_booted(&state)?;
    }
    Ok(())
}

fn bail_if_never_booted(s: &jota_sim::state::SimState) -> Result<()> {
    if s.boots == 0 {
        outln!("  (never booted: run `jota sim boot`)");
    }
    Ok(())
}
