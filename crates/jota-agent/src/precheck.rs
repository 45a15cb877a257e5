//! Pre-flight checks: power, free space, required services.

use crate::device::Device;
use jota_bundle::manifest::PreChecks;
use std::path::Path;

/// What the power-supply class says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Power {
    /// Lowest battery capacity, percent (None: no battery).
    pub battery_pct: Option<u8>,
    /// Whether any mains/USB supply is online (None: no such supply).
    pub ac_online: Option<bool>,
}

/// Reads `/sys/class/power_supply/*/{type,capacity,online}`.
pub fn power(dir: &Path) -> Power {
    let mut p = Power::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return p;
    };
    for e in rd.flatten() {
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        match read("type").as_deref() {
            Some("Battery") => {
                if let Some(c) = read("capacity").and_then(|c| c.parse::<u8>().ok()) {
                    p.battery_pct = Some(p.battery_pct.map_or(c, |x| x.min(c)));
                }
            }
            Some("Mains") | Some("USB") | Some("USB_PD") => {
                let on = read("online").as_deref() == Some("1");
                p.ac_online = Some(p.ac_online.unwrap_or(false) || on);
            }
            _ => {}
        }
    }
    p
}

/// Free bytes of the filesystem holding `path` (its nearest existing ancestor).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let mut p = path;
    loop {
        if p.exists() {
            let s = rustix::fs::statvfs(p).ok()?;
            return Some(s.f_bavail.saturating_mul(s.f_frsize));
        }
        p = p.parent()?;
    }
}

/// Whether a systemd unit is active. On a simulated device, units listed one per line in
/// `sim/services` under its root stand in for systemd (there is no systemd to ask).
pub fn unit_active(dev: &Device, unit: &str) -> bool {
    if dev.simulated() {
        return std::fs::read_to_string(dev.root.dir().join("sim/services"))
            .map(|t| t.lines().any(|l| l.trim() == unit))
            .unwrap_or(false);
    }
    std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs every pre-flight check; returns the first failure.
pub fn check(dev: &Device, bundle: &PreChecks) -> Result<(), String> {
    let c = &dev.config.precheck;
    let pw = power(&dev.root.path(&c.power_supply_dir));
    let min_battery = c.min_battery_pct.max(bundle.min_battery_pct.unwrap_or(0));
    if let Some(b) = pw.battery_pct {
        if b < min_battery {
            return Err(format!(
                "battery at {b}%, the update needs at least {min_battery}%"
            ));
        }
    }
    if c.require_ac && pw.ac_online == Some(false) {
        return Err("external power is not connected (precheck.require_ac)".into());
    }
    let min_free = c
        .min_free_space_mb
        .max(bundle.min_free_space_mb.unwrap_or(0));
    if min_free > 0 {
        let data = dev.root.path(&dev.config.data_dir);
        match free_bytes(&data) {
            Some(f) if f < min_free << 20 => {
                return Err(format!(
                    "{} MiB free on the data partition, the update needs {min_free} MiB",
                    f >> 20
                ))
            }
            Some(_) => {}
            None => return Err(format!("cannot read free space of {}", data.display())),
        }
    }
    for u in &bundle.required_services {
        if !unit_active(dev, u) {
            return Err(format!("required service {u} is not active"));
        }
    }
    Ok(())
}
