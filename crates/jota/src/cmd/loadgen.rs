//! `jota fleet loadgen`: registers N lightweight devices (HTTP clients, not simulators),
//! optionally starts a rollout over all of them, has each poll once (its first poll reports
//! its version: a durable write), then has them poll as fast as the server answers for a
//! while; prints throughput and latency percentiles.

use crate::util::{print_json, thousands};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// What `jota fleet loadgen` was asked for.
pub struct Loadgen {
    /// Server URL.
    pub base: String,
    /// Admin token.
    pub token: String,
    /// CA certificate (PEM) to trust.
    pub ca: Option<Vec<u8>>,
    /// Devices to register.
    pub devices: usize,
    /// Concurrent pollers (connections).
    pub concurrency: usize,
    /// Seconds of polling.
    pub seconds: f64,
    /// Artifact to roll out over the devices first (all in one phase).
    pub artifact: Option<String>,
    /// Machine-readable output.
    pub json: bool,
}

async fn call(req: reqwest::RequestBuilder) -> Result<Value> {
    let r = req.send().await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "{status}: {}",
            v["error"].as_str().unwrap_or("(no message)")
        );
    }
    Ok(v)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs the load.
pub fn run(l: Loadgen) -> Result<()> {
    if l.devices == 0 || l.concurrency == 0 {
        bail!("--devices and --concurrency are at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(l))
}

async fn run_async(l: Loadgen) -> Result<()> {
    let mut builder = reqwest::Client::builder()
        .pool_max_idle_per_host(l.concurrency)
        .timeout(Duration::from_secs(600));
    if let Some(pem) = &l.ca {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    let http = builder.build()?;
    let prefix = format!("lg{}", &jota_server::random_hex(3)?);
    let tag = format!("loadgen={prefix}");

    // Registration, in batches.
    let t = Instant::now();
    let mut tokens = Vec::with_capacity(l.devices);
    for start in (0..l.devices).step_by(10_000) {
        let end = (start + 10_000).min(l.devices);
        let devs: Vec<Value> = (start..end)
            .map(|i| json!({ "id": format!("{prefix}-{i:07}"), "hardware": "3767-0005-300", "tags": [tag] }))
            .collect();
        let v = call(
            http.post(format!("{}/api/v1/devices/batch", l.base))
                .bearer_auth(&l.token)
                .json(&json!({ "devices": devs })),
        )
        .await
        .context("registering devices")?;
        for d in v.as_array().into_iter().flatten() {
            tokens.push(d["token"].as_str().unwrap_or_default().to_string());
        }
    }
    let register = t.elapsed();

    // A rollout over all of them: target selection and the first evaluation, which gives
    // every device its deployment.
    let mut rollout = None;
    if let Some(a) = &l.artifact {
        let t = Instant::now();
        let v = call(
            http.post(format!("{}/api/v1/rollouts", l.base))
                .bearer_auth(&l.token)
                .json(&json!({
                    "name": format!("loadgen {prefix}"),
                    "artifact": a,
                    "filter": { "tags": [tag] },
                    "phases": [{ "name": "all", "percent": 100 }],
                })),
        )
        .await
        .context("creating the rollout")?;
        rollout = Some((
            t.elapsed(),
            v["total"]["assigned"].as_u64().unwrap_or(0),
            v["rollout"]["id"].as_str().unwrap_or_default().to_string(),
        ));
    }

    // First polls: every device once, reporting its version (which the server commits
    // before answering). Timed apart from the steady state.
    let tokens = std::sync::Arc::new(tokens);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..l.concurrency {
        let (http, tokens, base) = (http.clone(), tokens.clone(), l.base.clone());
        let n = l.concurrency;
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/api/v1/device/poll?version=1.0.0");
            let mut errors = 0u64;
            for tok in tokens.iter().skip(w).step_by(n) {
                match http.get(&url).bearer_auth(tok).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
            }
            errors
        }));
    }
    let mut first_errors = 0;
    for t in tasks {
        first_errors += t.await?;
    }
    let first = tokens.len() as f64 / t.elapsed().as_secs_f64();

    // Polling: each poller walks its share of the devices round and round.
    let deadline = Instant::now() + Duration::from_secs_f64(l.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..l.concurrency {
        let (http, tokens, base) = (http.clone(), tokens.clone(), l.base.clone());
        let n = l.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut lat: Vec<u32> = Vec::new();
            let (mut errors, mut assigned) = (0u64, 0u64);
            let mut i = w;
            let url = format!("{base}/api/v1/device/poll?version=1.0.0");
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(&tokens[i]).send().await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let body = r.bytes().await.unwrap_or_default();
                        if body.windows(6).any(|x| x == b"\"url\":") {
                            assigned += 1;
                        }
                    }
                    _ => errors += 1,
                }
                lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                i += n;
                if i >= tokens.len() {
                    i = w % tokens.len().max(1);
                }
            }
            (lat, errors, assigned)
        }));
    }
    let mut lat = Vec::new();
    let (mut errors, mut assigned) = (0, 0);
    for t in tasks {
        let (l, e, a) = t.await?;
        lat.extend(l);
        errors += e;
        assigned += a;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();

    // One evaluation of the rollout as the server's timer would run it, now that every
    // device has polled: counts over all targets, gates, phase check.
    let mut evaluate = None;
    if let Some((_, _, id)) = &rollout {
        let t = Instant::now();
        call(
            http.post(format!("{}/api/v1/rollouts/{id}/evaluate", l.base))
                .bearer_auth(&l.token),
        )
        .await
        .context("evaluating the rollout")?;
        evaluate = Some(t.elapsed().as_secs_f64());
    }
    let polls = lat.len() as u64;
    let out = json!({
        "devices": l.devices,
        "concurrency": l.concurrency,
        "register_seconds": register.as_secs_f64(),
        "rollout_create_seconds": rollout.as_ref().map(|r| r.0.as_secs_f64()),
        "rollout_assigned": rollout.as_ref().map(|r| r.1),
        "rollout_evaluate_seconds": evaluate,
        "first_polls_per_second": first,
        "polls": polls,
        "errors": errors + first_errors,
        "polls_with_deployment": assigned,
        "seconds": elapsed,
        "polls_per_second": polls as f64 / elapsed,
        "p50_ms": pct(&lat, 0.50),
        "p99_ms": pct(&lat, 0.99),
        "max_ms": pct(&lat, 1.0),
    });
    if l.json {
        return print_json(&out);
    }
    outln!("| devices | pollers | first polls/s | polls/s | p50 ms | p99 ms | max ms | errors | register s | rollout create s | rollout evaluate s |");
    outln!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    outln!(
        "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {} | {} |",
        thousands(l.devices as u64),
        l.concurrency,
        thousands(first as u64),
        thousands((polls as f64 / elapsed) as u64),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        errors + first_errors,
        register.as_secs_f64(),
        rollout
            .map(|r| format!("{:.2} ({} assigned)", r.0.as_secs_f64(), thousands(r.1)))
            .unwrap_or_else(|| "-".into()),
        evaluate
            .map(|e| format!("{e:.2}"))
            .unwrap_or_else(|| "-".into())
    );
    Ok(())
}
