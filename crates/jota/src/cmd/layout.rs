//! `jota layout`: show an L4T flash layout with computed offsets.

use crate::util::{parse_u64, print_json};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use jota_tegra::layout::{builtin, Layout, Resolved};
use std::collections::BTreeMap;

/// Arguments of `jota layout`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print every partition with its offset and size as the L4T flash tools compute them.
    Show {
        /// Layout XML file, or `builtin:NAME` for a layout shipped with jota
        /// (builtin:t234-qspi, builtin:t234-nvme-rootfs-ab, builtin:t234-nvme).
        file: String,
        /// Only devices of this type (spi/qspi, nvme/external, emmc/sdmmc_user, sdmmc_boot, sdcard).
        #[arg(long)]
        device: Option<String>,
        /// Placeholder value, e.g. APPSIZE=17179869184, RECSIZE=83886080, RECNAME=recovery,
        /// EXT_NUM_SECTORS=1000215216 (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Real device size in bytes (instead of num_sectors), as when flashing a disk.
        #[arg(long, value_parser = parse_u64)]
        device_size: Option<u64>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `jota layout`.
pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Show {
            file,
            device,
            set,
            device_size,
            json,
        } => show(&file, device.as_deref(), &set, device_size, json),
    }
}

fn load(file: &str) -> Result<String> {
    if let Some(name) = file.strip_prefix("builtin:") {
        let names: Vec<&str> = builtin::ALL.iter().map(|(n, _)| *n).collect();
        return builtin::get(name)
            .map(String::from)
            .with_context(|| format!("no built-in layout `{name}` (have: {})", names.join(", ")));
    }
    std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
}

/// Size in the largest binary unit: exact when it divides, else with two decimals.
fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut i = 0;
    while i < U.len() - 1 && n >= 1u64 << (10 * (i + 1)) {
        i += 1;
    }
    let unit = 1u64 << (10 * i);
    if n.is_multiple_of(unit) {
        format!("{} {}", n / unit, U[i])
    } else {
        format!("{:.2} {}", n as f64 / unit as f64, U[i])
    }
}

fn show(
    file: &str,
    device: Option<&str>,
    set: &[String],
    device_size: Option<u64>,
    json: bool,
) -> Result<()> {
    let mut vars = BTreeMap::new();
    for s in set {
        let (k, v) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected NAME=VALUE"))?;
        vars.insert(k.trim().to_string(), v.trim().to_string());
    }
    let text = load(file)?;
    let layout = Layout::parse_with(&text, &vars).with_context(|| format!("parsing {file}"))?;
    let devices: Vec<_> = match device {
        Some(d) => layout.devices_of(d).collect(),
        None => layout.devices.iter().collect(),
    };
    if devices.is_empty() {
        let have: Vec<&str> = layout.devices.iter().map(|d| d.kind.as_str()).collect();
        bail!(
            "{file} has no {} device (it has: {})",
            device.unwrap_or("any"),
            have.join(", ")
        );
    }
    let resolved = devices
        .iter()
        .map(|d| d.resolve(device_size))
        .collect::<Result<Vec<Resolved>, _>>()
        .with_context(|| format!("placing partitions of {file}"))?;
    if json {
        return print_json(&resolved);
    }
    for r in &resolved {
        print_device(r)?;
    }
    Ok(())
}

fn print_device(r: &Resolved) -> Result<()> {
    let ss = r.sector_size;
    match r.size {
        Some(s) => outln!(
            "device {} instance {}: {} ({} sectors of {ss} bytes)",
            r.kind,
            r.instance,
            human(s),
            s / ss
        ),
        None => outln!(
            "device {} instance {}: size not given (sectors of {ss} bytes)",
            r.kind,
            r.instance
        ),
    }
    let w = r
        .partitions
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    outln!(
        "  {:>3}  {:<w$}  {:>12}  {:>11}  {:>11}  {:>11}  type",
        "#",
        "name",
        "start",
        "start LBA",
        "end LBA",
        "size"
    );
    for p in &r.partitions {
        let num = p
            .number
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        let (end, size) = match p.size {
            Some(s) => (((p.start + s) / ss).saturating_sub(1).to_string(), human(s)),
            None => ("end".into(), "rest".into()),
        };
        let mut kind = p.kind.clone();
        if p.fill_to_end {
            kind.push_str(" (fills device)");
        }
        outln!(
            "  {:>3}  {:<w$}  {:>#12x}  {:>11}  {:>11}  {:>11}  {}",
            num,
            p.name,
            p.start,
            p.start / ss,
            end,
            size,
            kind
        );
    }
    if !r.ab_pairs.is_empty() {
        let pairs: Vec<String> = r
            .ab_pairs
            .iter()
            .map(|p| format!("{} ({}/{})", p.base, p.a, p.b))
            .collect();
        outln!("  A/B pairs: {}", pairs.join(", "));
    }
    outln!();
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_sizes() {
        assert_eq!(super::human(512), "512 B");
        assert_eq!(super::human(65536), "64 KiB");
        assert_eq!(super::human(19968), "19.50 KiB");
        assert_eq!(super::human(1 << 30), "1 GiB");
        assert_eq!(super::human(83886080), "80 MiB");
        assert_eq!(super::human(1536 * 1024), "1.50 MiB");
    }
}
