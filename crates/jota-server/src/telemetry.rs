//! Device telemetry (seed 001 §20.1: version, boot slot, uptime, disk, temperature, memory,
//! GPU load, last OTA status, rollbacks, plus free-form metrics) and inventory (the §9.3
//! version report: L4T, kernel, UEFI, slots, ...). Times are the server's: a device's clock
//! may be wrong (seed §19.1), so its `timestamp` is kept as it sent it and not trusted.
//!
//! Each report with an uptime records the boot it belongs to (report time minus uptime,
//! once per boot), which is what boot-loop alerts count ([`crate::alerts`]).

use crate::store::{db, Store};
use crate::ServerError;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;

/// A telemetry report, with the field names of the seed's `ota-telemetry.sh`; every field is
/// optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// The sender's id (the seed's script sends it); must be the authenticated device's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The device's clock when it sent this (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Release the device runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ota_version: Option<String>,
    /// Booted rootfs slot (`0`/`1`, `A`/`B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_slot: Option<String>,
    /// Whether (or in how many chains) the boot was marked successful.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_successful: Option<serde_json::Value>,
    /// Seconds since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Root filesystem use, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_usage_pct: Option<f64>,
    /// SoC temperature, millidegrees Celsius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature_mc: Option<i64>,
    /// MemAvailable, KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_available_kb: Option<u64>,
    /// GPU load, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_utilization_pct: Option<f64>,
    /// Outcome of the last update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ota_status: Option<String>,
    /// When the last update happened (device clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ota_timestamp: Option<String>,
    /// Rollbacks so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_count: Option<u64>,
    /// Anything else, by name (at most 64).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

impl Telemetry {
    /// Checks what serde cannot: sizes, ranges, the type of `boot_successful`.
    pub fn check(&self) -> Result<(), ServerError> {
        let bad = |m: String| Err(ServerError::BadRequest(m));
        for (name, v) in [
            ("timestamp", &self.timestamp),
            ("ota_version", &self.ota_version),
            ("boot_slot", &self.boot_slot),
            ("last_ota_status", &self.last_ota_status),
            ("last_ota_timestamp", &self.last_ota_timestamp),
        ] {
            if v.as_ref().is_some_and(|s| s.len() > 128) {
                return bad(format!("{name} is over 128 characters"));
            }
        }
        if let Some(b) = &self.boot_successful {
            if !(b.is_boolean() || b.is_u64()) {
                return bad("boot_successful: true/false or a count".into());
            }
        }
        for (name, v) in [
            ("rootfs_usage_pct", self.rootfs_usage_pct),
            ("gpu_utilization_pct", self.gpu_utilization_pct),
        ] {
            if v.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return bad(format!("{name}: a percentage, 0 to 100"));
            }
        }
        if self.metrics.len() > 64 {
            return bad("metrics: at most 64".into());
        }
        if let Some((k, _)) = self
            .metrics
            .iter()
            .find(|(k, v)| k.is_empty() || k.len() > 64 || !v.is_finite())
        {
            return bad(format!(
                "metrics: `{k}`: a name of 1-64 characters and a finite number"
            ));
        }
        Ok(())
    }
}

/// A stored report and when the server received it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TelemetryRow {
    /// Received (server time, Unix seconds).
    pub at: i64,
    /// The report.
    pub report: Telemetry,
}

/// Two reports whose boot times are this close are the same boot (uptime is whole seconds
/// and reports take time to arrive).
const SAME_BOOT_SECONDS: i64 = 120;

