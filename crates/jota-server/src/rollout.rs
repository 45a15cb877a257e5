//! Staged rollouts (seed 001 §15.2): an artifact goes to a filtered set of devices in
//! phases (canary → … → 100 %), each phase waits for its devices and a minimum soak time,
//! and gates on the failure and rollback rates halt the rollout when crossed (seed §20.2).
//!
//! Evaluation runs on every replica on a timer; each evaluation of a rollout first bumps
//! its `revision` with a compare-and-swap, so only one replica acts on a given state (the
//! row lock makes the others wait, then find the revision gone) and the unique index on
//! (rollout, device) keeps a device from being assigned twice.

use crate::store::{db, deployment, DeploymentRow, Store};
use crate::ServerError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::Row;

/// One phase: the first `percent` of the targets (cumulative), held at least `soak_seconds`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Name shown in views (`canary`, `50%`, …).
    pub name: String,
    /// Cumulative share of the targets, in percent (the last phase is 100).
    pub percent: f64,
    /// Minimum time the phase runs before the next may start.
    #[serde(default)]
    pub soak_seconds: u64,
}

/// Which devices a rollout targets. Empty means all.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Hardware prefix (`3767` matches every Orin Nano/NX module, `3767-0005` one SKU).
    #[serde(default)]
    pub hardware: Option<String>,
    /// Tags a device must all have (`region=eu`, `risk=canary`, …).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Filter {
    /// Whether a device with this hardware and these tags is targeted.
    pub fn matches(&self, hardware: &str, tags: &[String]) -> bool {
        self.hardware
            .as_deref()
            .is_none_or(|h| hardware.starts_with(h))
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

/// Gates and pacing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Halt when failures exceed this share of the devices assigned so far.
    #[serde(default = "default_failure")]
    pub max_failure_percent: f64,
    /// Halt when rollbacks exceed this share (seed §20.2: 1 %).
    #[serde(default = "default_rollback")]
    pub max_rollback_percent: f64,
    /// Most devices updating at once (assigned and not finished); none means no limit.
    #[serde(default)]
    pub max_concurrent: Option<u64>,
    /// How long a phase waits for offline devices before it moves on without them; they
    /// keep their assignment until the rollout ends.
    #[serde(default = "default_straggler")]
    pub straggler_seconds: u64,
}

fn default_failure() -> f64 {
    5.0
}
fn default_rollback() -> f64 {
    1.0
}
fn default_straggler() -> u64 {
    24 * 3600
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_failure_percent: default_failure(),
            max_rollback_percent: default_rollback(),
            max_concurrent: None,
            straggler_seconds: default_straggler(),
        }
    }
}

/// The phases used when a rollout names none: canary 1 %, 10 %, 50 %, all; an hour each.
pub fn default_phases() -> Vec<Phase> {
    [
        ("canary", 1.0),
        ("10%", 10.0),
        ("50%", 50.0),
        ("all", 100.0),
    ]
    .into_iter()
    .map(|(n, p)| Phase {
        name: n.into(),
        percent: p,
        soak_seconds: if p < 100.0 { 3600 } else { 0 },
    })
    .collect()
}

/// A rollout as asked for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRollout {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Artifact id.
    pub artifact: String,
    /// Target devices.
    #[serde(default)]
    pub filter: Filter,
    /// Phases; default [`default_phases`].
    #[serde(default)]
    pub phases: Option<Vec<Phase>>,
    /// Gates and pacing.
    #[serde(default)]
    pub policy: Policy,
}

/// A rollout's state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RolloutRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Artifact.
    pub artifact_id: String,
    /// Target devices.
    pub filter: Filter,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Gates and pacing.
    pub policy: Policy,
    /// `running`, `paused`, `halted` (a gate tripped), `aborted` or `done`.
    pub state: String,
    /// Index of the current phase.
    pub phase: i64,
    /// When the current phase started (Unix seconds).
    pub phase_started: i64,
    /// Why it halted, or other notes.
    pub reason: String,
    /// Failures accepted by resuming after a halt (the gates count those after).
    pub accepted_failures: i64,
    /// Rollbacks accepted by resuming after a halt.
    pub accepted_rollbacks: i64,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last change (Unix seconds).
    pub updated: i64,
}

