//! The server's state in SQLite (default, one file) or PostgreSQL, through one portable
//! schema (`migrations/`) and runtime-checked queries.

use crate::ServerError;
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// A registered device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRow {
    /// Device id.
    pub id: String,
    /// Hardware (e.g. `3767-0005-300`).
    pub hardware: String,
    /// Tags (JSON array as stored).
    pub tags: Vec<String>,
    /// Version it last reported.
    pub version: Option<String>,
    /// Registration time (Unix seconds).
    pub created: i64,
    /// Last poll (Unix seconds).
    pub last_seen: Option<i64>,
}

/// An uploaded artifact (a verified jota bundle).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactRow {
    /// Artifact id (first 16 hex digits of the file's sha256).
    pub id: String,
    /// `jota` (a bundle) or `swu` (a SWUpdate archive, for DDI devices).
    pub kind: String,
    /// Release version.
    pub version: String,
    /// File size.
    pub size: i64,
    /// sha256 of the file.
    pub sha256: String,
    /// sha1 of the file (hawkBit DDI clients check it).
    #[serde(default)]
    pub sha1: String,
    /// md5 of the file (DDI's `md5sum-http`).
    #[serde(default)]
    pub md5: String,
    /// sha256 of the bundle's manifest (its identity on devices).
    pub manifest_sha256: String,
    /// What a device holding the bundle's base downloads by chunked delta.
    pub chunked_bytes: i64,
    /// Upload time (Unix seconds).
    pub created: i64,
}

/// A deployment of an artifact to a device.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentRow {
    /// Deployment id.
    pub id: String,
    /// Device.
    pub device_id: String,
    /// Artifact.
    pub artifact_id: String,
    /// Last state the device reported (`assigned` until it reports).
    pub state: String,
    /// Progress, percent.
    pub progress: i64,
    /// Bytes the device reported downloading.
    pub downloaded_bytes: i64,
    /// Last message (log excerpt).
    pub message: String,
    /// Still to be acted on by the device.
    pub active: bool,
    /// Created (Unix seconds).
    pub created: i64,
    /// Last update (Unix seconds).
    pub updated: i64,
    /// The rollout that made it, if any.
    pub rollout_id: Option<String>,
    /// An operator asked to cancel it after the device started; the device is told.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// A device as its poll sees it.
#[derive(Clone, Debug)]
pub struct PollView {
    /// The device.
    pub device: DeviceRow,
    /// Its active deployment, if any.
    pub deployment: Option<PolledDeployment>,
}

/// An active deployment with what a poll answers about it.
#[derive(Clone, Debug)]
pub struct PolledDeployment {
    /// Deployment id.
    pub id: String,
    /// Its state.
    pub state: String,
    /// The rollout that made it.
    pub rollout_id: Option<String>,
    /// That rollout's state.
    pub rollout_state: Option<String>,
    /// Cancellation asked for.
    pub cancel_requested: bool,
    /// The artifact (sha1, md5 and created not filled in).
    pub artifact: ArtifactRow,
}

/// A poll not yet written: when, and a version the device reported that differs.
type Heartbeat = (i64, Option<String>);

