//! `jota demo`: a whole fleet update on simulated Jetsons, with embedded defaults.
//!
//! Starts a fleet server (HTTPS with its own CA, device mTLS, SQLite in a temporary
//! directory, a free loopback port), makes a signing key, builds v1 and v2 releases and
//! bundles, creates simulated Jetsons of several models flashed with v1, runs their agents
//! (each provisions itself with a provisioning token, then polls), and rolls v2 out in
//! phases: canary → 50 % → all. One device's application fails on v2 (validation fails, the
//! firmware falls back, the agent reports the rollback), one loses power mid-install (it
//! resumes), one is offline during the rollout and catches up. Exits 0 only when the fleet
//! ends as expected.

use crate::util::print_json;
use anyhow::{bail, Context, Result};
use clap::Parser;
use jota_fleetsim::{Behaviour, Event, Spec};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `jota demo`.
#[derive(Parser, Debug)]
pub struct Args {
    /// Simulated Jetsons in the fleet (at least 4).
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Working directory (kept); default: a temporary one, removed at the end.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the server (and its dashboard) running after the report, until Ctrl-C.
    #[arg(long)]
    keep_running: bool,
    /// Print the fleet report as JSON on stdout (the live view goes to stderr).
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
}

const MODELS: &[&str] = &["orin-nano-8gb", "orin-nx-16gb", "orin-nano-4gb"];
const V1: &str = "1.0.0";
const V2: &str = "2.0.0";

/// A device's part in the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Canary,
    Normal,
    PowerCut,
    FailsOnV2,
    Offline,
}

impl Role {
    fn tags(self) -> Vec<String> {
        match self {
            Role::Canary => vec!["risk=canary".into()],
            // Last in the rollout order, so the canary and 50 % phases see a clean fleet.
            Role::FailsOnV2 | Role::Offline => vec!["risk=conservative".into()],
            _ => Vec::new(),
        }
    }
    fn describe(self) -> &'static str {
        match self {
            Role::Canary => "canary",
            Role::Normal => "",
            Role::PowerCut => "loses power mid-install",
            Role::FailsOnV2 => "its application fails on 2.0.0",
            Role::Offline => "offline during the rollout",
        }
    }
}

struct Device {
    name: String,
    id: String,
    model: &'static str,
    role: Role,
    offline: Arc<AtomicBool>,
}

/// The operator's HTTPS client (pinned fleet CA, admin token).
struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Api {
    fn call(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let r = req.bearer_auth(&self.token).send()?;
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(body)
    }
    fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
            .with_context(|| format!("GET {path}"))
    }
    fn post(&self, path: &str, v: &Value) -> Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(v))
            .with_context(|| format!("POST {path}"))
    }
    fn put(&self, path: &str, v: &Value) -> Result<Value> {
        self.call(self.http.put(format!("{}{path}", self.base)).json(v))
            .with_context(|| format!("PUT {path}"))
    }
    fn upload(&self, file: &Path) -> Result<Value> {
        let data = std::fs::read(file).with_context(|| file.display().to_string())?;
        self.call(
            self.http
                .post(format!("{}/api/v1/artifacts", self.base))
                .header("content-type", "application/octet-stream")
                .body(data),
        )
        .with_context(|| format!("uploading {}", file.display()))
    }
}

/// Live output: a progress bar on a terminal, plain lines elsewhere.
struct View {
    bar: indicatif::ProgressBar,
    start: Instant,
}

