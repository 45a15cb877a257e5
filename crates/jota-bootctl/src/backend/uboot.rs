//! U-Boot A/B with RAUC's variables: `BOOT_ORDER` ("A B") and `BOOT_A_LEFT`/`BOOT_B_LEFT`
//! (boot attempts left, written in hex like RAUC). U-Boot's boot script tries the slots in
//! order, decrementing the first one with attempts left, and passes `rauc.slot=<X>`.
//!
//! The environment is libubootenv's (see [`crate::uboot_env`]), so `fw_printenv`, RAUC's
//! own `bootloader=uboot` and SWUpdate's `-B uboot` see the same state. Unlike RAUC, which
//! runs one `fw_setenv` per variable, jota changes both variables of an operation in one
//! environment write, so a power cut cannot leave a half-applied switch.

use crate::root::{paths, DeviceRoot};
use crate::uboot_env::UbootEnv;
use crate::{BootControl, BootError, SlotStatus, Target, TargetStatus};
use jota_tegra::efivar::Slot;
use jota_tegra::nvbootctrl::{RootfsSlot, RootfsSlots, SlotStatus as NvStatus, SlotsInfo};

const NAME: &str = "uboot-env";
/// RAUC's default number of attempts.
pub const DEFAULT_ATTEMPTS: u32 = 3;

/// RAUC-convention U-Boot backend. The environment is re-read for every operation, as
/// `fw_setenv` does, so changes by U-Boot, RAUC or SWUpdate are never overwritten.
pub struct UbootBackend {
    root: DeviceRoot,
    config: String,
    attempts: u32,
}

fn be<E: std::fmt::Display>(e: E) -> BootError {
    BootError::backend(NAME, e)
}

fn bootname(s: Slot) -> &'static str {
    match s {
        Slot::A => "A",
        Slot::B => "B",
    }
}

impl UbootBackend {
    /// Opens the environment named by `fw_env_config` (device path inside `root`).
    pub fn open(root: &DeviceRoot, fw_env_config: &str) -> Result<UbootBackend, BootError> {
        // Fail early if there is no valid environment.
        UbootEnv::open(root, fw_env_config).map_err(be)?;
        Ok(UbootBackend {
            root: root.clone(),
            config: fw_env_config.to_string(),
            attempts: DEFAULT_ATTEMPTS,
        })
    }

    /// The environment as it is now.
    pub fn env(&self) -> Result<UbootEnv, BootError> {
        UbootEnv::open(&self.root, &self.config).map_err(be)
    }
}

fn order(env: &UbootEnv) -> Vec<Slot> {
    env.get("BOOT_ORDER")
        .unwrap_or("")
        .split(' ')
        .filter_map(|b| match b {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        })
        .collect()
}

fn left(env: &UbootEnv, s: Slot) -> u32 {
    let key = format!("BOOT_{}_LEFT", bootname(s));
    env.get(&key)
        .and_then(|v| u32::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

fn good(env: &UbootEnv, s: Slot) -> bool {
    order(env).contains(&s) && left(env, s) > 0
}

fn primary(env: &UbootEnv) -> Option<Slot> {
    order(env).into_iter().find(|s| left(env, *s) > 0)
}

impl UbootBackend {
    fn booted(&self) -> Result<Slot, BootError> {
        let cmdline = self
            .root
            .read_text(paths::CMDLINE)
            .map_err(be)?
            .unwrap_or_default();
        for a in cmdline.split_whitespace() {
            if let Some(v) = a.strip_prefix("rauc.slot=") {
                return match v {
                    "A" => Ok(Slot::A),
                    "B" => Ok(Slot::B),
                    o => Err(be(format!("rauc.slot={o} is not A or B"))),
                };
            }
        }
        Err(be(
            "the kernel command line has no rauc.slot=: cannot tell which slot booted",
        ))
    }
}

impl BootControl for UbootBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn status(&self, _target: Target) -> Result<TargetStatus, BootError> {
        let current = self.booted()?;
        let env = self.env()?;
        Ok(TargetStatus {
            current,
            active: primary(&env).unwrap_or(current),
            slots: [Slot::A, Slot::B]
                .into_iter()
                .map(|s| SlotStatus {
                    slot: s,
                    bootable: good(&env, s),
                    successful: None,
                    retry_count: Some(left(&env, s)),
                    priority: None,
                })
                .collect(),
        })
    }

    fn set_active(&mut self, _target: Target, slot: Slot) -> Result<(), BootError> {
        let mut env = self.env()?;
        let mut order = vec![slot];
        order.extend(self::order(&env).into_iter().filter(|s| *s != slot));
        if !order.contains(&slot.other()) {
            order.push(slot.other());
        }
        let order: Vec<&str> = order.into_iter().map(bootname).collect();
        let key = format!("BOOT_{}_LEFT", bootname(slot));
        let left = format!("{:x}", self.attempts);
        let order = order.join(" ");
        env.apply(&[
            (key.as_str(), Some(left.as_str())),
            ("BOOT_ORDER", Some(order.as_str())),
        ])
        .map_err(be)
    }

    fn mark_successful(&mut self, _target: Target) -> Result<(), BootError> {
        let cur = self.booted()?;
        let key = format!("BOOT_{}_LEFT", bootname(cur));
        let left = format!("{:x}", self.attempts);
        self.env()?
            .apply(&[(key.as_str(), Some(left.as_str()))])
            .map_err(be)
    }

    fn mark_bad(&mut self, _target: Target, slot: Slot) -> Result<(), BootError> {
        let mut env = self.env()?;
        let order: Vec<&str> = order(&env)
            .into_iter()
            .filter(|s| *s != slot)
            .map(bootname)
            .collect();
        let order = order.join(" ");
        let key = format!("BOOT_{}_LEFT", bootname(slot));
        env.apply(&[
            ("BOOT_ORDER", Some(order.as_str())),
            (key.as_str(), Some("0")),
        ])
        .map_err(be)
    }

    fn dump_slots_info(&self, target: Target) -> Result<SlotsInfo, BootError> {
        let st = self.status(target)?;
        Ok(SlotsInfo::Rootfs(RootfsSlots {
            current: st.current,
            active: st.active,
            slots: st
                .slots
                .iter()
                .map(|s| RootfsSlot {
                    slot: s.slot.index(),
                    retry_count: s.retry_count.unwrap_or(0),
                    status: if s.bootable {
                        NvStatus::Normal
                    } else {
                        NvStatus::Unbootable
                    },
                })
                .collect(),
        }))
    }
}
