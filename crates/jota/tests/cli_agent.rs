//! `jota install`, `jota status`, `jota agent validate` end to end on a simulated Orin Nano:
//! hooks see their environment, the health check is the simulator's `jota sim health`, the
//! watchdog is fed through slow checks, and a check past the deadline fails validation.

mod common;
use common::{jota, jota_json, sim_releases};

/// Runs `c`, which must succeed, and parses its stdout.
fn out_json(c: &mut assert_cmd::Command) -> Value {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}
use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn releases() -> &'static Path {
    static F: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    sim_releases(
        &F,
        &[
            ("orin-nano-8gb", "r1", "1.0.0"),
            ("orin-nano-8gb", "r2", "2.0.0"),
        ],
    )
}

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
}

/// A booted device with release 1, a keyring and `config` as its agent.toml; and bundle v2.
fn setup(d: &Path, config: &str) -> (PathBuf, PathBuf) {
    let dev = d.join("jetson");
    jota()
        .args([
            "sim",
            "create",
            "--model",
            "orin-nano-8gb",
            "--rootfs-size",
            "12M",
            "--release",
        ])
        .arg(releases().join("r1"))
        .arg(&dev)
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    std::fs::create_dir_all(dev.join("etc/jota/keyring")).unwrap();
    std::fs::copy(
        keys().join("ed25519.pub.pem"),
        dev.join("etc/jota/keyring/ed25519.pub.pem"),
    )
    .unwrap();
    std::fs::write(dev.join("etc/jota/agent.toml"), config).unwrap();
    let r2 = releases().join("r2");
    let b = d.join("v2.jota");
    jota()
        .args(["bundle", "create", "-o"])
        .arg(&b)
        .args([
            "--version",
            "2.0.0",
            "--hw-compat",
            "3767-000[0-5]",
            "--key",
        ])
        .arg(keys().join("ed25519.key.pem"))
        .arg("--rootfs")
        .arg(r2.join("rootfs.ext4"))
        .arg("--kernel")
        .arg(r2.join("Image"))
        .arg("--dtb")
        .arg(r2.join("kernel.dtb"))
        .arg("--capsule")
        .arg(r2.join("TEGRA_BL.Cap"))
        .assert()
        .success();
    (dev, b)
}

const HEALTH: &str = r#"
[[validate.checks]]
name = "app"
command = ["sh", "-c", "jota sim health \"$JOTA_ROOT\""]
"#;

fn status(dev: &Path) -> Value {
    jota_json([
        Path::new("status"),
        Path::new("--json"),
        Path::new("--root"),
        dev,
    ])
}

#[test]
fn install_reboot_validate_commit_with_hooks() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("hooks.log");
    let cfg = format!(
        r#"
[hooks]
pre_install = ["sh", "-c", "echo pre $JOTA_VERSION $JOTA_CURRENT_SLOT $JOTA_TARGET_SLOT >> {log}"]
post_install = ["sh", "-c", "echo post $JOTA_VERSION >> {log}"]
post_activate = ["sh", "-c", "echo activate $JOTA_STAGE >> {log}"]
{HEALTH}"#,
        log = log.display()
    );
    let (dev, b) = setup(d.path(), &cfg);
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "installed in slot B; both chains switched",
        ));
    let s = status(&dev);
    assert_eq!(s["journal"]["state"], "switched");
    assert_eq!(s["files"]["last_status"], "switched");
    // A second install before the reboot is refused.
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&b)
        .assert()
        .failure()
        .stderr(predicate::str::contains("reboot and validate it first"));
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    jota()
        .args(["agent", "validate", "--root"])
        .arg(&dev)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "2.0.0 on slot B passed validation and is committed",
        ));
    let s = status(&dev);
    assert_eq!(s["running_version"], "2.0.0");
    assert_eq!(s["files"]["installed_version"], "2.0.0");
    assert_eq!(s["rootfs"]["current"], "B");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "pre 2.0.0 A B\npost 2.0.0\nactivate post-activate\nactivate committed\n"
    );
    // RAUC habits: mark-active other, then back.
    jota()
        .args(["status", "mark-active", "other", "--root"])
        .arg(&dev)
        .assert()
        .success();
    assert_eq!(status(&dev)["rootfs"]["active"], "A");
    jota()
        .args(["status", "mark-active", "booted", "--root"])
        .arg(&dev)
        .assert()
        .success();
    assert_eq!(status(&dev)["rootfs"]["active"], "B");
}

