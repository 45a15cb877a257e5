//! Boot validation (`jota agent validate`, run by `jota-validate.service` at every boot):
//! find out what the last install left, run the health checks on a new slot while feeding the
//! hardware watchdog, then commit (mark both chains successful) or fail (mark bad or leave
//! the retry counter to it, and reboot). A device that came back on its old slot records a
//! rollback.

use crate::config::{Check, OnFailure};
use crate::device::Device;
use crate::journal::{DataDir, State};
use crate::run::{run, Env};
use crate::AgentError;
use jota_bootctl::Target;
use jota_tegra::efivar::Slot;
use serde::Serialize;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Result of one check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckResult {
    /// Check name.
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// Why not, or what it saw.
    pub detail: String,
    /// How long it took, ms.
    pub ms: u64,
}

/// What validation concluded.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Verdict {
    /// No install is waiting; the running slot was checked (and marked good if it passed).
    NothingPending {
        /// Slot running.
        slot: Slot,
        /// Checks passed.
        healthy: bool,
    },
    /// The new version passed and is committed.
    Committed {
        /// Version.
        version: String,
        /// Slot.
        slot: Slot,
    },
    /// The new version failed its checks; the device reboots so the firmware rolls back.
    Failed {
        /// Version.
        version: String,
        /// Failed validations so far.
        attempts: u32,
        /// What failed.
        reason: String,
        /// `marked-bad` or `left-for-retry`.
        action: String,
    },
    /// The device is back on the old slot: the new one did not boot or failed validation.
    RolledBack {
        /// Version that was tried.
        version: String,
        /// Slot running.
        slot: Slot,
    },
    /// An install was cut off before the switch; the next install of it resumes.
    Interrupted {
        /// Version.
        version: String,
    },
}

/// Full report.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateReport {
    /// Conclusion.
    pub verdict: Verdict,
    /// Checks run.
    pub checks: Vec<CheckResult>,
    /// Watchdog keepalives written while checks ran.
    pub watchdog_pets: u64,
    /// A reboot was requested (on a simulated device the simulator performs it).
    pub reboot: bool,
}

/// Validates the running slot against the journal.
pub fn validate(dev: &mut Device) -> Result<ValidateReport, AgentError> {
    let st = dev.storage.clone();
    let data = DataDir::new(&st, &dev.config.data_dir);
    let current = dev.current_slot()?;
    let mut report = ValidateReport {
        verdict: Verdict::NothingPending {
            slot: current,
            healthy: true,
        },
        checks: Vec::new(),
        watchdog_pets: 0,
        reboot: false,
    };
    let journal = data.journal().map_err(AgentError::Device)?;
    let Some(mut j) = journal.filter(|j| !j.state.is_final()) else {
        let (checks, pets) = run_checks(dev);
        let healthy = checks.iter().all(|c| c.ok);
        if healthy {
            mark_good(dev)?;
        }
        report.checks = checks;
        report.watchdog_pets = pets;
        report.verdict = Verdict::NothingPending {
            slot: current,
            healthy,
        };
        return Ok(report);
    };
    let (version, target) = (j.version.clone(), j.target_slot);
    let root_dir = dev.root.dir().display().to_string();
    let env = |stage: &str| -> Env {
        vec![
            ("JOTA_STAGE".into(), stage.into()),
            ("JOTA_VERSION".into(), version.clone()),
            ("JOTA_CURRENT_SLOT".into(), current.to_string()),
            ("JOTA_TARGET_SLOT".into(), target.to_string()),
            ("JOTA_ROOT".into(), root_dir.clone()),
        ]
    };
    let on_target = current == j.target_slot;
    match (&j.state, on_target) {
        (State::Installing { .. }, _) | (State::Installed, false) => {
            j.state = State::Interrupted;
            j.error = Some("interrupted before the switch (power loss or reboot)".into());
            data.save(&mut j)?;
            data.set_status("interrupted")?;
            report.verdict = Verdict::Interrupted {
                version: j.version.clone(),
            };
        }
        (State::Switched | State::Validating { .. }, false) => {
            j.state = State::RolledBack;
            data.save(&mut j)?;
            let n = data.status().rollback_count + 1;
            data.set("rollback-count", &n.to_string())?;
            data.set_status("rolled-back")?;
            let _ = hook(&dev.config.hooks.on_failure, &env("rolled-back"));
            report.verdict = Verdict::RolledBack {
                version: j.version.clone(),
                slot: current,
            };
        }
        // Final states were filtered out above.
        (_, false) => {}
        (_, true) => {
            let (checks, pets) = run_checks(dev);
            report.watchdog_pets = pets;
            let failed: Vec<String> = checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            report.checks = checks;
            if failed.is_empty() {
                mark_good(dev)?;
                j.state = State::Committed;
                data.save(&mut j)?;
                data.set("installed-version", &j.version)?;
                let floor = data.status().min_version;
                let new_floor = match (&floor, &j.minimum_version) {
                    (Some(f), Some(m)) if jota_bundle::version::compare(m, f).is_gt() => {
                        Some(m.clone())
                    }
                    (None, Some(m)) => Some(m.clone()),
                    _ => None,
                };
                if let Some(f) = new_floor {
                    data.set("min-version", &f)?;
                }
                data.set_status("success")?;
                if let Err(e) = hook(&dev.config.hooks.post_activate, &env("committed")) {
                    tracing::warn!("post-activate hook: {e}");
                }
                report.verdict = Verdict::Committed {
                    version: j.version.clone(),
                    slot: current,
                };
            } else {
                let attempts = match j.state {
                    State::Validating { attempts } => attempts + 1,
                    _ => 1,
                };
                j.state = State::Validating { attempts };
                j.error = Some(failed.join("; "));
                data.save(&mut j)?;
                data.set_status("validation-failed")?;
                let action = match dev.config.validate.on_failure {
                    OnFailure::MarkBad => {
                        dev.boot.mark_bad(Target::Rootfs, current)?;
                        "marked-bad"
                    }
                    OnFailure::Retry => "left-for-retry",
                };
                let _ = hook(&dev.config.hooks.on_failure, &env("validation-failed"));
                report.verdict = Verdict::Failed {
                    version: j.version.clone(),
                    attempts,
                    reason: failed.join("; "),
                    action: action.into(),
                };
                report.reboot = true;
                reboot(dev);
            }
        }
    }
    Ok(report)
}

