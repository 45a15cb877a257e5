//! The agent's side of the fleet server (`jota agent run`, seed 001 §2.1): provisioning on
//! first start, polling with jitter and exponential backoff, status reports with progress
//! through every stage, the chunked resumable download (verified chunks are kept on the data
//! partition and never fetched again), install, reboot, the outcome after the reboot,
//! inventory and telemetry.
//!
//! One [`Fleet::tick`] is one wake of the agent; it answers what to do next ([`Next`]): sleep,
//! reboot (the update is switched), or — on the simulator — that the power was cut. The
//! state that must survive a reboot or a power cut is the install journal and `fleet.json`
//! (which deployment the device works on) on the data partition; everything else is asked
//! again of the server, so a tick is safe to repeat at any point.

use crate::delta;
use crate::device::Device;
use crate::install::{install, install_from, keyring, power_lost, InstallOptions};
use crate::journal::{DataDir, Journal, State};
use crate::{AgentError, Config};
use jota_bootctl::{DeviceRoot, Target};
use jota_delta::remote::{FetchOptions, Remote};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the agent does after a tick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait this long, then tick again.
    Sleep(Duration),
    /// An update is switched: reboot into it (validation runs at boot).
    Reboot,
    /// The device lost power during the tick (only the simulator says so; a real device
    /// simply stops).
    PowerLost,
}

/// A deployment offered by a poll (the server's `Assignment`).
#[derive(Clone, Debug, Deserialize)]
pub struct Assignment {
    /// Deployment id.
    pub id: String,
    /// Version it installs.
    pub version: String,
    /// Artifact path on the server (`/artifacts/ID`).
    pub url: String,
    /// Artifact size.
    #[serde(default)]
    pub size: i64,
    /// sha256 of the bundle's manifest (the journal's bundle id).
    #[serde(default)]
    pub manifest_sha256: String,
    /// The operator cancelled it.
    #[serde(default)]
    pub cancel: bool,
    /// Whether to install now. `false`: download and hold (a download-only policy, or outside
    /// the maintenance window — decided by the server's clock, not the device's).
    #[serde(default = "yes")]
    pub install: bool,
    /// Why the install is held, when it is.
    #[serde(default)]
    pub hold_reason: String,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct PollReply {
    poll_seconds: u64,
    deployment: Option<Assignment>,
}

/// The deployment this device works on, kept in `DATA_DIR/fleet.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Deployment id.
    pub deployment: String,
    /// Version.
    pub version: String,
    /// The bundle's manifest sha256 (matches the journal's bundle id).
    pub manifest_sha256: String,
    /// `downloading`, `held` or `switched`.
    pub stage: String,
}

impl Work {
    /// The work of `a` at `stage`, for the bundle with this manifest hash.
    fn of(a: &Assignment, stage: &str, manifest_sha256: &str) -> Work {
        Work {
            deployment: a.id.clone(),
            version: a.version.clone(),
            manifest_sha256: manifest_sha256.to_string(),
            stage: stage.to_string(),
        }
    }
}

const WORK_FILE: &str = "fleet.json";

/// A connected agent.
pub struct Fleet {
    root: DeviceRoot,
    config: Config,
    http: reqwest::blocking::Client,
    base: String,
    /// hawkBit DDI instead of jota's device API.
    ddi: Option<crate::ddi::Controller>,
    /// The device id the server knows this device by.
    pub id: String,
    failures: u32,
    poll_seconds: u64,
    last_telemetry: Option<Instant>,
    inventory_sent: Option<String>,
    rng: u64,
    held_reported: Option<String>,
}

/// What `jota agent run` prints with `--json` and the demo reads: one tick's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct TickReport {
    /// Deployment worked on, if any.
    pub deployment: Option<String>,
    /// What happened.
    pub event: String,
}

/// A per-device, per-start seed for the jitter (so a fleet that restarts together does not
/// poll together).
fn jitter_seed(id: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (now ^ h) | 1
}

/// `d` spread by ± `pct` percent, by the random `r`.
fn spread(d: Duration, pct: u8, r: u64) -> Duration {
    let pct = pct as f64 / 100.0;
    let f = 1.0 + pct * ((r % 20001) as f64 / 10000.0 - 1.0);
    d.mul_f64(f.max(0.0))
}

/// Seconds to wait after `failures` failed attempts in a row: from the poll interval (at
/// most 30 s) doubling per failure, up to `max`.
fn backoff_secs(poll_seconds: u64, failures: u32, max: u64) -> u64 {
    let base = poll_seconds.clamp(1, 30);
    base.saturating_mul(1u64 << failures.min(20))
        .min(max.max(1))
}

fn cfg(what: impl std::fmt::Display) -> AgentError {
    AgentError::Config(what.to_string())
}

