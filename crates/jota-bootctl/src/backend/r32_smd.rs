//! L4T R32 (cboot) A/B through the slot metadata in the `SMD` / `SMD_b` partitions.

use crate::root::{paths, DeviceRoot};
use crate::storage::Storage;
use crate::{BootControl, BootError, SlotStatus, Target, TargetStatus};
use jota_tegra::efivar::Slot;
use jota_tegra::nvbootctrl::{SlotsInfo, SmdSlot, SmdSlots};
use jota_tegra::smd::{Smd, EXT_FULL_LEN, SMD_LEN};

const NAME: &str = "r32-smd";
/// The two copies, primary first.
const COPIES: [&str; 2] = ["SMD", "SMD_b"];

/// cboot slot metadata backend.
pub struct R32Smd {
    root: DeviceRoot,
    storage: Storage,
}

/// The slot the kernel was booted from: `boot.slot_suffix=` on the command line.
pub fn cmdline_slot(cmdline: &str) -> Result<Slot, String> {
    for arg in cmdline.split_whitespace() {
        if let Some(v) = arg.strip_prefix("boot.slot_suffix=") {
            return match v {
                "" | "_a" => Ok(Slot::A),
                "_b" => Ok(Slot::B),
                o => Err(format!("boot.slot_suffix={o} is not _a or _b")),
            };
        }
    }
    // No suffix: redundancy is off and slot A runs (tegra-boot-tools).
    Ok(Slot::A)
}

impl R32Smd {
    /// The backend for the device at `root`, if it has SMD partitions.
    pub fn open(root: &DeviceRoot) -> Result<R32Smd, BootError> {
        let storage = Storage::new(root);
        storage
            .find(COPIES[0])
            .map_err(|e| BootError::backend(NAME, e))?;
        Ok(R32Smd {
            root: root.clone(),
            storage,
        })
    }

    /// Reads the first valid copy (primary, then backup).
    pub fn read(&self) -> Result<Smd, BootError> {
        let mut errs = Vec::new();
        for label in COPIES {
            let part = match self.storage.find(label) {
                Ok(p) => p,
                Err(e) => {
                    errs.push(e.to_string());
                    continue;
                }
            };
            let io = self
                .storage
                .open(&part, false)
                .map_err(|e| BootError::backend(NAME, e))?;
            let mut buf = vec![0u8; (SMD_LEN + EXT_FULL_LEN).min(part.size as usize)];
            io.read_at(0, &mut buf)
                .map_err(|e| BootError::backend(NAME, e))?;
            match Smd::parse(&buf) {
                Ok(s) => return Ok(s),
                Err(e) => errs.push(format!("{label}: {e}")),
            }
        }
        Err(BootError::backend(
            NAME,
            format!("no valid slot metadata ({})", errs.join("; ")),
        ))
    }

    /// Writes both copies (primary first: a torn primary leaves the old backup valid).
    fn write(&self, smd: &Smd) -> Result<(), BootError> {
        let bytes = smd.to_bytes();
        for label in COPIES {
            let Ok(part) = self.storage.find(label) else {
                continue;
            };
            let io = self
                .storage
                .open(&part, true)
                .map_err(|e| BootError::backend(NAME, e))?;
            io.write_at(0, &bytes)
                .map_err(|e| BootError::backend(NAME, e))?;
            io.sync().map_err(|e| BootError::backend(NAME, e))?;
        }
        Ok(())
    }

    fn current(&self) -> Result<Slot, BootError> {
        let cmdline = self
            .root
            .read_text(paths::CMDLINE)
            .map_err(|e| BootError::backend(NAME, e))?
            .unwrap_or_default();
        cmdline_slot(&cmdline).map_err(|e| BootError::backend(NAME, e))
    }
}

fn bootable(s: &jota_tegra::smd::SlotInfo) -> bool {
    s.priority > 0 && (s.retry_count > 0 || s.successful == 1)
}

impl BootControl for R32Smd {
    fn name(&self) -> &'static str {
        NAME
    }

    fn status(&self, _target: Target) -> Result<TargetStatus, BootError> {
        // R32 with unified A/B: bootloader and rootfs share one set of slots.
        let smd = self.read()?;
        let current = self.current()?;
        let active = smd
            .boot_slot()
            .and_then(|i| Slot::from_index(i as u32))
            .unwrap_or(current);
        let n = usize::from(smd.max_slots.clamp(1, 2));
        let slots = (0..n)
            .map(|i| {
                let s = &smd.slots[i];
                SlotStatus {
                    slot: Slot::from_index(i as u32).unwrap_or(Slot::A),
                    bootable: bootable(s),
                    successful: Some(s.successful == 1),
                    retry_count: Some(u32::from(s.retry_count)),
                    priority: Some(u32::from(s.priority)),
                }
            })
            .collect();
        Ok(TargetStatus {
            current,
            active,
            slots,
        })
    }

    fn set_active(&mut self, _target: Target, slot: Slot) -> Result<(), BootError> {
        let mut smd = self.read()?;
        if smd.max_slots < 2 {
            return Err(BootError::Unsupported {
                backend: NAME,
                message: "A/B redundancy is off (one slot)".into(),
            });
        }
        smd.mark_active(slot.index() as usize);
        self.write(&smd)
    }

    fn mark_successful(&mut self, _target: Target) -> Result<(), BootError> {
        let mut smd = self.read()?;
        let cur = self.current()?.index() as usize;
        smd.mark_successful(cur, cur);
        self.write(&smd)
    }

    fn mark_bad(&mut self, _target: Target, slot: Slot) -> Result<(), BootError> {
        let mut smd = self.read()?;
        let i = slot.index() as usize;
        // Android boot_control's set-slot-as-unbootable: no priority, no retries.
        smd.slots[i].priority = 0;
        smd.slots[i].retry_count = 0;
        smd.slots[i].successful = 0;
        self.write(&smd)
    }

    fn dump_slots_info(&self, _target: Target) -> Result<SlotsInfo, BootError> {
        let smd = self.read()?;
        let n = usize::from(smd.max_slots.clamp(1, 2));
        Ok(SlotsInfo::Smd(SmdSlots {
            magic: 0x4342_4e00,
            version: u32::from(smd.version),
            features: u32::from(smd.flags),
            slots: (0..n)
                .map(|i| {
                    let s = &smd.slots[i];
                    SmdSlot {
                        slot: i as u32,
                        priority: u32::from(s.priority),
                        suffix: s.suffix_str(),
                        retry_count: u32::from(s.retry_count),
                        boot_successful: u32::from(s.successful),
                    }
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_suffix_from_cmdline() {
        assert_eq!(
            cmdline_slot("root=/dev/mmcblk0p1 boot.slot_suffix=_b quiet"),
            Ok(Slot::B)
        );
        assert_eq!(cmdline_slot("boot.slot_suffix= quiet"), Ok(Slot::A));
        assert_eq!(cmdline_slot("quiet"), Ok(Slot::A));
        assert!(cmdline_slot("boot.slot_suffix=_c").is_err());
    }
}