impl View {
    fn new(n: usize) -> View {
        let bar = indicatif::ProgressBar::with_draw_target(
            Some(n as u64),
            indicatif::ProgressDrawTarget::stderr(),
        );
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} on 2.0.0  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        View {
            bar,
            start: Instant::now(),
        }
    }
    fn say(&self, msg: &str) {
        let line = format!("[{:>5.1}s] {msg}", self.start.elapsed().as_secs_f64());
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

/// Runs `jota demo`. Exit 0 when the fleet ended as expected.
pub fn run(a: Args) -> Result<u8> {
    if a.devices < 4 {
        bail!("--devices is at least 4 (a canary, a power cut, a failing application, an offline device)");
    }
    if a.devices > 1000 {
        bail!("--devices is at most 1000 in the demo");
    }
    let tmp;
    let work = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("jota-demo.").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let view = View::new(a.devices);
    view.say(&format!("working in {}", work.display()));

    // 1. The fleet server: HTTPS with its own CA, device certificates required.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data_dir = work.join("server");
    let tls = jota_server::tls::self_issued(
        &data_dir.join("tls"),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .context("making the server's certificate")?;
    let admin_token = jota_server::random_hex(24)?;
    let keyring = work.join("keyring");
    std::fs::create_dir_all(&keyring)?;
    let config = jota_server::ServerConfig {
        data_dir: data_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        database: None,
        admin_token: admin_token.clone(),
        artifact_store: None,
        keyring: Some(keyring.clone()),
        max_upload: 1 << 30,
        poll_seconds: 1,
        tls: Some(tls),
        ddi_gateway_token: None,
        rollout_interval: Duration::from_millis(300),
        require_device_cert: true,
        telemetry_retention: Duration::from_secs(86400),
    };
    let running = rt.block_on(jota_server::start(config))?;
    let base = format!("https://127.0.0.1:{}", running.addr.port());
    let ca_pem = std::fs::read(data_dir.join("tls/ca.pem"))?;
    let api = Api {
        http: reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem)?)
            .timeout(Duration::from_secs(120))
            .build()?,
        base: base.clone(),
        token: admin_token.clone(),
    };
    view.say(&format!(
        "fleet server on {base} (SQLite, HTTPS, device mTLS)"
    ));

    // 2. Signing key, releases, bundles.
    let key = jota_bundle::SecretKey::generate(jota_bundle::sign::Algorithm::Ed25519)?;
    let pub_pem = key.public().to_pem();
    std::fs::write(keyring.join("release.pub.pem"), &pub_pem)?;
    let rootfs = 16 << 20;
    let rel1 = jota_fleetsim::release(MODELS[0], V1, rootfs, &work.join("release-1.0.0"))?;
    let rel2 = jota_fleetsim::release(MODELS[0], V2, rootfs, &work.join("release-2.0.0"))?;
    // Orin Nano and Orin NX modules (P3767) share one BSP: one bundle serves all three.
    let hw = vec!["3767-000[0-5]".to_string()];
    let b1 = jota_fleetsim::bundle(&rel1, &work.join("update-1.0.0.jota"), V1, &hw, &key)?;
    let b2 = jota_fleetsim::bundle(&rel2, &work.join("update-2.0.0.jota"), V2, &hw, &key)?;
    for b in [&b1, &b2] {
        let v = api.upload(b)?;
        view.say(&format!(
            "uploaded {} ({} bytes, artifact {})",
            b.file_name().and_then(|n| n.to_str()).unwrap_or(""),
            v["size"],
            v["id"].as_str().unwrap_or("")
        ));
    }
    let artifacts = api.get("/api/v1/artifacts")?;
    let v2_id = artifacts
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["version"] == V2)
        .and_then(|x| x["id"].as_str())
        .context("the 2.0.0 artifact is not listed")?
        .to_string();

    // 3. The fleet: simulated Jetsons flashed with 1.0.0, provisioned by a factory token.
    let token = api.post(
        "/api/v1/provision-tokens",
        &json!({ "uses": a.devices, "tags": ["site=demo"] }),
    )?["token"]
        .as_str()
        .context("no provisioning token")?
        .to_string();
    let canaries = (a.devices / 10).max(1);
    let mut devices = Vec::new();
    for i in 0..a.devices {
        let role = match i {
            i if i < canaries => Role::Canary,
            i if i == canaries => Role::PowerCut,
            i if i == a.devices - 2 => Role::FailsOnV2,
            i if i == a.devices - 1 => Role::Offline,
            _ => Role::Normal,
        };
        let model = MODELS[i % MODELS.len()];
        let serial = format!("1421{:09}", 22_000 + i);
        let mac = format!("48:b0:2d:{:02x}:{:02x}:{:02x}", 0x10, i / 256, i % 256);
        let name = format!("jetson-{:02}", i + 1);
        let spec = Spec {
            model: model.into(),
            serial: serial.clone(),
            mac: mac.clone(),
            release: rel1.clone(),
            rootfs_slot: 24 << 20,
        };
        let config = jota_fleetsim::agent_config(&base, &token, 1);
        jota_fleetsim::create(
            &work.join("devices").join(&name),
            &spec,
            &config,
            pub_pem.as_bytes(),
            Some(&ca_pem),
        )
        .with_context(|| format!("creating {name}"))?;
        devices.push(Device {
            name,
            id: jota_agent::provision::device_id(&serial, &mac),
            model,
            role,
            offline: Arc::new(AtomicBool::new(false)),
        });
    }
    view.say(&format!(
        "{} simulated Jetsons ({}) flashed with {V1}",
        a.devices,
        MODELS.join(", ")
    ));

    // 4. Their agents.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<(String, Event)>();
    let mut threads = Vec::new();
    for d in &devices {
        let dir = work.join("devices").join(&d.name);
        let config = jota_fleetsim::agent_config(&base, &token, 1);
        let behaviour = Behaviour {
            power_cut_after_writes: (d.role == Role::PowerCut).then_some(30),
            offline: Some(Arc::clone(&d.offline)),
            fail_health_on: (d.role == Role::FailsOnV2).then(|| V2.to_string()),
            max_sleep: Some(Duration::from_secs(1)),
        };
        let (name, tx, stop) = (d.name.clone(), tx.clone(), Arc::clone(&stop));
        threads.push(
            std::thread::Builder::new()
                .name(d.name.clone())
                .spawn(move || jota_fleetsim::run(name, dir, config, behaviour, tx, stop))?,
        );
    }
    drop(tx);
    let result = scenario(&a, &api, &devices, &v2_id, &rx, &view);
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    view.bar.finish_and_clear();
    let (report, problems) = result?;

    let link = api
        .post(
            "/api/v1/dashboard/links",
            &json!({ "next": format!("/dashboard/rollouts/{}", report["rollout"]["id"].as_str().unwrap_or("")) }),
        )
        .ok()
        .and_then(|v| v["path"].as_str().map(|p| format!("{base}{p}")));
    let mut report = report;
    report["server"] = json!({
        "url": base,
        "admin_token": admin_token,
        "ca": data_dir.join("tls/ca.pem"),
        "dashboard": link,
    });
    report["problems"] = json!(problems);
    if a.json {
        print_json(&report)?;
    } else {
        print_report(&report)?;
    }
    if a.keep_running {
        eprintln!(
            "the server keeps running on {base} (admin token {admin_token}, CA {}); Ctrl-C ends it",
            data_dir.join("tls/ca.pem").display()
        );
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    let _ = running.shutdown.send(());
    rt.block_on(async {
        let _ = running.task.await;
    });
    Ok(if problems.is_empty() { 0 } else { 1 })
}

