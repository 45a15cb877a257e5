//! `jota fleet`: the fleet server's admin API from the command line.

use crate::util::{print_json, thousands};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `jota fleet`.
#[derive(Parser, Debug)]
pub struct Args {
    /// Server URL.
    #[arg(long, env = "JOTA_SERVER")]
    server: String,
    /// Admin token.
    #[arg(long, env = "JOTA_TOKEN")]
    token: String,
    /// CA certificate (PEM) to trust for an https:// server, e.g. the server's own
    /// DATA_DIR/tls/ca.pem.
    #[arg(long, env = "JOTA_CA")]
    ca: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Upload a bundle (verified by the server against its keyring); prints the artifact id.
    Upload {
        /// The bundle.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List artifacts.
    Artifacts {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Register a device; prints its token (give it to the device once).
    AddDevice {
        /// Device id.
        id: String,
        /// Hardware (BOARDID-SKU-FAB).
        #[arg(long, default_value = "")]
        hardware: String,
        /// Tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List devices with their current deployment.
    Devices {
        /// Only hardware starting with this (`3767`, `3767-0005`).
        #[arg(long)]
        hardware: Option<String>,
        /// Only devices with this tag (repeatable: all of them), e.g. `region=eu`.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Only devices running this version (`none`: not reported).
        #[arg(long)]
        version: Option<String>,
        /// Only devices whose active deployment is in this state (`idle`: none).
        #[arg(long)]
        state: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// One device: inventory, newest telemetry, boots of the last day, deployments, alerts.
    Device {
        /// Device id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time sign-in link to the dashboard (valid 10 minutes).
    Dashboard {
        /// The page it opens (a /dashboard path).
        #[arg(long, default_value = "/dashboard")]
        next: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Alerts now (boot loops, updates stuck in their reboot, devices unreachable after an
    /// update, halted rollouts), pages first.
    Alerts {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Deploy an artifact to one device (replaces its active deployment).
    Deploy {
        /// Artifact id.
        #[arg(long)]
        artifact: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A deployment and the device's reports.
    Deployment {
        /// Deployment id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Replace a device's tags (rollout filters, `risk=canary`, `window=22:00-04:00`,
    /// `install=download-only` to download updates but hold their install).
    Tags {
        /// Device id.
        id: String,
        /// The tags (none: remove all).
        tags: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a deployment: at once if the device has not started it, else the device is
    /// asked (jota poll `cancel`, hawkBit DDI cancelAction) and it ends when it confirms.
    Cancel {
        /// Deployment id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Devices that asked to be provisioned without a provisioning token (and decisions).
    Pending {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Accept a pending device: it is registered and gets its certificate when it next asks.
    Accept {
        /// Device id.
        id: String,
        /// Tags to give it (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Reject a pending device (that key is refused from now on).
    Reject {
        /// Device id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Pre-authorised provisioning tokens (for factory images): create, list, revoke.
    #[command(subcommand)]
    ProvisionToken(TokenCmd),
    /// Staged rollouts: create, list, status, pause, resume, abort, evaluate.
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Load test: register N lightweight devices and have them poll; prints polls/s and
    /// latency percentiles (a benchmark, not for production servers).
    Loadgen {
        /// Devices to register.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Concurrent pollers.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds of polling.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Roll this artifact out over the devices first (timed), so polls return it.
        #[arg(long)]
        artifact: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCmd {
    /// Start a staged rollout of an artifact; prints its id.
    Create {
        /// Artifact id.
        #[arg(long)]
        artifact: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Only devices whose hardware starts with this (`3767`, `3767-0005`).
        #[arg(long)]
        hardware: Option<String>,
        /// Only devices with this tag (repeatable: all of them).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A phase, NAME:PERCENT[:SOAK_SECONDS] with cumulative percent (repeatable, in
        /// order, the last at 100). Default: canary:1:3600 10%:10:3600 50%:50:3600 all:100.
        #[arg(long = "phase")]
        phases: Vec<String>,
        /// Halt when failures exceed this percentage of the devices assigned so far.
        #[arg(long, default_value_t = 5.0)]
        max_failure_percent: f64,
        /// Halt when rollbacks exceed this percentage.
        #[arg(long, default_value_t = 1.0)]
        max_rollback_percent: f64,
        /// Most devices updating at once.
        #[arg(long)]
        max_concurrent: Option<u64>,
        /// How long a phase waits for offline devices before moving on, in seconds.
        #[arg(long, default_value_t = 86400)]
        straggler_seconds: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List rollouts.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A rollout's phases and device counts.
    Status {
        /// Rollout id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stop handing out deployments (devices already updating finish).
    Pause {
        /// Rollout id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Go on after a pause or an automatic halt.
    Resume {
        /// Rollout id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// End the rollout: deployments not yet started are canceled.
    Abort {
        /// Rollout id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate now (gates, phase advance, assignments) instead of at the server's next tick.
    Evaluate {
        /// Rollout id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Create one; prints the token (shown once).
    Create {
        /// Hardware the devices it registers get.
        #[arg(long, default_value = "")]
        hardware: String,
        /// Tags the devices it registers get (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// How many devices it may register.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// Hours until it expires (default: never).
        #[arg(long)]
        expires_hours: Option<i64>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List them (without the tokens).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one: it registers nobody from now on.
    Revoke {
        /// Token id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `NAME:PERCENT[:SOAK_SECONDS]`.
fn phase(s: &str) -> Result<Value> {
    let mut it = s.split(':');
    let (Some(name), Some(pct)) = (it.next(), it.next()) else {
        bail!("--phase {s}: NAME:PERCENT[:SOAK_SECONDS]");
    };
    let percent: f64 = pct
        .trim_end_matches('%')
        .parse()
        .with_context(|| format!("--phase {s}: percent `{pct}`"))?;
    let soak: u64 = match it.next() {
        Some(x) => x
            .parse()
            .with_context(|| format!("--phase {s}: soak seconds `{x}`"))?,
        None => 0,
    };
    if it.next().is_some() {
        bail!("--phase {s}: NAME:PERCENT[:SOAK_SECONDS]");
    }
    Ok(json!({ "name": name, "percent": percent, "soak_seconds": soak }))
}

/// Prints a rollout status for people.
fn show_status(v: &Value) -> Result<()> {
    let r = &v["rollout"];
    let phase = r["phase"].as_u64().unwrap_or(0) as usize;
    outln!(
        "rollout {} ({}): {} of artifact {}, phase {}{}",
        r["id"].as_str().unwrap_or_default(),
        r["name"].as_str().unwrap_or_default(),
        r["state"].as_str().unwrap_or_default(),
        r["artifact_id"].as_str().unwrap_or_default(),
        r["phases"][phase]["name"].as_str().unwrap_or_default(),
        match r["reason"].as_str() {
            Some(x) if !x.is_empty() => format!(": {x}"),
            _ => String::new(),
        }
    );
    outln!(
        "  {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "phase",
        "devices",
        "waiting",
        "assigned",
        "updating",
        "success",
        "failure",
        "rollback",
        "canceled"
    );
    let phases = v["phases"].as_array().cloned().unwrap_or_default();
    for (i, p) in phases.iter().chain([&v["total"]]).enumerate() {
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        outln!(
            "{} {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            if i == phase { '>' } else { ' ' },
            p["name"].as_str().unwrap_or("total"),
            n("devices"),
            n("waiting"),
            n("assigned"),
            n("updating"),
            n("success"),
            n("failure"),
            n("rolled_back"),
            n("canceled")
        );
    }
    Ok(())
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Client {
    fn call(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .context(self.base.clone())?;
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("(no message)");
            bail!("{}: {status}: {msg}", self.base);
        }
        Ok(body)
    }
    fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
    }
    fn post(&self, path: &str, v: &Value) -> Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(v))
    }
}

/// Runs `jota fleet`.
pub fn run(a: Args) -> Result<()> {
    let ca = match &a.ca {
        Some(p) => {
            let pem = std::fs::read(p).with_context(|| format!("--ca {}", p.display()))?;
            Some(pem)
        }
        None => None,
    };
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3600));
    if let Some(pem) = &ca {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem).context("--ca: not a PEM certificate")?,
        );
    }
    let c = Client {
        http: builder.build()?,
        base: a.server.trim_end_matches('/').to_string(),
        token: a.token.clone(),
    };
    match a.cmd {
        Cmd::Upload { file, json } => {
            let f = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
            let len = f.metadata()?.len();
            let body = reqwest::blocking::Body::sized(f, len);
            let v = c.call(
                c.http
                    .post(format!("{}/api/v1/artifacts", c.base))
                    .header("content-type", "application/octet-stream")
                    .body(body),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["id"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Artifacts { json } => {
            let v = c.get("/api/v1/artifacts")?;
            if json {
                return print_json(&v);
            }
            for a in v.as_array().into_iter().flatten() {
                outln!(
                    "{}  {:<16} {:>15} bytes  delta from base {:>15} bytes",
                    a["id"].as_str().unwrap_or_default(),
                    a["version"].as_str().unwrap_or_default(),
                    thousands(a["size"].as_u64().unwrap_or(0)),
                    thousands(a["chunked_bytes"].as_u64().unwrap_or(0))
                );
            }
            Ok(())
        }
        Cmd::AddDevice {
            id,
            hardware,
            tags,
            json,
        } => {
            let v = c.post(
                "/api/v1/devices",
                &json!({ "id": id, "hardware": hardware, "tags": tags }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["token"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Devices {
            hardware,
            tags,
            version,
            state,
            json,
        } => {
            let mut q: Vec<(&str, String)> = tags.into_iter().map(|t| ("tag", t)).collect();
            q.extend(hardware.map(|h| ("hardware", h)));
            q.extend(version.map(|v| ("version", v)));
            q.extend(state.map(|s| ("state", s)));
            let v = c.call(c.http.get(format!("{}/api/v1/devices", c.base)).query(&q))?;
            if json {
                return print_json(&v);
            }
            for d in v.as_array().into_iter().flatten() {
                let dep = &d["deployment"];
                outln!(
                    "{:<24} {:<12} {}",
                    d["id"].as_str().unwrap_or_default(),
                    d["version"].as_str().unwrap_or("-"),
                    if dep.is_null() {
                        "-".to_string()
                    } else {
                        format!(
                            "{} {} {}%",
                            dep["artifact_id"].as_str().unwrap_or_default(),
                            dep["state"].as_str().unwrap_or_default(),
                            dep["progress"]
                        )
                    }
                );
            }
            Ok(())
        }
        Cmd::Deploy {
            artifact,
            device,
            json,
        } => {
            let v = c.post(
                "/api/v1/deployments",
                &json!({ "artifact": artifact, "device": device }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["id"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Device { id, json } => {
            let v = c.get(&format!("/api/v1/devices/{id}"))?;
            if json {
                return print_json(&v);
            }
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
            outln!(
                "device {}  hardware {}  version {}",
                s("id"),
                s("hardware"),
                s("version")
            );
            let inv = v["inventory"].as_object().cloned().unwrap_or_default();
            for (k, x) in &inv {
                outln!(
                    "  {k}: {}",
                    x.as_str().map(String::from).unwrap_or(x.to_string())
                );
            }
            if let Some(t) = v["telemetry"]["report"].as_object() {
                let line: Vec<String> = t
                    .iter()
                    .map(|(k, x)| {
                        format!(
                            "{k}={}",
                            x.as_str().map(String::from).unwrap_or(x.to_string())
                        )
                    })
                    .collect();
                outln!("  telemetry: {}", line.join(" "));
            }
            outln!(
                "  boots in the last day: {}",
                v["boots"].as_array().map_or(0, |b| b.len())
            );
            for d in v["deployments"].as_array().into_iter().flatten().take(5) {
                outln!(
                    "  deployment {} {} {}",
                    d["id"].as_str().unwrap_or_default(),
                    d["artifact_id"].as_str().unwrap_or_default(),
                    d["state"].as_str().unwrap_or_default()
                );
            }
            for a in v["alerts"].as_array().into_iter().flatten() {
                outln!(
                    "  ALERT {}: {}",
                    a["kind"].as_str().unwrap_or_default(),
                    a["message"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Dashboard { next, json } => {
            let v = c.post("/api/v1/dashboard/links", &json!({ "next": next }))?;
            let url = format!("{}{}", c.base, v["path"].as_str().unwrap_or_default());
            if json {
                return print_json(&json!({ "url": url, "expires_seconds": v["expires_seconds"] }));
            }
            outln!("{url}");
            Ok(())
        }
        Cmd::Alerts { json } => {
            let v = c.get("/api/v1/alerts")?;
            if json {
                return print_json(&v);
            }
            for a in v.as_array().into_iter().flatten() {
                outln!(
                    "{:<11} {:<24} {:<18} {}",
                    a["severity"].as_str().unwrap_or_default(),
                    a["kind"].as_str().unwrap_or_default(),
                    a["device_id"]
                        .as_str()
                        .or(a["rollout_id"].as_str())
                        .unwrap_or("-"),
                    a["message"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Pending { json } => {
            let v = c.get("/api/v1/provisioning")?;
            if json {
                return print_json(&v);
            }
            for p in v.as_array().into_iter().flatten() {
                outln!(
                    "{:<18} {:<9} serial {} mac {} hardware {}",
                    p["id"].as_str().unwrap_or_default(),
                    p["state"].as_str().unwrap_or_default(),
                    p["serial"].as_str().unwrap_or_default(),
                    p["mac"].as_str().unwrap_or_default(),
                    p["hardware"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Accept { id, tags, json } => {
            let v = c.post(
                &format!("/api/v1/provisioning/{id}/accept"),
                &json!({ "tags": tags }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{id}: accepted; it gets its certificate when it next asks");
            Ok(())
        }
        Cmd::Reject { id, json } => {
            let v = c.post(&format!("/api/v1/provisioning/{id}/reject"), &json!({}))?;
            if json {
                return print_json(&v);
            }
            outln!("{id}: rejected");
            Ok(())
        }
        Cmd::ProvisionToken(TokenCmd::Create {
            hardware,
            tags,
            uses,
            expires_hours,
            json,
        }) => {
            let v = c.post(
                "/api/v1/provision-tokens",
                &json!({ "hardware": hardware, "tags": tags, "uses": uses,
                         "expires_seconds": expires_hours.map(|h| h * 3600) }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["token"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::ProvisionToken(TokenCmd::List { json }) => {
            let v = c.get("/api/v1/provision-tokens")?;
            if json {
                return print_json(&v);
            }
            for t in v.as_array().into_iter().flatten() {
                outln!(
                    "{}  uses left {:>6}  hardware {:<16} tags {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["uses_left"],
                    t["hardware"].as_str().unwrap_or_default(),
                    t["tags"]
                );
            }
            Ok(())
        }
        Cmd::ProvisionToken(TokenCmd::Revoke { id, json }) => {
            c.call(
                c.http
                    .post(format!("{}/api/v1/provision-tokens/{id}/revoke", c.base)),
            )?;
            if json {
                return print_json(&json!({ "id": id, "revoked": true }));
            }
            outln!("provisioning token {id}: revoked");
            Ok(())
        }
        Cmd::Tags { id, tags, json } => {
            let v = c.call(
                c.http
                    .put(format!("{}/api/v1/devices/{id}/tags", c.base))
                    .json(&json!({ "tags": tags })),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{id}: {}", tags.join(" "));
            Ok(())
        }
        Cmd::Cancel { id, json } => {
            let v = c.post(&format!("/api/v1/deployments/{id}/cancel"), &json!({}))?;
            if json {
                return print_json(&v);
            }
            if v["active"].as_bool() == Some(false) {
                outln!("deployment {id}: canceled");
            } else {
                outln!(
                    "deployment {id}: cancel asked; {} is told at its next poll",
                    v["device_id"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Deployment { id, json } => {
            let v = c.get(&format!("/api/v1/deployments/{id}"))?;
            if json {
                return print_json(&v);
            }
            let d = &v["deployment"];
            outln!(
                "deployment {id}: artifact {} to {}: {} {}%",
                d["artifact_id"].as_str().unwrap_or_default(),
                d["device_id"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
                d["progress"]
            );
            for e in v["events"].as_array().into_iter().flatten() {
                outln!(
                    "  {} {:>3}% {}",
                    e["state"].as_str().unwrap_or_default(),
                    e["progress"],
                    e["message"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        Cmd::Rollout(r) => rollout(&c, r),
        Cmd::Loadgen {
            devices,
            concurrency,
            seconds,
            artifact,
            json,
        } => crate::cmd::loadgen::run(crate::cmd::loadgen::Loadgen {
            base: c.base.clone(),
            token: c.token.clone(),
            ca,
            devices,
            concurrency,
            seconds,
            artifact,
            json,
        }),
    }
}

fn rollout(c: &Client, cmd: RolloutCmd) -> Result<()> {
    let (v, json) = match cmd {
        RolloutCmd::Create {
            artifact,
            name,
            hardware,
            tags,
            phases,
            max_failure_percent,
            max_rollback_percent,
            max_concurrent,
            straggler_seconds,
            json,
        } => {
            let mut body = json!({
                "name": name,
                "artifact": artifact,
                "filter": { "hardware": hardware, "tags": tags },
                "policy": {
                    "max_failure_percent": max_failure_percent,
                    "max_rollback_percent": max_rollback_percent,
                    "max_concurrent": max_concurrent,
                    "straggler_seconds": straggler_seconds,
                },
            });
            if !phases.is_empty() {
                body["phases"] = phases.iter().map(|p| phase(p)).collect::<Result<_>>()?;
            }
            let v = c.post("/api/v1/rollouts", &body)?;
            if !json {
                outln!("{}", v["rollout"]["id"].as_str().unwrap_or_default());
                return Ok(());
            }
            (v, json)
        }
        RolloutCmd::List { json } => {
            let v = c.get("/api/v1/rollouts")?;
            if !json {
                for r in v.as_array().into_iter().flatten() {
                    let p = r["phase"].as_u64().unwrap_or(0) as usize;
                    outln!(
                        "{}  {:<10} {:<10} artifact {}  {}",
                        r["id"].as_str().unwrap_or_default(),
                        r["state"].as_str().unwrap_or_default(),
                        r["phases"][p]["name"].as_str().unwrap_or_default(),
                        r["artifact_id"].as_str().unwrap_or_default(),
                        r["name"].as_str().unwrap_or_default()
                    );
                }
                return Ok(());
            }
            (v, json)
        }
        RolloutCmd::Status { id, json } => (c.get(&format!("/api/v1/rollouts/{id}"))?, json),
        RolloutCmd::Pause { id, json } => (
            c.post(&format!("/api/v1/rollouts/{id}/pause"), &json!({}))?,
            json,
        ),
        RolloutCmd::Resume { id, json } => (
            c.post(&format!("/api/v1/rollouts/{id}/resume"), &json!({}))?,
            json,
        ),
        RolloutCmd::Abort { id, json } => (
            c.post(&format!("/api/v1/rollouts/{id}/abort"), &json!({}))?,
            json,
        ),
        RolloutCmd::Evaluate { id, json } => (
            c.post(&format!("/api/v1/rollouts/{id}/evaluate"), &json!({}))?,
            json,
        ),
    };
    if json {
        return print_json(&v);
    }
    show_status(&v)
}