impl Store {
    /// Records the boot a report with `uptime` received at `at` belongs to, unless known.
    async fn record_boot(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        device: &str,
        at: i64,
        uptime: u64,
    ) -> Result<(), ServerError> {
        let boot = at.saturating_sub(i64::try_from(uptime).unwrap_or(i64::MAX));
        let known = sqlx::query(
            "SELECT COUNT(*) AS n FROM boots WHERE device_id = $1 AND at BETWEEN $2 AND $3",
        )
        .bind(device)
        .bind(boot - SAME_BOOT_SECONDS)
        .bind(boot + SAME_BOOT_SECONDS)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?
        .try_get::<i64, _>("n")
        .map_err(db)?;
        if known == 0 {
            sqlx::query("INSERT INTO boots (device_id, at) VALUES ($1, $2)")
                .bind(device)
                .bind(boot)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Stores a telemetry report of `device` received at `at`.
    pub async fn add_telemetry(
        &self,
        device: &str,
        report: &Telemetry,
        at: i64,
    ) -> Result<(), ServerError> {
        let text = serde_json::to_string(report)
            .map_err(|e| ServerError::BadRequest(format!("telemetry: {e}")))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("INSERT INTO telemetry (device_id, at, report) VALUES ($1, $2, $3)")
            .bind(device)
            .bind(at)
            .bind(text)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("UPDATE devices SET telemetry_at = $1 WHERE id = $2")
            .bind(at)
            .bind(device)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(up) = report.uptime_seconds {
            Self::record_boot(&mut tx, device, at, up).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// Replaces the inventory of `device` (a JSON object); an `uptime_seconds` in it records
    /// the boot like telemetry does.
    pub async fn set_inventory(
        &self,
        device: &str,
        inventory: &serde_json::Map<String, serde_json::Value>,
        at: i64,
    ) -> Result<(), ServerError> {
        let text = serde_json::to_string(inventory)
            .map_err(|e| ServerError::BadRequest(format!("inventory: {e}")))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("UPDATE devices SET inventory = $1, inventory_at = $2 WHERE id = $3")
            .bind(text)
            .bind(at)
            .bind(device)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if let Some(up) = inventory.get("uptime_seconds").and_then(|v| v.as_u64()) {
            Self::record_boot(&mut tx, device, at, up).await?;
        }
        tx.commit().await.map_err(db)
    }

    /// The inventory of `device` and when it was reported.
    pub async fn inventory(
        &self,
        device: &str,
    ) -> Result<(serde_json::Value, Option<i64>), ServerError> {
        let r = sqlx::query("SELECT inventory, inventory_at FROM devices WHERE id = $1")
            .bind(device)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?
            .ok_or_else(|| ServerError::NotFound(format!("no device `{device}`")))?;
        let text: String = r.try_get("inventory").map_err(db)?;
        Ok((
            serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({})),
            r.try_get("inventory_at").map_err(db)?,
        ))
    }

    /// The newest `limit` reports of `device`, newest first.
    pub async fn telemetry_of(
        &self,
        device: &str,
        limit: i64,
    ) -> Result<Vec<TelemetryRow>, ServerError> {
        let rows = sqlx::query(
            "SELECT at, report FROM telemetry WHERE device_id = $1 ORDER BY at DESC LIMIT $2",
        )
        .bind(device)
        .bind(limit)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("report").map_err(db)?;
                Ok(TelemetryRow {
                    at: r.try_get("at").map_err(db)?,
                    report: serde_json::from_str(&text).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Boots of `device` since `since`, oldest first.
    pub async fn boots_of(&self, device: &str, since: i64) -> Result<Vec<i64>, ServerError> {
        let rows =
            sqlx::query("SELECT at FROM boots WHERE device_id = $1 AND at >= $2 ORDER BY at")
                .bind(device)
                .bind(since)
                .fetch_all(&self.read)
                .await
                .map_err(db)?;
        rows.iter().map(|r| r.try_get("at").map_err(db)).collect()
    }

    /// Deletes telemetry and boots older than `before`; returns the reports deleted.
    pub async fn prune_telemetry(&self, before: i64) -> Result<u64, ServerError> {
        let n = sqlx::query("DELETE FROM telemetry WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        sqlx::query("DELETE FROM boots WHERE at < $1")
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_report_is_accepted_and_bad_values_named() {
        let t: Telemetry = serde_json::from_str(
            r#"{"device_id": "x", "timestamp": "2026-12-04T05:00:00Z", "ota_version": "1.0.0",
                "boot_slot": "0", "boot_successful": 1, "uptime_seconds": 42, "rootfs_usage_pct": 41,
                "temperature_mc": 48500, "memory_available_kb": 5723456, "gpu_utilization_pct": 0,
                "last_ota_status": "none", "last_ota_timestamp": "none", "rollback_count": 0}"#,
        )
        .unwrap();
        t.check().unwrap();
        let bad = |json: &str, want: &str| {
            let t: Telemetry = serde_json::from_str(json).unwrap();
            let e = t.check().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(r#"{"gpu_utilization_pct": 101}"#, "gpu_utilization_pct");
        bad(r#"{"boot_successful": "yes"}"#, "boot_successful");
        bad(r#"{"metrics": {"": 1}}"#, "metrics");
        bad(
            &format!(r#"{{"ota_version": "{}"}}"#, "v".repeat(200)),
            "ota_version",
        );
        assert!(serde_json::from_str::<Telemetry>(r#"{"uptime_seconds": -1}"#).is_err());
    }

    proptest::proptest! {
        // Telemetry comes from the network: whatever parses is checked without panicking.
        #[test]
        fn any_json_is_an_answer(s in r#"\{("[a-z_]{1,20}": ?(-?[0-9.e]{1,12}|"[^"]{0,10}"|true|\{\}|\[\]), ?){0,6}\}|.{0,100}"#) {
            if let Ok(t) = serde_json::from_str::<Telemetry>(&s) {
                let _ = t.check();
            }
        }
    }
}
