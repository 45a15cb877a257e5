//! Helpers shared by the CLI tests.
#![allow(dead_code)] // each test binary uses a different subset

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `jota` binary under test.
pub fn jota() -> Command {
    Command::cargo_bin("jota").unwrap()
}

/// Path of the `jota` binary (for scripts and tools that call it).
pub fn jota_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("jota")
}

/// A tool the test needs; CI installs it (.ci/run), so its absence is a failure.
pub fn tool(name: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed (apt-get install it; .ci/run does)");
}

/// Runs `cmd` and asserts it succeeded, showing its output when it did not.
pub fn run(cmd: &mut std::process::Command) -> std::process::Output {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Runs `jota ARGS...`, asserts success and parses its stdout as JSON.
pub fn jota_json<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let o = jota().args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Simulator releases (real ext4 images made by mke2fs, BUP, capsule, kernel, DTB) made once
/// per test binary: `(model, directory name, version)` each, under a temporary directory
/// that lives as long as `cell`.
pub fn sim_releases(
    cell: &'static OnceLock<(tempfile::TempDir, PathBuf)>,
    specs: &[(&str, &str, &str)],
) -> &'static Path {
    let (_, root) = cell.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for (model, name, version) in specs {
            jota()
                .args([
                    "sim",
                    "make-release",
                    "--rootfs-size",
                    "8M",
                    "--model",
                    model,
                ])
                .args(["--version", version, "-o"])
                .arg(d.path().join(name))
                .assert()
                .success();
        }
        let root = d.path().to_path_buf();
        (d, root)
    });
    root
}