fn hook(argv: &[String], env: &Env) -> Result<(), String> {
    if argv.is_empty() {
        return Ok(());
    }
    run(argv, env, Duration::from_secs(120))
}

/// Marks both chains successful (the retry counters stop; the slot is the new fallback).
pub fn mark_good(dev: &mut Device) -> Result<(), AgentError> {
    dev.boot.mark_successful(Target::Rootfs)?;
    dev.boot.mark_successful(Target::Bootloader)?;
    Ok(())
}

fn reboot(dev: &Device) {
    if dev.simulated() {
        tracing::info!("simulated device: reboot it with `jota sim boot`");
        return;
    }
    let cmd = &dev.config.validate.reboot_command;
    if let Err(e) = run(cmd, &Vec::new(), Duration::from_secs(60)) {
        tracing::error!("reboot: {e}");
    }
}

/// Runs the configured checks within the deadline while a thread feeds the watchdog.
pub fn run_checks(dev: &Device) -> (Vec<CheckResult>, u64) {
    let v = &dev.config.validate;
    let stop = AtomicBool::new(false);
    let pets = AtomicU64::new(0);
    let wd = (!v.watchdog.is_empty()).then(|| dev.root.path(&v.watchdog));
    let interval = Duration::from_secs(v.watchdog_interval_s.max(1));
    let deadline = Instant::now() + Duration::from_secs(v.deadline_s);
    let results = std::thread::scope(|s| {
        if let Some(path) = wd.as_ref() {
            // Only an existing watchdog is fed; one held by systemd (EBUSY) is its business.
            if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
                let (stop, pets) = (&stop, &pets);
                s.spawn(move || {
                    let tick = Duration::from_millis(50);
                    let mut last: Option<Instant> = None;
                    while !stop.load(Ordering::SeqCst) {
                        if last.is_none_or(|l| l.elapsed() >= interval) {
                            if f.write_all(b".").and_then(|()| f.flush()).is_ok() {
                                pets.fetch_add(1, Ordering::SeqCst);
                            }
                            last = Some(Instant::now());
                        }
                        std::thread::sleep(tick);
                    }
                    // Magic close: disarm, as it was before we opened it.
                    let _ = f.write_all(b"V");
                });
            }
        }
        let mut out = Vec::new();
        for c in &v.checks {
            let start = Instant::now();
            let left = deadline.saturating_duration_since(start);
            let (ok, detail) = if left.is_zero() {
                (
                    false,
                    format!("not run: the {}s deadline passed", v.deadline_s),
                )
            } else {
                let t = c
                    .timeout_s
                    .map_or(left, |t| Duration::from_secs(t).min(left));
                match run_check(dev, c, t) {
                    Ok(d) => (true, d),
                    Err(d) => (false, d),
                }
            };
            out.push(CheckResult {
                name: c.name.clone(),
                ok,
                detail,
                ms: start.elapsed().as_millis() as u64,
            });
        }
        stop.store(true, Ordering::SeqCst);
        out
    });
    (results, pets.load(Ordering::SeqCst))
}

fn run_check(dev: &Device, c: &Check, timeout: Duration) -> Result<String, String> {
    if !c.command.is_empty() {
        let env = vec![("JOTA_ROOT".into(), dev.root.dir().display().to_string())];
        return run(&c.command, &env, timeout).map(|()| "exit 0".into());
    }
    if let Some(u) = &c.unit {
        return if crate::precheck::unit_active(dev, u) {
            Ok(format!("{u} active"))
        } else {
            Err(format!("{u} is not active"))
        };
    }
    if let Some(f) = &c.file {
        return if dev.root.path(f).exists() {
            Ok(format!("{f} exists"))
        } else {
            Err(format!("{f} does not exist"))
        };
    }
    if let Some(url) = &c.http {
        return http_get(url, timeout);
    }
    Err("no check".into())
}

/// A plain HTTP/1.1 GET (local health endpoints); 2xx passes.
fn http_get(url: &str, timeout: Duration) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not http://"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut s =
        std::net::TcpStream::connect_timeout(&sa, timeout).map_err(|e| format!("{url}: {e}"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    // One write: a server that answers after the request line must not see half a request.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: jota-agent\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    // The status line may arrive in pieces.
    let mut head = Vec::new();
    let mut b = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 256 {
        let n = s.read(&mut b).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    if (200..300).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        Err(format!("{url} answered HTTP {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::http_get;
    use std::io::{Read, Write};
    use std::time::Duration;

    #[test]
    fn http_check_reads_the_status() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().unwrap();
                let mut req = Vec::new();
                let mut b = [0u8; 512];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut b).unwrap();
                    assert!(n > 0);
                    req.extend_from_slice(&b[..n]);
                }
                write!(s, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/health");
        assert!(http_get(&url, Duration::from_secs(5)).is_ok());
        let e = http_get(&url, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("503"), "{e}");
        t.join().unwrap();
        assert!(http_get("http://127.0.0.1:1/", Duration::from_secs(2)).is_err());
    }
}
