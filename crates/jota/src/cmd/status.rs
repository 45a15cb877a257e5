//! `jota status`: slots, versions and the last update; `mark-good`, `mark-bad`,
//! `mark-active` as in RAUC.

use crate::cmd::agent::DeviceArgs;
use crate::util::print_json;
use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use jota_agent::device::other;
use jota_bootctl::{Target, TargetStatus};
use jota_tegra::efivar::Slot;

/// Arguments of `jota status`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(flatten)]
    dev: DeviceArgs,
    /// JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::enum_variant_names)] // RAUC's command names: mark-good, mark-bad, mark-active
enum Cmd {
    /// Mark the booted slot good on both chains (stops the retry counter).
    MarkGood,
    /// Mark the booted slot bad: the next boot falls back to the other slot.
    MarkBad,
    /// Make a slot boot next on both chains: `booted`, `other`, `A` or `B`.
    MarkActive {
        /// booted | other | A | B
        which: String,
    },
}

/// Runs `jota status`.
pub fn run(a: Args) -> Result<()> {
    let mut dev = a.dev.open()?;
    let current = dev.current_slot()?;
    match &a.cmd {
        Some(Cmd::MarkGood) => {
            jota_agent::validate::mark_good(&mut dev)?;
            outln!("slot {current} marked good");
            return Ok(());
        }
        Some(Cmd::MarkBad) => {
            dev.boot.mark_bad(Target::Rootfs, current)?;
            outln!(
                "slot {current} marked bad; the next boot runs slot {}",
                other(current)
            );
            return Ok(());
        }
        Some(Cmd::MarkActive { which }) => {
            let s = match which.as_str() {
                "booted" => current,
                "other" => other(current),
                "A" | "a" | "0" => Slot::A,
                "B" | "b" | "1" => Slot::B,
                w => bail!("`{w}` is not booted, other, A or B"),
            };
            dev.boot.switch_both(s)?;
            outln!("slot {s} boots next (bootloader and rootfs)");
            return Ok(());
        }
        None => {}
    }
    let s = jota_agent::status::status(&dev)?;
    if a.json {
        return print_json(&s);
    }
    outln!("backend:        {}", s.backend);
    outln!(
        "running:        slot {} (bootloader chain {}), version {}",
        s.rootfs.current,
        s.bootloader.current,
        s.running_version.as_deref().unwrap_or("unknown")
    );
    outln!(
        "next boot:      slot {} (bootloader chain {})",
        s.rootfs.active,
        s.bootloader.active
    );
    slots("rootfs", &s.rootfs)?;
    slots("bootloader", &s.bootloader)?;
    if let Some(j) = &s.journal {
        outln!(
            "last update:    {} {} → slot {}: {:?}{}",
            j.version,
            j.source,
            j.target_slot,
            j.state,
            j.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    let f = &s.files;
    outln!(
        "last status:    {} at {}",
        f.last_status.as_deref().unwrap_or("none"),
        f.last_timestamp.as_deref().unwrap_or("-")
    );
    outln!("rollbacks:      {}", f.rollback_count);
    outln!(
        "installed:      {}",
        f.installed_version.as_deref().unwrap_or("-")
    );
    outln!(
        "minimum:        {}",
        f.min_version.as_deref().unwrap_or("-")
    );
    Ok(())
}

fn slots(name: &str, t: &TargetStatus) -> Result<()> {
    for s in &t.slots {
        outln!(
            "  {name:<10} {}: {}{}{}",
            s.slot,
            if s.bootable { "bootable" } else { "UNBOOTABLE" },
            match s.successful {
                Some(true) => ", successful",
                Some(false) => ", not marked successful",
                None => "",
            },
            s.retry_count
                .map(|r| format!(", {r} retries left"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
