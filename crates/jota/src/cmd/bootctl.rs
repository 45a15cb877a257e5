//! `jota bootctl`: A/B slot control with nvbootctrl's words and output, RAUC's custom
//! bootloader backend and a SWUpdate handler.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use jota_bootctl::contract::{self, RaucRequest, SwupdateRequest};
use jota_bootctl::{BackendKind, BootControl, DeviceRoot, Target};
use jota_tegra::efivar::Slot;
use std::path::PathBuf;

/// Exit status of a query that answers "no" (Android/nvbootctrl `EX_SOFTWARE`).
const EXIT_FALSE: u8 = 70;

/// Arguments of `jota bootctl`.
#[derive(Parser, Debug)]
pub struct Args {
    /// Device root: `/` on a Jetson, a simulated device's directory otherwise.
    #[arg(long, env = "JOTA_ROOT", default_value = "/", global = true)]
    root: PathBuf,
    /// Backend: auto, l4t-uefi (R35/R36), nvbootctrl (NVIDIA's tool), uboot-env, r32-smd.
    #[arg(long, default_value = "auto", global = true)]
    backend: String,
    /// libubootenv configuration for the uboot-env backend (a path on the device).
    #[arg(long, default_value = "/etc/fw_env.config", global = true)]
    fw_env_config: String,
    /// NVIDIA's nvbootctrl for the nvbootctrl backend.
    #[arg(long, default_value = "/usr/sbin/nvbootctrl", global = true)]
    nvbootctrl: PathBuf,
    /// Target chain, as `nvbootctrl -t`: bootloader (default) or rootfs.
    #[arg(
        short = 't',
        long = "target",
        default_value = "bootloader",
        global = true
    )]
    target: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print slot information exactly as `nvbootctrl dump-slots-info` does.
    DumpSlotsInfo {
        /// Typed JSON instead of nvbootctrl's text.
        #[arg(long)]
        json: bool,
    },
    /// Print the booted slot (0 or 1).
    GetCurrentSlot,
    /// Print the slot that boots next (0 or 1).
    GetActiveBootSlot,
    /// Boot SLOT next (bootloader and rootfs move together where they are linked).
    SetActiveBootSlot {
        /// 0 (A) or 1 (B).
        slot: String,
    },
    /// Mark the booted slot of the target successful.
    MarkBootSuccessful,
    /// Mark the booted slot successful on both chains (nvbootctrl verify on R35/R36).
    Verify,
    /// Print the number of slots.
    GetNumberSlots,
    /// Exit 0 if SLOT is bootable, 70 if not.
    IsSlotBootable {
        /// 0 or 1.
        slot: String,
    },
    /// Exit 0 if SLOT is marked successful, 70 if not (or not tracked).
    IsSlotMarkedSuccessful {
        /// 0 or 1.
        slot: String,
    },
    /// Mark SLOT as unbootable.
    SetSlotAsUnbootable {
        /// 0 or 1.
        slot: String,
    },
    /// Print the partition-name suffix of SLOT (`_a`/`_b`).
    GetSuffix {
        /// 0 or 1.
        slot: String,
    },
    /// Both chains' state as JSON (for scripts).
    Status,
    /// RAUC custom bootloader backend (`bootloader=custom`): get-primary, set-primary
    /// BOOTNAME, get-state BOOTNAME, set-state BOOTNAME good|bad, get-current.
    RaucBackend {
        /// RAUC's arguments.
        #[arg(num_args = 1..=3, required = true)]
        args: Vec<String>,
    },
    /// SWUpdate bootloader handler: get | set A|B | confirm.
    Swupdate {
        /// get, set or confirm.
        action: String,
        /// A or B (for set).
        slot: Option<String>,
    },
}

fn slot_arg(s: &str) -> Result<Slot> {
    s.parse().map_err(anyhow::Error::msg)
}