#[test]
fn failing_health_rolls_back_and_counts_it() {
    let d = tempfile::tempdir().unwrap();
    let (dev, b) = setup(d.path(), HEALTH);
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&b)
        .assert()
        .success();
    jota()
        .args(["sim", "fault"])
        .arg(&dev)
        .args(["--health", "fail"])
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    jota()
        .args(["agent", "validate", "--root"])
        .arg(&dev)
        .assert()
        .code(1)
        .stdout(predicate::str::contains(
            "failed validation (attempt 1, marked-bad)",
        ));
    jota()
        .args(["sim", "fault"])
        .arg(&dev)
        .args(["--health", "clear"])
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    jota()
        .args(["agent", "validate", "--root"])
        .arg(&dev)
        .assert()
        .success()
        .stdout(predicate::str::contains("rolled back"));
    let s = status(&dev);
    assert_eq!(s["rootfs"]["current"], "A");
    assert_eq!(s["files"]["rollback_count"], 1);
    assert_eq!(s["files"]["last_status"], "rolled-back");
}

#[test]
fn watchdog_is_fed_during_slow_checks_and_the_deadline_holds() {
    let d = tempfile::tempdir().unwrap();
    let cfg = r#"
[validate]
watchdog = "/dev/watchdog"
watchdog_interval_s = 1
deadline_s = 4
[[validate.checks]]
name = "slow-but-fine"
command = ["sleep", "2.5"]
[[validate.checks]]
name = "hangs"
command = ["sleep", "30"]
"#;
    let (dev, b) = setup(d.path(), cfg);
    // The simulated watchdog is a file the agent writes keepalives into.
    std::fs::write(dev.join("dev/watchdog"), b"").unwrap();
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&b)
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    let out = jota()
        .args(["agent", "validate", "--json", "--root"])
        .arg(&dev)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["checks"][0]["ok"], true, "{rep}");
    assert_eq!(rep["checks"][1]["ok"], false, "{rep}");
    assert!(rep["watchdog_pets"].as_u64().unwrap() >= 3, "{rep}");
    let fed = std::fs::read_to_string(dev.join("dev/watchdog")).unwrap();
    assert!(fed.starts_with("...") && fed.ends_with('V'), "{fed:?}");
    assert_eq!(rep["verdict"]["result"], "failed");
}

/// Serves `data` over HTTP with Range support; the first `drops` responses stop a third in.
fn serve(data: Vec<u8>, drops: usize) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v2.jota", l.local_addr().unwrap());
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut c) = conn else { continue };
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut range = None;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                    let (a, b) = v.trim().split_once('-').unwrap();
                    let a: usize = a.parse().unwrap();
                    let b: usize = if b.is_empty() {
                        data.len() - 1
                    } else {
                        b.parse().unwrap()
                    };
                    range = Some((a, b));
                }
            }
            let (from, to) = range.unwrap_or((0, data.len() - 1));
            let body = &data[from..=to];
            let head = if range.is_some() {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{to}/{}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    data.len()
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(if n < drops {
                &body[..body.len() / 3]
            } else {
                body
            });
        }
    });
    url
}

#[test]
fn install_from_a_url_resumes_a_dropped_download() {
    let d = tempfile::tempdir().unwrap();
    let (dev, b) = setup(d.path(), HEALTH);
    let url = serve(std::fs::read(&b).unwrap(), 1);
    jota()
        .args(["install", "--download-only", "--root"])
        .arg(&dev)
        .arg(&url)
        .assert()
        .success()
        .stdout(predicate::str::contains("downloaded"));
    let downloads = dev.join("data/ota/downloads");
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 1);
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&url)
        .assert()
        .success()
        .stdout(predicate::str::contains("installed in slot B"));
    // Installed: the download is gone; the journal names the URL.
    assert_eq!(std::fs::read_dir(&downloads).unwrap().count(), 0);
    assert_eq!(status(&dev)["journal"]["source"], url.as_str());
}