/// Device counts of one phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhaseCounts {
    /// Phase name.
    pub name: String,
    /// Devices in this phase.
    pub devices: u64,
    /// Not yet given a deployment.
    pub waiting: u64,
    /// Assigned, not yet started.
    pub assigned: u64,
    /// Downloading, installing, rebooting or validating.
    pub updating: u64,
    /// Succeeded.
    pub success: u64,
    /// Failed (the device stayed on its old version).
    pub failure: u64,
    /// Rolled back after the switch.
    pub rolled_back: u64,
    /// Canceled (aborted, replaced, or offline for the whole rollout).
    pub canceled: u64,
}

impl PhaseCounts {
    fn add(&mut self, state: Option<&str>, n: u64) {
        match state {
            None => self.waiting += n,
            Some("assigned") => self.assigned += n,
            Some("success") => self.success += n,
            Some("failure") => self.failure += n,
            Some("rolled-back") => self.rolled_back += n,
            Some("canceled") => self.canceled += n,
            Some(_) => self.updating += n,
        }
        self.devices += n;
    }
    fn unfinished(&self) -> u64 {
        self.waiting + self.assigned + self.updating
    }
    fn sum(&mut self, o: &PhaseCounts) {
        self.devices += o.devices;
        self.waiting += o.waiting;
        self.assigned += o.assigned;
        self.updating += o.updating;
        self.success += o.success;
        self.failure += o.failure;
        self.rolled_back += o.rolled_back;
        self.canceled += o.canceled;
    }
}

/// A rollout with its per-phase counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RolloutStatus {
    /// The rollout.
    pub rollout: RolloutRow,
    /// Counts per phase, in order.
    pub phases: Vec<PhaseCounts>,
    /// All phases together.
    pub total: PhaseCounts,
    /// Seed §20.2's per-rollout numbers.
    #[serde(default)]
    pub metrics: RolloutMetrics,
}

/// How a rollout is going (seed 001 §20.2, per rollout).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RolloutMetrics {
    /// Deployments that ended (success, failure, rolled back).
    pub finished: u64,
    /// Successes over finished deployments, percent.
    pub success_percent: f64,
    /// Rollbacks over finished deployments, percent.
    pub rollback_percent: f64,
    /// Mean seconds from a device's first report to its success (download, install,
    /// reboot, validation).
    pub mean_update_seconds: f64,
    /// Bytes the devices reported downloading.
    pub bytes_downloaded: i64,
    /// Seconds from creation to the end, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds_to_done: Option<i64>,
}

/// What an evaluation did to a rollout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Step {
    /// Deployments created.
    Assigned(u64),
    /// Moved to phase N.
    Advanced(i64),
    /// A gate tripped.
    Halted(String),
    /// The last phase ended.
    Done,
}

fn check(r: &NewRollout) -> Result<Vec<Phase>, ServerError> {
    let bad = |m: String| Err(ServerError::BadRequest(m));
    let phases = r.phases.clone().unwrap_or_else(default_phases);
    if phases.is_empty() || phases.len() > 16 {
        return bad("a rollout has 1 to 16 phases".into());
    }
    let mut last = 0.0;
    for p in &phases {
        if p.name.is_empty() || p.name.len() > 64 {
            return bad("phase names are 1-64 characters".into());
        }
        if !(p.percent > last && p.percent <= 100.0) {
            return bad(format!(
                "phase `{}`: percentages rise from phase to phase, within (0, 100] (got {} after {last})",
                p.name, p.percent
            ));
        }
        last = p.percent;
    }
    if last != 100.0 {
        return bad("the last phase covers 100% of the targets".into());
    }
    let pol = &r.policy;
    for (n, v) in [
        ("max_failure_percent", pol.max_failure_percent),
        ("max_rollback_percent", pol.max_rollback_percent),
    ] {
        if !(0.0..=100.0).contains(&v) {
            return bad(format!("{n} is a percentage (got {v})"));
        }
    }
    if pol.max_concurrent == Some(0) {
        return bad("max_concurrent is at least 1".into());
    }
    if r.name.len() > 128 {
        return bad("the name is over 128 characters".into());
    }
    Ok(phases)
}

