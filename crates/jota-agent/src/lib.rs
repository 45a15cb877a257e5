//! The jota device agent: the update engine that runs on a Jetson (or a simulated one).
//!
//! | module | role |
//! |---|---|
//! | [`config`] | `/etc/jota/agent.toml`: backend, labels, data directory, keyring, checks, hooks |
//! | [`ddi`] | hawkBit DDI client: the same agent against a hawkBit-compatible server |
//! | [`delta`] | delta install from a URL: seed from the active slot, fetch missing chunks by Range |
//! | [`device`] | the device: root, storage, boot control, board ids, slot labels |
//! | [`download`] | resumable HTTP(S) download of a bundle into the data partition |
//! | [`fleet`] | `jota agent run`: provisioning, poll, report, download, install, reboot, inventory, telemetry |
//! | [`install`] | the install pipeline: checks, stream into the inactive slot, read back, switch |
//! | [`validate`] | boot validation: health checks with watchdog, commit or roll back |
//! | [`layers`] | application layers (files, models, containers): versioned directories, tags, health, rollback |
//! | [`journal`] | the install journal and status files on the data partition |
//! | [`precheck`] | power, free space, required services |
//! | [`status`] | what `jota status` reports |

pub mod config;
pub mod ddi;
pub mod delta;
pub mod device;
pub mod download;
pub mod fleet;
pub mod install;
pub mod journal;
pub mod layers;
pub mod patch;
pub mod precheck;
pub mod provision;
pub mod run;
pub mod status;
pub mod validate;

pub use config::Config;
pub use device::Device;

use std::path::Path;

/// What went wrong, by the kind of answer the caller gives.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The bundle is not for this device or not trusted: nothing was written.
    #[error("rejected: {0}")]
    Rejected(String),
    /// A pre-flight check failed: nothing was written; try again later.
    #[error("pre-flight check failed: {0}")]
    Precheck(String),
    /// Another install is running, or one is waiting for its reboot.
    #[error("busy: {0}")]
    Busy(String),
    /// The fleet server has not accepted this device yet (an operator decides).
    #[error("pending: {0}")]
    Pending(String),
    /// An application-layer update failed its health check and was undone.
    #[error("rolled back: {0}")]
    RolledBack(String),
    /// Downloading the bundle failed.
    #[error("download: {0}")]
    Download(String),
    /// A written component did not read back as expected.
    #[error("verification failed: {0}")]
    Verify(String),
    /// A hook or bundle script failed.
    #[error("hook: {0}")]
    Hook(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The device is not as expected.
    #[error("device: {0}")]
    Device(String),
    /// Boot control.
    #[error(transparent)]
    Boot(#[from] jota_bootctl::BootError),
    /// Storage (partitions, files), including simulated power cuts.
    #[error(transparent)]
    Storage(#[from] jota_bootctl::storage::StorageError),
    /// Local file I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AgentError {
        AgentError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
