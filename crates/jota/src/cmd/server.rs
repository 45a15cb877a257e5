//! `jota server`: the fleet server.

use anyhow::{Context, Result};
use clap::Parser;
use jota_server::{start, ServerConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `jota server`.
#[derive(Parser, Debug)]
pub struct Args {
    /// Data directory: the SQLite database, artifacts, the keyring of trusted bundle keys
    /// (`DATA_DIR/keyring/*.pem` unless --keyring), the admin token if generated.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database URL (`postgres://user@host/db`); default SQLite in the data directory.
    #[arg(long, env = "JOTA_DATABASE")]
    database: Option<String>,
    /// Admin API token (at least 16 characters); default: generated once and kept in
    /// DATA_DIR/admin-token.
    #[arg(long, env = "JOTA_ADMIN_TOKEN")]
    admin_token: Option<String>,
    /// Directory of trusted bundle signing keys (PEM).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Largest artifact upload, in MiB.
    #[arg(long, default_value_t = 16384)]
    max_upload_mib: u64,
    /// Seconds devices wait between polls.
    #[arg(long, default_value_t = 60)]
    poll_seconds: u64,
    /// Seconds between rollout evaluations (gates, phase moves, new assignments).
    #[arg(long, default_value_t = 5.0)]
    rollout_seconds: f64,
    /// hawkBit DDI gateway token: a client presenting `Authorization: GatewayToken T` may act
    /// for any registered device (hawkBit's gateway authentication). Off unless given.
    #[arg(long, env = "JOTA_DDI_GATEWAY_TOKEN")]
    ddi_gateway_token: Option<String>,
    /// HTTPS certificate chain (PEM). Without --tls-cert/--tls-key the server issues its own:
    /// a CA and a server certificate in DATA_DIR/tls/ (pin DATA_DIR/tls/ca.pem on clients).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Names (DNS or IP) of the self-issued server certificate, besides localhost, 127.0.0.1,
    /// ::1 and the --listen address (repeatable; used when it is first made).
    #[arg(long = "tls-name")]
    tls_names: Vec<String>,
    /// Serve plain HTTP instead of HTTPS (on a trusted network or behind a TLS proxy).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    insecure_http: bool,
}

fn admin_token(a: &Args) -> Result<String> {
    if let Some(t) = &a.admin_token {
        return Ok(t.clone());
    }
    let path = a.data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_string());
    }
    std::fs::create_dir_all(&a.data_dir)?;
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
    let tls = if a.insecure_http {
        None
    } else if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        Some(jota_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
    } else {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        if !a.listen.ip().is_unspecified() {
            names.push(a.listen.ip().to_string());
        }
        names.extend(a.tls_names.iter().cloned());
        names.dedup();
        let dir = a.data_dir.join("tls");
        let files = jota_server::tls::self_issued(&dir, &names)
            .with_context(|| format!("making the server's certificate in {}", dir.display()))?;
        eprintln!(
            "HTTPS with a self-issued certificate; clients pin the CA {}",
            dir.join("ca.pem").display()
        );
        Some(files)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = ServerConfig {
        data_dir: a.data_dir.clone(),
        listen: a.listen,
        database: a.database.clone(),
        admin_token: admin_token(&a)?,
        keyring: a.keyring.clone(),
        max_upload: a.max_upload_mib << 20,
        poll_seconds: a.poll_seconds,
        ddi_gateway_token: a.ddi_gateway_token.clone(),
        tls,
        rollout_interval: std::time::Duration::try_from_secs_f64(a.rollout_seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .context("--rollout-seconds is a positive number")?,
    };
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