/// The rollout and the faults, watched until the rollout ends; the report and what
/// differs from the expected end state.
fn scenario(
    a: &Args,
    api: &Api,
    devices: &[Device],
    v2_id: &str,
    rx: &std::sync::mpsc::Receiver<(String, Event)>,
    view: &View,
) -> Result<(Value, Vec<String>)> {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let by_name: BTreeMap<&str, &Device> = devices.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut power_cuts: BTreeMap<String, u32> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut drain = |view: &View, errors: &mut Vec<String>| {
        while let Ok((name, ev)) = rx.try_recv() {
            match ev {
                Event::PowerCut => {
                    *power_cuts.entry(name.clone()).or_default() += 1;
                    view.say(&format!(
                        "{name}: power cut during the install; powering it on again"
                    ));
                }
                Event::Validated { verdict }
                    if verdict.starts_with("RolledBack") || verdict.starts_with("Failed") =>
                {
                    view.say(&format!("{name}: {}", short_verdict(&verdict)));
                }
                Event::Booted { running: None, .. } => {
                    view.say(&format!("{name}: did not boot"));
                }
                // Errors are retried by the agents; the last ones explain a timeout.
                Event::Error(m) if by_name.contains_key(name.as_str()) && errors.len() < 50 => {
                    errors.push(format!("{name}: {m}"));
                }
                _ => {}
            }
        }
    };

    // Every device provisions itself and reports 1.0.0.
    view.say("agents start: each device provisions itself (CSR → certificate) and polls over mTLS");
    loop {
        drain(view, &mut errors);
        let list = api.get("/api/v1/devices")?;
        let on_v1 = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["version"] == V1)
            .count();
        view.bar
            .set_message(format!("{on_v1} devices provisioned on {V1}"));
        if on_v1 == devices.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {on_v1} of {} devices provisioned in time; {}",
                devices.len(),
                errors.last().map(String::as_str).unwrap_or("")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    view.say(&format!(
        "all {} devices provisioned and running {V1}",
        devices.len()
    ));
    for d in devices {
        let mut tags = vec!["site=demo".to_string()];
        tags.extend(d.role.tags());
        api.put(
            &format!("/api/v1/devices/{}/tags", d.id),
            &json!({ "tags": tags }),
        )?;
        if d.role != Role::Normal {
            view.say(&format!(
                "{} ({}, {}): {}",
                d.name,
                d.id,
                d.model,
                d.role.describe()
            ));
        }
    }
    let offline = devices.iter().find(|d| d.role == Role::Offline);
    if let Some(d) = offline {
        d.offline.store(true, Ordering::SeqCst);
        view.say(&format!("{} goes offline", d.name));
    }
    std::thread::sleep(Duration::from_millis(1500));

    // The rollout: canary, half, all; the gates allow the one expected rollback, not two.
    let n = devices.len() as f64;
    let canaries = devices.iter().filter(|d| d.role == Role::Canary).count() as f64;
    let max_rollback = (150.0 / n).max(5.0);
    let created = api.post(
        "/api/v1/rollouts",
        &json!({
            "name": "demo 2.0.0",
            "artifact": v2_id,
            "filter": { "tags": ["site=demo"] },
            "phases": [
                { "name": "canary", "percent": ((canaries - 0.5) * 100.0 / n).max(0.1), "soak_seconds": 2 },
                { "name": "50%", "percent": 50.0, "soak_seconds": 2 },
                { "name": "all", "percent": 100.0 },
            ],
            "policy": { "max_failure_percent": max_rollback, "max_rollback_percent": max_rollback },
        }),
    )?;
    let rid = created["rollout"]["id"]
        .as_str()
        .context("no rollout id")?
        .to_string();
    view.say(&format!(
        "rollout {rid}: {V2} to {} devices, canary → 50% → all, halts over {max_rollback:.1}% rollbacks",
        devices.len()
    ));
    let started = Instant::now();
    let mut phase_started = Instant::now();
    let mut phase = 0u64;
    let mut phase_times: Vec<(String, f64)> = Vec::new();
    let mut last_msg = String::new();
    let mut online_again = false;
    let status = loop {
        drain(view, &mut errors);
        let st = api.get(&format!("/api/v1/rollouts/{rid}"))?;
        let p = st["rollout"]["phase"].as_u64().unwrap_or(0);
        let names: Vec<String> = st["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["name"].as_str().unwrap_or("").to_string())
            .collect();
        if p != phase {
            phase_times.push((
                names.get(phase as usize).cloned().unwrap_or_default(),
                phase_started.elapsed().as_secs_f64(),
            ));
            phase_started = Instant::now();
            phase = p;
            view.say(&format!(
                "phase {} starts ({} devices so far)",
                names.get(p as usize).map(String::as_str).unwrap_or("?"),
                st["phases"]
                    .as_array()
                    .map(|ps| ps[..=(p as usize).min(ps.len() - 1)]
                        .iter()
                        .map(|x| x["devices"].as_u64().unwrap_or(0))
                        .sum::<u64>())
                    .unwrap_or(0)
            ));
        }
        let t = &st["total"];
        let state = st["rollout"]["state"].as_str().unwrap_or("").to_string();
        let msg = format!(
            "phase {} | waiting {} assigned {} updating {} ok {} rolled back {} failed {}",
            names.get(p as usize).map(String::as_str).unwrap_or("?"),
            t["waiting"],
            t["assigned"],
            t["updating"],
            t["success"],
            t["rolled_back"],
            t["failure"]
        );
        view.bar.set_position(t["success"].as_u64().unwrap_or(0));
        view.bar.set_message(msg.clone());
        if view.bar.is_hidden() && msg != last_msg {
            view.say(&msg);
        }
        last_msg = msg;
        // The offline device comes back once everyone else has finished.
        if let Some(d) = offline {
            let others_done = t["success"].as_u64().unwrap_or(0)
                + t["rolled_back"].as_u64().unwrap_or(0)
                + t["failure"].as_u64().unwrap_or(0)
                >= devices.len() as u64 - 1;
            if !online_again && p + 1 == names.len() as u64 && others_done {
                d.offline.store(false, Ordering::SeqCst);
                online_again = true;
                view.say(&format!("{} is back online and catches up", d.name));
            }
        }
        if state == "done" || state == "halted" || state == "aborted" {
            phase_times.push((
                names.get(phase as usize).cloned().unwrap_or_default(),
                phase_started.elapsed().as_secs_f64(),
            ));
            if state != "done" {
                view.say(&format!(
                    "rollout {state}: {}",
                    st["rollout"]["reason"].as_str().unwrap_or("")
                ));
            } else {
                view.say("rollout done");
            }
            break st;
        }
        if Instant::now() > deadline {
            bail!(
                "the rollout did not finish within {} s: {last_msg}",
                a.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drain(view, &mut errors);
    let elapsed = started.elapsed().as_secs_f64();
    // A device reports its outcome before the poll that carries its new version: give the
    // last ones a moment.
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        let list = api.get("/api/v1/devices")?;
        let on_v2 = list
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["version"] == V2)
            .count();
        if on_v2 + 1 >= devices.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // The end state, from the server's API.
    let list = api.get("/api/v1/devices")?;
    let deployments = api.get("/api/v1/deployments")?;
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_device = Vec::new();
    let mut problems = Vec::new();
    let rollout_state = status["rollout"]["state"].as_str().unwrap_or("");
    if rollout_state != "done" {
        problems.push(format!("the rollout ended `{rollout_state}`, not done"));
    }
    for d in devices {
        let row = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["id"] == d.id.as_str());
        let version = row
            .and_then(|r| r["version"].as_str())
            .unwrap_or("unknown")
            .to_string();
        *versions.entry(version.clone()).or_default() += 1;
        let dep = deployments
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["device_id"] == d.id.as_str() && x["rollout_id"] == rid.as_str());
        let dstate = dep
            .and_then(|x| x["state"].as_str())
            .unwrap_or("none")
            .to_string();
        let (want_version, want_state) = match d.role {
            Role::FailsOnV2 => (V1, "rolled-back"),
            _ => (V2, "success"),
        };
        if version != want_version || dstate != want_state {
            problems.push(format!(
                "{} ({}): {version}, deployment {dstate}; expected {want_version}, {want_state}",
                d.name,
                d.role.describe()
            ));
        }
        if d.role == Role::PowerCut && power_cuts.get(&d.name).copied().unwrap_or(0) == 0 {
            problems.push(format!("{}: the power cut did not happen", d.name));
        }
        per_device.push(json!({
            "name": d.name, "id": d.id, "model": d.model, "role": d.role.describe(),
            "version": version, "deployment": dstate,
            "downloaded_bytes": dep.map(|x| x["downloaded_bytes"].clone()).unwrap_or(Value::Null),
            "power_cuts": power_cuts.get(&d.name).copied().unwrap_or(0),
        }));
    }
    let report = json!({
        "rollout": {
            "id": rid,
            "state": rollout_state,
            "seconds": elapsed,
            "phases": phase_times.iter().map(|(n, s)| json!({ "name": n, "seconds": s })).collect::<Vec<_>>(),
            "counts": status["total"],
            "metrics": status["metrics"],
        },
        "versions": versions,
        "devices": per_device,
        "bundle_bytes": status["metrics"]["bytes_downloaded"],
    });
    Ok((report, problems))
}

fn short_verdict(v: &str) -> String {
    if v.starts_with("RolledBack") {
        "validation failed; the firmware fell back: rolled back to the previous slot".into()
    } else {
        "2.0.0 failed validation (its application is down); rebooting so the firmware falls back"
            .into()
    }
}

fn print_report(r: &Value) -> Result<()> {
    outln!();
    outln!("== fleet report");
    outln!(
        "rollout {}: {} in {:.1} s",
        r["rollout"]["id"].as_str().unwrap_or(""),
        r["rollout"]["state"].as_str().unwrap_or(""),
        r["rollout"]["seconds"].as_f64().unwrap_or(0.0)
    );
    for p in r["rollout"]["phases"].as_array().into_iter().flatten() {
        outln!(
            "  phase {:<8} {:>6.1} s",
            p["name"].as_str().unwrap_or(""),
            p["seconds"].as_f64().unwrap_or(0.0)
        );
    }
    let versions: Vec<String> = r["versions"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(v, n)| format!("{n} on {v}"))
        .collect();
    outln!("versions: {}", versions.join(", "));
    let m = &r["rollout"]["metrics"];
    outln!(
        "success {:.0}%, rollbacks {:.0}%, mean update {:.1} s, {} bytes downloaded by the fleet",
        m["success_percent"].as_f64().unwrap_or(0.0),
        m["rollback_percent"].as_f64().unwrap_or(0.0),
        m["mean_update_seconds"].as_f64().unwrap_or(0.0),
        m["bytes_downloaded"]
    );
    outln!();
    outln!(
        "{:<11} {:<16} {:<14} {:<8} {:<12} {:>12}  note",
        "device",
        "id",
        "model",
        "version",
        "deployment",
        "bytes"
    );
    for d in r["devices"].as_array().into_iter().flatten() {
        outln!(
            "{:<11} {:<16} {:<14} {:<8} {:<12} {:>12}  {}",
            d["name"].as_str().unwrap_or(""),
            d["id"].as_str().unwrap_or(""),
            d["model"].as_str().unwrap_or(""),
            d["version"].as_str().unwrap_or(""),
            d["deployment"].as_str().unwrap_or(""),
            d["downloaded_bytes"],
            d["role"].as_str().unwrap_or("")
        );
    }
    outln!();
    if let Some(u) = r["server"]["dashboard"].as_str() {
        outln!("dashboard (one-time sign-in link, 10 minutes): {u}");
    }
    let problems = r["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        outln!("the fleet ended as expected: every device on 2.0.0 but the one whose application fails, which rolled back to 1.0.0");
    } else {
        outln!("NOT as expected:");
        for p in problems {
            outln!("  {}", p.as_str().unwrap_or(""));
        }
    }
    Ok(())
}
