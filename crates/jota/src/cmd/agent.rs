//! `jota agent`: the device-side services (boot validation), and the device opening shared
//! with `jota install` and `jota status`.

use crate::util::print_json;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jota_agent::validate::Verdict;
use jota_agent::{Config, Device};
use jota_bootctl::DeviceRoot;
use std::path::PathBuf;

/// Where the device is and how the agent is configured (shared by install, status, agent).
#[derive(Parser, Debug, Clone)]
pub struct DeviceArgs {
    /// Device root: `/` on a Jetson, a simulated device's directory otherwise.
    #[arg(long, env = "JOTA_ROOT", default_value = "/", global = true)]
    pub root: PathBuf,
    /// Agent configuration (default: /etc/jota/agent.toml inside the root).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

impl DeviceArgs {
    /// Loads the configuration and opens the device.
    pub fn open(&self) -> Result<Device> {
        let root = DeviceRoot::at(&self.root);
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| root.path(jota_agent::config::CONFIG_FILE));
        let config = Config::load(&path)?;
        Device::open(root, config)
            .with_context(|| format!("opening the device at {}", self.root.display()))
    }
}

/// Arguments of `jota agent`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(flatten)]
    dev: DeviceArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate the booted slot (run at every boot by jota-validate.service): after an
    /// update, run the health checks while feeding the watchdog, then commit (mark both
    /// chains successful) or fail (mark bad or leave it to the retry counter, and reboot).
    /// Exit 0 when the slot is good, 1 when validation failed.
    Validate {
        /// JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Print the default configuration (every key with its default) as TOML.
    DefaultConfig,
    /// The device agent (jota-agent.service): provision on first start, then poll the fleet
    /// server ([server] in agent.toml) with jitter and backoff, download (resuming), install,
    /// reboot into the update and report its outcome, inventory and telemetry.
    Run {
        /// One poll cycle, then exit (0: nothing failed; 2: the server could not be
        /// reached or refused; 3: waiting for an operator to accept the device).
        #[arg(long)]
        once: bool,
        /// A JSON line per poll cycle on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Provision the device with a fleet server (seed 003 §5.1): make its key once, send a
    /// CSR with its serial number and MAC, and keep the certificate, the fleet CA and a
    /// device token in the identity directory. Exit 0 when accepted, 3 while pending.
    Provision {
        /// Server URL.
        #[arg(long, env = "JOTA_SERVER")]
        server: String,
        /// The fleet CA to pin (PEM): the server's DATA_DIR/tls/ca.pem.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// A provisioning token (factory image) or the device's own token; without one an
        /// operator accepts the device (`jota fleet accept`).
        #[arg(long, env = "JOTA_PROVISION_TOKEN")]
        token: Option<String>,
        /// Serial number [default: ROOT/proc/device-tree/serial-number].
        #[arg(long)]
        serial: Option<String>,
        /// MAC address [default: ROOT/sys/class/net/eth0/address].
        #[arg(long)]
        mac: Option<String>,
        /// Device id, when there is no serial number and MAC.
        #[arg(long)]
        id: Option<String>,
        /// Hardware (board id, e.g. 3767-0005-300).
        #[arg(long, default_value = "")]
        hardware: String,
        /// Identity directory [default: DATA_DIR/identity of the agent configuration].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep asking while pending, up to this many seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `jota agent`.
pub fn run(a: Args) -> Result<u8> {
    match a.cmd {
        Cmd::Run { once, json } => run_agent(&a.dev, once, json),
        Cmd::DefaultConfig => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            Ok(0)
        }
        Cmd::Provision {
            server,
            ca,
            token,
            serial,
            mac,
            id,
            hardware,
            dir,
            wait,
            json,
        } => {
            let root = DeviceRoot::at(&a.dev.root);
            let dir = match dir {
                Some(d) => d,
                None => {
                    let path = a
                        .dev
                        .config
                        .clone()
                        .unwrap_or_else(|| root.path(jota_agent::config::CONFIG_FILE));
                    let config = if path.exists() {
                        Config::load(&path)?
                    } else {
                        Config::default()
                    };
                    root.path(&config.data_dir).join("identity")
                }
            };
            let (hw_serial, hw_mac) = jota_agent::provision::hardware_identity(&a.dev.root);
            let ca = ca
                .map(|p| std::fs::read(&p).with_context(|| format!("--ca {}", p.display())))
                .transpose()?;
            let p = jota_agent::provision::provision(&jota_agent::provision::Options {
                server,
                ca,
                token,
                serial: serial.unwrap_or(hw_serial),
                mac: mac.unwrap_or(hw_mac),
                id,
                hardware,
                dir,
                wait: std::time::Duration::from_secs(wait),
            })?;
            if json {
                print_json(&p)?;
            } else if p.state == "accepted" {
                outln!("{}: provisioned; identity in {}", p.id, p.dir.display());
            } else {
                outln!(
                    "{}: waiting for an operator (jota fleet accept {})",
                    p.id,
                    p.id
                );
            }
            Ok(if p.state == "accepted" { 0 } else { 3 })
        }
        Cmd::Validate { json } => {
            let mut dev = a.dev.open()?;
            let rep = jota_agent::validate::validate(&mut dev)?;
            let ok = match &rep.verdict {
                Verdict::Failed { .. } => false,
                Verdict::NothingPending { healthy, .. } => *healthy,
                _ => true,
            };
            if json {
                print_json(&rep)?;
            } else {
                for c in &rep.checks {
                    outln!(
                        "  {} {}: {} ({} ms)",
                        if c.ok { "ok  " } else { "FAIL" },
                        c.name,
                        c.detail,
                        c.ms
                    );
                }
                outln!("{}", describe(&rep.verdict));
                if rep.reboot {
                    outln!("rebooting so the firmware falls back");
                }
            }
            Ok(if ok { 0 } else { 1 })
        }
    }
}

/// `jota agent run`.
fn run_agent(dev: &DeviceArgs, once: bool, json: bool) -> Result<u8> {
    use jota_agent::fleet::{Fleet, Next};
    let root = DeviceRoot::at(&dev.root);
    let path = dev
        .config
        .clone()
        .unwrap_or_else(|| root.path(jota_agent::config::CONFIG_FILE));
    let config = Config::load(&path)?;
    if config.server.url.is_empty() {
        anyhow::bail!(
            "{}: no [server] url: the agent has no fleet server to talk to",
            path.display()
        );
    }
    let line = |event: &str, deployment: Option<&str>| -> Result<()> {
        if json {
            print_json(&serde_json::json!({ "event": event, "deployment": deployment }))?;
        } else {
            tracing::info!(deployment, "{event}");
        }
        Ok(())
    };
    // Connect (provisioning on first start); wait while pending or unreachable.
    let mut wait = std::time::Duration::from_secs(5);
    let mut fleet = loop {
        match Fleet::connect(root.clone(), config.clone()) {
            Ok(f) => break f,
            Err(e @ jota_agent::AgentError::Config(_)) => return Err(e.into()),
            Err(e) => {
                let pending = matches!(e, jota_agent::AgentError::Pending(_));
                line(&e.to_string(), None)?;
                if once {
                    return Ok(if pending { 3 } else { 2 });
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(
                    config.server.max_backoff_seconds.max(5),
                ));
            }
        }
    };
    if let Err(e) = fleet.after_boot() {
        line(&format!("after boot: {e}"), None)?;
    }
    loop {
        let (next, report) = fleet.tick();
        line(&report.event, report.deployment.as_deref())?;
        match next {
            Next::Sleep(d) => {
                if once {
                    return Ok(if report.event.starts_with("error") {
                        2
                    } else {
                        0
                    });
                }
                std::thread::sleep(d);
            }
            Next::Reboot => {
                let argv = &config.validate.reboot_command;
                if root.is_host() && !argv.is_empty() {
                    jota_agent::run::run(argv, &Vec::new(), std::time::Duration::from_secs(60))
                        .map_err(|e| anyhow::anyhow!("reboot: {e}"))?;
                } else {
                    line(
                        "switched: reboot the device (jota sim boot) to run the update",
                        None,
                    )?;
                }
                return Ok(0);
            }
            Next::PowerLost => return Ok(1),
        }
    }
}

fn describe(v: &Verdict) -> String {
    match v {
        Verdict::NothingPending { slot, healthy } => format!(
            "no update pending; slot {slot} is {}",
            if *healthy {
                "healthy and marked good"
            } else {
                "NOT healthy"
            }
        ),
        Verdict::Committed { version, slot } => {
            format!("version {version} on slot {slot} passed validation and is committed")
        }
        Verdict::Failed {
            version,
            attempts,
            reason,
            action,
        } => {
            format!("version {version} failed validation (attempt {attempts}, {action}): {reason}")
        }
        Verdict::RolledBack { version, slot } => {
            format!("rolled back: version {version} did not stay up; running slot {slot}")
        }
        Verdict::Interrupted { version } => format!(
            "the install of {version} was interrupted before the switch; `jota install` resumes it"
        ),
    }
}