/// `jota bundle create` of a simulated release, optionally grouped against `base`.
fn mk(rel: &str, v: &str, out: &Path, base: Option<&Path>) {
    let r = releases().join(rel);
    let mut c = jota();
    c.args(["bundle", "create", "-o"])
        .arg(out)
        .args(["--version", v, "--key"])
        .arg(keys().join("ed25519.key.pem"));
    for (flag, f) in [
        ("--rootfs", "rootfs.ext4"),
        ("--kernel", "Image"),
        ("--dtb", "kernel.dtb"),
        ("--capsule", "TEGRA_BL.Cap"),
    ] {
        c.arg(flag).arg(r.join(f));
    }
    if let Some(b) = base {
        c.arg("--base").arg(b);
    }
    c.assert().success();
}

#[test]
fn install_from_a_url_by_delta_with_a_dry_run_first() {
    let d = tempfile::tempdir().unwrap();
    let (dev, _) = setup(d.path(), HEALTH);
    let v1 = d.path().join("v1.jota");
    let b = d.path().join("v2-delta.jota");
    // Release 2 grouped against release 1 (`--base`): chunks are all-old or all-new.
    mk("r1", "1.0.0", &v1, None);
    mk("r2", "2.0.0", &b, Some(&v1));
    let url = serve(std::fs::read(&b).unwrap(), 0);
    let out = jota()
        .args(["install", "--dry-run", "--json", "--root"])
        .arg(&dev)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let full = plan["full_bytes"].as_u64().unwrap();
    let delta = plan["front_bytes"].as_u64().unwrap() + plan["fetch_bytes"].as_u64().unwrap();
    assert!(delta < full, "{plan}");
    jota()
        .arg("install")
        .arg("--root")
        .arg(&dev)
        .arg(&url)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("delta: downloaded")
                .and(predicate::str::contains("installed in slot B")),
        );
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    jota()
        .args(["agent", "validate", "--root"])
        .arg(&dev)
        .assert()
        .success();
    assert_eq!(status(&dev)["running_version"], "2.0.0");
}

#[test]
fn a_static_patch_installs_on_its_base_and_names_the_bundle_elsewhere() {
    let d = tempfile::tempdir().unwrap();
    let (dev, _) = setup(d.path(), HEALTH);
    let v1 = d.path().join("v1.jota");
    let v2 = d.path().join("v2.jota");
    mk("r1", "1.0.0", &v1, None);
    mk("r2", "2.0.0", &v2, Some(&v1));
    let patch = d.path().join("v2.jotapatch");
    let rep = out_json(
        jota()
            .args(["bundle", "delta", "--level", "3", "--json", "--key"])
            .arg(keys().join("ed25519.key.pem"))
            .arg("--keyring")
            .arg(dev.join("etc/jota/keyring"))
            .arg(&v1)
            .arg(&v2)
            .arg("-o")
            .arg(&patch),
    );
    let bytes = rep["patch_bytes"].as_u64().unwrap();
    assert_eq!(bytes, std::fs::metadata(&patch).unwrap().len());
    assert!(bytes < rep["chunked_bytes"].as_u64().unwrap(), "{rep}");
    assert!(bytes < rep["full_bytes"].as_u64().unwrap(), "{rep}");

    let plan = out_json(
        jota()
            .args(["install", "--dry-run", "--json", "--root"])
            .arg(&dev)
            .arg(&patch),
    );
    assert_eq!(plan["base_matches"], true, "{plan}");
    assert_eq!(plan["patch_bytes"].as_u64().unwrap(), bytes);
    jota()
        .args(["install", "--root"])
        .arg(&dev)
        .arg(&patch)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("patch from 1.0.0")
                .and(predicate::str::contains("installed in slot B")),
        );
    jota().args(["sim", "boot"]).arg(&dev).assert().success();
    jota()
        .args(["agent", "validate", "--root"])
        .arg(&dev)
        .assert()
        .success();
    assert_eq!(status(&dev)["running_version"], "2.0.0");

    // Now slot B runs 2.0.0: the patch's base is gone, and the bundle next to it installs.
    let plan = out_json(
        jota()
            .args(["install", "--dry-run", "--json", "--root"])
            .arg(&dev)
            .arg(&patch),
    );
    assert_eq!(plan["base_matches"], false, "{plan}");
    assert_eq!(plan["bundle"], v2.display().to_string());
    jota()
        .args(["install", "--root"])
        .arg(&dev)
        .arg(&patch)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("the patch does not apply")
                .and(predicate::str::contains("installed in slot A")),
        );
}