fn net(url: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Download(format!("{url}: {e}"))
}

impl Fleet {
    /// Connects the device at `root` to its server: provisions it on first start (key pair
    /// on the data partition, CSR, certificate from the fleet CA) and builds the HTTP
    /// client — mTLS with the pinned fleet CA for `https://`, the device token otherwise.
    /// [`AgentError::Pending`] while an operator has not accepted the device.
    pub fn connect(root: DeviceRoot, config: Config) -> Result<Fleet, AgentError> {
        let s = &config.server;
        if s.url.is_empty() {
            return Err(cfg(
                "no fleet server: set [server] url in /etc/jota/agent.toml",
            ));
        }
        let base = s.url.trim_end_matches('/').to_string();
        if s.protocol == "ddi" {
            return Self::connect_ddi(root, config, base);
        }
        let dir = identity_dir(&root, &config);
        if !dir.join("device.pem").exists() {
            Self::provision(&root, &config, &dir)?;
        }
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p)
                .map(|t| t.trim().to_string())
                .map_err(|e| AgentError::io(&p, e))
        };
        let id = read("id")?;
        let http = if base.starts_with("https://") {
            crate::provision::client(&dir)?
        } else {
            // Plain HTTP (a trusted network, or TLS ended by a proxy): the token is the
            // credential.
            let mut h = reqwest::header::HeaderMap::new();
            let v = format!("Bearer {}", read("token")?);
            h.insert(
                reqwest::header::AUTHORIZATION,
                v.parse()
                    .map_err(|_| cfg("the device token is not a header value"))?,
            );
            reqwest::blocking::Client::builder()
                .default_headers(h)
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(300))
                .build()
                .map_err(cfg)?
        };
        Ok(Fleet {
            poll_seconds: s.poll_seconds,
            rng: jitter_seed(&id),
            root,
            config,
            http,
            base,
            ddi: None,
            id,
            failures: 0,
            last_telemetry: None,
            inventory_sent: None,
            held_reported: None,
        })
    }

    /// A hawkBit target: `Authorization: TargetToken`, the configured CA pinned when there
    /// is one (a hawkBit behind a public CA otherwise uses the system's roots).
    fn connect_ddi(root: DeviceRoot, config: Config, base: String) -> Result<Fleet, AgentError> {
        let s = &config.server;
        if s.ddi_token.is_empty() {
            return Err(cfg(
                "server.ddi_token: the target's security token is required for DDI",
            ));
        }
        let id = if s.ddi_controller_id.is_empty() {
            let (serial, mac) = crate::provision::hardware_identity(root.dir());
            if serial.is_empty() || mac.is_empty() {
                return Err(cfg(
                    "server.ddi_controller_id: no serial number and MAC to derive it from",
                ));
            }
            crate::provision::device_id(&serial, &mac)
        } else {
            s.ddi_controller_id.clone()
        };
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("TargetToken {}", s.ddi_token)
                .parse()
                .map_err(|_| cfg("server.ddi_token is not a header value"))?,
        );
        let mut b = reqwest::blocking::Client::builder()
            .default_headers(h)
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(300));
        if let Ok(pem) = std::fs::read(root.path(&s.ca)) {
            b = b.tls_built_in_root_certs(false).add_root_certificate(
                reqwest::Certificate::from_pem(&pem).map_err(|e| cfg(format!("server.ca: {e}")))?,
            );
        }
        let http = b.build().map_err(cfg)?;
        let ddi = crate::ddi::Controller {
            base: format!("{base}/{}/controller/v1/{id}", s.ddi_tenant),
        };
        Ok(Fleet {
            poll_seconds: s.poll_seconds,
            rng: jitter_seed(&id),
            root,
            http,
            base,
            ddi: Some(ddi),
            id,
            failures: 0,
            last_telemetry: None,
            inventory_sent: None,
            held_reported: None,
            config,
        })
    }

    fn provision(
        root: &DeviceRoot,
        config: &Config,
        dir: &std::path::Path,
    ) -> Result<(), AgentError> {
        let s = &config.server;
        let ca_path = root.path(&s.ca);
        let ca = match std::fs::read(&ca_path) {
            Ok(b) => Some(b),
            Err(_) if s.url.starts_with("http://") => None,
            Err(e) => {
                return Err(cfg(format!(
                    "server.ca {}: {e} (the fleet CA to pin at first contact)",
                    ca_path.display()
                )))
            }
        };
        let mut token = s.provision_token.clone();
        if token.is_empty() && !s.provision_token_file.is_empty() {
            let p = root.path(&s.provision_token_file);
            token = std::fs::read_to_string(&p)
                .map_err(|e| AgentError::io(&p, e))?
                .trim()
                .to_string();
        }
        let mut hardware = s.hardware.clone();
        if hardware.is_empty() {
            if let Ok(dev) = Device::open(root.clone(), config.clone()) {
                if let Some(b) = dev.board_ids().ok().and_then(|i| i.into_iter().next()) {
                    hardware = format!("{}-{}-{}", b.board_id, b.sku, b.fab);
                }
            }
        }
        let (serial, mac) = crate::provision::hardware_identity(root.dir());
        let p = crate::provision::provision(&crate::provision::Options {
            server: s.url.clone(),
            ca,
            token: (!token.is_empty()).then_some(token),
            serial,
            mac,
            id: None,
            hardware,
            dir: dir.to_path_buf(),
            wait: Duration::ZERO,
        })?;
        if p.state != "accepted" {
            return Err(AgentError::Pending(format!(
                "device {} waits for an operator (jota fleet accept {})",
                p.id, p.id
            )));
        }
        Ok(())
    }

    fn open(&self) -> Result<Device, AgentError> {
        Device::open(self.root.clone(), self.config.clone())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `d` spread by ± the configured jitter.
    fn jitter(&mut self, d: Duration) -> Duration {
        // xorshift: the spread need not be cryptographic, only different per device.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        spread(d, self.config.server.jitter_pct, self.rng)
    }

    /// The wait after `failures` failed attempts in a row: the poll interval doubled per
    /// failure up to the configured maximum, spread by the jitter.
    pub fn backoff(&mut self) -> Duration {
        let secs = backoff_secs(
            self.poll_seconds,
            self.failures,
            self.config.server.max_backoff_seconds,
        );
        self.jitter(Duration::from_secs(secs))
    }

    fn work(&self, data: &DataDir<'_>) -> Option<Work> {
        let p = data.host_path().join(WORK_FILE);
        std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn set_work(&self, data: &DataDir<'_>, w: Option<&Work>) -> Result<(), AgentError> {
        match w {
            Some(w) => data.set(
                WORK_FILE,
                &serde_json::to_string(w).map_err(|e| cfg(e.to_string()))?,
            )?,
            None => {
                if data.host_path().join(WORK_FILE).exists() {
                    data.remove(WORK_FILE)?;
                }
            }
        }
        Ok(())
    }

    /// Sends a status report. `Ok(false)`: the server no longer has the deployment active
    /// (cancelled, or already final) — the caller forgets it.
    fn report(
        &self,
        deployment: &str,
        state: &str,
        progress: u64,
        bytes: u64,
        message: &str,
    ) -> Result<bool, AgentError> {
        if let Some(c) = &self.ddi {
            return crate::ddi::feedback(&self.http, c, deployment, state, progress, message);
        }
        let url = self.url("/api/v1/device/status");
        let r = self
            .http
            .post(&url)
            .json(&serde_json::json!({
                "deployment": deployment,
                "state": state,
                "progress": progress.min(100),
                "downloaded_bytes": bytes,
                "message": message,
            }))
            .send()
            .map_err(|e| net(&url, e))?;
        match r.status().as_u16() {
            200..=299 => Ok(true),
            409 | 404 => Ok(false),
            s => Err(net(
                &url,
                format!("HTTP {s}: {}", r.text().unwrap_or_default()),
            )),
        }
    }

    /// What the agent does once after every boot, before its first poll: report the outcome
    /// of an update that rebooted (committed, rolled back, or still validating), and the
    /// inventory.
    pub fn after_boot(&mut self) -> Result<(), AgentError> {
        let dev = self.open()?;
        self.settle(&dev)?;
        self.inventory(&dev, true)
    }

    /// Reports the outcome of the deployment in `fleet.json` if the journal has one.
    /// `Ok(true)`: it is switched and waits for its reboot.
    fn settle(&mut self, dev: &Device) -> Result<bool, AgentError> {
        let data = DataDir::new(&dev.storage, &dev.config.data_dir);
        let Some(w) = self.work(&data) else {
            return Ok(false);
        };
        if w.stage != "switched" {
            return Ok(false);
        }
        let j: Option<Journal> = data.journal().map_err(AgentError::Device)?;
        let Some(j) = j.filter(|j| j.bundle_id == w.manifest_sha256) else {
            // The journal is of another bundle: this one never got that far.
            self.set_work(&data, None)?;
            return Ok(false);
        };
        let (state, msg) = match &j.state {
            State::Switched => return Ok(true),
            State::Validating { attempts } => {
                self.report(
                    &w.deployment,
                    "validating",
                    100,
                    0,
                    &format!("validation failed {attempts} time(s); the boot logic decides"),
                )?;
                return Ok(false);
            }
            State::Committed => (
                "success",
                format!("{} committed on slot {}", j.version, j.target_slot),
            ),
            State::RolledBack => (
                "rolled-back",
                format!(
                    "{} did not pass validation on slot {}; running {} again{}",
                    j.version,
                    j.target_slot,
                    j.from_slot,
                    j.error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            ),
            State::Failed | State::Interrupted | State::Installing { .. } | State::Installed => {
                return Ok(false)
            }
        };
        self.report(&w.deployment, state, 100, 0, &msg)?;
        tracing::info!(deployment = %w.deployment, state, "reported the update's outcome");
        self.set_work(&data, None)?;
        self.inventory_sent = None;
        self.inventory(dev, false)?;
        Ok(false)
    }

    /// Sends the inventory (seed §9.3) when the running version changed since the last one
    /// (or always with `force`).
    fn inventory(&mut self, dev: &Device, force: bool) -> Result<(), AgentError> {
        let version = dev.running_version().unwrap_or_default();
        if !force && self.inventory_sent.as_deref() == Some(version.as_str()) {
            return Ok(());
        }
        let body = inventory(dev);
        if let Some(c) = &self.ddi {
            crate::ddi::config_data(&self.http, c, &body)?;
            self.inventory_sent = Some(version);
            return Ok(());
        }
        let url = self.url("/api/v1/device/inventory");
        let r = self
            .http
            .put(&url)
            .json(&body)
            .send()
            .map_err(|e| net(&url, e))?;
        if !r.status().is_success() {
            return Err(net(&url, format!("HTTP {}", r.status())));
        }
        self.inventory_sent = Some(version);
        Ok(())
    }

    fn telemetry(&mut self, dev: &Device) {
        let every = self.config.server.telemetry_seconds;
        if every == 0
            || self.ddi.is_some()
            || self
                .last_telemetry
                .is_some_and(|t| t.elapsed() < Duration::from_secs(every))
        {
            return;
        }
        let body = telemetry(dev, &self.id);
        let url = self.url("/api/v1/device/telemetry");
        match self.http.post(&url).json(&body).send() {
            Ok(r) if r.status().is_success() => self.last_telemetry = Some(Instant::now()),
            Ok(r) => tracing::warn!(status = %r.status(), "telemetry refused"),
            Err(e) => tracing::warn!("telemetry: {e}"),
        }
    }

    /// One wake of the agent: poll, and work on what the server assigned.
    pub fn tick(&mut self) -> (Next, TickReport) {
        match self.cycle() {
            Ok((next, rep)) => {
                self.failures = 0;
                (next, rep)
            }
            Err(e) => {
                if self.open().is_ok_and(|d| power_lost(&d.storage)) {
                    return (
                        Next::PowerLost,
                        TickReport {
                            deployment: None,
                            event: format!("power lost: {e}"),
                        },
                    );
                }
                self.failures = self.failures.saturating_add(1);
                let wait = self.backoff();
                tracing::warn!(failures = self.failures, wait_s = wait.as_secs_f64(), "{e}");
                (
                    Next::Sleep(wait),
                    TickReport {
                        deployment: None,
                        event: format!("error (retry in {:.0}s): {e}", wait.as_secs_f64()),
                    },
                )
            }
        }
    }

    fn cycle(&mut self) -> Result<(Next, TickReport), AgentError> {
        let dev = self.open()?;
        let rep = |d: Option<&str>, e: String| TickReport {
            deployment: d.map(String::from),
            event: e,
        };
        if self.settle(&dev)? {
            return Ok((Next::Reboot, rep(None, "switched; rebooting".into())));
        }
        if let Err(e) = self.inventory(&dev, false) {
            tracing::warn!("inventory: {e}");
        }
        self.telemetry(&dev);
        let running = dev.running_version().unwrap_or_default();
        let poll = self.poll(&running)?;
        self.poll_seconds = poll.poll_seconds.clamp(1, 24 * 3600);
        let sleep = Next::Sleep(self.jitter(Duration::from_secs(self.poll_seconds)));
        let data = DataDir::new(&dev.storage, &dev.config.data_dir);
        let Some(a) = poll.deployment else {
            if let Some(w) = self.work(&data) {
                // The server dropped it (cancelled before it started, or finished).
                self.forget(&dev, &w.deployment)?;
            }
            return Ok((sleep, rep(None, "idle".into())));
        };
        let work = self.work(&data);
        if a.cancel {
            if work
                .as_ref()
                .is_some_and(|w| w.deployment == a.id && w.stage == "switched")
            {
                self.cancelled(&a, false)?;
                return Ok((
                    sleep,
                    rep(
                        Some(&a.id),
                        "cancel asked after the switch: finishing".into(),
                    ),
                ));
            }
            self.cancelled(&a, true)?;
            self.forget(&dev, &a.id)?;
            return Ok((sleep, rep(Some(&a.id), "cancelled".into())));
        }
        // Already running it (the outcome was reported, or it was installed by hand).
        let journal = data.journal().map_err(AgentError::Device)?;
        if running == a.version
            && journal.as_ref().is_some_and(|j| {
                j.state == State::Committed
                    && (a.manifest_sha256.is_empty() || j.bundle_id == a.manifest_sha256)
            })
        {
            self.report(&a.id, "success", 100, 0, &format!("{running} is running"))?;
            self.set_work(&data, None)?;
            return Ok((sleep, rep(Some(&a.id), "already running it".into())));
        }
        drop(dev);
        self.update(&a)
    }

    fn poll(&self, running: &str) -> Result<PollReply, AgentError> {
        if let Some(c) = &self.ddi {
            let (poll_seconds, deployment) = crate::ddi::poll(&self.http, c)?;
            return Ok(PollReply {
                poll_seconds,
                deployment,
            });
        }
        let url = self.url("/api/v1/device/poll");
        let r = self
            .http
            .get(&url)
            .query(&[("version", running)])
            .send()
            .map_err(|e| net(&url, e))?;
        if !r.status().is_success() {
            let s = r.status();
            return Err(net(
                &url,
                format!("HTTP {s}: {}", r.text().unwrap_or_default()),
            ));
        }
        r.json().map_err(|e| net(&url, e))
    }

    /// Tells the server a cancellation took effect (`done`) or came too late.
    fn cancelled(&self, a: &Assignment, done: bool) -> Result<(), AgentError> {
        let msg = if done {
            "cancelled by the operator before the switch"
        } else {
            "too late to cancel: the update is switched and finishes"
        };
        match &self.ddi {
            Some(c) => crate::ddi::cancel_feedback(&self.http, c, &a.id, done, msg).map(|_| ()),
            None if done => self.report(&a.id, "failure", 0, 0, msg).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Drops a deployment's downloaded data and `fleet.json`.
    fn forget(&self, dev: &Device, deployment: &str) -> Result<(), AgentError> {
        let data = DataDir::new(&dev.storage, &dev.config.data_dir);
        // One deployment at a time: whatever was fetched belongs to this one.
        tracing::info!(deployment, "dropping what was downloaded for it");
        let _ = std::fs::remove_dir_all(data.host_path().join("delta"));
        let _ = std::fs::remove_dir_all(data.host_path().join("downloads"));
        self.set_work(&data, None)
    }

    /// Downloads (resuming), installs and switches `a`.
    fn update(&mut self, a: &Assignment) -> Result<(Next, TickReport), AgentError> {
        let mut dev = self.open()?;
        let data_path = DataDir::new(&dev.storage, &dev.config.data_dir).host_path();
        {
            let data = DataDir::new(&dev.storage, &dev.config.data_dir);
            if self.work(&data).map(|x| x.deployment) != Some(a.id.clone()) {
                self.set_work(&data, Some(&Work::of(a, "downloading", &a.manifest_sha256)))?;
            }
        }
        let url = if a.url.starts_with("http") {
            a.url.clone()
        } else {
            self.url(&a.url)
        };
        let opts = InstallOptions {
            source: url.clone(),
            ..InstallOptions::default()
        };
        let ring = keyring(&dev, &opts)?;
        let progress = Progress::new(self, &a.id);
        let remote = Remote::with_client(&url, self.http.clone());
        let result = match delta::open(remote, &ring, &data_path.join("delta")) {
            Err(e @ AgentError::Rejected(_)) => Err(e),
            Err(e) => return Err(e),
            Ok(Some(src)) => {
                // Chunked: seed from the running slot, fetch the rest (resuming).
                let current = dev.current_slot()?;
                let seeds = delta::seeds(&dev, &src, current)?;
                let found: Vec<_> = seeds
                    .iter()
                    .map(|x| x.as_ref().map(|x| x.seed.clone()))
                    .collect();
                let plan = jota_delta::plan::plan(&src.parsed, &found);
                let cached: u64 = src
                    .parsed
                    .manifest
                    .components
                    .iter()
                    .enumerate()
                    .flat_map(|(i, c)| {
                        let plan = &plan;
                        let cache = &src.cache;
                        c.chunks.iter().enumerate().filter_map(move |(ci, ch)| {
                            let seeded = plan.components.get(i).is_some_and(|p| p.seeded[ci]);
                            (!seeded && cache.has(i, ci)).then_some(ch.size)
                        })
                    })
                    .sum();
                progress.start("downloading", plan.fetch_bytes, cached);
                let fetch = FetchOptions {
                    connections: self.config.server.connections,
                    ..FetchOptions::default()
                };
                src.seed_and_fetch(seeds, &fetch, &|n| progress.add(n))
                    .map_err(|e| AgentError::Download(e.to_string()))?;
                if !a.install {
                    let bytes = progress.bytes();
                    drop(progress);
                    return self.hold(&dev, a, bytes);
                }
                progress.start("installing", 0, 0);
                install_from(
                    &mut dev,
                    &src,
                    &opts,
                    &mut |_, _| Ok(()),
                    &|_, done, total| progress.set(done, total),
                )
            }
            Ok(None) => {
                // The server serves no ranges: download the file whole (resumable).
                progress.start("downloading", a.size.max(0) as u64, 0);
                let got = crate::download::download_with(
                    &self.http,
                    &url,
                    &data_path.join("downloads"),
                    &crate::download::DownloadOptions::default(),
                    &|done, total| progress.set(done, total.unwrap_or(0)),
                )?;
                if !a.install {
                    let bytes = progress.bytes();
                    drop(progress);
                    return self.hold(&dev, a, bytes);
                }
                progress.start("installing", 0, 0);
                let opts = InstallOptions {
                    bundle: got.path.clone(),
                    ..opts
                };
                let r = install(&mut dev, &opts, &|_, done, total| progress.set(done, total));
                if r.is_ok() {
                    let _ = std::fs::remove_file(&got.path);
                }
                r
            }
        };
        let data = DataDir::new(&dev.storage, &dev.config.data_dir);
        match result {
            Ok(r) if r.switched => {
                // The journal names the bundle that was switched to (a DDI server does not
                // tell the manifest hash beforehand).
                let bundle_id = data
                    .journal()
                    .ok()
                    .flatten()
                    .map(|j| j.bundle_id)
                    .unwrap_or_else(|| a.manifest_sha256.clone());
                self.set_work(&data, Some(&Work::of(a, "switched", &bundle_id)))?;
                self.report(
                    &a.id,
                    "rebooting",
                    100,
                    progress.bytes(),
                    &format!(
                        "{} written to slot {} and switched",
                        r.version, r.target_slot
                    ),
                )?;
                let _ = std::fs::remove_dir_all(
                    data.host_path()
                        .join("delta")
                        .join(&bundle_id[..bundle_id.len().min(16)]),
                );
                let next = if self.config.server.reboot {
                    Next::Reboot
                } else {
                    Next::Sleep(Duration::from_secs(self.poll_seconds))
                };
                Ok((
                    next,
                    TickReport {
                        deployment: Some(a.id.clone()),
                        event: format!("{} installed and switched; rebooting", r.version),
                    },
                ))
            }
            Ok(r) if r.live => {
                // Application layers: applied and healthy; no reboot.
                self.report(
                    &a.id,
                    "success",
                    100,
                    progress.bytes(),
                    &format!("application layers {} switched and healthy", r.version),
                )?;
                self.forget(&dev, &a.id)?;
                self.inventory_sent = None;
                Ok((
                    Next::Sleep(Duration::from_secs(self.poll_seconds)),
                    TickReport {
                        deployment: Some(a.id.clone()),
                        event: format!("application layers {} applied", r.version),
                    },
                ))
            }
            Ok(r) => Err(AgentError::Device(format!(
                "{} installed but not switched",
                r.version
            ))),
            Err(AgentError::RolledBack(why)) => {
                self.report(&a.id, "rolled-back", 100, progress.bytes(), &why)?;
                self.forget(&dev, &a.id)?;
                Ok((
                    Next::Sleep(Duration::from_secs(self.poll_seconds)),
                    TickReport {
                        deployment: Some(a.id.clone()),
                        event: format!("rolled back: {why}"),
                    },
                ))
            }
            Err(e) if power_lost(&dev.storage) => Err(e),
            Err(e @ AgentError::Rejected(_)) | Err(e @ AgentError::Verify(_)) => {
                // Final: this device will not take this bundle.
                self.report(&a.id, "failure", 100, progress.bytes(), &e.to_string())?;
                self.forget(&dev, &a.id)?;
                Ok((
                    Next::Sleep(Duration::from_secs(self.poll_seconds)),
                    TickReport {
                        deployment: Some(a.id.clone()),
                        event: format!("failed: {e}"),
                    },
                ))
            }
            Err(e) => {
                // Worth another try (pre-flight, a busy device, the network): say why.
                let _ = self.report(
                    &a.id,
                    progress.state(),
                    progress.pct(),
                    progress.bytes(),
                    &format!("will retry: {e}"),
                );
                Err(e)
            }
        }
    }

    /// Downloaded, but the server holds the install (download-only or outside the window).
    fn hold(
        &mut self,
        dev: &Device,
        a: &Assignment,
        bytes: u64,
    ) -> Result<(Next, TickReport), AgentError> {
        let data = DataDir::new(&dev.storage, &dev.config.data_dir);
        self.set_work(&data, Some(&Work::of(a, "held", &a.manifest_sha256)))?;
        if self.held_reported.as_deref() != Some(a.id.as_str()) {
            let why = if a.hold_reason.is_empty() {
                "held by the server"
            } else {
                a.hold_reason.as_str()
            };
            let state = if self.ddi.is_some() {
                "held"
            } else {
                "downloading"
            };
            self.report(
                &a.id,
                state,
                100,
                bytes,
                &format!("downloaded; install held: {why}"),
            )?;
            self.held_reported = Some(a.id.clone());
        }
        Ok((
            Next::Sleep(self.jitter(Duration::from_secs(self.poll_seconds))),
            TickReport {
                deployment: Some(a.id.clone()),
                event: "downloaded; install held".into(),
            },
        ))
    }
}

/// Progress of one stage, reported to the server when it moved by 10 % or 2 s passed.
struct Progress<'a> {
    fleet: &'a Fleet,
    deployment: String,
    inner: Mutex<ProgressState>,
}

struct ProgressState {
    state: &'static str,
    done: u64,
    total: u64,
    fetched: u64,
    last_pct: u64,
    last_at: Instant,
}

impl<'a> Progress<'a> {
    fn new(fleet: &'a Fleet, deployment: &str) -> Progress<'a> {
        Progress {
            fleet,
            deployment: deployment.to_string(),
            inner: Mutex::new(ProgressState {
                state: "downloading",
                done: 0,
                total: 0,
                fetched: 0,
                last_pct: 0,
                last_at: Instant::now(),
            }),
        }
    }

    /// A new stage: `done` of `total` already there (resumed chunks).
    fn start(&self, state: &'static str, total: u64, done: u64) {
        if let Ok(mut p) = self.inner.lock() {
            p.state = state;
            p.total = total + done;
            p.done = done;
            p.last_pct = u64::MAX;
        }
        self.send(true);
    }

    fn add(&self, n: u64) {
        if let Ok(mut p) = self.inner.lock() {
            p.done += n;
            p.fetched += n;
        }
        self.send(false);
    }

    fn set(&self, done: u64, total: u64) {
        if let Ok(mut p) = self.inner.lock() {
            p.done = done;
            p.total = total;
        }
        self.send(false);
    }

    fn pct(&self) -> u64 {
        self.inner
            .lock()
            .map(|p| (p.done * 100).checked_div(p.total).unwrap_or(0).min(100))
            .unwrap_or(0)
    }

    fn bytes(&self) -> u64 {
        self.inner.lock().map(|p| p.fetched).unwrap_or(0)
    }

    fn state(&self) -> &'static str {
        self.inner.lock().map(|p| p.state).unwrap_or("downloading")
    }

    fn send(&self, force: bool) {
        let pct = self.pct();
        let (state, bytes) = {
            let Ok(mut p) = self.inner.lock() else { return };
            let due = force
                || p.last_pct == u64::MAX
                || pct >= p.last_pct + 10
                || (pct != p.last_pct && p.last_at.elapsed() >= Duration::from_secs(2));
            if !due {
                return;
            }
            p.last_pct = pct;
            p.last_at = Instant::now();
            (p.state, p.fetched)
        };
        if let Err(e) = self.fleet.report(&self.deployment, state, pct, bytes, "") {
            tracing::debug!("progress report: {e}");
        }
    }
}

fn read_trim(root: &DeviceRoot, abs: &str) -> Option<String> {
    root.read_text(abs)
        .ok()
        .flatten()
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .filter(|s| !s.is_empty())
}

fn uptime(root: &DeviceRoot) -> Option<u64> {
    read_trim(root, "/proc/uptime")?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .map(|s| s as u64)
}

/// The inventory (seed 001 §9.3): versions, slots, board and the running OS.
pub fn inventory(dev: &Device) -> serde_json::Value {
    let root = &dev.root;
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    let files = data.status();
    let status = |t| dev.boot.status(t).ok();
    let boards: Vec<String> = dev
        .board_ids()
        .map(|ids| {
            ids.iter()
                .map(|b| format!("{}-{}-{}", b.board_id, b.sku, b.fab))
                .collect()
        })
        .unwrap_or_default();
    let mut v = serde_json::json!({
        "ota_version": dev.running_version(),
        "agent_version": env!("CARGO_PKG_VERSION"),
        "backend": dev.boot.name(),
        "boards": boards,
        "model": read_trim(root, "/proc/device-tree/model"),
        "l4t_release": read_trim(root, "/etc/nv_tegra_release"),
        "kernel": read_trim(root, "/proc/sys/kernel/osrelease"),
        "rootfs": status(Target::Rootfs),
        "bootloader": status(Target::Bootloader),
        "installed_version": files.installed_version,
        "min_version": files.min_version,
        "rollback_count": files.rollback_count,
        "layers": crate::layers::state(dev),
    });
    if let (Some(u), Some(o)) = (uptime(root), v.as_object_mut()) {
        o.insert("uptime_seconds".into(), u.into());
    }
    v
}

/// Telemetry (seed 001 §20.1's fields) from sysfs/procfs under the device root; what a
/// device does not have is left out.
pub fn telemetry(dev: &Device, id: &str) -> serde_json::Value {
    let root = &dev.root;
    let files = DataDir::new(&dev.storage, &dev.config.data_dir).status();
    let rootfs = dev.boot.status(Target::Rootfs).ok();
    let slot = rootfs.as_ref().map(|s| s.current);
    let successful = rootfs
        .as_ref()
        .and_then(|s| s.slot(s.current).and_then(|x| x.successful));
    let temp = (0..8)
        .filter_map(|i| {
            read_trim(
                root,
                &format!("/sys/devices/virtual/thermal/thermal_zone{i}/temp"),
            )
        })
        .filter_map(|t| t.parse::<i64>().ok())
        .max();
    let mem = read_trim(root, "/proc/meminfo").and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    });
    // The GPU load is per mille on Jetsons.
    let gpu = [
        "/sys/devices/platform/gpu.0/load",
        "/sys/devices/gpu.0/load",
    ]
    .iter()
    .find_map(|p| read_trim(root, p)?.parse::<f64>().ok())
    .map(|v| v / 10.0);
    let usage = rootfs_usage(&root.path("/"));
    let mut t = serde_json::json!({
        "device_id": id,
        "timestamp": crate::journal::now(),
        "ota_version": dev.running_version(),
        "boot_slot": slot.map(|s| s.to_string()),
        "boot_successful": successful,
        "rollback_count": files.rollback_count,
    });
    let extra = [
        ("uptime_seconds", uptime(root).map(serde_json::Value::from)),
        ("rootfs_usage_pct", usage.map(serde_json::Value::from)),
        ("temperature_mc", temp.map(serde_json::Value::from)),
        ("memory_available_kb", mem.map(serde_json::Value::from)),
        ("gpu_utilization_pct", gpu.map(serde_json::Value::from)),
        (
            "last_ota_status",
            files.last_status.map(serde_json::Value::from),
        ),
        (
            "last_ota_timestamp",
            files.last_timestamp.map(serde_json::Value::from),
        ),
    ];
    if let Some(o) = t.as_object_mut() {
        for (k, v) in extra {
            if let Some(v) = v {
                o.insert(k.into(), v);
            }
        }
    }
    t
}

fn rootfs_usage(path: &std::path::Path) -> Option<f64> {
    let s = rustix::fs::statvfs(path).ok()?;
    if s.f_blocks == 0 {
        return None;
    }
    let used = s.f_blocks.saturating_sub(s.f_bfree) as f64;
    Some((used * 1000.0 / s.f_blocks as f64).round() / 10.0)
}

/// The identity directory of a device (key, certificate, CA, token, id).
pub fn identity_dir(root: &DeviceRoot, config: &Config) -> PathBuf {
    root.path(&config.data_dir).join("identity")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_maximum() {
        assert_eq!(backoff_secs(300, 0, 3600), 30);
        assert_eq!(backoff_secs(300, 1, 3600), 60);
        assert_eq!(backoff_secs(300, 6, 3600), 1920);
        assert_eq!(backoff_secs(300, 7, 3600), 3600);
        assert_eq!(backoff_secs(300, 40, 3600), 3600);
        assert_eq!(backoff_secs(1, 0, 4), 1);
        assert_eq!(backoff_secs(1, 3, 4), 4);
        assert_eq!(backoff_secs(0, 0, 0), 1);
    }

    #[test]
    fn jitter_spreads_within_the_percentage_and_differs_per_device() {
        let d = Duration::from_secs(100);
        let mut seen = std::collections::BTreeSet::new();
        let mut r = jitter_seed("a");
        for _ in 0..2000 {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            let s = spread(d, 20, r).as_secs_f64();
            assert!((80.0..=120.0).contains(&s), "{s}");
            seen.insert(s as u64);
        }
        assert!(seen.len() > 30, "spread over the range: {seen:?}");
        assert_eq!(spread(d, 0, 12345), d);
        assert_ne!(jitter_seed("device-a"), jitter_seed("device-b"));
    }
}
