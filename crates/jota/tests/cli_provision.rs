//! Provisioning and device mTLS end to end: `jota server` over HTTPS with its own CA,
//! `jota agent provision` on simulated devices (serial number and MAC in the device tree and
//! sysfs of a device root), an operator's `jota fleet pending|accept|reject` and provisioning
//! tokens, and then polls with the issued certificate by curl (a real TLS client) and reqwest.

mod common;
use common::{jota, spawn_server, tool, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};

const ADMIN: &str = "0123456789abcdef0123";

fn fleet(s: &Server, ca: &Path, args: &[&str]) -> Value {
    let o = jota()
        .args(["fleet", "--server", &s.1, "--token", ADMIN, "--ca"])
        .arg(ca)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    if out.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&out).unwrap()
    }
}

/// A device root with a serial number and a MAC where a Jetson keeps them.
fn device_root(dir: &Path, serial: &str, mac: &str) -> PathBuf {
    let root = dir.join(serial);
    std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
    std::fs::create_dir_all(root.join("sys/class/net/eth0")).unwrap();
    // The device tree's string is NUL-terminated.
    std::fs::write(
        root.join("proc/device-tree/serial-number"),
        format!("{serial}\0"),
    )
    .unwrap();
    std::fs::write(root.join("sys/class/net/eth0/address"), format!("{mac}\n")).unwrap();
    root
}

