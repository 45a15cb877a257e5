//! Alerts (seed 001 §20.2), worked out from the database when asked for — nothing to keep
//! in step between replicas:
//!
//! - `boot-loop` (page): a device has booted at least [`LOOP_BOOTS`] times with under
//!   [`LOOP_GAP`] between boots, for over [`LOOP_FOR`] ("any device in boot loop > 30 min"),
//!   and its last boot is recent;
//! - `stuck-update` (page): a deployment has been `rebooting` or `validating` for over
//!   [`LOOP_FOR`] without a word (a device that cannot get through its new slot's boot);
//! - `unreachable-after-update` (warning): a device that rebooted into, finished or rolled
//!   back an update in the last week has not been heard of for three poll intervals (at least
//!   [`UNREACHABLE_MIN`]);
//! - `rollout-unreachable` (investigate): a rollout with more than [`UNREACHABLE_ROLLOUT`]
//!   such devices;
//! - `rollout-halted` (investigate): a rollout a gate halted, with the reason.

use crate::store::{db, Store};
use crate::ServerError;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::HashMap;

/// Boots that make a loop.
pub const LOOP_BOOTS: usize = 3;
/// Most seconds between two boots of a loop.
pub const LOOP_GAP: i64 = 15 * 60;
/// Seconds a loop (or a stuck reboot) lasts before it is an alert.
pub const LOOP_FOR: i64 = 30 * 60;
/// Least silence, in seconds, that makes a device unreachable.
pub const UNREACHABLE_MIN: i64 = 5 * 60;
/// Unreachable devices of one rollout above which it is investigated.
pub const UNREACHABLE_ROLLOUT: usize = 10;

/// One alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alert {
    /// `boot-loop`, `stuck-update`, `unreachable-after-update`, `rollout-unreachable`,
    /// `rollout-halted`.
    pub kind: String,
    /// `page` (on-call), `investigate` or `warning`.
    pub severity: String,
    /// The device, for device alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The rollout, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    /// Since when (Unix seconds).
    pub since: i64,
    /// What a person reads.
    pub message: String,
}

/// The boot loop in `boots` (sorted) as of `now`, if any: (first boot, number of boots).
pub fn boot_loop(boots: &[i64], now: i64) -> Option<(i64, usize)> {
    let last = *boots.last()?;
    if now - last > LOOP_GAP {
        return None; // it has stayed up since
    }
    let mut first = boots.len() - 1;
    while first > 0 && boots[first] - boots[first - 1] <= LOOP_GAP {
        first -= 1;
    }
    let n = boots.len() - first;
    (n >= LOOP_BOOTS && now - boots[first] > LOOP_FOR).then_some((boots[first], n))
}

