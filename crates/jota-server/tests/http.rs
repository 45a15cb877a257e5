//! The server over real HTTP (SQLite): admin and device auth, bundle upload verified
//! against the keyring (bad ones leave nothing behind), device registration, deployment,
//! poll, resumable download (Range, If-Range, If-None-Match) and status reports — and clear
//! 4xx errors that change nothing for bad input. And hawkBit's DDI API as a hawkBit client
//! uses it, with a `.swu` artifact.

use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
use jota_bundle::sign::Signer;
use jota_bundle::{ComponentType, SecretKey};
use jota_server::{start, ServerConfig};
use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const ADMIN: &str = "admin-token-for-tests";
const GATEWAY: &str = "gateway-token-for-tests";

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
}

/// A small signed bundle (one raw image of pseudo-random blocks).
fn bundle(dir: &Path, key: &str) -> PathBuf {
    let img = dir.join(format!("img-{key}"));
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..64 * 4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&img, data).unwrap();
    let mut b = Builder::new(dir, Options::default(), BaseKeys::default()).unwrap();
    let mut s = ComponentSpec::new("data", ComponentType::RawImage);
    s.partition = Some("extra".into());
    b.add(s, &img, &NoProgress).unwrap();
    let k = SecretKey::load(&keys().join(key)).unwrap();
    let out = dir.join(format!("{key}.jota"));
    b.finish(
        Release {
            version: "2.0.0".into(),
            ..Release::default()
        },
        &[&k as &dyn Signer],
        &out,
    )
    .unwrap();
    out
}

struct Server {
    _stop: tokio::sync::oneshot::Sender<()>,
    _rt: tokio::runtime::Runtime,
    base: String,
    http: Client,
    dir: tempfile::TempDir,
}

