//! What `jota status` reports: slots of both chains, the running version, the journal and
//! the status files.

use crate::device::Device;
use crate::journal::{DataDir, Journal, StatusFiles};
use crate::AgentError;
use jota_bootctl::{Target, TargetStatus};
use serde::Serialize;

/// The device's update status.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Boot-control backend.
    pub backend: String,
    /// Version running (from the rootfs).
    pub running_version: Option<String>,
    /// Rootfs chain.
    pub rootfs: TargetStatus,
    /// Bootloader chain.
    pub bootloader: TargetStatus,
    /// Last install's journal.
    pub journal: Option<Journal>,
    /// Status files.
    pub files: StatusFiles,
}

/// Reads the status.
pub fn status(dev: &Device) -> Result<Status, AgentError> {
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    Ok(Status {
        backend: dev.boot.name().to_string(),
        running_version: dev.running_version(),
        rootfs: dev.boot.status(Target::Rootfs)?,
        bootloader: dev.boot.status(Target::Bootloader)?,
        journal: data.journal().map_err(AgentError::Device)?,
        files: data.status(),
    })
}
