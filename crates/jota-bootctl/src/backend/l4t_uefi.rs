//! L4T R35/R36 (UEFI) A/B through efivarfs, as NVIDIA's firmware defines it.
//!
//! * The firmware boot chain is `BootChainFwCurrent`; a switch is requested with
//!   `BootChainFwNext` and BootChainDxe reports the result in `BootChainFwStatus`, which the
//!   firmware never deletes: a stale status turns the next request (or capsule) into a
//!   no-op, so jota deletes it before asking for a switch.
//! * The rootfs slot is linked to the firmware chain (L4TLauncher: "Rootfs slot is always
//!   linked with bootloader chain"), so switching one switches both.
//! * Rootfs retry counters live in the SR_RF scratch register (magic 0xFACE, 2-bit counters),
//!   decremented by L4TLauncher at every boot and restored by `nvbootctrl verify`. jota reaches
//!   the register through [`Scratch`]: the simulator's register file, or NVIDIA's tool.
//! * `RootfsStatusSlotA/B` = 0xFF marks a slot unbootable; writing 0 brings it back.

use crate::efivarfs::EfivarfsStore;
use crate::root::{paths, DeviceRoot};
use crate::{BootControl, BootError, SlotStatus, Target, TargetStatus};
use jota_tegra::efivar::{
    FwStatus, L4tVars, RootfsStatus, Slot, OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED,
};
use jota_tegra::nvbootctrl::{
    BootloaderSlot, BootloaderSlots, CapsuleStatus, RootfsSlot, RootfsSlots,
    SlotStatus as NvStatus, SlotsInfo,
};
use jota_tegra::release::L4tVersion;
use std::path::PathBuf;

const NAME: &str = "l4t-uefi";

/// The SR_RF rootfs scratch register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SrRf {
    /// Magic 0xFACE present (lost at power-off).
    pub valid: bool,
    /// Rootfs slot the launcher chose.
    pub current: Slot,
    /// Retries left for slot A.
    pub retry_a: u32,
    /// Retries left for slot B.
    pub retry_b: u32,
}

impl SrRf {
    /// Decodes the 32-bit register.
    pub fn from_u32(v: u32) -> SrRf {
        SrRf {
            valid: v & 0xffff == 0xface,
            current: if (v >> 16) & 3 == 1 { Slot::B } else { Slot::A },
            retry_b: (v >> 18) & 3,
            retry_a: (v >> 20) & 3,
        }
    }

    /// Encodes the register.
    pub fn to_u32(self) -> u32 {
        if !self.valid {
            return 0;
        }
        0xface
            | (self.current.index() << 16)
            | ((self.retry_b & 3) << 18)
            | ((self.retry_a & 3) << 20)
    }

    /// Retries of a slot.
    pub fn retry(&self, s: Slot) -> u32 {
        match s {
            Slot::A => self.retry_a,
            Slot::B => self.retry_b,
        }
    }

    /// Sets the retries of a slot.
    pub fn set_retry(&mut self, s: Slot, n: u32) {
        match s {
            Slot::A => self.retry_a = n.min(3),
            Slot::B => self.retry_b = n.min(3),
        }
    }
}

/// How jota reaches the rootfs retry register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scratch {
    /// A simulated Jetson's register, a file holding the value in hex.
    SimFile(PathBuf),
    /// NVIDIA's `nvbootctrl` (which maps /dev/mem): `verify` restores the count.
    Tool(PathBuf),
    /// Neither: counters are not visible and cannot be restored.
    Unavailable,
}

/// Simulator register file, relative to the device root.
pub const SIM_SR_RF: &str = "sim/sr_rf";

impl Scratch {
    /// Picks the access for a device.
    pub fn detect(root: &DeviceRoot) -> Scratch {
        let sim = root.dir().join(SIM_SR_RF);
        if sim.exists() {
            return Scratch::SimFile(sim);
        }
        for p in ["/usr/sbin/nvbootctrl", "/usr/bin/nvbootctrl"] {
            let t = root.path(p);
            if t.exists() {
                return Scratch::Tool(t);
            }
        }
        Scratch::Unavailable
    }

