//! `jota server` and `jota fleet` end to end: a server process on a free loopback port
//! (SQLite in its data directory), a bundle uploaded, a device registered and deployed to,
//! and the same state read back with `--json`; plain HTTP only when asked for.

mod common;
use common::{jota, jota_bin, sim_releases};
use predicates::prelude::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
}

struct Server(std::process::Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(data: &Path, token: &str) -> Server {
    let mut child = std::process::Command::new(jota_bin())
        .args([
            "server",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            token,
            "--data-dir",
        ])
        .arg(data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    Server(child, url)
}

fn fleet(s: &Server, token: &str, args: &[&str]) -> Value {
    let o = jota()
        .args(["fleet", "--server", &s.1, "--token", token])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn serve_upload_register_deploy() {
    static R: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let rel = sim_releases(&R, &[("orin-nano-8gb", "r2", "2.0.0")]).join("r2");
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("server");

    jota()
        .args([
            "server",
            "--admin-token",
            "0123456789abcdef0123",
            "--data-dir",
        ])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--insecure-http"));

    std::fs::create_dir_all(data.join("keyring")).unwrap();
    std::fs::copy(
        keys().join("ed25519.pub.pem"),
        data.join("keyring/release.pem"),
    )
    .unwrap();
    let token = "0123456789abcdef0123";
    let s = server(&data, token);

    let b = d.path().join("v2.jota");
    jota()
        .args(["bundle", "create", "-o"])
        .arg(&b)
        .args(["--version", "2.0.0", "--key"])
        .arg(keys().join("ed25519.key.pem"))
        .arg("--rootfs")
        .arg(rel.join("rootfs.ext4"))
        .assert()
        .success();
    let art = fleet(&s, token, &["upload", b.to_str().unwrap()]);
    assert_eq!(art["version"], "2.0.0");
    let id = art["id"].as_str().unwrap();
    let dev = fleet(
        &s,
        token,
        &[
            "add-device",
            "orin-7",
            "--hardware",
            "3767-0005-300",
            "--tag",
            "canary",
        ],
    );
    assert_eq!(dev["token"].as_str().unwrap().len(), 64);
    let dep = fleet(
        &s,
        token,
        &["deploy", "--artifact", id, "--device", "orin-7"],
    );
    assert_eq!(dep["state"], "assigned");
    let devs = fleet(&s, token, &["devices"]);
    assert_eq!(devs[0]["id"], "orin-7");
    assert_eq!(devs[0]["tags"][0], "canary");
    assert_eq!(devs[0]["deployment"]["artifact_id"], id);

    // A wrong token is a clear error, and the text output names what was done.
    jota()
        .args([
            "fleet",
            "--server",
            &s.1,
            "--token",
            "wrong-token-wrong",
            "devices",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("401").and(predicate::str::contains("admin token")));
    jota()
        .args(["fleet", "--server", &s.1, "--token", token, "artifacts"])
        .assert()
        .success()
        .stdout(predicate::str::contains(id).and(predicate::str::contains("2.0.0")));

    // A staged rollout from the command line: two more devices (one in another region),
    // phases given as NAME:PERCENT:SOAK, then status, pause, resume and abort.
    for (dev, tag) in [("orin-8", "region=eu"), ("orin-9", "region=us")] {
        fleet(
            &s,
            token,
            &[
                "add-device",
                dev,
                "--hardware",
                "3767-0005-300",
                "--tag",
                tag,
            ],
        );
    }
    jota()
        .args([
            "fleet", "--server", &s.1, "--token", token, "rollout", "create",
        ])
        .args(["--artifact", id, "--phase", "half:50%:3600"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("100%"));
    let r = fleet(
        &s,
        token,
        &[
            "rollout",
            "create",
            "--artifact",
            id,
            "--name",
            "spring",
            "--hardware",
            "3767",
            "--phase",
            "first:50:3600",
            "--phase",
            "all:100",
            "--max-concurrent",
            "5",
        ],
    );
    let rid = r["rollout"]["id"].as_str().unwrap();
    assert_eq!(r["rollout"]["policy"]["max_concurrent"], 5);
    assert_eq!(r["phases"][0]["devices"], 2);
    assert_eq!(r["phases"][0]["assigned"], 2);
    assert_eq!(r["total"]["devices"], 3);
    let r = fleet(&s, token, &["rollout", "pause", rid]);
    assert_eq!(r["rollout"]["state"], "paused");
    let r = fleet(&s, token, &["rollout", "resume", rid]);
    assert_eq!(r["rollout"]["state"], "running");
    let r = fleet(&s, token, &["rollout", "evaluate", rid]);
    assert_eq!(r["rollout"]["id"], rid);
    let r = fleet(&s, token, &["rollout", "abort", rid]);
    assert_eq!(r["rollout"]["state"], "aborted");
    assert_eq!(r["total"]["canceled"], 2);
    assert_eq!(fleet(&s, token, &["rollout", "list"])[0]["id"], rid);
    jota()
        .args([
            "fleet", "--server", &s.1, "--token", token, "rollout", "status", rid,
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("aborted")
                .and(predicate::str::contains("first"))
                .and(predicate::str::contains("canceled")),
        );
    jota()
        .args([
            "fleet", "--server", &s.1, "--token", token, "rollout", "resume", rid,
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("409"));
}