impl Store {
    /// The alerts as of `now`, for devices polling every `poll_seconds`; pages first.
    pub async fn alerts(&self, now: i64, poll_seconds: u64) -> Result<Vec<Alert>, ServerError> {
        self.flush_heartbeats().await?;
        let mut out = Vec::new();

        // Boot loops: the boots of the last two hours, by device.
        let rows =
            sqlx::query("SELECT device_id, at FROM boots WHERE at >= $1 ORDER BY device_id, at")
                .bind(now - 4 * LOOP_FOR)
                .fetch_all(&self.read)
                .await
                .map_err(db)?;
        let mut boots: HashMap<String, Vec<i64>> = HashMap::new();
        for r in &rows {
            boots
                .entry(r.try_get("device_id").map_err(db)?)
                .or_default()
                .push(r.try_get("at").map_err(db)?);
        }
        let mut looping: Vec<_> = boots
            .iter()
            .filter_map(|(d, b)| boot_loop(b, now).map(|(since, n)| (d.clone(), since, n)))
            .collect();
        looping.sort();
        for (device, since, n) in looping {
            out.push(Alert {
                kind: "boot-loop".into(),
                severity: "page".into(),
                device_id: Some(device),
                rollout_id: None,
                since,
                message: format!(
                    "{n} boots in {} min and still rebooting",
                    (now - since) / 60
                ),
            });
        }

        // Updates stuck in their reboot.
        let rows = sqlx::query(
            "SELECT device_id, rollout_id, state, updated FROM deployments \
             WHERE active = 1 AND state IN ('rebooting', 'validating') AND updated < $1 \
             ORDER BY updated, device_id",
        )
        .bind(now - LOOP_FOR)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        for r in &rows {
            let updated: i64 = r.try_get("updated").map_err(db)?;
            let state: String = r.try_get("state").map_err(db)?;
            out.push(Alert {
                kind: "stuck-update".into(),
                severity: "page".into(),
                device_id: Some(r.try_get("device_id").map_err(db)?),
                rollout_id: r.try_get("rollout_id").map_err(db)?,
                since: updated,
                message: format!(
                    "{state} for {} min without a report: boot loop or hung on the new slot",
                    (now - updated) / 60
                ),
            });
        }

        // Unreachable after an update: the newest such deployment per device.
        let silence = (3 * poll_seconds as i64).max(UNREACHABLE_MIN);
        let rows = sqlx::query(
            "SELECT x.device_id AS device_id, x.rollout_id AS rollout_id, x.state AS state, \
             x.updated AS updated, d.last_seen AS last_seen, d.telemetry_at AS telemetry_at \
             FROM deployments x JOIN devices d ON d.id = x.device_id \
             WHERE x.state IN ('rebooting', 'validating', 'success', 'rolled-back') \
             AND x.updated >= $1 AND x.updated < $2 ORDER BY x.device_id, x.updated",
        )
        .bind(now - 7 * 86400)
        .bind(now - silence)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        let mut newest: HashMap<String, (Option<String>, String, i64, i64)> = HashMap::new();
        for r in &rows {
            let updated: i64 = r.try_get("updated").map_err(db)?;
            let seen: Option<i64> = r.try_get("last_seen").map_err(db)?;
            let tele: Option<i64> = r.try_get("telemetry_at").map_err(db)?;
            let heard = updated.max(seen.unwrap_or(0)).max(tele.unwrap_or(0));
            newest.insert(
                r.try_get("device_id").map_err(db)?,
                (
                    r.try_get("rollout_id").map_err(db)?,
                    r.try_get("state").map_err(db)?,
                    updated,
                    heard,
                ),
            );
        }
        let mut unreachable: Vec<_> = newest
            .into_iter()
            .filter(|(_, (_, _, _, heard))| now - heard > silence)
            .collect();
        unreachable.sort_by(|a, b| a.0.cmp(&b.0));
        let mut per_rollout: HashMap<String, (usize, i64)> = HashMap::new();
        for (device, (rollout, state, _, heard)) in &unreachable {
            if let Some(r) = rollout {
                let e = per_rollout.entry(r.clone()).or_insert((0, *heard));
                e.0 += 1;
                e.1 = e.1.min(*heard);
            }
            out.push(Alert {
                kind: "unreachable-after-update".into(),
                severity: "warning".into(),
                device_id: Some(device.clone()),
                rollout_id: rollout.clone(),
                since: *heard,
                message: format!(
                    "not heard of for {} min since its update ({state})",
                    (now - heard) / 60
                ),
            });
        }
        let mut per_rollout: Vec<_> = per_rollout
            .into_iter()
            .filter(|(_, (n, _))| *n > UNREACHABLE_ROLLOUT)
            .collect();
        per_rollout.sort();
        for (rollout, (n, since)) in per_rollout {
            out.push(Alert {
                kind: "rollout-unreachable".into(),
                severity: "investigate".into(),
                device_id: None,
                rollout_id: Some(rollout),
                since,
                message: format!("{n} devices unreachable after their update"),
            });
        }

        let rows = sqlx::query(
            "SELECT id, reason, updated FROM rollouts WHERE state = 'halted' ORDER BY updated, id",
        )
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        for r in &rows {
            let reason: String = r.try_get("reason").map_err(db)?;
            out.push(Alert {
                kind: "rollout-halted".into(),
                severity: "investigate".into(),
                device_id: None,
                rollout_id: Some(r.try_get("id").map_err(db)?),
                since: r.try_get("updated").map_err(db)?,
                message: format!("halted: {reason}"),
            });
        }
        let rank = |s: &str| match s {
            "page" => 0,
            "investigate" => 1,
            _ => 2,
        };
        out.sort_by_key(|a| rank(&a.severity));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loops_are_told_from_reboots() {
        let now = 100_000;
        // Every 5 minutes for 40 minutes, the last a minute ago: a loop.
        let looping: Vec<i64> = (0..9).map(|i| now - 60 - 2400 + i * 300).collect();
        assert_eq!(boot_loop(&looping, now), Some((now - 2460, 9)));
        // The same for only 20 minutes: not yet.
        assert_eq!(boot_loop(&looping[5..], now), None);
        // It stopped rebooting half an hour ago: over.
        assert_eq!(boot_loop(&looping, now + 1800), None);
        // Boots a day apart are no loop; a fresh loop after an old boot counts from its start.
        let mut b = vec![now - 86400];
        b.extend(&looping);
        assert_eq!(boot_loop(&b, now), Some((now - 2460, 9)));
        assert_eq!(boot_loop(&[now - 86400, now - 60], now), None);
        assert_eq!(boot_loop(&[], now), None);
    }
}