impl Server {
    fn new() -> Server {
        Server::with(|_| {})
    }
    /// A server whose configuration `tweak` changes.
    fn with(tweak: impl FnOnce(&mut ServerConfig)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ring = dir.path().join("data/keyring");
        std::fs::create_dir_all(&ring).unwrap();
        std::fs::copy(keys().join("ed25519.pub.pem"), ring.join("release.pem")).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut config = ServerConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".parse().unwrap(),
            database: None,
            admin_token: ADMIN.into(),
            keyring: None,
            max_upload: 16 << 20,
            poll_seconds: 30,
            ddi_gateway_token: Some(GATEWAY.into()),
            tls: None,
            rollout_interval: std::time::Duration::from_millis(100),
            require_device_cert: false,
            telemetry_retention: std::time::Duration::from_secs(14 * 86400),
            artifact_store: None,
        };
        tweak(&mut config);
        let running = rt.block_on(start(config)).unwrap();
        Server {
            base: format!("http://{}", running.addr),
            _stop: running.shutdown,
            _rt: rt,
            http: Client::new(),
            dir,
        }
    }
    fn get(&self, path: &str, token: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .unwrap()
    }
    fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .unwrap()
    }
    fn upload(&self, file: &Path) -> Response {
        self.http
            .post(format!("{}/api/v1/artifacts", self.base))
            .bearer_auth(ADMIN)
            .body(std::fs::read(file).unwrap())
            .send()
            .unwrap()
    }
    fn artifact_files(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("data/artifacts"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn err(r: Response, status: u16, contains: &str) {
    assert_eq!(r.status().as_u16(), status);
    let v: Value = r.json().unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.contains(contains), "{e}");
}

#[test]
fn upload_register_deploy_poll_download_report() {
    let s = Server::new();
    let d = tempfile::tempdir().unwrap();
    let good = bundle(d.path(), "ed25519.key.pem");
    let foreign = bundle(d.path(), "p256.key.pem");

    // Auth.
    err(s.get("/api/v1/devices", "wrong-token"), 401, "admin token");
    let r = s
        .http
        .get(format!("{}/api/v1/devices", s.base))
        .send()
        .unwrap();
    err(r, 401, "Bearer");

    // Uploads: garbage and a foreign signature are refused and leave nothing.
    let junk = d.path().join("junk");
    std::fs::write(&junk, b"not a bundle at all").unwrap();
    err(s.upload(&junk), 422, "not a trusted jota bundle");
    err(s.upload(&foreign), 422, "not a trusted jota bundle");
    assert_eq!(s.artifact_files(), 0);
    let r = s.upload(&good);
    assert_eq!(r.status().as_u16(), 201);
    let art: Value = r.json().unwrap();
    let again: Value = s.upload(&good).json().unwrap();
    assert_eq!(art["id"], again["id"]);
    let list: Value = s.get("/api/v1/artifacts", ADMIN).json().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(art["version"], "2.0.0");

    // Devices: bad JSON, bad ids, duplicates and oversize bodies are clear 4xx.
    let r = s
        .http
        .post(format!("{}/api/v1/devices", s.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .unwrap();
    err(r, 400, "");
    err(
        s.post("/api/v1/devices", ADMIN, &json!({"id": "a b"})),
        400,
        "device id",
    );
    err(
        s.post(
            "/api/v1/devices",
            ADMIN,
            &json!({"id": "x", "color": "red"}),
        ),
        400,
        "unknown field",
    );
    let big = json!({"id": "x", "hardware": "h".repeat(100_000)});
    assert_eq!(
        s.post("/api/v1/devices", ADMIN, &big).status().as_u16(),
        413
    );
    let r = s.post(
        "/api/v1/devices",
        ADMIN,
        &json!({"id": "orin-1", "hardware": "3767-0005-300"}),
    );
    assert_eq!(r.status().as_u16(), 201);
    let token = r.json::<Value>().unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    err(
        s.post("/api/v1/devices", ADMIN, &json!({"id": "orin-1"})),
        409,
        "already registered",
    );
    let devs: Value = s.get("/api/v1/devices", ADMIN).json().unwrap();
    assert_eq!(devs.as_array().unwrap().len(), 1);

    // Poll: nothing yet; an unknown device token is refused.
    err(
        s.get("/api/v1/device/poll", "forged"),
        401,
        "unknown device token",
    );
    let p: Value = s
        .get("/api/v1/device/poll?version=1.0.0", &token)
        .json()
        .unwrap();
    assert_eq!(p["deployment"], Value::Null);
    assert_eq!(p["poll_seconds"], 30);

    // Deploy, poll, download with Range.
    err(
        s.post(
            "/api/v1/deployments",
            ADMIN,
            &json!({"artifact": "nope", "device": "orin-1"}),
        ),
        404,
        "no artifact",
    );
    let dep: Value = s
        .post(
            "/api/v1/deployments",
            ADMIN,
            &json!({"artifact": art["id"], "device": "orin-1"}),
        )
        .json()
        .unwrap();
    let p: Value = s
        .get("/api/v1/device/poll?version=1.0.0", &token)
        .json()
        .unwrap();
    let a = &p["deployment"];
    assert_eq!(a["id"], dep["id"]);
    assert_eq!(a["version"], "2.0.0");
    let url = a["url"].as_str().unwrap();
    let whole = std::fs::read(&good).unwrap();
    assert_eq!(a["size"].as_u64().unwrap(), whole.len() as u64);
    let etag = format!("\"{}\"", a["sha256"].as_str().unwrap());
    let get = |h: &[(&str, &str)]| {
        let mut r = s.http.get(format!("{}{url}", s.base)).bearer_auth(&token);
        for (k, v) in h {
            r = r.header(*k, *v);
        }
        r.send().unwrap()
    };
    let r = get(&[]);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.bytes().unwrap().as_ref(), &whole[..]);
    let r = get(&[("range", "bytes=100-199"), ("if-range", &etag)]);
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 100-199/{}", whole.len())
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &whole[100..200]);
    let r = get(&[("range", "bytes=100-199"), ("if-range", "\"other\"")]);
    assert_eq!(
        r.status().as_u16(),
        200,
        "a changed validator gets the whole file"
    );
    assert_eq!(get(&[("if-none-match", &etag)]).status().as_u16(), 304);
    let past = format!("bytes={}-", whole.len());
    assert_eq!(get(&[("range", &past)]).status().as_u16(), 416);
    let r = s.http.get(format!("{}{url}", s.base)).send().unwrap();
    assert_eq!(
        r.status().as_u16(),
        401,
        "artifacts need a device or admin token"
    );

    // Status reports.
    let id = dep["id"].as_str().unwrap();
    let report = |state: &str, progress: u64| {
        s.post(
            "/api/v1/device/status",
            &token,
            &json!({"deployment": id, "state": state, "progress": progress, "downloaded_bytes": 1234, "message": state}),
        )
    };
    err(report("exploded", 1), 400, "is not one of");
    err(report("downloading", 101), 400, "progress");
    assert_eq!(report("downloading", 50).status().as_u16(), 200);
    // A cancel of a started deployment asks the device at its next poll; a device that is
    // past the point of no return finishes and reports as usual.
    let c: Value = s
        .post(
            &format!("/api/v1/deployments/{id}/cancel"),
            ADMIN,
            &json!({}),
        )
        .json()
        .unwrap();
    assert_eq!(
        (c["active"].as_bool(), c["cancel_requested"].as_bool()),
        (Some(true), Some(true)),
        "{c}"
    );
    let p: Value = s.get("/api/v1/device/poll", &token).json().unwrap();
    assert_eq!(p["deployment"]["cancel"], true, "{p}");
    assert_eq!(report("success", 100).status().as_u16(), 200);
    err(report("failure", 0), 409, "not an active deployment");
    err(
        s.post(
            &format!("/api/v1/deployments/{id}/cancel"),
            ADMIN,
            &json!({}),
        ),
        409,
        "is over (success)",
    );
    err(
        s.post("/api/v1/deployments/nope/cancel", ADMIN, &json!({})),
        404,
        "no deployment",
    );
    let p: Value = s
        .get("/api/v1/device/poll?version=2.0.0", &token)
        .json()
        .unwrap();
    assert_eq!(p["deployment"], Value::Null);
    let shown: Value = s
        .get(&format!("/api/v1/deployments/{id}"), ADMIN)
        .json()
        .unwrap();
    assert_eq!(shown["deployment"]["state"], "success");
    assert_eq!(shown["deployment"]["downloaded_bytes"], 1234);
    let states: Vec<&str> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["downloading", "success"]);
    let devs: Value = s.get("/api/v1/devices", ADMIN).json().unwrap();
    assert_eq!(devs[0]["version"], "2.0.0");
}

