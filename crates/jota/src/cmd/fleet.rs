//! `jota fleet`: the fleet server's admin API from the command line.

use crate::util::{print_json, thousands};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `jota fleet`.
#[derive(Parser, Debug)]
pub struct Args {
    /// Server URL.
    #[arg(long, env = "JOTA_SERVER")]
    server: String,
    /// Admin token.
    #[arg(long, env = "JOTA_TOKEN")]
    token: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Upload a bundle (verified by the server against its keyring); prints the artifact id.
    Upload {
        /// The bundle.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List artifacts.
    Artifacts {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Register a device; prints its token (give it to the device once).
    AddDevice {
        /// Device id.
        id: String,
        /// Hardware (BOARDID-SKU-FAB).
        #[arg(long, default_value = "")]
        hardware: String,
        /// Tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List devices with their current deployment.
    Devices {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Deploy an artifact to one device (replaces its active deployment).
    Deploy {
        /// Artifact id.
        #[arg(long)]
        artifact: String,
        /// Device id.
        #[arg(long)]
        device: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// A deployment and the device's reports.
    Deployment {
        /// Deployment id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Client {
    fn call(&self, req: reqwest::blocking::RequestBuilder) -> Result<Value> {
        let r = req
            .bearer_auth(&self.token)
            .send()
            .context(self.base.clone())?;
        let status = r.status();
        let body: Value = r.json().unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["error"].as_str().unwrap_or("(no message)");
            bail!("{}: {status}: {msg}", self.base);
        }
        Ok(body)
    }
    fn get(&self, path: &str) -> Result<Value> {
        self.call(self.http.get(format!("{}{path}", self.base)))
    }
    fn post(&self, path: &str, v: &Value) -> Result<Value> {
        self.call(self.http.post(format!("{}{path}", self.base)).json(v))
    }
}

/// Runs `jota fleet`.
pub fn run(a: Args) -> Result<()> {
    let c = Client {
        http: reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3600))
            .build()?,
        base: a.server.trim_end_matches('/').to_string(),
        token: a.token.clone(),
    };
    match a.cmd {
        Cmd::Upload { file, json } => {
            let f = std::fs::File::open(&file).with_context(|| file.display().to_string())?;
            let len = f.metadata()?.len();
            let body = reqwest::blocking::Body::sized(f, len);
            let v = c.call(
                c.http
                    .post(format!("{}/api/v1/artifacts", c.base))
                    .header("content-type", "application/octet-stream")
                    .body(body),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["id"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Artifacts { json } => {
            let v = c.get("/api/v1/artifacts")?;
            if json {
                return print_json(&v);
            }
            for a in v.as_array().into_iter().flatten() {
                outln!(
                    "{}  {:<16} {:>15} bytes  delta from base {:>15} bytes",
                    a["id"].as_str().unwrap_or_default(),
                    a["version"].as_str().unwrap_or_default(),
                    thousands(a["size"].as_u64().unwrap_or(0)),
                    thousands(a["chunked_bytes"].as_u64().unwrap_or(0))
                );
            }
            Ok(())
        }
        Cmd::AddDevice {
            id,
            hardware,
            tags,
            json,
        } => {
            let v = c.post(
                "/api/v1/devices",
                &json!({ "id": id, "hardware": hardware, "tags": tags }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["token"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Devices { json } => {
            let v = c.get("/api/v1/devices")?;
            if json {
                return print_json(&v);
            }
            for d in v.as_array().into_iter().flatten() {
                let dep = &d["deployment"];
                outln!(
                    "{:<24} {:<12} {}",
                    d["id"].as_str().unwrap_or_default(),
                    d["version"].as_str().unwrap_or("-"),
                    if dep.is_null() {
                        "-".to_string()
                    } else {
                        format!(
                            "{} {} {}%",
                            dep["artifact_id"].as_str().unwrap_or_default(),
                            dep["state"].as_str().unwrap_or_default(),
                            dep["progress"]
                        )
                    }
                );
            }
            Ok(())
        }
        Cmd::Deploy {
            artifact,
            device,
            json,
        } => {
            let v = c.post(
                "/api/v1/deployments",
                &json!({ "artifact": artifact, "device": device }),
            )?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["id"].as_str().unwrap_or_default());
            Ok(())
        }
        Cmd::Deployment { id, json } => {
            let v = c.get(&format!("/api/v1/deployments/{id}"))?;
            if json {
                return print_json(&v);
            }
            let d = &v["deployment"];
            outln!(
                "deployment {id}: artifact {} to {}: {} {}%",
                d["artifact_id"].as_str().unwrap_or_default(),
                d["device_id"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
                d["progress"]
            );
            for e in v["events"].as_array().into_iter().flatten() {
                outln!(
                    "  {} {:>3}% {}",
                    e["state"].as_str().unwrap_or_default(),
                    e["progress"],
                    e["message"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}
