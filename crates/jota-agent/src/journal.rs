//! The install journal and the status files on the data partition.
//!
//! `journal.json` records every stage of the current install; it is written atomically (temp
//! file, fsync, rename, fsync directory, through the device's storage so simulated power cuts
//! apply). The plain-text status files are the ones seed 001 §20.1's telemetry reads:
//! `last-status`, `last-timestamp`, `rollback-count`, plus `installed-version` and
//! `min-version` (the anti-rollback floor).

use jota_bootctl::storage::{Storage, StorageError};
use jota_tegra::efivar::Slot;
use serde::{Deserialize, Serialize};

/// Where an install is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum State {
    /// Writing component `component` (index in the manifest).
    Installing {
        /// Component index.
        component: usize,
    },
    /// Every component written and read back verified; not switched yet.
    Installed,
    /// Both chains switched to the target slot; the reboot is next.
    Switched,
    /// Running on the target slot, validation has run `attempts` times without passing.
    Validating {
        /// Failed validations so far.
        attempts: u32,
    },
    /// Validation passed and both chains are marked successful.
    Committed,
    /// The device came back on the old slot.
    RolledBack,
    /// The install stopped before the switch (error or power cut); the next install of the
    /// same bundle resumes it.
    Interrupted,
    /// The install was refused or failed before the switch.
    Failed,
}

impl State {
    /// Whether nothing more happens to this install.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            State::Committed | State::RolledBack | State::Failed | State::Interrupted
        )
    }
}

/// One install's journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// sha256 of the bundle's manifest: identifies the bundle.
    pub bundle_id: String,
    /// Bundle version.
    pub version: String,
    /// Where the bundle came from.
    pub source: String,
    /// Slot running when the install began.
    pub from_slot: Slot,
    /// Version running when the install began.
    pub from_version: Option<String>,
    /// Slot written.
    pub target_slot: Slot,
    /// Stage.
    #[serde(flatten)]
    pub state: State,
    /// Components written and read back verified (names).
    pub verified: Vec<String>,
    /// The bundle's anti-rollback floor, applied on commit.
    pub minimum_version: Option<String>,
    /// When the install started (RFC 3339).
    pub started: String,
    /// Last change (RFC 3339).
    pub updated: String,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The status files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusFiles {
    /// `success`, `failed`, `rolled-back`, `interrupted`, `installing`, `switched`, ...
    pub last_status: Option<String>,
    /// When `last_status` was written.
    pub last_timestamp: Option<String>,
    /// Rollbacks seen on this device.
    pub rollback_count: u64,
    /// Version last committed.
    pub installed_version: Option<String>,
    /// Anti-rollback floor.
    pub min_version: Option<String>,
}

/// Now, RFC 3339 UTC (seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The data directory of a device: journal and status files.
pub struct DataDir<'a> {
    st: &'a Storage,
    dir: String,
}

impl<'a> DataDir<'a> {
    /// `dir` is the device path (`/data/ota`).
    pub fn new(st: &'a Storage, dir: &str) -> DataDir<'a> {
        DataDir {
            st,
            dir: dir.trim_end_matches('/').to_string(),
        }
    }

    /// Device path of a file in it.
    pub fn file(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Host path of the directory.
    pub fn host_path(&self) -> std::path::PathBuf {
        self.st.root().path(&self.dir)
    }

    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.st.root().path(self.file(name)))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Loads the journal; a missing one is `None`, an unreadable one an error (it is never
    /// half-written, so damage means something else wrote it).
    pub fn journal(&self) -> Result<Option<Journal>, String> {
        let p = self.st.root().path(self.file("journal.json"));
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Saves the journal atomically (and `last-status` with it when `status` is given).
    pub fn save(&self, j: &mut Journal) -> Result<(), StorageError> {
        j.updated = now();
        let text = serde_json::to_vec_pretty(j).unwrap_or_default();
        self.st.write_file(&self.file("journal.json"), &text)
    }

    /// Writes `last-status` and `last-timestamp`.
    pub fn set_status(&self, status: &str) -> Result<(), StorageError> {
        self.st
            .write_file(&self.file("last-status"), format!("{status}\n").as_bytes())?;
        self.st.write_file(
            &self.file("last-timestamp"),
            format!("{}\n", now()).as_bytes(),
        )
    }

    /// Writes a one-line status file.
    pub fn set(&self, name: &str, value: &str) -> Result<(), StorageError> {
        self.st
            .write_file(&self.file(name), format!("{value}\n").as_bytes())
    }

    /// Removes a file of the data directory.
    pub fn remove(&self, name: &str) -> Result<(), StorageError> {
        self.st.remove_file(&self.file(name))
    }

    /// Reads the status files.
    pub fn status(&self) -> StatusFiles {
        StatusFiles {
            last_status: self.read("last-status"),
            last_timestamp: self.read("last-timestamp"),
            rollback_count: self
                .read("rollback-count")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            installed_version: self.read("installed-version"),
            min_version: self.read("min-version"),
        }
    }
}