/// Where a device comes in a rollout: canary-tier devices first and conservative ones
/// last (tags `risk=canary` / `risk=conservative`), otherwise a stable shuffle by rollout.
fn order_key(rollout: &str, device: &str, tags: &[String]) -> (u8, [u8; 32]) {
    let tier = if tags.iter().any(|t| t == "risk=canary") {
        0
    } else if tags.iter().any(|t| t == "risk=conservative") {
        2
    } else {
        1
    };
    let h = Sha256::new()
        .chain_update(rollout.as_bytes())
        .chain_update([0])
        .chain_update(device.as_bytes())
        .finalize();
    (tier, h.into())
}

/// Number of targets covered by phases up to `p` (at least one when there are any).
fn covered(phases: &[Phase], p: usize, n: u64) -> u64 {
    let pct = phases[p].percent;
    let c = ((n as f64) * pct / 100.0).ceil() as u64;
    c.clamp(n.min(1), n)
}

fn rollout(r: &AnyRow) -> Result<RolloutRow, ServerError> {
    let g = |e: sqlx::Error| db(e);
    let js = |c: &str| -> Result<String, ServerError> { r.try_get::<String, _>(c).map_err(g) };
    let bad = |e: serde_json::Error| ServerError::Database(format!("rollout row: {e}"));
    Ok(RolloutRow {
        id: js("id")?,
        name: js("name")?,
        artifact_id: js("artifact_id")?,
        filter: serde_json::from_str(&js("filter")?).map_err(bad)?,
        phases: serde_json::from_str(&js("phases")?).map_err(bad)?,
        policy: serde_json::from_str(&js("policy")?).map_err(bad)?,
        state: js("state")?,
        phase: r.try_get("phase").map_err(g)?,
        phase_started: r.try_get("phase_started").map_err(g)?,
        reason: js("reason")?,
        accepted_failures: r.try_get("accepted_failures").map_err(g)?,
        accepted_rollbacks: r.try_get("accepted_rollbacks").map_err(g)?,
        created: r.try_get("created").map_err(g)?,
        updated: r.try_get("updated").map_err(g)?,
    })
}

/// Rows per multi-row INSERT (SQLite allows 32766 parameters; PostgreSQL 65535).
const BATCH: usize = 100;

