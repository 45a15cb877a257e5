//! A fleet server in this process (plain HTTP on loopback, SQLite), releases, bundles and
//! simulated Jetsons running their agents.
#![allow(dead_code)]

use jota_fleetsim::{Behaviour, Event, Spec};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ROOTFS: u64 = 6 << 20;

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub server: String,
    pub admin: String,
    pub key: jota_bundle::SecretKey,
    pub pub_pem: String,
    pub rel1: PathBuf,
    pub rel2: PathBuf,
    pub bundle2: PathBuf,
    pub v2: String,
    pub provision_token: String,
    pub http: reqwest::blocking::Client,
    pub stop: Arc<AtomicBool>,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Fleet {
    /// A server with 1.0.0 and 2.0.0 uploaded and a provisioning token for `uses` devices.
    pub fn new(uses: usize) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let keyring = dir.path().join("keyring");
        std::fs::create_dir_all(&keyring).unwrap();
        let key = jota_bundle::SecretKey::generate(jota_bundle::sign::Algorithm::Ed25519).unwrap();
        let pub_pem = key.public().to_pem();
        std::fs::write(keyring.join("k.pub.pem"), &pub_pem).unwrap();
        let admin = "admin-token-for-tests".to_string();
        let running = rt
            .block_on(jota_server::start(jota_server::ServerConfig {
                data_dir: dir.path().join("server"),
                listen: "127.0.0.1:0".parse().unwrap(),
                database: None,
                admin_token: admin.clone(),
                artifact_store: None,
                keyring: Some(keyring),
                max_upload: 1 << 30,
                poll_seconds: 1,
                tls: None,
                ddi_gateway_token: None,
                rollout_interval: Duration::from_millis(300),
                require_device_cert: false,
                telemetry_retention: Duration::from_secs(86400),
            }))
            .unwrap();
        let server = format!("http://{}", running.addr);
        let rel1 =
            jota_fleetsim::release("orin-nano-8gb", "1.0.0", ROOTFS, &dir.path().join("rel1"))
                .unwrap();
        let rel2 =
            jota_fleetsim::release("orin-nano-8gb", "2.0.0", ROOTFS, &dir.path().join("rel2"))
                .unwrap();
        let hw = vec!["3767-000[0-5]".to_string()];
        let bundle2 =
            jota_fleetsim::bundle(&rel2, &dir.path().join("v2.jota"), "2.0.0", &hw, &key).unwrap();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut f = Fleet {
            dir,
            rt,
            server,
            admin,
            key,
            pub_pem,
            rel1,
            rel2,
            bundle2: bundle2.clone(),
            v2: String::new(),
            provision_token: String::new(),
            http,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            shutdown: Some(running.shutdown),
        };
        let up = f.call(
            f.http
                .post(format!("{}/api/v1/artifacts", f.server))
                .header("content-type", "application/octet-stream")
                .body(std::fs::read(&bundle2).unwrap()),
        );
        f.v2 = up["id"].as_str().unwrap().to_string();
        f.provision_token = f.post("/api/v1/provision-tokens", &json!({ "uses": uses }))["token"]
            .as_str()
            .unwrap()
            .to_string();
        f
    }

    pub fn call(&self, req: reqwest::blocking::RequestBuilder) -> Value {
        let r = req.bearer_auth(&self.admin).send().unwrap();
        let status = r.status();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "{status}: {v}");
        v
    }
    pub fn get(&self, path: &str) -> Value {
        self.call(self.http.get(format!("{}{path}", self.server)))
    }
    pub fn post(&self, path: &str, v: &Value) -> Value {
        self.call(self.http.post(format!("{}{path}", self.server)).json(v))
    }
    pub fn put(&self, path: &str, v: &Value) -> Value {
        self.call(self.http.put(format!("{}{path}", self.server)).json(v))
    }

    /// Creates device `i` (flashed with 1.0.0) whose agent talks to `server`.
    pub fn device(&self, i: usize, server: &str) -> (String, PathBuf, jota_agent::Config) {
        let name = format!("dev-{i:03}");
        let serial = format!("1421{:09}", i);
        let mac = format!("48:b0:2d:20:{:02x}:{:02x}", i / 256, i % 256);
        let dir = self.dir.path().join("devices").join(&name);
        let mut config = jota_fleetsim::agent_config(server, &self.provision_token, 1);
        config.server.max_backoff_seconds = 2;
        jota_fleetsim::create(
            &dir,
            &Spec {
                model: "orin-nano-8gb".into(),
                serial: serial.clone(),
                mac: mac.clone(),
                release: self.rel1.clone(),
                rootfs_slot: 8 << 20,
            },
            &config,
            self.pub_pem.as_bytes(),
            None,
        )
        .unwrap();
        (jota_agent::provision::device_id(&serial, &mac), dir, config)
    }

    /// Starts the agents of these devices; their events come out of the receiver.
    pub fn run(
        &mut self,
        devices: Vec<(String, PathBuf, jota_agent::Config, Behaviour)>,
    ) -> Receiver<(String, Event)> {
        let (tx, rx) = channel();
        for (name, dir, config, b) in devices {
            let (tx, stop) = (tx.clone(), Arc::clone(&self.stop));
            self.threads.push(std::thread::spawn(move || {
                jota_fleetsim::run(name, dir, config, b, tx, stop)
            }));
        }
        rx
    }

    /// Waits until `cond` holds on the device list, or panics after `secs`.
    pub fn wait_devices(
        &self,
        secs: u64,
        what: &str,
        cond: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get("/api/v1/devices");
            let list = v.as_array().cloned().unwrap_or_default();
            if cond(&list) {
                return list;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {v}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The newest deployment of a device.
    pub fn deployment_of(&self, device: &str) -> Option<Value> {
        let all = self.get("/api/v1/deployments");
        all.as_array()?
            .iter()
            .filter(|d| d["device_id"] == device)
            .max_by_key(|d| d["created"].as_i64().unwrap_or(0))
            .cloned()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
    }
}

/// Where each chunk of a bundle lies in the file: (start, end) byte offsets.
pub fn chunk_ranges(bundle: &Path) -> Vec<(u64, u64)> {
    let b = jota_bundle::Bundle::open(bundle, jota_bundle::Trust::Unchecked).unwrap();
    let payload = b.parsed.header.payload_offset();
    b.parsed
        .manifest
        .components
        .iter()
        .flat_map(|c| {
            c.chunks
                .iter()
                .map(move |ch| (payload + ch.offset, payload + ch.offset + ch.size))
        })
        .collect()
}