/// `jota agent provision` for the device at `root`; (exit code, stdout JSON or stderr).
fn provision(s: &Server, ca: &Path, root: &Path, token: Option<&str>) -> (i32, Value, String) {
    let mut c = jota();
    c.args(["agent", "--root"])
        .arg(root)
        .args([
            "provision",
            "--server",
            &s.1,
            "--hardware",
            "3767-0005-300",
            "--ca",
        ])
        .arg(ca)
        .args(["--dir"])
        .arg(root.join("identity"))
        .arg("--json");
    if let Some(t) = token {
        c.args(["--token", t]);
    }
    let o = c.output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (
        o.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// curl as a device would call: the fleet CA `ca` pinned, presenting `identity`
/// (certificate, key) when given, with `extra` arguments: (HTTP status, body).
fn curl(ca: &Path, identity: Option<(&Path, &Path)>, extra: &[&str], url: &str) -> (u16, String) {
    let mut c = std::process::Command::new(tool("curl"));
    c.args(["-s", "-w", "\n%{http_code}", "--cacert"]).arg(ca);
    if let Some((cert, key)) = identity {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let o = c.args(extra).arg(url).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A poll by curl with the device's certificate `cert` (or none): (HTTP status, body).
fn curl_poll(s: &Server, root: &Path, cert: Option<&str>) -> (u16, String) {
    let id = root.join("identity");
    let (cert, key) = (cert.map(|c| id.join(c)), id.join("device.key"));
    curl(
        &id.join("ca.pem"),
        cert.as_deref().map(|c| (c, key.as_path())),
        &[],
        &format!("{}/api/v1/device/poll?version=1.0.0", s.1),
    )
}

#[test]
fn devices_provision_and_poll_with_their_certificates() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("server");
    let s = spawn_server(&data, ADMIN, &[]);
    let ca = data.join("tls/ca.pem");

    // A factory token for one device, with the tags the factory gives.
    let t = fleet(
        &s,
        &ca,
        &[
            "provision-token",
            "create",
            "--uses",
            "1",
            "--tag",
            "region=eu",
            "--tag",
            "risk=canary",
        ],
    );
    let factory = t["token"].as_str().unwrap().to_string();

    let a = device_root(d.path(), "1424621012345", "48:b0:2d:01:02:03");
    let (code, v, err) = provision(&s, &ca, &a, Some(&factory));
    assert_eq!(code, 0, "{err}");
    // The seed's identity: sha256("SERIAL-MAC")[:16].
    assert_eq!(v["id"], "70854f56040d67c4");
    assert_eq!(v["state"], "accepted");
    let ident = a.join("identity");
    use std::os::unix::fs::PermissionsExt;
    for (f, private) in [
        ("device.key", true),
        ("token", true),
        ("device.pem", false),
        ("ca.pem", false),
    ] {
        let mode = std::fs::metadata(ident.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077 == 0, private, "{f}: mode {mode:o}");
    }
    assert_eq!(
        std::fs::read_to_string(ident.join("ca.pem")).unwrap(),
        std::fs::read_to_string(&ca).unwrap()
    );

    // curl, presenting the certificate, polls as that device (no token at all).
    let (code, body) = curl_poll(&s, &a, Some("device.pem"));
    assert_eq!(code, 200, "{body}");
    let poll: Value = serde_json::from_str(&body).unwrap();
    assert!(poll["deployment"].is_null());
    // Without a certificate or token: 401.
    assert_eq!(curl_poll(&s, &a, None).0, 401);
    let devices = fleet(&s, &ca, &["devices"]);
    let dev = &devices.as_array().unwrap()[0];
    assert_eq!(dev["id"], "70854f56040d67c4");
    assert_eq!(
        dev["version"], "1.0.0",
        "the mTLS poll reported the version"
    );
    assert_eq!(dev["hardware"], "3767-0005-300");
    assert_eq!(dev["tags"], serde_json::json!(["region=eu", "risk=canary"]));

    // The seed's ota-telemetry.sh, as it is, with the device's certificate: its JSON to
    // /api/v1/telemetry with X-Device-ID.
    let seed_payload = r#"{
"device_id": "70854f56040d67c4",
"timestamp": "2026-12-04T05:00:00Z",
"ota_version": "1.0.0",
"boot_slot": "0",
"boot_successful": 1,
"uptime_seconds": 4242,
"rootfs_usage_pct": 41,
"temperature_mc": 48500,
"memory_available_kb": 5723456,
"gpu_utilization_pct": 0,
"last_ota_status": "none",
"last_ota_timestamp": "none",
"rollback_count": 0
}"#;
    let (cert, key) = (ident.join("device.pem"), ident.join("device.key"));
    let post = |header: &str, method: &str, body: &str, path: &str| {
        curl(
            &ident.join("ca.pem"),
            Some((&cert, &key)),
            &[
                "-X",
                method,
                "-H",
                "Content-Type: application/json",
                "-H",
                header,
                "-d",
                body,
            ],
            &format!("{}{path}", s.1),
        )
    };
    let telemetry = |device_header: &str, body: &str| {
        post(
            &format!("X-Device-ID: {device_header}"),
            "POST",
            body,
            "/api/v1/telemetry",
        )
    };
    assert_eq!(telemetry("70854f56040d67c4", seed_payload).0, 204);
    let (code, msg) = telemetry("someone-else", seed_payload);
    assert_eq!(code, 403, "{msg}");
    let (code, msg) = telemetry("70854f56040d67c4", r#"{"rootfs_usage_pct": 140}"#);
    assert_eq!(code, 400);
    assert!(msg.contains("rootfs_usage_pct"), "{msg}");
    let (code, msg) = telemetry("70854f56040d67c4", r#"{"temprature_mc": 1}"#);
    assert_eq!(code, 400);
    assert!(msg.contains("temprature_mc"), "{msg}");
    // The §9.3 version report as inventory.
    let (code, msg) = post(
        "Accept: application/json",
        "PUT",
        r##"{"l4t": "# R36 (release), REVISION: 4.0", "kernel": "5.15.148-tegra", "rootfs_slot": "A"}"##,
        "/api/v1/device/inventory",
    );
    assert_eq!(code, 204, "{msg}");
    let detail = fleet(&s, &ca, &["device", "70854f56040d67c4"]);
    assert_eq!(detail["inventory"]["kernel"], "5.15.148-tegra");
    assert_eq!(detail["telemetry"]["report"]["temperature_mc"], 48500);
    assert_eq!(detail["telemetry"]["report"]["boot_slot"], "0");
    assert_eq!(detail["boots"].as_array().unwrap().len(), 1);
    assert_eq!(fleet(&s, &ca, &["alerts"]), serde_json::json!([]));

    // The token has no use left: a second device waits for an operator.
    let b = device_root(d.path(), "1424621099999", "48:b0:2d:0a:0b:0c");
    let (code, v, err) = provision(&s, &ca, &b, Some(&factory));
    assert_eq!(code, 3, "{err}");
    assert_eq!(v["state"], "pending");
    let b_id = v["id"].as_str().unwrap().to_string();
    assert!(!b.join("identity/device.pem").exists());
    let pending = fleet(&s, &ca, &["pending"]);
    assert_eq!(pending[0]["id"], b_id.as_str());
    assert_eq!(pending[0]["serial"], "1424621099999");
    assert_eq!(pending[0]["state"], "pending");
    fleet(&s, &ca, &["accept", &b_id, "--tag", "region=us"]);
    let (code, v, err) = provision(&s, &ca, &b, None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["state"], "accepted");
    assert_eq!(curl_poll(&s, &b, Some("device.pem")).0, 200);

    // Listing with filters (tags, hardware, version, deployment state).
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["devices"];
        a.extend_from_slice(args);
        fleet(&s, &ca, &a)
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--tag", "region=eu"]), vec!["70854f56040d67c4"]);
    assert_eq!(ids(&["--tag", "region=us"]), vec![b_id.clone()]);
    assert!(ids(&["--tag", "region=us", "--tag", "risk=canary"]).is_empty());
    assert_eq!(ids(&["--hardware", "3767", "--state", "idle"]).len(), 2);
    assert_eq!(ids(&["--version", "1.0.0"]).len(), 2);
    assert!(ids(&["--version", "none"]).is_empty());
    let o = jota()
        .args(["fleet", "--server", &s.1, "--token", ADMIN, "--ca"])
        .arg(&ca)
        .args(["devices", "--state", "bogus"])
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).trim().is_empty());

    // Renewal: the same key again gets a new certificate, and the old one stops working
    // (it still chains to the CA; the server knows only the newest).
    let old = a.join("identity/old.pem");
    std::fs::copy(a.join("identity/device.pem"), &old).unwrap();
    let (code, _, err) = provision(&s, &ca, &a, None);
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        std::fs::read(&old).unwrap(),
        std::fs::read(a.join("identity/device.pem")).unwrap()
    );
    assert_eq!(curl_poll(&s, &a, Some("device.pem")).0, 200);
    let (code, body) = curl_poll(&s, &a, Some("old.pem"));
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("provision the device again"), "{body}");

    // Someone else claiming device A's id with another key waits for an operator, and a
    // rejected key stays rejected.
    let thief = device_root(
        &d.path().join("thief"),
        "1424621012345",
        "48:b0:2d:01:02:03",
    );
    let (code, v, _) = provision(&s, &ca, &thief, Some(&factory));
    assert_eq!((code, v["state"].as_str()), (3, Some("pending")));
    fleet(&s, &ca, &["reject", "70854f56040d67c4"]);
    let (code, _, err) = provision(&s, &ca, &thief, None);
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("rejected"), "{err}");
    assert_eq!(
        curl_poll(&s, &a, Some("device.pem")).0,
        200,
        "A is untouched"
    );

    // A certificate from another CA does not get through the TLS handshake.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let rogue_ca = rcgen_ca(&other);
    let (code, _) = curl_poll_with(&s, &a, &rogue_ca.0, &rogue_ca.1);
    assert_ne!(code, 200);

    // Malformed requests: named, nothing stored.
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let post = |body: Value| {
        let r = http
            .post(format!("{}/api/v1/devices/provision", s.1))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (code, msg) = post(serde_json::json!({"serial": "1", "mac": "2", "csr": "garbage"}));
    assert_eq!(code, 400);
    assert!(msg.contains("csr"), "{msg}");
    let csr = std::fs::read_to_string(a.join("identity/device.key")).unwrap();
    let (code, msg) =
        post(serde_json::json!({"id": "nope", "serial": "1", "mac": "2", "csr": csr}));
    assert_eq!(code, 400);
    assert!(msg.contains("sha256(serial-mac)"), "{msg}");
    let (code, msg) = post(serde_json::json!({"csr": "x"}));
    assert_eq!(code, 400);
    assert!(msg.contains("serial and mac"), "{msg}");
    let r = http
        .get(format!("{}/api/v1/devices?colour=red", s.1))
        .bearer_auth(ADMIN)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().unwrap().contains("unknown filter `colour`"));
    assert_eq!(fleet(&s, &ca, &["devices"]).as_array().unwrap().len(), 2);

    // With --require-device-cert a token is no longer enough for jota's device API.
    drop(s);
    let s = spawn_server(&data, ADMIN, &["--require-device-cert"]);
    let token = std::fs::read_to_string(b.join("identity/token")).unwrap();
    let r = http
        .get(format!("{}/api/v1/device/poll", s.1))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // The certificate, through the agent's own client (the CA pinned, not the system's).
    let client = jota_agent_client(&b.join("identity"));
    let r = client
        .get(format!("{}/api/v1/device/poll", s.1))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// A CA that is not the fleet's, and a client certificate it signed: (cert, key) paths.
fn rcgen_ca(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "70854f56040d67c4");
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let (c, k) = (dir.join("rogue.pem"), dir.join("rogue.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn curl_poll_with(s: &Server, root: &Path, cert: &Path, key: &Path) -> (u16, String) {
    curl(
        &root.join("identity/ca.pem"),
        Some((cert, key)),
        &[],
        &format!("{}/api/v1/device/poll", s.1),
    )
}

fn jota_agent_client(dir: &Path) -> reqwest::blocking::Client {
    jota_agent::provision::client(dir).unwrap()
}