/// A rollout over the API: created with a phase plan, the timer assigns the next phase once
/// the first reports success, a paused rollout's unstarted deployments are held back from
/// the poll and handed out again on resume; bad plans and actions get 4xx.
#[test]
fn rollout_over_http_pause_holds_the_poll() {
    let s = Server::new();
    let d = tempfile::tempdir().unwrap();
    let b = bundle(d.path(), "ed25519.key.pem");
    let art: Value = s.upload(&b).json().unwrap();
    let art = art["id"].as_str().unwrap().to_string();
    let mut tokens = Vec::new();
    for i in 0..4 {
        let tags = if i == 2 {
            json!(["risk=canary"])
        } else {
            json!([])
        };
        let r: Value = s
            .post(
                "/api/v1/devices",
                ADMIN,
                &json!({ "id": format!("dev-{i}"), "hardware": "3767-0005-300", "tags": tags }),
            )
            .json()
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_string());
    }
    err(
        s.post(
            "/api/v1/rollouts",
            ADMIN,
            &json!({ "artifact": art, "phases": [{ "name": "a", "percent": 60 }] }),
        ),
        400,
        "100%",
    );
    err(
        s.post("/api/v1/rollouts", ADMIN, &json!({ "artifact": "nope" })),
        404,
        "no artifact",
    );
    err(
        s.post(
            "/api/v1/rollouts",
            ADMIN,
            &json!({ "artifact": art, "colour": 1 }),
        ),
        400,
        "colour",
    );
    let r = s.post(
        "/api/v1/rollouts",
        ADMIN,
        &json!({
            "name": "r1",
            "artifact": art,
            "phases": [
                { "name": "canary", "percent": 25 },
                { "name": "all", "percent": 100 }
            ]
        }),
    );
    assert_eq!(r.status().as_u16(), 201);
    let st: Value = r.json().unwrap();
    let id = st["rollout"]["id"].as_str().unwrap().to_string();
    assert_eq!(st["phases"][0]["devices"], 1);
    let poll = |i: usize| -> Value { s.get("/api/v1/device/poll", &tokens[i]).json().unwrap() };
    // Only the canary-tier device has something.
    let p = poll(2);
    let dep = p["deployment"]["id"].as_str().unwrap().to_string();
    assert!(poll(0)["deployment"].is_null());
    let r = s.post(
        "/api/v1/device/status",
        &tokens[2],
        &json!({ "deployment": dep, "state": "success", "progress": 100 }),
    );
    assert_eq!(r.status().as_u16(), 200);
    // The evaluator runs every 100 ms here: the next phase comes without another request.
    let mut st = Value::Null;
    for _ in 0..100 {
        st = s
            .get(&format!("/api/v1/rollouts/{id}"), ADMIN)
            .json()
            .unwrap();
        if st["rollout"]["phase"] == 1 && st["total"]["assigned"] == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(st["total"]["assigned"], 3, "{st}");
    assert!(!poll(0)["deployment"].is_null());
    // Paused: the unstarted deployments are held back, then handed out again.
    let r = s.post(&format!("/api/v1/rollouts/{id}/pause"), ADMIN, &json!({}));
    assert_eq!(r.status().as_u16(), 200);
    assert!(poll(0)["deployment"].is_null());
    err(
        s.post(&format!("/api/v1/rollouts/{id}/pause"), ADMIN, &json!({})),
        409,
        "cannot pause",
    );
    let r = s.post(&format!("/api/v1/rollouts/{id}/resume"), ADMIN, &json!({}));
    assert_eq!(r.status().as_u16(), 200);
    assert!(!poll(0)["deployment"].is_null());
    err(
        s.post(&format!("/api/v1/rollouts/{id}/explode"), ADMIN, &json!({})),
        400,
        "pause, resume, abort or evaluate",
    );
    // Evaluating on demand answers with the status; an unknown rollout is named.
    let r = s.post(
        &format!("/api/v1/rollouts/{id}/evaluate"),
        ADMIN,
        &json!({}),
    );
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(
        (v["rollout"]["id"].as_str(), v["total"]["devices"].as_u64()),
        (Some(id.as_str()), Some(4))
    );
    err(
        s.post("/api/v1/rollouts/nope/evaluate", ADMIN, &json!({})),
        404,
        "no rollout `nope`",
    );
    err(s.get("/api/v1/rollouts/nope", ADMIN), 404, "no rollout");
    // Prometheus metrics, for the admin.
    err(s.get("/metrics", &tokens[0]), 401, "admin");
    let m = s.get("/metrics", ADMIN);
    assert_eq!(m.status().as_u16(), 200);
    assert!(m.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = m.text().unwrap();
    for line in [
        "jota_devices 4".to_string(),
        "jota_artifacts 1".into(),
        "jota_deployments{state=\"success\"} 1".into(),
        "jota_deployments{state=\"assigned\"} 3".into(),
        "jota_rollouts{state=\"running\"} 1".into(),
        format!("jota_rollout_devices{{rollout=\"{id}\",state=\"success\"}} 1"),
        format!("jota_rollout_devices{{rollout=\"{id}\",state=\"assigned\"}} 3"),
        format!("jota_rollout_phase{{rollout=\"{id}\"}} 1"),
        "jota_requests_total{kind=\"status\"} 1".into(),
    ] {
        assert!(m.lines().any(|l| l == line), "no `{line}` in\n{m}");
    }
    err(
        s.get(&format!("/api/v1/rollouts/{id}"), &tokens[0]),
        401,
        "admin",
    );
    let list: Value = s.get("/api/v1/rollouts", ADMIN).json().unwrap();
    assert_eq!(list[0]["name"], "r1");
}

/// A `.swu` as SWUpdate reads it: sw-description naming its image's sha256, a signature
/// entry, the image. `tamper` changes the image after sw-description was written.
fn swu(dir: &Path, version: &str, tamper: bool) -> PathBuf {
    use sha2::Digest;
    let img: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let desc = format!(
        "software = {{ version = \"{version}\"; images: ( {{ filename = \"rootfs\"; sha256 = \"{}\"; }} ); }};",
        hex::encode(sha2::Sha256::digest(&img))
    );
    let mut w = jota_bundle::cpio::Writer::new(Vec::new());
    w.append_bytes("sw-description", desc.as_bytes()).unwrap();
    w.append_bytes("sw-description.sig", b"(signature)")
        .unwrap();
    let body = if tamper { b"changed".to_vec() } else { img };
    w.append_bytes("rootfs", &body).unwrap();
    let out = dir.join(format!("{version}-{tamper}.swu"));
    std::fs::write(&out, w.finish().unwrap()).unwrap();
    out
}

#[test]
fn hawkbit_ddi_base_deployment_feedback_download() {
    let s = Server::new();
    let d = tempfile::tempdir().unwrap();
    let bad = s.upload(&swu(d.path(), "3.1.0", true));
    err(bad, 422, "no file of the archive has");
    assert_eq!(s.artifact_files(), 0);
    let file = swu(d.path(), "3.1.0", false);
    let r = s.upload(&file);
    assert_eq!(r.status().as_u16(), 201);
    let art: Value = r.json().unwrap();
    assert_eq!(
        (art["kind"].as_str(), art["version"].as_str()),
        (Some("swu"), Some("3.1.0"))
    );
    let mut tokens = Vec::new();
    for id in ["ddi-1", "ddi-2"] {
        let r: Value = s
            .post("/api/v1/devices", ADMIN, &json!({ "id": id }))
            .json()
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_string());
    }
    let ddi = |path: &str, auth: &str| -> Response {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", s.base)
        };
        s.http
            .get(url)
            .header("Authorization", auth)
            .send()
            .unwrap()
    };
    let base = "/DEFAULT/controller/v1/ddi-1";
    let target = format!("TargetToken {}", tokens[0]);

    // Authentication: target token of this controller, or the gateway token.
    err(ddi(base, ""), 401, "TargetToken");
    err(ddi(base, "TargetToken nope"), 401, "unknown target token");
    err(
        ddi(base, &format!("TargetToken {}", tokens[1])),
        401,
        "not controller `ddi-1`",
    );
    err(ddi(base, "GatewayToken nope"), 401, "not the gateway token");
    err(
        ddi(base, &format!("Bearer {}", tokens[0])),
        401,
        "TargetToken",
    );
    err(
        ddi(
            "/DEFAULT/controller/v1/ghost",
            &format!("GatewayToken {GATEWAY}"),
        ),
        404,
        "no controller `ghost`",
    );
    let v: Value = ddi(base, &format!("GatewayToken {GATEWAY}"))
        .json()
        .unwrap();
    assert_eq!(v["config"]["polling"]["sleep"], "00:00:30");
    assert!(v["_links"]["deploymentBase"].is_null(), "{v}");
    let cfg = v["_links"]["configData"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cfg.starts_with("http://127.0.0.1:")
            && cfg.ends_with("/DEFAULT/controller/v1/ddi-1/configData"),
        "{cfg}"
    );

    // configData: attributes are kept; the link goes once they are.
    let put = |body: &str| {
        s.http
            .put(&cfg)
            .header("Authorization", &target)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    err(
        put(r#"{"mode":"sideways","data":{"a":"1"}}"#),
        400,
        "merge, replace, remove",
    );
    err(put("{"), 400, "");
    assert_eq!(
        put(r#"{"mode":"merge","data":{"hwRevision":"3767-0005-300"}}"#)
            .status()
            .as_u16(),
        200
    );
    let v: Value = ddi(base, &target).json().unwrap();
    assert!(v["_links"]["configData"].is_null(), "{v}");

    // A deployment of the .swu: offered over DDI, not to jota's own poll.
    let r = s.post(
        "/api/v1/deployments",
        ADMIN,
        &json!({ "artifact": art["id"], "device": "ddi-1" }),
    );
    assert_eq!(r.status().as_u16(), 201);
    let dep: Value = r.json().unwrap();
    let dep_id = dep["id"].as_str().unwrap().to_string();
    let p: Value = s.get("/api/v1/device/poll", &tokens[0]).json().unwrap();
    assert!(p["deployment"].is_null(), "{p}");
    let v: Value = ddi(base, &target).json().unwrap();
    let href = v["_links"]["deploymentBase"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    let action = href
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let db: Value = ddi(&href, &target).json().unwrap();
    assert_eq!(db["id"], action.as_str());
    assert_eq!(db["deployment"]["update"], "forced");
    let a = &db["deployment"]["chunks"][0]["artifacts"][0];
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(a["filename"], "update-3.1.0.swu");
    assert_eq!(a["size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(a["hashes"]["sha256"], art["sha256"]);
    assert_eq!(a["hashes"]["sha1"].as_str().unwrap().len(), 40);
    let dl = a["_links"]["download-http"]["href"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ddi(&dl, &target).bytes().unwrap().to_vec(), bytes);
    let part = s
        .http
        .get(&dl)
        .header("Authorization", &target)
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(part.bytes().unwrap().to_vec(), bytes[100..200].to_vec());
    let md5 = ddi(
        a["_links"]["md5sum-http"]["href"].as_str().unwrap(),
        &target,
    )
    .text()
    .unwrap();
    assert_eq!(
        md5,
        format!(
            "{}  update-3.1.0.swu\n",
            a["hashes"]["md5"].as_str().unwrap()
        )
    );
    // Another device may not fetch it, nor see the action.
    let other = format!("TargetToken {}", tokens[1]);
    err(
        ddi(&dl.replace("ddi-1", "ddi-2"), &other),
        404,
        "no action of controller `ddi-2`",
    );
    err(
        ddi(
            &format!("/DEFAULT/controller/v1/ddi-2/deploymentBase/{action}"),
            &other,
        ),
        404,
        "no action",
    );

    // Feedback, as hawkBit defines it, moves jota's deployment; bad feedback changes nothing.
    let fb = |body: Value| {
        s.http
            .post(
                format!("{href}/feedback")
                    .replace(&format!("?c=-{}", href.split("?c=-").nth(1).unwrap()), ""),
            )
            .header("Authorization", &target)
            .json(&body)
            .send()
            .unwrap()
    };
    let shown = || -> Value {
        s.get(&format!("/api/v1/deployments/{dep_id}"), ADMIN)
            .json()
            .unwrap()
    };
    let r = fb(json!({ "id": action, "time": "20261204T010000", "status": {
        "execution": "proceeding", "result": { "finished": "none", "progress": { "cnt": 1, "of": 2 } },
        "details": ["Installing Update Chunk Artifacts."] } }));
    assert_eq!(r.status().as_u16(), 200);
    let st = shown();
    assert_eq!(
        (
            st["deployment"]["state"].as_str(),
            st["deployment"]["progress"].as_u64()
        ),
        (Some("installing"), Some(50)),
        "{st}"
    );
    err(
        fb(json!({ "status": { "execution": "exploded" } })),
        400,
        "closed, proceeding",
    );
    err(
        fb(json!({ "status": { "execution": "closed", "result": { "finished": "maybe" } } })),
        400,
        "success, failure, none",
    );
    err(fb(json!({ "state": "success" })), 400, "status");
    assert_eq!(shown()["deployment"]["state"], "installing");
    let done = json!({ "status": { "execution": "closed", "result": { "finished": "success" }, "details": ["Update succeeded"] } });
    assert_eq!(fb(done.clone()).status().as_u16(), 200);
    let st = shown();
    assert_eq!(
        (
            st["deployment"]["state"].as_str(),
            st["deployment"]["active"].as_bool()
        ),
        (Some("success"), Some(false)),
        "{st}"
    );
    assert_eq!(st["deployment"]["message"], "Update succeeded");
    // Resending the final word is fine; anything else for a closed action is 410.
    assert_eq!(fb(done).status().as_u16(), 200);
    err(
        fb(json!({ "status": { "execution": "proceeding" } })),
        410,
        "closed",
    );
    let v: Value = ddi(base, &target).json().unwrap();
    assert!(v["_links"]["deploymentBase"].is_null(), "{v}");
    let ib = v["_links"]["installedBase"]["href"].as_str().unwrap();
    let ib: Value = ddi(ib, &target).json().unwrap();
    assert_eq!(ib["id"], action.as_str());
    err(ddi(&href, &target), 404, "not open");
    err(
        ddi("/DEFAULT/controller/v1/ddi-1/deploymentBase/xyz", &target),
        400,
        "not a number",
    );
}

/// `docs/openapi.json` names only routes the server has: each documented method and path
/// (parameters filled in with placeholders) reaches a handler — never axum's bare 404 or a
/// 405 — and the document is valid JSON with every `$ref` resolving.
#[test]
fn openapi_document_matches_the_router() {
    let s = Server::new();
    let doc: Value = serde_json::from_slice(
        &std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 19);
    for (path, ops) in paths {
        let mut url = String::new();
        for part in path.split('/').skip(1) {
            url.push('/');
            url.push_str(if part.starts_with('{') { "x1" } else { part });
        }
        for method in ops.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = s
                .http
                .request(m, format!("{}{url}", s.base))
                .bearer_auth(ADMIN)
                .send()
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().unwrap();
            assert_ne!(status, 405, "{method} {path}: no such method");
            if status == 404 {
                let v: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|_| panic!("{method} {path}: no such route"));
                assert!(v["error"].is_string(), "{method} {path}: {body}");
            }
        }
    }
}

/// A device outside its maintenance window is not handed an update it has not started —
/// neither by jota's poll nor by DDI — and one inside is; a malformed window is refused at
/// registration.
#[test]
fn maintenance_window_holds_back_the_poll() {
    let s = Server::new();
    let d = tempfile::tempdir().unwrap();
    let art: Value = s
        .upload(&bundle(d.path(), "ed25519.key.pem"))
        .json()
        .unwrap();
    let m = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400
        / 60) as i64;
    let hm = |m: i64| {
        format!(
            "{:02}:{:02}",
            m.rem_euclid(1440) / 60,
            m.rem_euclid(1440) % 60
        )
    };
    let closed = format!("window={}-{}", hm(m + 120), hm(m + 180));
    let open = format!("window={}-{}", hm(m - 60), hm(m + 60));
    err(
        s.post(
            "/api/v1/devices",
            ADMIN,
            &json!({ "id": "bad", "tags": ["window=99:00-01:00"] }),
        ),
        400,
        "HH:MM-HH:MM",
    );
    let mut tokens = Vec::new();
    for (id, w) in [("closed", &closed), ("open", &open)] {
        let r: Value = s
            .post("/api/v1/devices", ADMIN, &json!({ "id": id, "tags": [w] }))
            .json()
            .unwrap();
        tokens.push(r["token"].as_str().unwrap().to_string());
        let r = s.post(
            "/api/v1/deployments",
            ADMIN,
            &json!({ "artifact": art["id"], "device": id }),
        );
        assert_eq!(r.status().as_u16(), 201);
    }
    let poll = |t: &str| -> Value { s.get("/api/v1/device/poll", t).json().unwrap() };
    assert!(poll(&tokens[0])["deployment"].is_null());
    assert!(poll(&tokens[1])["deployment"].is_object());
    let ddi = |id: &str, t: &str| -> Value {
        s.http
            .get(format!("{}/DEFAULT/controller/v1/{id}", s.base))
            .header("Authorization", format!("TargetToken {t}"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    assert!(ddi("closed", &tokens[0])["_links"]["deploymentBase"].is_null());
    assert!(ddi("open", &tokens[1])["_links"]["deploymentBase"].is_object());
}

/// Runs Debian's headless Chromium on `url` with a fresh profile; returns the DOM it ends
/// up with (after redirects), and writes a screenshot when asked.
fn chromium(url: &str, screenshot: Option<&Path>) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed (apt-get install chromium; .ci/run does)");
    let profile = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--window-size=1280,1800",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(p) => c.arg(format!("--screenshot={}", p.display())),
        None => c.arg("--dump-dom"),
    };
    let o = c.arg(url).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The text a person reads: the DOM without tags, whitespace collapsed.
fn visible(dom: &str) -> String {
    let mut dom = dom.to_string();
    while let (Some(a), Some(b)) = (dom.find("<style"), dom.find("</style>")) {
        dom.replace_range(a..b + "</style>".len(), "");
    }
    let mut out = String::new();
    let mut tag = false;
    for ch in dom.chars() {
        match ch {
            '<' => tag = true,
            '>' => {
                tag = false;
                out.push(' ');
            }
            c if !tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The dashboard in a real browser: a rollout halted by a rollback, a device with telemetry
/// and inventory, what a person sees on the overview, the rollout page and the device page;
/// sign-in by one-time link and by form; nothing without a session.
#[test]
fn dashboard_in_headless_chromium() {
    let s = Server::new();
    let d = tempfile::tempdir().unwrap();
    let a: Value = s
        .upload(&bundle(d.path(), "ed25519.key.pem"))
        .json()
        .unwrap();
    let art = a["id"].as_str().unwrap().to_string();
    let devices: Vec<Value> = (1..=6)
        .map(|i| json!({ "id": format!("orin-{i}"), "hardware": "3767-0005-300", "tags": if i <= 2 { vec!["risk=canary"] } else { vec![] } }))
        .collect();
    let regs: Value = s
        .post(
            "/api/v1/devices/batch",
            ADMIN,
            &json!({ "devices": devices }),
        )
        .json()
        .unwrap();
    let token = |i: usize| regs[i - 1]["token"].as_str().unwrap().to_string();
    for i in 1..=6 {
        assert_eq!(
            s.get("/api/v1/device/poll?version=1.0.0", &token(i))
                .status(),
            200
        );
    }
    let r: Value = s
        .post(
            "/api/v1/rollouts",
            ADMIN,
            &json!({ "name": "spring-release", "artifact": art,
                     "phases": [{"name": "canary", "percent": 34}, {"name": "all", "percent": 100}] }),
        )
        .json()
        .unwrap();
    let rollout = r["rollout"]["id"].as_str().unwrap().to_string();
    // The canaries: orin-1 succeeds, orin-2 rolls back; the gate halts the rollout.
    let report = |i: usize, state: &str, msg: &str| {
        let p: Value = s
            .get("/api/v1/device/poll?version=1.0.0", &token(i))
            .json()
            .unwrap();
        let dep = p["deployment"]["id"].as_str().unwrap().to_string();
        let r = s.post(
            "/api/v1/device/status",
            &token(i),
            &json!({ "deployment": dep, "state": state, "progress": 100, "downloaded_bytes": 262144, "message": msg }),
        );
        assert_eq!(r.status(), 200);
    };
    for st in ["downloading", "installing", "rebooting", "validating"] {
        report(1, st, "");
        report(2, st, "");
    }
    report(1, "success", "");
    report(
        2,
        "rolled-back",
        "validation failed: app-health did not answer",
    );
    s.get("/api/v1/device/poll?version=2.0.0", &token(1));
    // Reports of one boot (uptime grows as time passes; here they come at once).
    for (t, up) in [(47_500, 600), (48_500, 630), (51_000, 660)] {
        let r = s.post(
            "/api/v1/device/telemetry",
            &token(1),
            &json!({ "ota_version": "2.0.0", "boot_slot": "1", "uptime_seconds": up, "temperature_mc": t,
                     "memory_available_kb": 5_000_000, "rootfs_usage_pct": 41 }),
        );
        assert_eq!(r.status(), 204);
    }
    let r = s
        .http
        .put(format!("{}/api/v1/device/inventory", s.base))
        .bearer_auth(token(1))
        .json(&json!({ "l4t": "R36 (release), REVISION: 4.0", "kernel": "5.15.148-tegra" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    // Wait for the evaluator (every 100 ms) to halt the rollout.
    for _ in 0..100 {
        let st: Value = s
            .get(&format!("/api/v1/rollouts/{rollout}"), ADMIN)
            .json()
            .unwrap();
        if st["rollout"]["state"] == "halted" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Without a session: the sign-in form, and nothing else.
    let r = s.http.get(format!("{}/dashboard", s.base)).send().unwrap();
    assert_eq!(r.status(), 401);
    let text = r.text().unwrap();
    assert!(text.contains("name=\"token\"") && !text.contains("spring-release"));
    err(
        s.post(
            "/api/v1/dashboard/links",
            ADMIN,
            &json!({ "next": "https://evil.example/" }),
        ),
        400,
        "next",
    );
    err(
        s.post("/api/v1/dashboard/links", "nope", &json!({})),
        401,
        "admin",
    );
    let link = |next: &str| -> String {
        let v: Value = s
            .post("/api/v1/dashboard/links", ADMIN, &json!({ "next": next }))
            .json()
            .unwrap();
        format!("{}{}", s.base, v["path"].as_str().unwrap())
    };

    // The overview, as Chromium shows it.
    let url = link("/dashboard");
    let page = visible(&chromium(&url, None));
    assert!(!page.contains("font:14px"), "styles are not text");
    for want in [
        "Fleet overview",
        "6 devices",
        "spring-release",
        "halted",
        "canary (1/2)",
        // 34 % of 6: three canaries, the third not started yet.
        "1 of 6 succeeded · 1 updating · 0 failed · 1 rolled back · 3 waiting",
        "rollout-halted",
        "investigate",
        "device version when rollout message orin-2 2.0.0",
        "validation failed: app-health did not answer",
        "1.0.0 5",
        "2.0.0 1",
    ] {
        assert!(page.contains(want), "no `{want}` in: {page}");
    }
    // A link works once.
    let again = visible(&chromium(&url, None));
    assert!(
        again.contains("used up or expired") && !again.contains("spring-release"),
        "{again}"
    );

    // The rollout: phases with their counts, the rollback, the metrics.
    let page = visible(&chromium(
        &link(&format!("/dashboard/rollouts/{rollout}")),
        None,
    ));
    for want in [
        "Rollout spring-release",
        "canary ◀ current",
        "1 of 3 succeeded · 1 updating · 0 failed · 1 rolled back · 0 waiting",
        "50.0 % success rate",
        "50.0 % rollback rate",
        "orin-2 rolled-back",
    ] {
        assert!(page.contains(want), "no `{want}` in: {page}");
    }

    // A device: inventory, telemetry history with its chart, deployments with reports.
    let dom = chromium(&link("/dashboard/devices/orin-1"), None);
    assert!(dom.contains("<polyline"), "the temperature chart");
    let page = visible(&dom);
    for want in [
        "Device orin-1",
        "version 2.0.0",
        "kernel 5.15.148-tegra",
        "47.5–51.0 °C over 3 reports",
        "Boots in the last day: 1",
        "success",
    ] {
        assert!(page.contains(want), "no `{want}` in: {page}");
    }
    assert!(
        page.contains("downloading 100% installing 100% rebooting 100%"),
        "{page}"
    );

    // A screenshot a person would look at: a real rendering, not a blank page.
    let shot = d.path().join("overview.png");
    chromium(&link("/dashboard"), Some(&shot));
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );

    // The form: the admin token gives a session cookie; signing out ends it.
    let no_redirect = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", "wrong")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = no_redirect
        .post(format!("{}/dashboard/login", s.base))
        .form(&[("token", ADMIN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let get = |path: &str| {
        no_redirect
            .get(format!("{}{path}", s.base))
            .header("cookie", &session)
            .send()
            .unwrap()
    };
    assert_eq!(get("/dashboard/devices?q=orin-3").status(), 200);
    assert!(get("/dashboard/devices?q=orin-3")
        .text()
        .unwrap()
        .contains("orin-3"));
    assert_eq!(get("/dashboard/devices/nope").status(), 404);
    let r = no_redirect
        .post(format!("{}/dashboard/logout", s.base))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(get("/dashboard").status(), 401);
}

/// moto's S3 server on a free loopback port, with bucket `bucket`. Amazon S3 itself cannot
/// run here; moto answers the S3 REST API (SigV4-signed requests, multipart uploads, ranged
/// GETs) as S3 does. Killed when dropped.
struct Moto(std::process::Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn moto(bucket: &str) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let installed = std::process::Command::new("python3")
        .args(["-m", "moto.server", "--help"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        installed,
        "moto's server is not installed (pip install 'moto[server]'; .ci/run does)"
    );
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let m = Moto(child, format!("http://127.0.0.1:{port}"));
    let http = Client::new();
    for _ in 0..200 {
        if http.get(&m.1).send().is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(http
        .put(format!("{}/{bucket}", m.1))
        .send()
        .unwrap()
        .status()
        .is_success());
    m
}

/// Artifacts in an S3 bucket (object_store): uploads land there only once
/// verified, devices download through the server with Range/If-Range/ETag as from disk, and
/// an unreachable bucket is a clear 500, not a hang or a wrong answer.
#[test]
fn artifacts_in_s3() {
    let m = moto("jota-artifacts");
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "jota-test"),
        ("AWS_SECRET_ACCESS_KEY", "jota-test-secret"),
        ("AWS_REGION", "eu-central-1"),
        ("AWS_ENDPOINT", m.1.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    let s = Server::with(|c| c.artifact_store = Some("s3://jota-artifacts/fleet".into()));
    let d = tempfile::tempdir().unwrap();
    let good = bundle(d.path(), "ed25519.key.pem");
    let bytes = std::fs::read(&good).unwrap();
    let r = s.upload(&good);
    assert_eq!(r.status(), 201);
    let a: Value = r.json().unwrap();
    let id = a["id"].as_str().unwrap().to_string();
    // Read the bucket as any S3 client would (signed requests).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = object_store::aws::AmazonS3Builder::from_env()
        .with_url("s3://jota-artifacts")
        .build()
        .unwrap();
    use object_store::ObjectStore;
    let keys = || -> Vec<String> {
        rt.block_on(async {
            use futures_util::TryStreamExt;
            bucket
                .list(None)
                .map_ok(|o| o.location.to_string())
                .try_collect()
                .await
                .unwrap()
        })
    };
    let object = rt
        .block_on(async {
            bucket
                .get(&object_store::path::Path::from(format!(
                    "fleet/{id}.artifact"
                )))
                .await
                .unwrap()
                .bytes()
                .await
        })
        .unwrap();
    assert!(object == bytes, "the bucket holds the bundle");
    // Not on the server's disk (only an empty upload area).
    let local: Vec<_> = std::fs::read_dir(s.dir.path().join("data/artifacts"))
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default();
    assert!(local.is_empty(), "{local:?}");
    // A rejected upload never reaches the bucket.
    err(
        s.upload(&bundle(d.path(), "p256.key.pem")),
        422,
        "not a trusted jota bundle",
    );
    assert_eq!(keys(), vec![format!("fleet/{id}.artifact")]);

    // A device downloads it through the server: whole, by range, resumed with If-Range.
    let dev: Value = s
        .post("/api/v1/devices", ADMIN, &json!({ "id": "s3-dev" }))
        .json()
        .unwrap();
    let token = dev["token"].as_str().unwrap().to_string();
    let path = format!("{}/artifacts/{id}", s.base);
    let whole = s.http.get(&path).bearer_auth(&token).send().unwrap();
    assert_eq!(whole.status(), 200);
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", a["sha256"].as_str().unwrap()));
    assert!(whole.bytes().unwrap() == bytes);
    let part = s
        .http
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=1000-5095")
        .header("if-range", &etag)
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 1000-5095/{}", bytes.len()).as_str()
    );
    assert!(part.bytes().unwrap() == bytes[1000..5096]);
    let stale = s
        .http
        .get(&path)
        .bearer_auth(&token)
        .header("range", "bytes=1000-5095")
        .header("if-range", "\"something-else\"")
        .send()
        .unwrap();
    assert_eq!(stale.status(), 200, "a changed file is sent whole");
    let cached = s
        .http
        .get(&path)
        .bearer_auth(&token)
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(cached.status(), 304);

    // The bucket gone: a clear server error naming the storage.
    drop(m);
    err(
        s.http.get(&path).bearer_auth(&token).send().unwrap(),
        500,
        "artifact storage",
    );
}