/// Runs `jota bootctl`; returns the process exit status.
pub fn run(a: Args) -> Result<u8> {
    let root = DeviceRoot::at(&a.root);
    let kind = match a.backend.as_str() {
        "uboot-env" => BackendKind::UbootEnv(a.fw_env_config.clone()),
        "nvbootctrl" => BackendKind::NvBootctrl(a.nvbootctrl.clone()),
        "auto" if a.fw_env_config != "/etc/fw_env.config" => {
            BackendKind::UbootEnv(a.fw_env_config.clone())
        }
        other => other.parse().map_err(anyhow::Error::msg)?,
    };
    let target: Target = a.target.parse().map_err(anyhow::Error::msg)?;
    let mut bc = jota_bootctl::open(&root, &kind)
        .with_context(|| format!("device at {}", a.root.display()))?;
    run_cmd(bc.as_mut(), target, a.cmd)
}

fn run_cmd(bc: &mut dyn BootControl, target: Target, cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::DumpSlotsInfo { json } => {
            let info = bc.dump_slots_info(target)?;
            if json {
                crate::util::print_json(&info)?;
            } else {
                let s = info.to_string();
                outln!("{}", s.trim_end_matches('\n'));
            }
        }
        Cmd::GetCurrentSlot => outln!("{}", bc.current_slot(target)?.index()),
        Cmd::GetActiveBootSlot => outln!("{}", bc.active_slot(target)?.index()),
        Cmd::SetActiveBootSlot { slot } => bc.set_active(target, slot_arg(&slot)?)?,
        Cmd::MarkBootSuccessful => bc.mark_successful(target)?,
        Cmd::Verify => {
            bc.mark_successful(Target::Rootfs)?;
            bc.mark_successful(Target::Bootloader)?;
        }
        Cmd::GetNumberSlots => outln!("{}", bc.num_slots(target)?),
        Cmd::IsSlotBootable { slot } => {
            let s = slot_arg(&slot)?;
            let st = bc.status(target)?;
            return Ok(if st.slot(s).is_some_and(|x| x.bootable) {
                0
            } else {
                EXIT_FALSE
            });
        }
        Cmd::IsSlotMarkedSuccessful { slot } => {
            let s = slot_arg(&slot)?;
            let st = bc.status(target)?;
            return Ok(if st.slot(s).and_then(|x| x.successful) == Some(true) {
                0
            } else {
                EXIT_FALSE
            });
        }
        Cmd::SetSlotAsUnbootable { slot } => bc.mark_bad(target, slot_arg(&slot)?)?,
        Cmd::GetSuffix { slot } => outln!(
            "{}",
            if slot_arg(&slot)? == Slot::A {
                "_a"
            } else {
                "_b"
            }
        ),
        Cmd::Status => {
            let v = serde_json::json!({
                "backend": bc.name(),
                "bootloader": bc.status(Target::Bootloader)?,
                "rootfs": bc.status(Target::Rootfs)?,
            });
            crate::util::print_json(&v)?;
        }
        Cmd::RaucBackend { args } => {
            let req = match (args[0].as_str(), args.get(1), args.get(2)) {
                ("get-primary", None, None) => RaucRequest::GetPrimary,
                ("get-current", None, None) => RaucRequest::GetCurrent,
                ("set-primary", Some(b), None) => RaucRequest::SetPrimary(contract::bootname(b)?),
                ("get-state", Some(b), None) => RaucRequest::GetState(contract::bootname(b)?),
                ("set-state", Some(b), Some(s)) => RaucRequest::SetState(
                    contract::bootname(b)?,
                    match s.as_str() {
                        "good" => true,
                        "bad" => false,
                        o => bail!("RAUC state `{o}` is not good or bad"),
                    },
                ),
                _ => bail!("unknown RAUC backend call: {}", args.join(" ")),
            };
            if let Some(out) = contract::rauc(bc, &req)? {
                outln!("{out}");
            }
        }
        Cmd::Swupdate { action, slot } => {
            let req = match (action.as_str(), slot) {
                ("get", None) => SwupdateRequest::Get,
                ("confirm", None) => SwupdateRequest::Confirm,
                ("set", Some(s)) => SwupdateRequest::Set(slot_arg(&s)?),
                (a, _) => bail!("unknown SWUpdate handler call `{a}` (get | set A|B | confirm)"),
            };
            if let Some(out) = contract::swupdate(bc, &req)? {
                outln!("{out}");
            }
        }
    }
    Ok(0)
}
