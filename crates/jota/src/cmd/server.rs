//! `jota server`: the fleet server.

use anyhow::{bail, Context, Result};
use clap::Parser;
use jota_server::{start, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `jota server`. Every option can also be set in the `--config` file
/// (TOML, the same names: `data-dir = "/var/lib/jota"`); the command line wins.
#[derive(Parser, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Args {
    /// Settings file (TOML) with any of these options by their long names.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Data directory: the SQLite database, artifacts, the keyring of trusted bundle keys
    /// (`DATA_DIR/keyring/*.pem` unless --keyring), the admin token if generated, tls/.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Database URL (`postgres://user@host/db`); default SQLite in the data directory.
    #[arg(long, env = "JOTA_DATABASE")]
    database: Option<String>,
    /// Admin API token (at least 16 characters); default: generated once and kept in
    /// DATA_DIR/admin-token.
    #[arg(long, env = "JOTA_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Where artifacts are kept: `s3://bucket[/prefix]` (S3 or any S3-compatible store;
    /// credentials, region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP); default DATA_DIR/artifacts.
    #[arg(long, env = "JOTA_ARTIFACT_STORE")]
    artifact_store: Option<String>,
    /// Directory of trusted bundle signing keys (PEM).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Largest artifact upload, in MiB [default: 16384].
    #[arg(long)]
    max_upload_mib: Option<u64>,
    /// Seconds devices wait between polls [default: 60].
    #[arg(long)]
    poll_seconds: Option<u64>,
    /// Seconds between rollout evaluations (gates, phase moves, new assignments) [default: 5].
    #[arg(long)]
    rollout_seconds: Option<f64>,
    /// hawkBit DDI gateway token: a client presenting `Authorization: GatewayToken T` may act
    /// for any registered device (hawkBit's gateway authentication). Off unless given.
    #[arg(long, env = "JOTA_DDI_GATEWAY_TOKEN")]
    ddi_gateway_token: Option<String>,
    /// HTTPS certificate chain (PEM). Without --tls-cert/--tls-key the server issues its own:
    /// a CA and a server certificate in DATA_DIR/tls/ (pin DATA_DIR/tls/ca.pem on clients).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Names (DNS or IP) of the self-issued server certificate, besides localhost, 127.0.0.1,
    /// ::1 and the --listen address (repeatable; used when it is first made).
    #[arg(long = "tls-name")]
    #[serde(default, rename = "tls-names")]
    tls_names: Vec<String>,
    /// Serve plain HTTP instead of HTTPS (on a trusted network or behind a TLS proxy).
    #[arg(long)]
    #[serde(default)]
    insecure_http: bool,
    /// Days telemetry is kept [default: 14].
    #[arg(long)]
    telemetry_days: Option<u64>,
    /// jota's device endpoints accept only device certificates (mTLS), not device tokens
    /// (provisioning and hawkBit DDI still take tokens).
    #[arg(long)]
    #[serde(default)]
    require_device_cert: bool,
}

impl Args {
    /// These arguments over the `--config` file's settings.
    fn merged(self) -> Result<Args> {
        let Some(path) = &self.config else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        let f: Args = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        Ok(Args {
            config: self.config.clone(),
            data_dir: self.data_dir.or(f.data_dir),
            listen: self.listen.or(f.listen),
            database: self.database.or(f.database),
            admin_token: self.admin_token.or(f.admin_token),
            keyring: self.keyring.or(f.keyring),
            artifact_store: self.artifact_store.or(f.artifact_store),
            max_upload_mib: self.max_upload_mib.or(f.max_upload_mib),
            poll_seconds: self.poll_seconds.or(f.poll_seconds),
            rollout_seconds: self.rollout_seconds.or(f.rollout_seconds),
            ddi_gateway_token: self.ddi_gateway_token.or(f.ddi_gateway_token),
            tls_cert: self.tls_cert.or(f.tls_cert),
            tls_key: self.tls_key.or(f.tls_key),
            tls_names: if self.tls_names.is_empty() {
                f.tls_names
            } else {
                self.tls_names
            },
            insecure_http: self.insecure_http || f.insecure_http,
            require_device_cert: self.require_device_cert || f.require_device_cert,
            telemetry_days: self.telemetry_days.or(f.telemetry_days),
        })
    }
}

fn admin_token(a: &Args, data_dir: &std::path::Path) -> Result<String> {
    if let Some(t) = &a.admin_token {
        return Ok(t.clone());
    }
    let path = data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let t = jota_server::random_hex(24)?;
    crate::util::write_atomic(&path, |f| {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(t.as_bytes())?;
        Ok(())
    })
    .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("admin token generated: {} (kept in {})", t, path.display());
    Ok(t)
}

/// Runs `jota server` until Ctrl-C or SIGTERM.
pub fn run(a: Args) -> Result<()> {
    let a = a.merged()?;
    let Some(data_dir) = a.data_dir.clone() else {
        bail!("--data-dir (or data-dir in the --config file) is required");
    };
    let listen = a.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080)));
    let tls = match (&a.tls_cert, &a.tls_key, a.insecure_http) {
        (Some(_), _, true) | (_, Some(_), true) => {
            bail!("--insecure-http cannot be used with --tls-cert/--tls-key")
        }
        (Some(_), None, _) | (None, Some(_), _) => {
            bail!("--tls-cert and --tls-key go together")
        }
        (None, None, true) => None,
        (Some(cert), Some(key), false) => Some(jota_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, false) => Some(self_issued(&a, &data_dir, listen)?),
    };
    if a.require_device_cert && tls.is_none() {
        bail!("--require-device-cert needs HTTPS (device certificates are checked in TLS)");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let rollout_seconds = a.rollout_seconds.unwrap_or(5.0);
    let config = ServerConfig {
        data_dir: data_dir.clone(),
        listen,
        database: a.database.clone(),
        admin_token: admin_token(&a, &data_dir)?,
        keyring: a.keyring.clone(),
        artifact_store: a.artifact_store.clone(),
        max_upload: a.max_upload_mib.unwrap_or(16384) << 20,
        poll_seconds: a.poll_seconds.unwrap_or(60),
        ddi_gateway_token: a.ddi_gateway_token.clone(),
        tls,
        require_device_cert: a.require_device_cert,
        telemetry_retention: std::time::Duration::from_secs(
            a.telemetry_days.unwrap_or(14).max(1) * 86400,
        ),
        rollout_interval: std::time::Duration::try_from_secs_f64(rollout_seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--rollout-seconds is a positive number")?,
    };
    serve(config, scheme)
}

/// The CA and server certificate the server issues itself (made once).
fn self_issued(
    a: &Args,
    data_dir: &std::path::Path,
    listen: SocketAddr,
) -> Result<jota_server::tls::TlsFiles> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(a.tls_names.iter().cloned());
    names.dedup();
    let dir = data_dir.join("tls");
    let files = jota_server::tls::self_issued(&dir, &names)
        .with_context(|| format!("making the server's certificate in {}", dir.display()))?;
    eprintln!(
        "HTTPS with a self-issued certificate; clients pin the CA {}",
        dir.join("ca.pem").display()
    );
    Ok(files)
}

fn serve(config: ServerConfig, scheme: &str) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let jota_server::Running {
            addr,
            shutdown,
            mut task,
        } = start(config).await?;
        println!("listening on {scheme}://{addr}");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            r = &mut task => { r??; return Ok(()); }
        }
        tracing::info!("stopping");
        let _ = shutdown.send(());
        task.await??;
        Ok(())
    })
}