/// `($1, $2, …), (…)` for `rows` rows of `cols` parameters.
fn placeholders(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<String> = (0..cols)
                .map(|c| format!("${}", r * cols + c + 1))
                .collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Creates a rollout: picks its devices (by the filter) and their phases, once.
    pub async fn create_rollout(
        &self,
        id: &str,
        new: &NewRollout,
        now: i64,
    ) -> Result<RolloutStatus, ServerError> {
        let phases = check(new)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        if sqlx::query("SELECT id FROM artifacts WHERE id = $1")
            .bind(&new.artifact)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .is_none()
        {
            return Err(ServerError::NotFound(format!(
                "no artifact `{}`",
                new.artifact
            )));
        }
        let rows = sqlx::query("SELECT id, hardware, tags FROM devices")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut targets = Vec::new();
        for r in &rows {
            let dev: String = r.try_get("id").map_err(db)?;
            let hw: String = r.try_get("hardware").map_err(db)?;
            let tags: Vec<String> =
                serde_json::from_str(&r.try_get::<String, _>("tags").map_err(db)?)
                    .unwrap_or_default();
            if new.filter.matches(&hw, &tags) {
                targets.push((order_key(id, &dev, &tags), dev));
            }
        }
        if targets.is_empty() {
            return Err(ServerError::BadRequest(
                "no registered device matches the rollout's filter".into(),
            ));
        }
        targets.sort();
        let n = targets.len() as u64;
        let name = if new.name.is_empty() {
            format!("rollout {id}")
        } else {
            new.name.clone()
        };
        sqlx::query(
            "INSERT INTO rollouts (id, name, artifact_id, filter, phases, policy, state, phase, \
             phase_started, created, updated) VALUES ($1, $2, $3, $4, $5, $6, 'running', 0, $7, $7, $7)",
        )
        .bind(id)
        .bind(&name)
        .bind(&new.artifact)
        .bind(enc(&new.filter))
        .bind(enc(&phases))
        .bind(enc(&new.policy))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mut phase = 0usize;
        let mut rows = Vec::with_capacity(targets.len());
        for (i, (_, dev)) in targets.into_iter().enumerate() {
            while (i as u64) >= covered(&phases, phase, n) {
                phase += 1;
            }
            rows.push((dev, phase as i64, i as i64));
        }
        for chunk in rows.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO rollout_targets (rollout_id, device_id, phase, ord) VALUES {}",
                placeholders(chunk.len(), 4)
            );
            let mut q = sqlx::query(&sql);
            for (dev, phase, ord) in chunk {
                q = q.bind(id).bind(dev).bind(*phase).bind(*ord);
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        self.evaluate_rollout(id, now).await?;
        self.rollout_status(id)
            .await?
            .ok_or_else(|| ServerError::Database("the rollout vanished".into()))
    }

    /// One rollout.
    pub async fn rollout(&self, id: &str) -> Result<Option<RolloutRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        r.as_ref().map(rollout).transpose()
    }

    /// All rollouts, newest first.
    pub async fn rollouts(&self) -> Result<Vec<RolloutRow>, ServerError> {
        let rows = sqlx::query("SELECT * FROM rollouts ORDER BY created DESC, id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(rollout).collect()
    }

    async fn counts<'e, E>(&self, ex: E, r: &RolloutRow) -> Result<Vec<PhaseCounts>, ServerError>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let rows = sqlx::query(
            "SELECT t.phase AS phase, d.state AS state, COUNT(*) AS n FROM rollout_targets t \
             LEFT JOIN deployments d ON d.rollout_id = t.rollout_id AND d.device_id = t.device_id \
             WHERE t.rollout_id = $1 GROUP BY t.phase, d.state",
        )
        .bind(&r.id)
        .fetch_all(ex)
        .await
        .map_err(db)?;
        let mut out: Vec<PhaseCounts> = r
            .phases
            .iter()
            .map(|p| PhaseCounts {
                name: p.name.clone(),
                ..Default::default()
            })
            .collect();
        for row in rows {
            let p: i64 = row.try_get("phase").map_err(db)?;
            let state: Option<String> = row.try_get("state").map_err(db)?;
            let n: i64 = row.try_get("n").map_err(db)?;
            if let Some(c) = out.get_mut(p as usize) {
                c.add(state.as_deref(), n as u64);
            }
        }
        Ok(out)
    }

    /// A rollout with per-phase counts.
    pub async fn rollout_status(&self, id: &str) -> Result<Option<RolloutStatus>, ServerError> {
        let Some(r) = self.rollout(id).await? else {
            return Ok(None);
        };
        let phases = self.counts(&self.pool, &r).await?;
        let mut total = PhaseCounts {
            name: "total".into(),
            ..Default::default()
        };
        for p in &phases {
            total.sum(p);
        }
        let metrics = self.rollout_metrics(&r, &total).await?;
        Ok(Some(RolloutStatus {
            rollout: r,
            phases,
            total,
            metrics,
        }))
    }

    /// The §20.2 numbers of rollout `r` whose devices are counted in `total`: the rates
    /// from the counts, bytes and update time in one query over its deployments.
    async fn rollout_metrics(
        &self,
        r: &RolloutRow,
        total: &PhaseCounts,
    ) -> Result<RolloutMetrics, ServerError> {
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE(SUM(downloaded_bytes), 0) AS BIGINT) AS bytes, \
             CAST(COALESCE(SUM(CASE WHEN state = 'success' THEN updated - \
                 COALESCE((SELECT MIN(e.at) FROM events e WHERE e.deployment_id = x.id), updated) \
                 ELSE 0 END), 0) AS BIGINT) AS seconds \
             FROM deployments x WHERE rollout_id = $1",
        )
        .bind(&r.id)
        .fetch_one(&self.read)
        .await
        .map_err(db)?;
        // (SUM is NUMERIC on PostgreSQL, hence the casts.)
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(db);
        let finished = total.success + total.failure + total.rolled_back;
        let pct = |n: u64| {
            if finished == 0 {
                0.0
            } else {
                100.0 * n as f64 / finished as f64
            }
        };
        Ok(RolloutMetrics {
            finished,
            success_percent: pct(total.success),
            rollback_percent: pct(total.rolled_back),
            mean_update_seconds: if total.success == 0 {
                0.0
            } else {
                get("seconds")? as f64 / total.success as f64
            },
            bytes_downloaded: get("bytes")?,
            seconds_to_done: (r.state == "done").then_some(r.updated - r.created),
        })
    }

    /// Pauses (`pause`), resumes (`resume`, also after a halt), aborts (`abort`: the
    /// deployments not yet started are canceled; devices already updating finish) or
    /// evaluates now (`evaluate`) a rollout.
    pub async fn control_rollout(
        &self,
        id: &str,
        action: &str,
        now: i64,
    ) -> Result<RolloutStatus, ServerError> {
        if action == "evaluate" {
            self.evaluate_rollout(id, now).await?;
            return self
                .rollout_status(id)
                .await?
                .ok_or_else(|| ServerError::NotFound(format!("no rollout `{id}`")));
        }
        let (from, to): (&[&str], &str) = match action {
            "pause" => (&["running"], "paused"),
            "resume" => (&["paused", "halted"], "running"),
            "abort" => (&["running", "paused", "halted"], "aborted"),
            _ => {
                return Err(ServerError::BadRequest(format!(
                    "`{action}`: pause, resume, abort or evaluate"
                )))
            }
        };
        let r = self
            .rollout(id)
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("no rollout `{id}`")))?;
        if !from.contains(&r.state.as_str()) {
            return Err(ServerError::Conflict(format!(
                "rollout `{id}` is {}; it cannot {action}",
                r.state
            )));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let n = sqlx::query(
            "UPDATE rollouts SET state = $1, reason = $2, revision = revision + 1, updated = $3 \
             WHERE id = $4 AND state = $5",
        )
        .bind(to)
        .bind(if to == "running" {
            ""
        } else {
            r.reason.as_str()
        })
        .bind(now)
        .bind(id)
        .bind(&r.state)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n == 0 {
            return Err(ServerError::Conflict(format!(
                "rollout `{id}` changed meanwhile; try again"
            )));
        }
        if to == "aborted" {
            cancel_unstarted(&mut tx, id, "rollout aborted", now).await?;
        }
        if r.state == "halted" && to == "running" {
            // Resuming after a halt accepts what tripped the gate; later failures count.
            let mut t = PhaseCounts::default();
            for c in self.counts(&mut *tx, &r).await? {
                t.sum(&c);
            }
            sqlx::query(
                "UPDATE rollouts SET accepted_failures = $1, accepted_rollbacks = $2 WHERE id = $3",
            )
            .bind(t.failure as i64)
            .bind(t.rolled_back as i64)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if to == "running" {
            self.evaluate_rollout(id, now).await?;
        }
        self.rollout_status(id)
            .await?
            .ok_or_else(|| ServerError::Database("the rollout vanished".into()))
    }

    /// Evaluates every running rollout at time `now`.
    pub async fn evaluate_rollouts(
        &self,
        now: i64,
    ) -> Result<Vec<(String, Vec<Step>)>, ServerError> {
        let ids = sqlx::query("SELECT id FROM rollouts WHERE state = 'running' ORDER BY created")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = Vec::new();
        for r in ids {
            let id: String = r.try_get("id").map_err(db)?;
            let steps = self.evaluate_rollout(&id, now).await?;
            if !steps.is_empty() {
                out.push((id, steps));
            }
        }
        Ok(out)
    }

    /// Evaluates one rollout: gates, phase advance, new assignments. Does nothing unless it
    /// is running, or when another replica is evaluating it at the same moment.
    pub async fn evaluate_rollout(&self, id: &str, now: i64) -> Result<Vec<Step>, ServerError> {
        // Assignment skips devices already on the version: they must have been written.
        self.flush_heartbeats().await?;
        let Some(mut r) = self.rollout(id).await? else {
            return Ok(Vec::new());
        };
        if r.state != "running" {
            return Ok(Vec::new());
        }
        let rev: i64 = sqlx::query("SELECT revision FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .try_get("revision")
            .map_err(db)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The compare-and-swap that makes this evaluation the only one for this revision.
        let won = sqlx::query(
            "UPDATE rollouts SET revision = revision + 1 WHERE id = $1 AND revision = $2 AND state = 'running'",
        )
        .bind(id)
        .bind(rev)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if won == 0 {
            return Ok(Vec::new());
        }
        // Re-read under the lock: the phase may have moved since the first read.
        r = rollout(
            &sqlx::query("SELECT * FROM rollouts WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?,
        )?;
        let mut steps = Vec::new();
        let counts = self.counts(&mut *tx, &r).await?;
        let mut total = PhaseCounts::default();
        for c in &counts {
            total.sum(c);
        }

        // Gates, over the devices given a deployment so far, less what an operator accepted.
        let given = total.devices - total.waiting;
        total.failure = total.failure.saturating_sub(r.accepted_failures as u64);
        total.rolled_back = total
            .rolled_back
            .saturating_sub(r.accepted_rollbacks as u64);
        if given > 0 {
            let rate = |n: u64| n as f64 * 100.0 / given as f64;
            let trip = if rate(total.rolled_back) > r.policy.max_rollback_percent {
                Some(format!(
                    "rollback rate {:.1}% ({} of {given}) is over {}%",
                    rate(total.rolled_back),
                    total.rolled_back,
                    r.policy.max_rollback_percent
                ))
            } else if rate(total.failure) > r.policy.max_failure_percent {
                Some(format!(
                    "failure rate {:.1}% ({} of {given}) is over {}%",
                    rate(total.failure),
                    total.failure,
                    r.policy.max_failure_percent
                ))
            } else {
                None
            };
            if let Some(reason) = trip {
                set_state(&mut tx, id, "halted", &reason, now).await?;
                tx.commit().await.map_err(db)?;
                tracing::warn!(rollout = id, %reason, "rollout halted");
                return Ok(vec![Step::Halted(reason)]);
            }
        }

        // Phase advance: every device of the phases so far finished (or the straggler
        // window passed), and the soak time is over.
        let cur = r.phase as usize;
        let mut upto = PhaseCounts::default();
        for c in &counts[..=cur.min(counts.len() - 1)] {
            upto.sum(c);
        }
        let waited = now - r.phase_started;
        let finished = upto.unfinished() == 0 || waited >= r.policy.straggler_seconds as i64;
        let soaked = waited >= r.phases[cur].soak_seconds as i64;
        if finished && soaked {
            if cur + 1 >= r.phases.len() {
                cancel_unstarted(
                    &mut tx,
                    id,
                    "offline for the whole rollout (straggler window over)",
                    now,
                )
                .await?;
                set_state(&mut tx, id, "done", "", now).await?;
                tx.commit().await.map_err(db)?;
                tracing::info!(rollout = id, "rollout done");
                return Ok(vec![Step::Done]);
            }
            r.phase += 1;
            sqlx::query(
                "UPDATE rollouts SET phase = $1, phase_started = $2, updated = $2 WHERE id = $3",
            )
            .bind(r.phase)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tracing::info!(rollout = id, phase = %r.phases[r.phase as usize].name, "rollout phase started");
            steps.push(Step::Advanced(r.phase));
        }

        // Assignments, within max_concurrent.
        let busy = total.assigned + total.updating;
        let room = match r.policy.max_concurrent {
            Some(m) => m.saturating_sub(busy),
            None => u64::MAX,
        };
        // Nobody of the phases so far waits for a deployment: no assignment query (it is an
        // anti-join over every target, the dearest part of an evaluation once all are given).
        let waiting: u64 = counts[..=(r.phase as usize).min(counts.len() - 1)]
            .iter()
            .map(|c| c.waiting)
            .sum();
        if room > 0 && waiting > 0 {
            let n = assign(&mut tx, &r, room, now).await?;
            if n > 0 {
                steps.push(Step::Assigned(n));
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(steps)
    }

    /// A rollout's deployments, by device.
    pub async fn rollout_deployments(&self, id: &str) -> Result<Vec<DeploymentRow>, ServerError> {
        let rows =
            sqlx::query("SELECT * FROM deployments WHERE rollout_id = $1 ORDER BY device_id")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(db)
    }
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

async fn set_state(
    tx: &mut Tx<'_>,
    id: &str,
    state: &str,
    reason: &str,
    now: i64,
) -> Result<(), ServerError> {
    sqlx::query("UPDATE rollouts SET state = $1, reason = $2, updated = $3 WHERE id = $4")
        .bind(state)
        .bind(reason)
        .bind(now)
        .bind(id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn cancel_unstarted(
    tx: &mut Tx<'_>,
    id: &str,
    why: &str,
    now: i64,
) -> Result<(), ServerError> {
    sqlx::query(
        "UPDATE deployments SET active = 0, state = 'canceled', message = $1, updated = $2 \
         WHERE rollout_id = $3 AND active = 1 AND state = 'assigned'",
    )
    .bind(why)
    .bind(now)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Gives up to `room` waiting devices of the phases so far their deployment, in rollout
/// order. A device already running the version is recorded as a success without one.
async fn assign(tx: &mut Tx<'_>, r: &RolloutRow, room: u64, now: i64) -> Result<u64, ServerError> {
    let version: String = sqlx::query("SELECT version FROM artifacts WHERE id = $1")
        .bind(&r.artifact_id)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?
        .try_get("version")
        .map_err(db)?;
    // The devices to give a deployment now, in rollout order; run twice in one transaction
    // (nothing changes between), so the database does the work and no list crosses over.
    // Devices outside their maintenance window wait for a later evaluation.
    let picked = |m: usize| {
        format!(
            "SELECT t.device_id FROM rollout_targets t JOIN devices dv ON dv.id = t.device_id \
             WHERE t.rollout_id = $1 AND t.phase <= $2 AND {} AND NOT EXISTS \
             (SELECT 1 FROM deployments x WHERE x.rollout_id = $1 AND x.device_id = t.device_id) \
             ORDER BY t.ord LIMIT $3",
            crate::window::sql_open("dv", m)
        )
    };
    let minute = crate::window::minute_of_day(now);
    let limit = room.min(i64::MAX as u64) as i64;
    // Other work a device had pending gives way to the rollout.
    sqlx::query(&format!(
        "UPDATE deployments SET active = 0, state = 'canceled', message = $4, updated = $5 \
         WHERE active = 1 AND (rollout_id IS NULL OR rollout_id <> $1) AND device_id IN ({})",
        picked(6)
    ))
    .bind(&r.id)
    .bind(r.phase)
    .bind(limit)
    .bind(format!("replaced by rollout {}", r.id))
    .bind(now)
    .bind(minute)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    // A device already running the version is recorded as a success, inactive.
    let n = sqlx::query(&format!(
        "INSERT INTO deployments (id, device_id, artifact_id, state, progress, message, active, \
         created, updated, rollout_id) \
         SELECT $1 || '-' || d.id, d.id, $4, \
         CASE WHEN d.version = $5 THEN 'success' ELSE 'assigned' END, \
         CASE WHEN d.version = $5 THEN 100 ELSE 0 END, \
         CASE WHEN d.version = $5 THEN $6 ELSE '' END, \
         CASE WHEN d.version = $5 THEN 0 ELSE 1 END, $7, $7, $1 \
         FROM devices d WHERE d.id IN ({})",
        picked(8)
    ))
    .bind(&r.id)
    .bind(r.phase)
    .bind(limit)
    .bind(&r.artifact_id)
    .bind(&version)
    .bind(format!("already running {version}"))
    .bind(now)
    .bind(minute)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(n)
}

/// JSON text of a value, for the TEXT columns (these types always serialise).
fn enc<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_cover_their_share() {
        let p = default_phases();
        assert_eq!(
            (0..4).map(|i| covered(&p, i, 1000)).collect::<Vec<_>>(),
            [10, 100, 500, 1000]
        );
        // A canary of one device in a small fleet.
        assert_eq!(covered(&p, 0, 20), 1);
        assert_eq!(covered(&p, 3, 1), 1);
    }

    #[test]
    fn bad_rollouts_are_named() {
        let mut r = NewRollout {
            name: String::new(),
            artifact: "a".into(),
            filter: Filter::default(),
            phases: Some(vec![
                Phase {
                    name: "a".into(),
                    percent: 50.0,
                    soak_seconds: 0,
                },
                Phase {
                    name: "b".into(),
                    percent: 40.0,
                    soak_seconds: 0,
                },
            ]),
            policy: Policy::default(),
        };
        assert!(check(&r).unwrap_err().to_string().contains("rise"));
        r.phases = Some(vec![Phase {
            name: "a".into(),
            percent: 50.0,
            soak_seconds: 0,
        }]);
        assert!(check(&r).unwrap_err().to_string().contains("100%"));
        r.phases = None;
        r.policy.max_rollback_percent = 120.0;
        assert!(check(&r).unwrap_err().to_string().contains("percentage"));
    }

    #[test]
    fn canaries_come_first_and_order_is_stable() {
        let c = order_key("r", "z", &["risk=canary".into()]);
        let s = order_key("r", "a", &[]);
        let k = order_key("r", "b", &["risk=conservative".into()]);
        assert!(c < s && s < k);
        assert_eq!(order_key("r", "a", &[]), s);
        assert_ne!(order_key("r2", "a", &[]).1, s.1);
    }
}
