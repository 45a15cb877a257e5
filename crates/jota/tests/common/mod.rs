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

/// Runs a peer tool in its own process group with its output in files, and waits at most
/// `limit`. Tools such as swupdate fork helpers that can outlive them: with pipes, a helper
/// still holding one would block `output()` forever (a CI run once hung here), so the whole
/// group is killed when the tool exits or the limit passes; a timeout fails with the output.
pub fn output_bounded(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The group id is the tool's pid; stragglers (or the hung tool) go with it.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.wait();
    let (stdout, stderr) = (std::fs::read(&out).unwrap(), std::fs::read(&err).unwrap());
    match status {
        Some(status) => std::process::Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} did not finish within {limit:?}: {}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
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

/// A `jota server` process and its URL; killed when dropped.
pub struct Server(pub std::process::Child, pub String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain-HTTP server on a free loopback port.
pub fn server(data: &Path, token: &str) -> Server {
    server_with(data, token, &[])
}

/// A plain-HTTP server with extra arguments.
pub fn server_with(data: &Path, token: &str, extra: &[&str]) -> Server {
    let mut all = vec!["--insecure-http"];
    all.extend_from_slice(extra);
    spawn_server(data, token, &all)
}

/// `jota server` with exactly these extra arguments; waits until it listens.
pub fn spawn_server(data: &Path, token: &str, extra: &[&str]) -> Server {
    let mut child = std::process::Command::new(jota_bin())
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            token,
            "--data-dir",
        ])
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    Server(child, url)
}
