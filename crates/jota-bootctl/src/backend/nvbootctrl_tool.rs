//! NVIDIA's own `nvbootctrl`: run it and parse its output (R32, R35, R36).

use crate::{BootControl, BootError, SlotStatus, Target, TargetStatus};
use jota_tegra::efivar::Slot;
use jota_tegra::nvbootctrl::{SlotStatus as NvStatus, SlotsInfo};
use std::path::{Path, PathBuf};
use std::process::Command;

const NAME: &str = "nvbootctrl";

/// Runs NVIDIA's tool.
pub struct NvBootctrlTool {
    tool: PathBuf,
}

fn be<E: std::fmt::Display>(e: E) -> BootError {
    BootError::backend(NAME, e)
}

impl NvBootctrlTool {
    /// Uses the tool at `path`.
    pub fn new(path: impl Into<PathBuf>) -> NvBootctrlTool {
        NvBootctrlTool { tool: path.into() }
    }

    /// The tool.
    pub fn path(&self) -> &Path {
        &self.tool
    }

    fn run(&self, target: Target, args: &[&str]) -> Result<std::process::Output, BootError> {
        let mut c = Command::new(&self.tool);
        if target == Target::Rootfs {
            c.args(["-t", "rootfs"]);
        }
        c.args(args)
            .output()
            .map_err(|e| be(format!("running {}: {e}", self.tool.display())))
    }

    fn run_ok(&self, target: Target, args: &[&str]) -> Result<(), BootError> {
        let out = self.run(target, args)?;
        if out.status.success() {
            Ok(())
        } else {
            Err(be(format!(
                "{} {} failed ({}): {}",
                self.tool.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

impl BootControl for NvBootctrlTool {
    fn name(&self) -> &'static str {
        NAME
    }

    fn status(&self, target: Target) -> Result<TargetStatus, BootError> {
        let st = match self.dump_slots_info(target)? {
            SlotsInfo::Bootloader(b) => TargetStatus {
                current: b.current,
                active: b.active,
                slots: b
                    .slots
                    .iter()
                    .filter_map(|s| {
                        Some(SlotStatus {
                            slot: Slot::from_index(s.slot)?,
                            bootable: s.status == NvStatus::Normal,
                            successful: None,
                            retry_count: None,
                            priority: None,
                        })
                    })
                    .collect(),
            },
            SlotsInfo::Rootfs(r) => TargetStatus {
                current: r.current,
                active: r.active,
                slots: r
                    .slots
                    .iter()
                    .filter_map(|s| {
                        Some(SlotStatus {
                            slot: Slot::from_index(s.slot)?,
                            bootable: s.status == NvStatus::Normal,
                            successful: None,
                            retry_count: Some(s.retry_count),
                            priority: None,
                        })
                    })
                    .collect(),
            },
            SlotsInfo::Smd(s) => {
                let out = self.run(target, &["get-current-slot"])?;
                let cur = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .and_then(Slot::from_index)
                    .ok_or_else(|| be("get-current-slot did not print 0 or 1"))?;
                let slots: Vec<SlotStatus> = s
                    .slots
                    .iter()
                    .filter_map(|x| {
                        Some(SlotStatus {
                            slot: Slot::from_index(x.slot)?,
                            bootable: x.priority > 0
                                && (x.retry_count > 0 || x.boot_successful == 1),
                            successful: Some(x.boot_successful == 1),
                            retry_count: Some(x.retry_count),
                            priority: Some(x.priority),
                        })
                    })
                    .collect();
                let active = slots
                    .iter()
                    .filter(|x| x.bootable)
                    .max_by_key(|x| x.priority)
                    .map(|x| x.slot)
                    .unwrap_or(cur);
                TargetStatus {
                    current: cur,
                    active,
                    slots,
                }
            }
        };
        Ok(st)
    }

    fn set_active(&mut self, target: Target, slot: Slot) -> Result<(), BootError> {
        self.run_ok(target, &["set-active-boot-slot", &slot.index().to_string()])
    }

    fn mark_successful(&mut self, target: Target) -> Result<(), BootError> {
        // R32 has mark-boot-successful; R35+ replaced it with `verify`.
        if matches!(self.dump_slots_info(Target::Bootloader)?, SlotsInfo::Smd(_)) {
            self.run_ok(target, &["mark-boot-successful"])
        } else {
            self.run_ok(Target::Bootloader, &["verify"])
        }
    }

    fn mark_bad(&mut self, target: Target, slot: Slot) -> Result<(), BootError> {
        self.run_ok(
            target,
            &["set-slot-as-unbootable", &slot.index().to_string()],
        )
    }

    fn dump_slots_info(&self, target: Target) -> Result<SlotsInfo, BootError> {
        let out = self.run(target, &["dump-slots-info"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        // nvbootctrl may exit 1 ("can not open /dev/mem") and still print valid output.
        SlotsInfo::parse(&text).map_err(|e| {
            be(format!(
                "{e} (exit {}, stderr: {})",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
    }
}
