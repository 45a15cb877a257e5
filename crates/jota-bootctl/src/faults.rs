//! Injected faults of a simulated device, obeyed by every jota process that writes to it.
//!
//! The plan lives in `<root>/sim/faults.json`; on a real Jetson the file does not exist and
//! nothing here runs. Every write to simulated storage (partition blocks, UEFI variables, ESP
//! files) passes [`Faults::before_write`], which counts it under a file lock; the armed N-th
//! write is torn (only a prefix reaches storage) and every later write is lost, as when
//! power is cut, until the simulator boots the device again.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Faults file, relative to the device root.
pub const FAULTS_FILE: &str = "sim/faults.json";

/// What the simulated power supply and firmware will do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Cut power on this write (1-based, counted from when it was armed): it is torn, later
    /// writes are lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_cut_after_writes: Option<u64>,
    /// Writes counted since the cut was armed.
    #[serde(default)]
    pub writes_seen: u64,
    /// Power is off: the cut happened and the device has not booted since.
    #[serde(default)]
    pub power_lost: bool,
    /// Health checks of the booted slot: `Some(false)` = they fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_ok: Option<bool>,
    /// Health checks fail while this release version runs (an application that breaks on
    /// one release; the other versions are healthy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_fail_version: Option<String>,
    /// Hardware watchdog timeout in seconds (None: disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_timeout_s: Option<u64>,
    /// How long the OS takes to boot to the validation service, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time_s: Option<u64>,
}

/// The error a write gets when the simulated power is cut.
#[derive(Debug, thiserror::Error)]
#[error("simulated power cut: the device lost power during write #{write}")]
pub struct PowerCut {
    /// Which write was torn.
    pub write: u64,
}

/// Is this I/O error a simulated power cut?
pub fn is_power_cut(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<PowerCut>())
}

fn power_cut(write: u64) -> io::Error {
    io::Error::other(PowerCut { write })
}

/// What a write may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteVerdict {
    /// Write everything.
    Proceed,
    /// Write only this many bytes, then fail with [`PowerCut`].
    Tear(usize),
}

/// Handle on a device's fault plan.
#[derive(Clone, Debug)]
pub struct Faults {
    path: PathBuf,
}

impl Faults {
    /// The fault plan of the device at `root`, if it is simulated.
    pub fn for_root(root: &Path) -> Option<Faults> {
        let path = root.join(FAULTS_FILE);
        path.exists().then_some(Faults { path })
    }

    /// Creates (or resets) the plan file of a simulated device.
    pub fn create(root: &Path, plan: &FaultPlan) -> io::Result<Faults> {
        let f = Faults {
            path: root.join(FAULTS_FILE),
        };
        if let Some(d) = f.path.parent() {
            std::fs::create_dir_all(d)?;
        }
        f.update(|p| {
            *p = plan.clone();
            Ok(())
        })?;
        Ok(f)
    }

    fn lock(&self) -> io::Result<File> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))?;
        lock.lock()?;
        Ok(lock)
    }

    /// Reads the plan.
    pub fn load(&self) -> io::Result<FaultPlan> {
        let _l = self.lock()?;
        self.read_unlocked()
    }

    fn read_unlocked(&self) -> io::Result<FaultPlan> {
        match std::fs::read(&self.path) {
            Ok(b) if b.is_empty() => Ok(FaultPlan::default()),
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", self.path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(FaultPlan::default()),
            Err(e) => Err(e),
        }
    }

    /// Changes the plan under the lock (atomically replaced).
    pub fn update<T>(&self, f: impl FnOnce(&mut FaultPlan) -> io::Result<T>) -> io::Result<T> {
        let _l = self.lock()?;
        let mut p = self.read_unlocked()?;
        let before = p.clone();
        let r = f(&mut p)?;
        if p == before && self.path.exists() {
            // Most writes change nothing (no cut armed): skip rewriting the plan.
            return Ok(r);
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&p).map_err(io::Error::other)?,
        )?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(r)
    }

    /// Counts one write of `len` bytes and says how much of it reaches storage.
    pub fn before_write(&self, len: usize) -> io::Result<WriteVerdict> {
        self.update(|p| {
            if p.power_lost {
                return Err(power_cut(p.writes_seen));
            }
            let Some(n) = p.power_cut_after_writes else {
                return Ok(WriteVerdict::Proceed);
            };
            p.writes_seen += 1;
            if p.writes_seen >= n {
                p.power_lost = true;
                p.power_cut_after_writes = None;
                // A torn write: roughly half of it made it.
                return Ok(WriteVerdict::Tear(len / 2));
            }
            Ok(WriteVerdict::Proceed)
        })
    }

    /// The torn write is done: report the cut.
    pub fn cut_error(&self) -> io::Error {
        let n = self.load().map(|p| p.writes_seen).unwrap_or(0);
        power_cut(n)
    }

    /// Power comes back (the simulator boots the device).
    pub fn power_on(&self) -> io::Result<()> {
        self.update(|p| {
            p.power_lost = false;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_write_is_torn_and_later_ones_lost() {
        let d = tempfile::tempdir().unwrap();
        assert!(Faults::for_root(d.path()).is_none());
        let f = Faults::create(
            d.path(),
            &FaultPlan {
                power_cut_after_writes: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(Faults::for_root(d.path()).is_some());
        assert_eq!(f.before_write(100).unwrap(), WriteVerdict::Proceed);
        assert_eq!(f.before_write(100).unwrap(), WriteVerdict::Proceed);
        assert_eq!(f.before_write(100).unwrap(), WriteVerdict::Tear(50));
        let e = f.before_write(100).unwrap_err();
        assert!(is_power_cut(&e), "{e}");
        assert!(f.load().unwrap().power_lost);
        f.power_on().unwrap();
        assert_eq!(f.before_write(100).unwrap(), WriteVerdict::Proceed);
    }
}