/// Heartbeats waiting for the next batch, and the number of the last batch taken (the one
/// being filled is the next).
#[derive(Debug, Default)]
struct Pending {
    polls: std::collections::HashMap<String, Heartbeat>,
    batch: u64,
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    /// Writes and transactions (one connection on SQLite, which has one writer anyway).
    pub(crate) pool: AnyPool,
    /// Single-statement reads: on SQLite, WAL readers beside the writer; else `pool`.
    pub(crate) read: AnyPool,
    /// Polls not yet written. A bare heartbeat is not worth an fsync per poll:
    /// [`Store::flush_heartbeats`] writes them all in one transaction every second.
    heartbeats: std::sync::Arc<std::sync::Mutex<Pending>>,
    /// Held while writing a batch; holds the number of the last batch committed.
    flushed: std::sync::Arc<tokio::sync::Mutex<u64>>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

pub(crate) fn db(e: sqlx::Error) -> ServerError {
    ServerError::Database(e.to_string())
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn device(r: &AnyRow) -> Result<DeviceRow, sqlx::Error> {
    let tags: String = r.try_get("tags")?;
    Ok(DeviceRow {
        id: r.try_get("id")?,
        hardware: r.try_get("hardware")?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        version: r.try_get("version")?,
        created: r.try_get("created")?,
        last_seen: r.try_get("last_seen")?,
    })
}

fn artifact(r: &AnyRow) -> Result<ArtifactRow, sqlx::Error> {
    Ok(ArtifactRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        version: r.try_get("version")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
        sha1: r.try_get("sha1")?,
        md5: r.try_get("md5")?,
        manifest_sha256: r.try_get("manifest_sha256")?,
        chunked_bytes: r.try_get("chunked_bytes")?,
        created: r.try_get("created")?,
    })
}

pub(crate) fn deployment(r: &AnyRow) -> Result<DeploymentRow, sqlx::Error> {
    Ok(DeploymentRow {
        id: r.try_get("id")?,
        device_id: r.try_get("device_id")?,
        artifact_id: r.try_get("artifact_id")?,
        state: r.try_get("state")?,
        progress: r.try_get("progress")?,
        downloaded_bytes: r.try_get("downloaded_bytes")?,
        message: r.try_get("message")?,
        active: r.try_get::<i64, _>("active")? != 0,
        created: r.try_get("created")?,
        updated: r.try_get("updated")?,
        rollout_id: r.try_get("rollout_id")?,
        cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
    })
}

/// Appends a report to a deployment's history.
async fn add_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    deployment_id: &str,
    state: &str,
    progress: i64,
    message: &str,
    at: i64,
) -> Result<(), ServerError> {
    sqlx::query(
        "INSERT INTO events (deployment_id, seq, state, progress, message, at) \
         SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5 FROM events WHERE deployment_id = $1",
    )
    .bind(deployment_id)
    .bind(state)
    .bind(progress)
    .bind(message)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// Inserts device `id` through `ex` (a pool or a transaction), its maintenance window taken
/// from its tags. Refuses an id already taken (409).
pub(crate) async fn insert_device<'e, E>(
    ex: E,
    id: &str,
    token_sha256: &str,
    hardware: &str,
    tags: &[String],
    at: i64,
) -> Result<(), ServerError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let window = crate::window::of_tags(tags)?;
    let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
    let r = sqlx::query(
        "INSERT INTO devices (id, token_sha256, hardware, tags, created, window_start, window_end) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(token_sha256)
    .bind(hardware)
    .bind(tags)
    .bind(at)
    .bind(window.map(|w| w.0))
    .bind(window.map(|w| w.1))
    .execute(ex)
    .await;
    match r {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(ServerError::Conflict(
            format!("device `{id}` is already registered"),
        )),
        Err(e) => Err(db(e)),
    }
}

/// Deployment states a device may report (seed 001 §17.3), and whether each ends it.
pub const STATES: &[(&str, bool)] = &[
    ("downloading", false),
    ("installing", false),
    ("rebooting", false),
    ("validating", false),
    ("success", true),
    ("failure", true),
    ("rolled-back", true),
];

/// Options for `url`. Statement logging is off: sqlx pretty-prints every statement it logs,
/// which costs more than running a 500-row INSERT.
fn connect_options(url: &str) -> Result<sqlx::any::AnyConnectOptions, ServerError> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    Ok(sqlx::any::AnyConnectOptions::from_str(url)
        .map_err(db)?
        .disable_statement_logging())
}

