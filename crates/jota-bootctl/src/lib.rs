//! A/B boot control for Jetson devices: one [`BootControl`] trait, several backends.
//!
//! | backend | devices | state it reads and writes |
//! |---|---|---|
//! | [`backend::L4tUefi`] | L4T R35/R36 (UEFI) | efivarfs `BootChainFw*`, `RootfsStatusSlot*`, the rootfs retry scratch register |
//! | [`backend::NvBootctrlTool`] | any L4T with NVIDIA's `nvbootctrl` | runs the tool, parses its output |
//! | [`backend::UbootEnv`] | U-Boot devices (R32 Nano with RAUC's scheme) | `BOOT_ORDER`, `BOOT_x_LEFT` in the libubootenv environment |
//! | [`backend::R32Smd`] | L4T R32 cboot (TX2, Xavier) | slot metadata in the `SMD`/`SMD_b` partitions |
//!
//! Everything is rooted at a [`DeviceRoot`]: `/` on a Jetson, a directory for a simulated one.

pub mod backend;
pub mod contract;
pub mod efivarfs;
pub mod faults;
pub mod root;
pub mod storage;
pub mod uboot_env;

pub use root::DeviceRoot;

use jota_tegra::efivar::Slot;
use jota_tegra::nvbootctrl::SlotsInfo;
use serde::Serialize;

/// Which boot chain an operation is about (`nvbootctrl -t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The bootloader/firmware chain (QSPI A/B).
    Bootloader,
    /// The root filesystem (APP/APP_b with kernel and DTB).
    Rootfs,
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        match s {
            "bootloader" => Ok(Target::Bootloader),
            "rootfs" => Ok(Target::Rootfs),
            o => Err(format!("target `{o}` is not bootloader or rootfs")),
        }
    }
}

/// The state of one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotStatus {
    /// A or B.
    pub slot: Slot,
    /// Whether the boot logic will still try it.
    pub bootable: bool,
    /// Marked successful (None when the backend does not track it).
    pub successful: Option<bool>,
    /// Boot attempts left (None when not visible).
    pub retry_count: Option<u32>,
    /// Priority (SMD only).
    pub priority: Option<u32>,
}

/// The state of one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// The slot that booted.
    pub current: Slot,
    /// The slot that will boot next.
    pub active: Slot,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
}

impl TargetStatus {
    /// A slot's status.
    pub fn slot(&self, s: Slot) -> Option<&SlotStatus> {
        self.slots.iter().find(|x| x.slot == s)
    }
}

/// A failed boot-control operation.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The device's state could not be read or written.
    #[error("{backend}: {message}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The request is not possible on this device.
    #[error("{backend}: {message}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What is not supported.
        message: String,
    },
    /// No backend fits the device.
    #[error("no boot-control backend fits this device: {0}")]
    NoBackend(String),
}

impl BootError {
    pub(crate) fn backend(backend: &'static str, e: impl std::fmt::Display) -> BootError {
        BootError::Backend {
            backend,
            message: e.to_string(),
        }
    }
}

/// A/B slot control of one device.
pub trait BootControl {
    /// Backend name (`l4t-uefi`, `nvbootctrl`, `uboot-env`, `r32-smd`).
    fn name(&self) -> &'static str;

    /// Current (booted) and active (next boot) slot with per-slot state.
    fn status(&self, target: Target) -> Result<TargetStatus, BootError>;

    /// Makes `slot` boot next for `target` (and, where the two are linked, for the other).
    fn set_active(&mut self, target: Target, slot: Slot) -> Result<(), BootError>;

    /// Marks the current slot of `target` as good (stops the retry countdown).
    fn mark_successful(&mut self, target: Target) -> Result<(), BootError>;

    /// Marks `slot` as bad; if it is the current one, the next boot falls back.
    fn mark_bad(&mut self, target: Target, slot: Slot) -> Result<(), BootError>;

    /// The state in `nvbootctrl dump-slots-info` form.
    fn dump_slots_info(&self, target: Target) -> Result<SlotsInfo, BootError>;

    /// Sets bootloader and rootfs to `slot` together (never one without the other).
    fn switch_both(&mut self, slot: Slot) -> Result<(), BootError> {
        self.set_active(Target::Bootloader, slot)?;
        self.set_active(Target::Rootfs, slot)
    }

    /// The booted slot.
    fn current_slot(&self, target: Target) -> Result<Slot, BootError> {
        Ok(self.status(target)?.current)
    }

    /// The slot that boots next.
    fn active_slot(&self, target: Target) -> Result<Slot, BootError> {
        Ok(self.status(target)?.active)
    }

    /// Number of slots (2 with A/B).
    fn num_slots(&self, target: Target) -> Result<u32, BootError> {
        Ok(self.status(target)?.slots.len() as u32)
    }
}

/// Which backend to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Detect from the device.
    Auto,
    /// L4T R35/R36 UEFI variables.
    L4tUefi,
    /// NVIDIA's `nvbootctrl` at this path.
    NvBootctrl(std::path::PathBuf),
    /// U-Boot environment described by this fw_env.config (device path).
    UbootEnv(String),
    /// R32 cboot slot metadata.
    R32Smd,
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackendKind, String> {
        Ok(match s {
            "auto" => BackendKind::Auto,
            "l4t-uefi" => BackendKind::L4tUefi,
            "nvbootctrl" => BackendKind::NvBootctrl("/usr/sbin/nvbootctrl".into()),
            "uboot-env" => BackendKind::UbootEnv(root::paths::FW_ENV_CONFIG.into()),
            "r32-smd" => BackendKind::R32Smd,
            o => {
                return Err(format!(
                    "backend `{o}` is not auto, l4t-uefi, nvbootctrl, uboot-env or r32-smd"
                ))
            }
        })
    }
}

/// Opens the boot control of the device at `root`.
pub fn open(root: &DeviceRoot, kind: &BackendKind) -> Result<Box<dyn BootControl>, BootError> {
    match kind {
        BackendKind::L4tUefi => Ok(Box::new(backend::L4tUefi::open(root)?)),
        BackendKind::R32Smd => Ok(Box::new(backend::R32Smd::open(root)?)),
        BackendKind::UbootEnv(cfg) => Ok(Box::new(backend::UbootBackend::open(root, cfg)?)),
        BackendKind::NvBootctrl(p) => Ok(Box::new(backend::NvBootctrlTool::new(p.clone()))),
        BackendKind::Auto => {
            let mut tried = Vec::new();
            match backend::L4tUefi::open(root) {
                Ok(b) => return Ok(Box::new(b)),
                Err(e) => tried.push(e.to_string()),
            }
            match backend::R32Smd::open(root) {
                Ok(b) => return Ok(Box::new(b)),
                Err(e) => tried.push(e.to_string()),
            }
            if root.path(root::paths::FW_ENV_CONFIG).exists() {
                match backend::UbootBackend::open(root, root::paths::FW_ENV_CONFIG) {
                    Ok(b) => return Ok(Box::new(b)),
                    Err(e) => tried.push(e.to_string()),
                }
            } else {
                tried.push(format!("uboot-env: no {}", root::paths::FW_ENV_CONFIG));
            }
            for p in ["/usr/sbin/nvbootctrl", "/usr/bin/nvbootctrl"] {
                let t = root.path(p);
                if t.exists() {
                    return Ok(Box::new(backend::NvBootctrlTool::new(t)));
                }
            }
            tried.push("nvbootctrl: not installed".into());
            Err(BootError::NoBackend(tried.join("; ")))
        }
    }
}