    /// Reads the register (simulator only).
    pub fn read(&self) -> Option<SrRf> {
        match self {
            Scratch::SimFile(p) => {
                let t = std::fs::read_to_string(p).ok()?;
                let v = u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok()?;
                Some(SrRf::from_u32(v))
            }
            _ => None,
        }
    }

    /// Writes the register (simulator only).
    pub fn write(&self, r: SrRf) -> std::io::Result<()> {
        match self {
            Scratch::SimFile(p) => std::fs::write(p, format!("{:#010x}\n", r.to_u32())),
            _ => Err(std::io::Error::other("no writable scratch register")),
        }
    }
}

/// The L4T UEFI backend.
pub struct L4tUefi {
    root: DeviceRoot,
    vars: L4tVars<EfivarfsStore>,
    scratch: Scratch,
}

fn be<E: std::fmt::Display>(e: E) -> BootError {
    BootError::backend(NAME, e)
}

impl L4tUefi {
    /// The backend for the device at `root`; fails if it has no L4T boot-chain variables.
    pub fn open(root: &DeviceRoot) -> Result<L4tUefi, BootError> {
        let store = EfivarfsStore::new(
            root.path(paths::EFIVARS),
            crate::faults::Faults::for_root(root.dir()),
        );
        let vars = L4tVars::new(store);
        if vars.fw_current().map_err(be)?.is_none() {
            return Err(be(format!(
                "BootChainFwCurrent is not in {}: not an L4T R35/R36 device",
                root.path(paths::EFIVARS).display()
            )));
        }
        Ok(L4tUefi {
            root: root.clone(),
            vars,
            scratch: Scratch::detect(root),
        })
    }

    /// The typed variables.
    pub fn vars(&self) -> &L4tVars<EfivarfsStore> {
        &self.vars
    }

    /// The variables, mutably.
    pub fn vars_mut(&mut self) -> &mut L4tVars<EfivarfsStore> {
        &mut self.vars
    }

    /// The scratch register access in use.
    pub fn scratch(&self) -> &Scratch {
        &self.scratch
    }

    fn fw_current(&self) -> Result<Slot, BootError> {
        self.vars
            .fw_current()
            .map_err(be)?
            .ok_or_else(|| be("BootChainFwCurrent disappeared"))
    }

    /// The chain the next boot will use: a pending `BootChainFwNext` (one the firmware will
    /// act on, i.e. with no stale status), else the current one.
    fn next_chain(&self) -> Result<Slot, BootError> {
        let cur = self.fw_current()?;
        let next = self.vars.fw_next().map_err(be)?;
        let status = self.vars.fw_status().map_err(be)?;
        Ok(match (next, status) {
            (Some(n), None) => n,
            _ => cur,
        })
    }

    /// Whether a capsule update is staged for the next boot (OsIndications bit 2 and a file
    /// in `\EFI\UpdateCapsule`).
    pub fn capsule_pending(&self) -> Result<bool, BootError> {
        let bit = self.vars.os_indications().map_err(be)?
            & OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
            != 0;
        let dir = self.root.path(format!("{}/EFI/UpdateCapsule", paths::ESP));
        let has_file = std::fs::read_dir(&dir)
            .map(|mut d| d.any(|e| e.map(|e| e.path().is_file()).unwrap_or(false)))
            .unwrap_or(false);
        Ok(bit && has_file)
    }

    fn esrt_field(&self, f: &str) -> Option<u32> {
        let t = self
            .root
            .read_text(&format!("{}/entry0/{f}", paths::ESRT))
            .ok()
            .flatten()?;
        let t = t.trim();
        match t.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => t.parse().ok(),
        }
    }

    fn retry_max(&self) -> Result<u32, BootError> {
        self.vars.retry_count_max().map_err(be)
    }
}

