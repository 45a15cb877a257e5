//! Firmware state that is not visible to the OS: boot ROM chain, BootChainDxe's private
//! variables, FMP's lowest supported version, what booted. Kept in `DIR/sim/state.json`.

use crate::{io, Result, SimError};
use jota_tegra::efivar::Slot;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the OS booted from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Booted {
    /// Firmware/bootloader chain.
    pub chain: Slot,
    /// Rootfs slot.
    pub slot: Slot,
    /// Release version of the rootfs.
    pub version: String,
    /// Release id.
    pub release: String,
    /// Boot number.
    pub boot: u64,
    /// The release's health checks fail.
    pub fails_health_check: bool,
}

/// Firmware state of a simulated device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimState {
    /// Powered and running.
    pub power_on: bool,
    /// Number of power-ons/resets simulated.
    pub boots: u64,
    /// Boot chain the boot ROM starts (the BR-BCT).
    pub brbct_chain: Slot,
    /// BootChainDxe's `BootChainFwPrevious` (not visible to the OS).
    pub fw_previous: Option<Slot>,
    /// BootChainDxe's `BootChainFwResetCount`.
    pub fw_reset_count: u32,
    /// FMP lowest supported version (ratchets up with every applied capsule).
    pub fmp_lsv: u32,
    /// ESRT last attempt version.
    pub last_attempt_version: u32,
    /// ESRT last attempt status.
    pub last_attempt_status: u32,
    /// What runs now (None: powered off or in recovery).
    pub booted: Option<Booted>,
}

impl Default for SimState {
    fn default() -> Self {
        SimState {
            power_on: false,
            boots: 0,
            brbct_chain: Slot::A,
            fw_previous: None,
            fw_reset_count: 0,
            fmp_lsv: 0,
            last_attempt_version: 0,
            last_attempt_status: 0,
            booted: None,
        }
    }
}

/// State file, relative to the device directory.
pub const STATE_FILE: &str = "sim/state.json";

impl SimState {
    /// Loads the state of the device at `dir`.
    pub fn load(dir: &Path) -> Result<SimState> {
        let p = dir.join(STATE_FILE);
        let b = std::fs::read(&p).map_err(io(&p))?;
        serde_json::from_slice(&b).map_err(|e| SimError::Invalid(format!("{}: {e}", p.display())))
    }

    /// Saves it atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let p = dir.join(STATE_FILE);
        let tmp = p.with_extension("json.tmp");
        let b = serde_json::to_vec_pretty(self).map_err(|e| SimError::Invalid(e.to_string()))?;
        std::fs::write(&tmp, b).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io(&p))
    }
}