impl Store {
    /// Connects to `url` (`sqlite://FILE?mode=rwc` or `postgres://…`) and migrates.
    pub async fn open(url: &str) -> Result<Store, ServerError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        // Per-connection SQLite settings: WAL with durable commits, foreign keys, a page cache
        // that holds a 100,000-device registry (the default 2 MiB makes every poll a read()),
        // and waiting instead of failing while the writer holds the lock.
        let options = || {
            AnyPoolOptions::new().after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA cache_size = -65536",
                            "PRAGMA mmap_size = 268435456",
                            "PRAGMA busy_timeout = 5000",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
        };
        let pool = options()
            // SQLite serialises writers anyway; one connection avoids SQLITE_BUSY.
            .max_connections(if sqlite { 1 } else { 16 })
            .connect_with(connect_options(url)?)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| ServerError::Database(format!("migrations: {e}")))?;
        let read = if sqlite && !url.contains(":memory:") {
            options()
                .max_connections(4)
                .connect_with(connect_options(url)?)
                .await
                .map_err(db)?
        } else {
            pool.clone()
        };
        Ok(Store {
            pool,
            read,
            heartbeats: Default::default(),
            flushed: Default::default(),
        })
    }

    /// Registers a device with the sha256 of its token. Refuses an id already taken.
    pub async fn add_device(
        &self,
        id: &str,
        token_sha256: &str,
        hardware: &str,
        tags: &[String],
    ) -> Result<(), ServerError> {
        insert_device(&self.pool, id, token_sha256, hardware, tags, now()).await
    }

    /// Replaces a device's tags (and the maintenance window they hold). `false`: no such
    /// device.
    pub async fn set_tags(&self, id: &str, tags: &[String]) -> Result<bool, ServerError> {
        let window = crate::window::of_tags(tags)?;
        let json = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        let n = sqlx::query(
            "UPDATE devices SET tags = $1, window_start = $2, window_end = $3 WHERE id = $4",
        )
        .bind(json)
        .bind(window.map(|w| w.0))
        .bind(window.map(|w| w.1))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n > 0)
    }

    /// Registers many devices in one transaction: (id, token sha256, hardware, tags) each.
    /// All or none: an id already taken (or given twice) refuses the whole batch, naming it.
    pub async fn add_devices(
        &self,
        devices: &[(String, String, String, Vec<String>)],
    ) -> Result<(), ServerError> {
        let windows = devices
            .iter()
            .map(|d| {
                crate::window::of_tags(&d.3)
                    .map_err(|e| ServerError::BadRequest(format!("device `{}`: {e}", d.0)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::HashSet::new();
        if let Some(d) = devices.iter().find(|d| !seen.insert(d.0.as_str())) {
            return Err(ServerError::BadRequest(format!(
                "device `{}` is given twice",
                d.0
            )));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let t = now();
        for (chunk, wins) in devices.chunks(500).zip(windows.chunks(500)) {
            let list = (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("SELECT id FROM devices WHERE id IN ({list}) LIMIT 1");
            let mut q = sqlx::query(&sql);
            for d in chunk {
                q = q.bind(&d.0);
            }
            if let Some(r) = q.fetch_optional(&mut *tx).await.map_err(db)? {
                let id: String = r.try_get("id").map_err(db)?;
                return Err(ServerError::Conflict(format!(
                    "device `{id}` is already registered"
                )));
            }
            let rows = (0..chunk.len())
                .map(|r| {
                    let p: Vec<String> = (1..=7).map(|c| format!("${}", r * 7 + c)).collect();
                    format!("({})", p.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO devices (id, token_sha256, hardware, tags, created, window_start, window_end) \
                 VALUES {rows}"
            );
            let mut q = sqlx::query(&sql);
            for ((id, token, hw, tags), w) in chunk.iter().zip(wins) {
                let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
                q = q
                    .bind(id)
                    .bind(token)
                    .bind(hw)
                    .bind(tags)
                    .bind(t)
                    .bind(w.map(|w| w.0))
                    .bind(w.map(|w| w.1));
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// The device whose token hashes to `token_sha256`.
    pub async fn device_by_token(
        &self,
        token_sha256: &str,
    ) -> Result<Option<DeviceRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM devices WHERE token_sha256 = $1")
            .bind(token_sha256)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        r.as_ref().map(device).transpose().map_err(db)
    }

    /// The device holding `cred`.
    pub async fn device_by(
        &self,
        cred: &crate::provision::Credential,
    ) -> Result<Option<DeviceRow>, ServerError> {
        let r = sqlx::query(&format!(
            "SELECT * FROM devices WHERE {} = $1",
            cred.column()
        ))
        .bind(cred.hash())
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        r.as_ref().map(device).transpose().map_err(db)
    }

    /// What a poll needs in one query: the device holding `cred`, its active deployment,
    /// that deployment's artifact and the state of its rollout.
    pub async fn poll_view(
        &self,
        cred: &crate::provision::Credential,
    ) -> Result<Option<PollView>, ServerError> {
        let r = sqlx::query(&format!(
            "SELECT d.id AS id, d.hardware AS hardware, d.tags AS tags, d.version AS version, \
             d.created AS created, d.last_seen AS last_seen, x.id AS dep_id, x.state AS dep_state, \
             x.rollout_id AS rollout_id, x.cancel_requested AS cancel_requested, r.state AS rollout_state, a.id AS art_id, a.kind AS art_kind, \
             a.version AS art_version, a.size AS art_size, a.sha256 AS art_sha256, \
             a.manifest_sha256 AS art_manifest, a.chunked_bytes AS art_chunked \
             FROM devices d \
             LEFT JOIN deployments x ON x.device_id = d.id AND x.active = 1 \
             LEFT JOIN rollouts r ON r.id = x.rollout_id \
             LEFT JOIN artifacts a ON a.id = x.artifact_id \
             WHERE d.{} = $1",
            cred.column()
        ))
        .bind(cred.hash())
        .fetch_optional(&self.read)
        .await
        .map_err(db)?;
        let Some(r) = r else { return Ok(None) };
        let row = || -> Result<PollView, sqlx::Error> {
            let dep_id: Option<String> = r.try_get("dep_id")?;
            let art_id: Option<String> = r.try_get("art_id")?;
            let deployment = match (dep_id, art_id) {
                (Some(id), Some(artifact_id)) => Some(PolledDeployment {
                    id,
                    state: r.try_get("dep_state")?,
                    rollout_id: r.try_get("rollout_id")?,
                    rollout_state: r.try_get("rollout_state")?,
                    cancel_requested: r.try_get::<i64, _>("cancel_requested")? != 0,
                    artifact: ArtifactRow {
                        id: artifact_id,
                        kind: r.try_get("art_kind")?,
                        version: r.try_get("art_version")?,
                        size: r.try_get("art_size")?,
                        sha256: r.try_get("art_sha256")?,
                        sha1: String::new(),
                        md5: String::new(),
                        manifest_sha256: r.try_get("art_manifest")?,
                        chunked_bytes: r.try_get("art_chunked")?,
                        created: 0,
                    },
                }),
                _ => None,
            };
            Ok(PollView {
                device: device(&r)?,
                deployment,
            })
        };
        row().map(Some).map_err(db)
    }

    /// The device `id`.
    pub async fn device(&self, id: &str) -> Result<Option<DeviceRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        r.as_ref().map(device).transpose().map_err(db)
    }

    /// A device's deployments, newest first.
    pub async fn deployments_of(&self, device_id: &str) -> Result<Vec<DeploymentRow>, ServerError> {
        let rows = sqlx::query(
            "SELECT * FROM deployments WHERE device_id = $1 ORDER BY created DESC, id DESC",
        )
        .bind(device_id)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Attributes a device reported (DDI configData), as a JSON object.
    pub async fn attributes(&self, id: &str) -> Result<serde_json::Value, ServerError> {
        let r = sqlx::query("SELECT attributes FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        let text: String = match r {
            Some(r) => r.try_get("attributes").map_err(db)?,
            None => return Err(ServerError::NotFound(format!("no device `{id}`"))),
        };
        Ok(serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({})))
    }

    /// Stores a device's attributes (a JSON object).
    pub async fn set_attributes(
        &self,
        id: &str,
        attributes: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ServerError> {
        let text = serde_json::to_string(attributes)
            .map_err(|e| ServerError::BadRequest(format!("attributes: {e}")))?;
        sqlx::query("UPDATE devices SET attributes = $1 WHERE id = $2")
            .bind(text)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// All devices, by id.
    pub async fn devices(&self) -> Result<Vec<DeviceRow>, ServerError> {
        self.flush_heartbeats().await?;
        let rows = sqlx::query("SELECT * FROM devices ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(device)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Records a poll: when, and the version the device runs. A bare heartbeat is buffered;
    /// a new version is committed before this returns (group commit: concurrent polls share
    /// one transaction), so an acknowledged version report survives a crash.
    pub async fn seen(&self, device: &DeviceRow, version: Option<&str>) -> Result<(), ServerError> {
        let version = version.filter(|v| device.version.as_deref() != Some(*v));
        let batch = {
            let mut p = self
                .heartbeats
                .lock()
                .map_err(|_| ServerError::Database("heartbeat buffer poisoned".into()))?;
            let e = p.polls.entry(device.id.clone()).or_insert((0, None));
            e.0 = now();
            if let Some(v) = version {
                e.1 = Some(v.to_string());
            }
            p.batch + 1
        };
        if version.is_some() {
            let mut done = self.flushed.lock().await;
            // Whoever held the lock before may have committed this poll with theirs.
            if *done < batch {
                self.flush_locked(&mut done).await?;
            }
        }
        Ok(())
    }

    /// Writes buffered polls (one transaction). Returns how many devices.
    pub async fn flush_heartbeats(&self) -> Result<usize, ServerError> {
        let mut done = self.flushed.lock().await;
        self.flush_locked(&mut done).await
    }

    async fn flush_locked(&self, done: &mut u64) -> Result<usize, ServerError> {
        let (batch, number): (Vec<(String, Heartbeat)>, u64) = {
            let mut p = self
                .heartbeats
                .lock()
                .map_err(|_| ServerError::Database("heartbeat buffer poisoned".into()))?;
            p.batch += 1;
            let n = p.batch;
            (p.polls.drain().collect(), n)
        };
        if batch.is_empty() {
            *done = number;
            return Ok(0);
        }
        match self.write_polls(&batch).await {
            Ok(()) => {
                *done = number;
                Ok(batch.len())
            }
            Err(e) => {
                // Back into the buffer (behind anything newer) for the next attempt.
                if let Ok(mut p) = self.heartbeats.lock() {
                    for (id, h) in batch {
                        p.polls.entry(id).or_insert(h);
                    }
                }
                Err(e)
            }
        }
    }

    async fn write_polls(&self, batch: &[(String, Heartbeat)]) -> Result<(), ServerError> {
        // One statement per 100 devices; `UPDATE … FROM (VALUES …)` reads the same on SQLite
        // and PostgreSQL (both name VALUES columns column1, column2, …).
        let mut tx = self.pool.begin().await.map_err(db)?;
        for chunk in batch.chunks(100) {
            let values = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", i * 3 + 1, i * 3 + 2, i * 3 + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE devices SET last_seen = v.column2, version = COALESCE(v.column3, devices.version) \
                 FROM (VALUES {values}) AS v WHERE devices.id = v.column1"
            );
            let mut q = sqlx::query(&sql);
            for (id, (t, v)) in chunk {
                q = q.bind(id.as_str()).bind(*t).bind(v.as_deref());
            }
            q.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    /// Records an artifact (idempotent: the same file uploaded again is the same artifact).
    pub async fn add_artifact(&self, a: &ArtifactRow) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO artifacts (id, kind, version, size, sha256, manifest_sha256, chunked_bytes, created, sha1, md5) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&a.id)
        .bind(&a.kind)
        .bind(&a.version)
        .bind(a.size)
        .bind(&a.sha256)
        .bind(&a.manifest_sha256)
        .bind(a.chunked_bytes)
        .bind(a.created)
        .bind(&a.sha1)
        .bind(&a.md5)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// One artifact.
    pub async fn artifact(&self, id: &str) -> Result<Option<ArtifactRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM artifacts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        r.as_ref().map(artifact).transpose().map_err(db)
    }

    /// All artifacts, newest first.
    pub async fn artifacts(&self) -> Result<Vec<ArtifactRow>, ServerError> {
        let rows = sqlx::query("SELECT * FROM artifacts ORDER BY created DESC, id")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        rows.iter()
            .map(artifact)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Deploys `artifact_id` to `device_id`: replaces the device's active deployment, in one
    /// transaction (the unique index keeps one active deployment per device even when
    /// several replicas race).
    pub async fn deploy(
        &self,
        id: &str,
        device_id: &str,
        artifact_id: &str,
    ) -> Result<DeploymentRow, ServerError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Touching the device row locks it (PostgreSQL) so that deployments to one device
        // are serialised across replicas; SQLite serialises writers anyway.
        let known = sqlx::query("UPDATE devices SET created = created WHERE id = $1")
            .bind(device_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        if known == 0 {
            return Err(ServerError::NotFound(format!("no device `{device_id}`")));
        }
        let art = sqlx::query("SELECT id FROM artifacts WHERE id = $1")
            .bind(artifact_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        if art.is_none() {
            return Err(ServerError::NotFound(format!(
                "no artifact `{artifact_id}`"
            )));
        }
        let t = now();
        sqlx::query("UPDATE deployments SET active = 0, state = 'canceled', updated = $1 WHERE device_id = $2 AND active = 1")
            .bind(t)
            .bind(device_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO deployments (id, device_id, artifact_id, state, active, created, updated) \
             VALUES ($1, $2, $3, 'assigned', 1, $4, $4)",
        )
        .bind(id)
        .bind(device_id)
        .bind(artifact_id)
        .bind(t)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.deployment(id)
            .await?
            .ok_or_else(|| ServerError::Database("the deployment vanished".into()))
    }

    /// One deployment.
    pub async fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        r.as_ref().map(deployment).transpose().map_err(db)
    }

    /// The device's active deployment, if any.
    pub async fn active_deployment(
        &self,
        device_id: &str,
    ) -> Result<Option<DeploymentRow>, ServerError> {
        let r = sqlx::query("SELECT * FROM deployments WHERE device_id = $1 AND active = 1")
            .bind(device_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db)?;
        r.as_ref().map(deployment).transpose().map_err(db)
    }

    /// Every active deployment (one per device at most).
    pub async fn active_deployments(&self) -> Result<Vec<DeploymentRow>, ServerError> {
        let rows = sqlx::query("SELECT * FROM deployments WHERE active = 1")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Deployments, newest first.
    pub async fn deployments(&self) -> Result<Vec<DeploymentRow>, ServerError> {
        let rows = sqlx::query("SELECT * FROM deployments ORDER BY created DESC, id")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        rows.iter()
            .map(deployment)
            .collect::<Result<_, _>>()
            .map_err(db)
    }

    /// Records a device's report on its deployment; a final state ends it. A report on a
    /// deployment that is not the device's active one changes nothing.
    /// Cancels an active deployment for the operator: at once if the device has not started
    /// it, else by asking the device (which confirms with [`Store::end_canceled`]).
    /// Returns the deployment after it.
    pub async fn cancel(&self, id: &str) -> Result<DeploymentRow, ServerError> {
        let d = self
            .deployment(id)
            .await?
            .ok_or_else(|| ServerError::NotFound(format!("no deployment `{id}`")))?;
        if !d.active {
            return Err(ServerError::Conflict(format!(
                "deployment `{id}` is over ({})",
                d.state
            )));
        }
        if d.state == "assigned" {
            return self
                .end_canceled(&d.device_id, id, "canceled by the operator")
                .await;
        }
        sqlx::query(
            "UPDATE deployments SET cancel_requested = 1, updated = $1 WHERE id = $2 AND active = 1",
        )
        .bind(now())
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.deployment(id)
            .await?
            .ok_or_else(|| ServerError::Database("the deployment vanished".into()))
    }

    /// Ends an active deployment as `canceled` (the operator's cancel, confirmed).
    pub async fn end_canceled(
        &self,
        device_id: &str,
        id: &str,
        message: &str,
    ) -> Result<DeploymentRow, ServerError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let t = now();
        let n = sqlx::query(
            "UPDATE deployments SET state = 'canceled', active = 0, message = $1, updated = $2 \
             WHERE id = $3 AND device_id = $4 AND active = 1",
        )
        .bind(message)
        .bind(t)
        .bind(id)
        .bind(device_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n == 0 {
            return Err(ServerError::Conflict(format!(
                "deployment `{id}` is not an active deployment of this device"
            )));
        }
        add_event(&mut tx, id, "canceled", 0, message, t).await?;
        tx.commit().await.map_err(db)?;
        self.deployment(id)
            .await?
            .ok_or_else(|| ServerError::Database("the deployment vanished".into()))
    }

    /// The device refused a cancel (it keeps going): the request is withdrawn.
    pub async fn refuse_cancel(&self, id: &str, message: &str) -> Result<(), ServerError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let t = now();
        let state: String = sqlx::query(
            "UPDATE deployments SET cancel_requested = 0, updated = $1 WHERE id = $2 AND active = 1 \
             RETURNING state",
        )
        .bind(t)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .map(|r| r.try_get("state"))
        .transpose()
        .map_err(db)?
        .ok_or_else(|| ServerError::Conflict(format!("deployment `{id}` is over")))?;
        add_event(&mut tx, id, &state, 0, message, t).await?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    pub async fn report(
        &self,
        device_id: &str,
        deployment_id: &str,
        state: &str,
        progress: i64,
        downloaded_bytes: i64,
        message: &str,
    ) -> Result<DeploymentRow, ServerError> {
        let Some(&(_, last)) = STATES.iter().find(|(s, _)| *s == state) else {
            let known: Vec<&str> = STATES.iter().map(|(s, _)| *s).collect();
            return Err(ServerError::BadRequest(format!(
                "state `{state}` is not one of {}",
                known.join(", ")
            )));
        };
        if !(0..=100).contains(&progress) || downloaded_bytes < 0 {
            return Err(ServerError::BadRequest(
                "progress is 0-100 and bytes are not negative".into(),
            ));
        }
        let mut tx = self.pool.begin().await.map_err(db)?;
        let t = now();
        let n = sqlx::query(
            // Bytes only grow: a report that does not carry them (the outcome after the
        // reboot) keeps what the download reported.
        "UPDATE deployments SET state = $1, progress = $2, \
             downloaded_bytes = CASE WHEN $3 > downloaded_bytes THEN $3 ELSE downloaded_bytes END, \
             message = $4, active = $5, updated = $6 WHERE id = $7 AND device_id = $8 AND active = 1",
        )
        .bind(state)
        .bind(progress)
        .bind(downloaded_bytes)
        .bind(message)
        .bind(if last { 0i64 } else { 1 })
        .bind(t)
        .bind(deployment_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if n == 0 {
            return Err(ServerError::Conflict(format!(
                "deployment `{deployment_id}` is not an active deployment of this device"
            )));
        }
        add_event(&mut tx, deployment_id, state, progress, message, t).await?;
        tx.commit().await.map_err(db)?;
        self.deployment(deployment_id)
            .await?
            .ok_or_else(|| ServerError::Database("the deployment vanished".into()))
    }

    /// A deployment's reports, oldest first: (state, progress, message, at).
    pub async fn events(
        &self,
        deployment_id: &str,
    ) -> Result<Vec<(String, i64, String, i64)>, ServerError> {
        let rows = sqlx::query(
            "SELECT state, progress, message, at FROM events WHERE deployment_id = $1 ORDER BY seq",
        )
        .bind(deployment_id)
        .fetch_all(&self.read)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("state")?,
                    r.try_get("progress")?,
                    r.try_get("message")?,
                    r.try_get("at")?,
                ))
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }
}
