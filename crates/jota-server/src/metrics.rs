//! Prometheus `/metrics` (text exposition format 0.0.4): fleet size, deployments by state,
//! rollouts by state, per-rollout device counts for rollouts not yet over, and request
//! counters of this replica.

use crate::store::{db, Store};
use crate::ServerError;
use sqlx::Row;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests this replica answered, by kind.
#[derive(Debug, Default)]
pub struct Counters {
    /// jota device polls.
    pub polls: AtomicU64,
    /// jota device status reports.
    pub reports: AtomicU64,
    /// hawkBit DDI requests.
    pub ddi: AtomicU64,
    /// Telemetry reports.
    pub telemetry: AtomicU64,
}

impl Counters {
    /// Counts one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text.
pub async fn render(
    store: &Store,
    counters: &Counters,
    poll_seconds: u64,
) -> Result<String, ServerError> {
    let mut out = String::new();
    let count = |sql: &'static str| async move {
        let r = sqlx::query(sql).fetch_one(&store.read).await.map_err(db)?;
        r.try_get::<i64, _>("n").map_err(db)
    };
    let by_state = |sql: &'static str| async move {
        let rows = sqlx::query(sql).fetch_all(&store.read).await.map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(db)
    };
    let devices = count("SELECT COUNT(*) AS n FROM devices").await?;
    let artifacts = count("SELECT COUNT(*) AS n FROM artifacts").await?;
    let _ = writeln!(out, "# HELP jota_devices Registered devices.\n# TYPE jota_devices gauge\njota_devices {devices}");
    let _ = writeln!(out, "# HELP jota_artifacts Uploaded artifacts.\n# TYPE jota_artifacts gauge\njota_artifacts {artifacts}");
    let _ = writeln!(
        out,
        "# HELP jota_deployments Deployments by state.\n# TYPE jota_deployments gauge"
    );
    for (s, n) in
        by_state("SELECT state, COUNT(*) AS n FROM deployments GROUP BY state ORDER BY state")
            .await?
    {
        let _ = writeln!(out, "jota_deployments{{state=\"{}\"}} {n}", label(&s));
    }
    let _ = writeln!(
        out,
        "# HELP jota_rollouts Rollouts by state.\n# TYPE jota_rollouts gauge"
    );
    for (s, n) in
        by_state("SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state ORDER BY state").await?
    {
        let _ = writeln!(out, "jota_rollouts{{state=\"{}\"}} {n}", label(&s));
    }
    let _ = writeln!(out, "# HELP jota_rollout_devices Devices of each rollout not yet over, by state.\n# TYPE jota_rollout_devices gauge");
    for r in store.rollouts().await? {
        if !matches!(r.state.as_str(), "running" | "paused" | "halted") {
            continue;
        }
        if let Some(st) = store.rollout_status(&r.id).await? {
            let t = &st.total;
            let id = label(&r.id);
            for (s, n) in [
                ("waiting", t.waiting),
                ("assigned", t.assigned),
                ("updating", t.updating),
                ("success", t.success),
                ("failure", t.failure),
                ("rolled-back", t.rolled_back),
                ("canceled", t.canceled),
            ] {
                let _ = writeln!(
                    out,
                    "jota_rollout_devices{{rollout=\"{id}\",state=\"{s}\"}} {n}"
                );
            }
            let _ = writeln!(out, "jota_rollout_phase{{rollout=\"{id}\"}} {}", r.phase);
            let m = &st.metrics;
            let _ = writeln!(
                out,
                "jota_rollout_success_percent{{rollout=\"{id}\"}} {}\njota_rollout_rollback_percent{{rollout=\"{id}\"}} {}\njota_rollout_bytes_downloaded{{rollout=\"{id}\"}} {}\njota_rollout_mean_update_seconds{{rollout=\"{id}\"}} {}",
                m.success_percent, m.rollback_percent, m.bytes_downloaded, m.mean_update_seconds
            );
        }
    }
    let _ = writeln!(out, "# HELP jota_requests_total Device requests answered by this replica.\n# TYPE jota_requests_total counter");
    for (k, c) in [
        ("poll", &counters.polls),
        ("status", &counters.reports),
        ("ddi", &counters.ddi),
        ("telemetry", &counters.telemetry),
    ] {
        let _ = writeln!(
            out,
            "jota_requests_total{{kind=\"{k}\"}} {}",
            c.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jota_alerts Alerts now, by kind and severity.\n# TYPE jota_alerts gauge"
    );
    let mut alerts = std::collections::BTreeMap::new();
    for a in store.alerts(crate::store::now(), poll_seconds).await? {
        *alerts.entry((a.kind, a.severity)).or_insert(0u64) += 1;
    }
    for ((kind, severity), n) in alerts {
        let _ = writeln!(
            out,
            "jota_alerts{{kind=\"{kind}\",severity=\"{severity}\"}} {n}"
        );
    }
    Ok(out)
}