impl BootControl for L4tUefi {
    fn name(&self) -> &'static str {
        NAME
    }

    fn status(&self, target: Target) -> Result<TargetStatus, BootError> {
        let fw_cur = self.fw_current()?;
        let active = self.next_chain()?;
        match target {
            Target::Bootloader => {
                let failed = self.vars.fw_status().map_err(be)? == Some(FwStatus::BootChainFailed);
                let slots = [Slot::A, Slot::B]
                    .into_iter()
                    .map(|s| SlotStatus {
                        slot: s,
                        // Status 12: the switch to the other chain did not come up.
                        bootable: !(failed && s != fw_cur),
                        successful: None,
                        retry_count: None,
                        priority: None,
                    })
                    .collect();
                Ok(TargetStatus {
                    current: fw_cur,
                    active,
                    slots,
                })
            }
            Target::Rootfs => {
                let current = self.vars.os_current().map_err(be)?.unwrap_or(fw_cur);
                let reg = self.scratch.read().filter(|r| r.valid);
                let max = self.retry_max()?;
                let mut slots = Vec::new();
                for s in [Slot::A, Slot::B] {
                    let st = self.vars.rootfs_status(s).map_err(be)?;
                    let retry = match (&self.scratch, reg) {
                        (_, Some(r)) => Some(r.retry(s)),
                        // The launcher re-initialises the counters to the maximum.
                        (Scratch::SimFile(_), None) => Some(if st == RootfsStatus::Unbootable {
                            0
                        } else {
                            max
                        }),
                        _ => None,
                    };
                    slots.push(SlotStatus {
                        slot: s,
                        bootable: st == RootfsStatus::Normal,
                        successful: None,
                        retry_count: retry,
                        priority: None,
                    });
                }
                Ok(TargetStatus {
                    current,
                    active,
                    slots,
                })
            }
        }
    }

    fn set_active(&mut self, _target: Target, slot: Slot) -> Result<(), BootError> {
        // Bootloader and rootfs are linked: one request moves both.
        let cur = self.fw_current()?;
        self.vars.clear_fw_status().map_err(be)?;
        if slot == cur {
            self.vars.clear_fw_next().map_err(be)?;
        } else {
            self.vars.set_fw_next(slot).map_err(be)?;
        }
        if self.vars.rootfs_status(slot).map_err(be)? != RootfsStatus::Normal {
            self.vars
                .set_rootfs_status(slot, RootfsStatus::Normal)
                .map_err(be)?;
        }
        Ok(())
    }

    /// With a capsule staged, the capsule itself moves the firmware chain (and the rootfs
    /// with it); setting `BootChainFwNext` too would make the firmware cancel the capsule.
    fn switch_both(&mut self, slot: Slot) -> Result<(), BootError> {
        if self.capsule_pending()? {
            self.vars.clear_fw_status().map_err(be)?;
            self.vars.clear_fw_next().map_err(be)?;
            if self.vars.rootfs_status(slot).map_err(be)? != RootfsStatus::Normal {
                self.vars
                    .set_rootfs_status(slot, RootfsStatus::Normal)
                    .map_err(be)?;
            }
            if self.fw_current()? == slot {
                return Err(BootError::Unsupported {
                    backend: NAME,
                    message: format!(
                        "a staged capsule updates the inactive chain, not the running chain {slot}"
                    ),
                });
            }
            return Ok(());
        }
        self.set_active(Target::Rootfs, slot)
    }

    fn mark_successful(&mut self, target: Target) -> Result<(), BootError> {
        match target {
            Target::Bootloader => {
                // The firmware marked its chain good at ReadyToBoot; a status left from a
                // successful switch would block the next capsule, so clear it.
                match self.vars.fw_status().map_err(be)? {
                    Some(FwStatus::Success) | Some(FwStatus::NoOperationRequired) => {
                        self.vars.clear_fw_status().map_err(be)
                    }
                    _ => Ok(()),
                }
            }
            Target::Rootfs => {
                let max = self.retry_max()?;
                match &self.scratch {
                    Scratch::SimFile(_) => {
                        let mut r = self.scratch.read().unwrap_or(SrRf {
                            valid: false,
                            current: Slot::A,
                            retry_a: 0,
                            retry_b: 0,
                        });
                        let cur = self.current_slot(Target::Rootfs)?;
                        r.valid = true;
                        r.current = cur;
                        r.set_retry(cur, max);
                        self.scratch.write(r).map_err(be)
                    }
                    Scratch::Tool(t) => {
                        let out = std::process::Command::new(t).arg("verify").output().map_err(be)?;
                        if out.status.success() {
                            Ok(())
                        } else {
                            Err(be(format!(
                                "{} verify failed: {}",
                                t.display(),
                                String::from_utf8_lossy(&out.stderr).trim()
                            )))
                        }
                    }
                    Scratch::Unavailable => Err(BootError::Unsupported {
                        backend: NAME,
                        message: "the rootfs retry counter is in a scratch register only nvbootctrl can reach; install nvidia-l4t-tools".into(),
                    }),
                }
            }
        }
    }

    fn mark_bad(&mut self, target: Target, slot: Slot) -> Result<(), BootError> {
        let cur = self.fw_current()?;
        if target == Target::Rootfs {
            self.vars
                .set_rootfs_status(slot, RootfsStatus::Unbootable)
                .map_err(be)?;
        }
        if slot == cur {
            // Fall back at the next boot.
            self.vars.clear_fw_status().map_err(be)?;
            self.vars.set_fw_next(slot.other()).map_err(be)?;
        }
        Ok(())
    }

    fn dump_slots_info(&self, target: Target) -> Result<SlotsInfo, BootError> {
        let st = self.status(target)?;
        let word = |b: bool| {
            if b {
                NvStatus::Normal
            } else {
                NvStatus::Unbootable
            }
        };
        Ok(match target {
            Target::Bootloader => {
                let fw = self.esrt_field("fw_version");
                let lav = self.esrt_field("last_attempt_version").unwrap_or(0);
                let las = self.esrt_field("last_attempt_status").unwrap_or(0);
                // nvbootctrl's number, modelled from the ESRT (NVIDIA's tool is closed).
                let capsule = match fw {
                    None => None,
                    Some(_) if lav == 0 => Some(CapsuleStatus::None),
                    Some(_) if las != 0 => Some(CapsuleStatus::InstallFailed),
                    Some(v) if v == lav => Some(CapsuleStatus::Success),
                    Some(_) => Some(CapsuleStatus::FailedToBoot),
                };
                SlotsInfo::Bootloader(BootloaderSlots {
                    current_version: Some(
                        fw.map(L4tVersion::from_fw_version)
                            .unwrap_or(L4tVersion::new(0, 0, 0)),
                    ),
                    capsule_update_status: capsule,
                    current: st.current,
                    active: st.active,
                    slots: st
                        .slots
                        .iter()
                        .map(|s| BootloaderSlot {
                            slot: s.slot.index(),
                            status: word(s.bootable),
                        })
                        .collect(),
                })
            }
            Target::Rootfs => {
                let max = self.retry_max()?;
                SlotsInfo::Rootfs(RootfsSlots {
                    current: st.current,
                    active: st.active,
                    slots: st
                        .slots
                        .iter()
                        .map(|s| RootfsSlot {
                            slot: s.slot.index(),
                            retry_count: s.retry_count.unwrap_or(if s.bootable { max } else { 0 }),
                            status: word(s.bootable),
                        })
                        .collect(),
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_register_encoding() {
        let r = SrRf {
            valid: true,
            current: Slot::B,
            retry_a: 3,
            retry_b: 1,
        };
        let v = r.to_u32();
        assert_eq!(v & 0xffff, 0xface);
        assert_eq!(SrRf::from_u32(v), r);
        assert!(!SrRf::from_u32(0).valid);
    }
}
