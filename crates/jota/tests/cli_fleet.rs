//! `jota server` and `jota fleet` end to end: a server process on a free loopback port
//! (SQLite in its data directory), a bundle uploaded, a device registered and deployed to,
//! and the same state read back with `--json`; plain HTTP only when asked for. And Debian's
//! SWUpdate (suricatta, hawkBit mode) updating a simulated Orin from jota over hawkBit DDI.

mod common;
use common::{jota, jota_bin, server, server_with, sim_releases, spawn_server, tool, Server};
use predicates::prelude::*;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
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

fn release() -> PathBuf {
    static R: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    sim_releases(&R, &[("orin-nano-8gb", "r2", "2.0.0")]).join("r2")
}

#[test]
fn serve_upload_register_deploy() {
    let rel = release();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("server");

    jota()
        .args(["server", "--tls-cert", "x.pem", "--data-dir"])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("--tls-key"));
    jota()
        .args([
            "server",
            "--insecure-http",
            "--tls-cert",
            "x",
            "--tls-key",
            "y",
            "--data-dir",
        ])
        .arg(&data)
        .assert()
        .failure()
        .stderr(predicate::str::contains("cannot be used with"));

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
    // Tags are replaced whole; a malformed window is refused naming the tag.
    let t = fleet(
        &s,
        token,
        &["tags", "orin-7", "canary", "install=download-only"],
    );
    assert_eq!(t["tags"], json!(["canary", "install=download-only"]));
    jota()
        .args([
            "fleet",
            "--server",
            &s.1,
            "--token",
            token,
            "tags",
            "orin-7",
            "window=25:00-01:00",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("window=25:00-01:00"));
    let t = fleet(&s, token, &["tags", "orin-7", "canary"]);
    assert_eq!(t["tags"], json!(["canary"]));

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

/// SWUpdate's suricatta daemon against jota as its hawkBit server: it polls, finds the
/// deployment of an uploaded `.swu`, downloads it (signature checked by SWUpdate), installs
/// the rootfs into slot B's target, runs jota's activation script (jota as SWUpdate's
/// bootloader backend switches the simulated Orin to B) and reports progress; started again
/// as after the reboot with `-c 2` it confirms, and the deployment ends `success`.
#[test]
fn swupdate_suricatta_updates_over_hawkbit_ddi() {
    let swupdate = tool("swupdate");
    let rel = release();
    let d = tempfile::tempdir().unwrap();
    let dp = d.path();
    let sim = dp.join("jetson");
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
        .arg(&rel)
        .arg(&sim)
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&sim).assert().success();
    let b = dp.join("v3.jota");
    jota()
        .args(["bundle", "create", "-o"])
        .arg(&b)
        .args(["--version", "3.0.0", "--key"])
        .arg(keys().join("ed25519.key.pem"))
        .arg("--rootfs")
        .arg(rel.join("rootfs.ext4"))
        .assert()
        .success();
    let ring = dp.join("ring");
    std::fs::create_dir_all(&ring).unwrap();
    std::fs::copy(keys().join("ed25519.pub.pem"), ring.join("release.pem")).unwrap();
    let (app_a, app_b) = (dp.join("APP_A"), dp.join("APP_B"));
    std::fs::write(&app_a, b"old").unwrap();
    std::fs::write(&app_b, b"old").unwrap();
    let swu = dp.join("v3.swu");
    jota()
        .args(["bundle", "export-swu"])
        .arg(&b)
        .arg("-o")
        .arg(&swu)
        .arg("--cert")
        .arg(keys().join("rsa4096.cert.pem"))
        .arg("--key")
        .arg(keys().join("rsa4096.key.pem"))
        .arg("--keyring")
        .arg(&ring)
        .arg(format!("--map=rootfs@A={}", app_a.display()))
        .arg(format!("--map=rootfs@B={}", app_b.display()))
        .assert()
        .success();

    let token = "0123456789abcdef0123";
    let gateway = "gateway-token-0123456789";
    let s = server_with(
        &dp.join("server"),
        token,
        &["--poll-seconds", "1", "--ddi-gateway-token", gateway],
    );
    let art = fleet(&s, token, &["upload", swu.to_str().unwrap()]);
    assert_eq!(
        (art["kind"].as_str(), art["version"].as_str()),
        (Some("swu"), Some("3.0.0"))
    );
    let dev = fleet(
        &s,
        token,
        &["add-device", "swu-orin-1", "--hardware", "3767-0005-300"],
    );
    let dev_token = dev["token"].as_str().unwrap().to_string();
    let dep = fleet(
        &s,
        token,
        &[
            "deploy",
            "--artifact",
            art["id"].as_str().unwrap(),
            "--device",
            "swu-orin-1",
        ],
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();

    let bin = assert_cmd::cargo::cargo_bin("jota");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = dp.join("swtmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // Runs suricatta until deployment `dep_id` reaches `until` (or 120 s), then stops it.
    let suricatta_on = |dep_id: &str, extra: &str, until: &dyn Fn(&Value) -> bool| -> Value {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(dp.join("swupdate.log")).unwrap();
        let mut child = std::process::Command::new(&swupdate)
            .arg("-k")
            .arg(keys().join("rsa4096.cert.pem"))
            .args([
                "-H",
                "jetson:3767-0005-300",
                "-e",
                "stable,copy2",
                "-v",
                "-u",
            ])
            .arg(format!("-t DEFAULT -u {} -i swu-orin-1 -p 1 {extra}", s.1))
            .current_dir(&tmp)
            .env("TMPDIR", &tmp)
            .env("PATH", &path)
            .env("JOTA_ROOT", &sim)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let mut shown = Value::Null;
        while std::time::Instant::now() < deadline {
            shown = fleet(&s, token, &["deployment", dep_id]);
            if until(&shown) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        let _ = child.wait();
        assert!(
            until(&shown),
            "{shown}\n{}",
            std::fs::read_to_string(dp.join("swupdate.log")).unwrap_or_default()
        );
        shown
    };
    let suricatta =
        |extra: &str, until: &dyn Fn(&Value) -> bool| suricatta_on(&dep_id, extra, until);
    // First run: installed and switched, waiting for the reboot.
    let shown = suricatta(&format!("-k {dev_token}"), &|v| {
        v["deployment"]["progress"] == 100 && v["deployment"]["state"] == "installing"
    });
    assert!(shown["deployment"]["active"].as_bool().unwrap(), "{shown}");
    assert!(std::fs::read(&app_b).unwrap() == std::fs::read(rel.join("rootfs.ext4")).unwrap());
    assert_eq!(std::fs::read(&app_a).unwrap(), b"old");
    let boot: Value = serde_json::from_slice(
        &jota()
            .args(["sim", "boot", "--json"])
            .arg(&sim)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(boot["outcome"]["slot"], "B", "{boot}");
    // After the reboot (this time through the gateway token): confirmed, and done.
    let shown = suricatta(&format!("-g {gateway} -c 2"), &|v| {
        v["deployment"]["state"] == "success"
    });
    assert_eq!(shown["deployment"]["active"], false, "{shown}");
    let devs = fleet(&s, token, &["devices"]);
    assert_eq!(devs[0]["id"], "swu-orin-1");
    assert!(devs[0]["deployment"].is_null(), "{devs}");

    // A cancel of an update the device has started goes through hawkBit's cancelAction:
    // suricatta confirms it and the deployment ends `canceled`.
    let dep = fleet(
        &s,
        token,
        &[
            "deploy",
            "--artifact",
            art["id"].as_str().unwrap(),
            "--device",
            "swu-orin-1",
        ],
    );
    let dep_id2 = dep["id"].as_str().unwrap().to_string();
    let http = reqwest::blocking::Client::new();
    let auth = format!("TargetToken {dev_token}");
    let base: Value = http
        .get(format!("{}/DEFAULT/controller/v1/swu-orin-1", s.1))
        .header("Authorization", &auth)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let href = base["_links"]["deploymentBase"]["href"].as_str().unwrap();
    let href = href.split('?').next().unwrap();
    let r = http
        .post(format!("{href}/feedback"))
        .header("Authorization", &auth)
        .json(
            &serde_json::json!({ "status": { "execution": "proceeding", "details": ["started"] } }),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let c = fleet(&s, token, &["cancel", &dep_id2]);
    assert_eq!(c["cancel_requested"], true, "{c}");
    let shown = suricatta_on(&dep_id2, &format!("-k {dev_token}"), &|v| {
        v["deployment"]["state"] == "canceled"
    });
    assert_eq!(shown["deployment"]["active"], false, "{shown}");
}

/// `kill -9` of the server at random moments while 40 devices go through a rollout loses
/// nothing it acknowledged: restarted on the same data directory each time, it ends with
/// every device's deployment `success` (each device retried until a report was answered
/// 200), every version the devices reported kept, and the rollout's counts agreeing.
#[test]
fn server_killed_mid_rollout_keeps_what_it_acknowledged() {
    use std::sync::{Arc, Mutex};
    let rel = release();
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("server");
    std::fs::create_dir_all(data.join("keyring")).unwrap();
    std::fs::copy(
        keys().join("ed25519.pub.pem"),
        data.join("keyring/release.pem"),
    )
    .unwrap();
    let token = "0123456789abcdef0123";
    let extra = ["--rollout-seconds", "0.2"];
    let first = server_with(&data, token, &extra);
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
    let art = fleet(&first, token, &["upload", b.to_str().unwrap()]);
    let http = reqwest::blocking::Client::new();
    let devs: Vec<Value> = (0..40)
        .map(|i| serde_json::json!({ "id": format!("k-{i:02}") }))
        .collect();
    let reg: Value = http
        .post(format!("{}/api/v1/devices/batch", first.1))
        .bearer_auth(token)
        .json(&serde_json::json!({ "devices": devs }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let tokens: Vec<String> = reg
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["token"].as_str().unwrap().to_string())
        .collect();
    let r = fleet(
        &first,
        token,
        &[
            "rollout",
            "create",
            "--artifact",
            art["id"].as_str().unwrap(),
            "--phase",
            "all:100",
        ],
    );
    let rid = r["rollout"]["id"].as_str().unwrap().to_string();

    let server = Arc::new(Mutex::new(first));
    let url = || server.lock().unwrap().1.clone();
    let acked: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(vec!["assigned"; 40]));
    let rank = |s: &str| {
        ["assigned", "downloading", "installing", "success"]
            .iter()
            .position(|x| *x == s)
    };
    std::thread::scope(|sc| {
        // Four devices' worth of work per worker; every request retried until answered.
        for w in 0..4 {
            let (tokens, acked, http, url) = (&tokens, acked.clone(), http.clone(), &url);
            sc.spawn(move || {
                for i in (w..40).step_by(4) {
                    let dep = loop {
                        let r = http
                            .get(format!("{}/api/v1/device/poll?version=1.0.0", url()))
                            .bearer_auth(&tokens[i])
                            .send()
                            .and_then(|r| r.json::<Value>());
                        if let Ok(v) = r {
                            if let Some(id) = v["deployment"]["id"].as_str() {
                                break id.to_string();
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    };
                    for (state, progress) in [("downloading", 10), ("installing", 60), ("success", 100)] {
                        loop {
                            let r = http
                                .post(format!("{}/api/v1/device/status", url()))
                                .bearer_auth(&tokens[i])
                                .json(&serde_json::json!({ "deployment": dep, "state": state, "progress": progress }))
                                .send();
                            match r.map(|r| r.status().as_u16()) {
                                Ok(200) => {
                                    acked.lock().unwrap()[i] = state;
                                    break;
                                }
                                // Applied before a crash ate the answer: the deployment is
                                // over (checked on the server below).
                                Ok(409) if state == "success" => {
                                    acked.lock().unwrap()[i] = "success (answer lost)";
                                    break;
                                }
                                Ok(c) if c < 500 => panic!("{state} for k-{i:02}: {c}"),
                                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(15));
                    }
                }
            });
        }
        // The killer: SIGKILL at pseudo-random moments, restart on the same data directory.
        let mut x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        for _ in 0..6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::thread::sleep(std::time::Duration::from_millis(80 + x % 250));
            let mut s = server.lock().unwrap();
            s.0.kill().unwrap(); // SIGKILL
            let _ = s.0.wait();
            *s = server_with(&data, token, &extra);
        }
    });
    let s = server.lock().unwrap();
    let acked = acked.lock().unwrap();
    for (i, a) in acked.iter().enumerate() {
        assert!(a.starts_with("success"), "k-{i:02} stopped at {a}");
    }
    let devices = fleet(&s, token, &["devices"]);
    for d in devices.as_array().unwrap() {
        let shown = fleet(
            &s,
            token,
            &[
                "deployment",
                &format!("{rid}-{}", d["id"].as_str().unwrap()),
            ],
        );
        let st = shown["deployment"]["state"].as_str().unwrap();
        assert!(rank(st) >= rank("success"), "{d}: {shown}");
        assert_eq!(d["version"], "1.0.0", "{d}");
    }
    let st = fleet(&s, token, &["rollout", "status", &rid]);
    assert_eq!(st["total"]["success"], 40, "{st}");
    // And once more, killed while idle: the same.
    let r = fleet(&s, token, &["rollout", "list"]);
    assert_eq!(r[0]["id"], rid.as_str());
    drop(s);
    let mut s = server.lock().unwrap();
    s.0.kill().unwrap();
    let _ = s.0.wait();
    *s = server_with(&data, token, &extra);
    let st = fleet(&s, token, &["rollout", "status", &rid]);
    assert_eq!(st["total"]["success"], 40, "{st}");
}

/// Without `--insecure-http` the server speaks HTTPS with a CA and server certificate it
/// issues itself once (kept across restarts); `jota fleet --ca` pins that CA, and a client
/// that does not trust it, or speaks plain HTTP, gets nowhere.
#[test]
fn https_with_a_self_issued_ca() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("server");
    let token = "0123456789abcdef0123";
    let s = spawn_server(&data, token, &[]);
    assert!(s.1.starts_with("https://127.0.0.1:"), "{}", s.1);
    let ca = data.join("tls/ca.pem");
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "server.key"] {
        let mode = std::fs::metadata(data.join("tls").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others");
    }
    let devices = |ca: Option<&Path>, url: &str| {
        let mut c = jota();
        c.args(["fleet", "--server", url, "--token", token]);
        if let Some(ca) = ca {
            c.arg("--ca").arg(ca);
        }
        c.args(["devices", "--json"]).output().unwrap()
    };
    let o = devices(Some(&ca), &s.1);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap(),
        serde_json::json!([])
    );
    let o = devices(None, &s.1);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let other = keys().join("rsa4096.cert.pem");
    assert!(!devices(Some(&other), &s.1).status.success());
    let plain = s.1.replacen("https://", "http://", 1);
    assert!(!devices(Some(&ca), &plain).status.success());
    // DDI links are https:// too.
    let o = jota()
        .args(["fleet", "--server", &s.1, "--token", token, "--ca"])
        .arg(&ca)
        .args(["add-device", "tls-1", "--json"])
        .output()
        .unwrap();
    let dev: Value = serde_json::from_slice(&o.stdout).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base: Value = http
        .get(format!("{}/DEFAULT/controller/v1/tls-1", s.1))
        .header(
            "Authorization",
            format!("TargetToken {}", dev["token"].as_str().unwrap()),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let cfg = base["_links"]["configData"]["href"].as_str().unwrap();
    assert!(cfg.starts_with(&format!("{}/DEFAULT/", s.1)), "{cfg}");
    // Restarted: the same CA, so pinned clients keep working.
    drop(s);
    let s = spawn_server(&data, token, &[]);
    assert_eq!(std::fs::read_to_string(&ca).unwrap(), pem);
    assert!(devices(Some(&ca), &s.1).status.success());
}

/// `jota server --config server.toml`: the same option names as the command line, which wins
/// over the file; an unknown key is named.
#[test]
fn server_reads_its_settings_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "data-dir = \"{}\"\nlisten = \"127.0.0.1:0\"\nadmin-token = \"0123456789abcdef0123\"\ninsecure-http = true\npoll-seconds = 7\n",
            d.path().join("data").display()
        ),
    )
    .unwrap();
    let poll_seconds = |extra: &[&str]| -> Value {
        let mut child = std::process::Command::new(jota_bin())
            .args(["server", "--config"])
            .arg(&cfg)
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let s = Server(
            child,
            line.trim()
                .strip_prefix("listening on ")
                .unwrap()
                .to_string(),
        );
        assert!(s.1.starts_with("http://"), "{}", s.1);
        let dev = fleet(
            &s,
            "0123456789abcdef0123",
            &["add-device", &format!("c-{}", extra.len())],
        );
        let r: Value = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/device/poll", s.1))
            .bearer_auth(dev["token"].as_str().unwrap())
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["poll_seconds"].clone()
    };
    assert_eq!(poll_seconds(&[]), 7);
    assert_eq!(poll_seconds(&["--poll-seconds", "9"]), 9);
    std::fs::write(&cfg, "data-dir = \"/tmp/x\"\npoll-second = 3\n").unwrap();
    jota()
        .args(["server", "--config"])
        .arg(&cfg)
        .assert()
        .failure()
        .stderr(predicate::str::contains("poll-second"));
}
