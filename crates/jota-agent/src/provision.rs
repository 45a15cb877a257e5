//! Provisioning, the device side (seed 003 §5.1): make a key pair once (ECDSA P-256, kept
//! on the data partition, mode 0600), derive the device id from the module serial number and
//! MAC (`sha256("SERIAL-MAC")[:16]`), send a CSR to the fleet server and keep what it
//! answers: the device certificate, the fleet CA (pinned from then on) and a device token.
//!
//! Files in the identity directory: `device.key`, `device.pem` (certificate then CA),
//! `ca.pem`, `token`, `id`. Each is written whole (temporary file, fsync, rename); the key is
//! never sent anywhere.

use crate::AgentError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `provision` needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Server URL (`https://fleet.example.com:8443`).
    pub server: String,
    /// The fleet CA to trust (PEM); none: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A provisioning token, or the device token `jota fleet add-device` printed.
    pub token: Option<String>,
    /// Module serial number.
    pub serial: String,
    /// MAC address.
    pub mac: String,
    /// Device id, when there is no serial and MAC to derive it from.
    pub id: Option<String>,
    /// Hardware (board id).
    pub hardware: String,
    /// Where the identity files go.
    pub dir: PathBuf,
    /// Keep asking while pending, up to this long.
    pub wait: Duration,
}

/// The outcome.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Provisioned {
    /// Device id.
    pub id: String,
    /// `accepted` (the identity files are written) or `pending`.
    pub state: String,
    /// The identity directory.
    pub dir: PathBuf,
}

#[derive(Deserialize)]
struct Reply {
    id: String,
    state: String,
    certificate: Option<String>,
    ca: Option<String>,
    token: Option<String>,
    poll_seconds: u64,
}

/// The serial number and MAC of the device at `root` (`/proc/device-tree/serial-number`,
/// `/sys/class/net/eth0/address`), each empty when absent.
pub fn hardware_identity(root: &Path) -> (String, String) {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p))
            .map(|s| {
                s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string()
            })
            .unwrap_or_default()
    };
    (
        read("proc/device-tree/serial-number"),
        read("sys/class/net/eth0/address"),
    )
}

/// The seed's device id: `sha256("SERIAL-MAC")`, first 16 hex digits.
pub fn device_id(serial: &str, mac: &str) -> String {
    hex::encode(Sha256::digest(format!("{serial}-{mac}").as_bytes()))[..16].to_string()
}

fn err(what: impl std::fmt::Display) -> AgentError {
    AgentError::Config(format!("provisioning: {what}"))
}

/// Writes `data` to `path` whole (mode 0600 when `secret`).
fn write_whole(path: &Path, data: &[u8], secret: bool) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| AgentError::io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| AgentError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AgentError::io(path, e))
}

/// The device key in `dir`, made on first use.
pub fn device_key(dir: &Path) -> Result<rcgen::KeyPair, AgentError> {
    let path = dir.join("device.key");
    if let Ok(pem) = std::fs::read_to_string(&path) {
        return rcgen::KeyPair::from_pem(&pem).map_err(|e| err(format!("{}: {e}", path.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| AgentError::io(dir, e))?;
    let key = rcgen::KeyPair::generate().map_err(err)?;
    write_whole(&path, key.serialize_pem().as_bytes(), true)?;
    Ok(key)
}

/// Asks the server for a certificate (see the module documentation), waiting up to
/// `opts.wait` while an operator has not decided.
pub fn provision(opts: &Options) -> Result<Provisioned, AgentError> {
    let id = match (&opts.id, opts.serial.is_empty() || opts.mac.is_empty()) {
        (Some(given), false) if *given != device_id(&opts.serial, &opts.mac) => {
            return Err(err(format!(
                "--id {given} is not this device's id {} (sha256 of serial-MAC, seed 003 §5.1)",
                device_id(&opts.serial, &opts.mac)
            )))
        }
        (_, false) => device_id(&opts.serial, &opts.mac),
        (Some(id), true) => id.clone(),
        (None, true) => {
            return Err(err(
                "no serial number and MAC to derive the device id from: give --id",
            ))
        }
    };
    let key = device_key(&opts.dir)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(err)?;
    let mut http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
    if let Some(pem) = &opts.ca {
        http = http.tls_built_in_root_certs(false).add_root_certificate(
            reqwest::Certificate::from_pem(pem).map_err(|e| err(format!("CA: {e}")))?,
        );
    }
    let http = http.build().map_err(err)?;
    let url = format!(
        "{}/api/v1/devices/provision",
        opts.server.trim_end_matches('/')
    );
    let body = serde_json::json!({
        "id": opts.id.as_ref().filter(|_| opts.serial.is_empty() || opts.mac.is_empty()),
        "serial": opts.serial,
        "mac": opts.mac,
        "hardware": opts.hardware,
        "csr": csr,
    });
    let deadline = Instant::now() + opts.wait;
    loop {
        let mut req = http.post(&url).json(&body);
        if let Some(t) = &opts.token {
            req = req.bearer_auth(t);
        }
        // The network and the server's own troubles are worth another try; a refusal is not.
        let net =
            |e: &dyn std::fmt::Display| AgentError::Download(format!("provisioning: {url}: {e}"));
        let r = req.send().map_err(|e| net(&e))?;
        let status = r.status();
        let text = r.text().map_err(|e| net(&e))?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(net(&status));
        }
        if !status.is_success() {
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(String::from))
                .unwrap_or(text);
            return Err(err(format!("{url}: {status}: {msg}")));
        }
        let reply: Reply =
            serde_json::from_str(&text).map_err(|e| err(format!("{url}: answer: {e}")))?;
        if reply.id != id {
            return Err(err(format!(
                "the server answered for `{}`, not `{id}`",
                reply.id
            )));
        }
        if reply.state == "accepted" {
            let (Some(cert), Some(ca), Some(token)) = (reply.certificate, reply.ca, reply.token)
            else {
                return Err(err(
                    "accepted, but the answer lacks certificate, ca or token",
                ));
            };
            // Certificate last: its presence means the set is complete.
            write_whole(&opts.dir.join("ca.pem"), ca.as_bytes(), false)?;
            write_whole(&opts.dir.join("token"), token.as_bytes(), true)?;
            write_whole(&opts.dir.join("id"), id.as_bytes(), false)?;
            write_whole(&opts.dir.join("device.pem"), cert.as_bytes(), false)?;
            tracing::info!(device = %id, "provisioned");
            return Ok(Provisioned {
                id,
                state: reply.state,
                dir: opts.dir.clone(),
            });
        }
        let pause = Duration::from_secs(reply.poll_seconds.clamp(1, 3600));
        if Instant::now() + pause > deadline {
            return Ok(Provisioned {
                id,
                state: reply.state,
                dir: opts.dir.clone(),
            });
        }
        tracing::info!(device = %id, "waiting for an operator to accept the device");
        std::thread::sleep(pause);
    }
}

/// An HTTP client that presents the device certificate in `dir` and trusts only the CA
/// the server gave at provisioning (pinned: the CA, not the server's leaf, seed §21.4).
pub fn client(dir: &Path) -> Result<reqwest::blocking::Client, AgentError> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).map_err(|e| AgentError::io(&p, e))
    };
    let mut identity = read("device.key")?;
    identity.extend_from_slice(&read("device.pem")?);
    let ca = read("ca.pem")?;
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).map_err(err)?)
        .identity(reqwest::Identity::from_pem(&identity).map_err(err)?)
        .build()
        .map_err(err)
}
