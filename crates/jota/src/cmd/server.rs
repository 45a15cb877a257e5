//! `jota server`: the fleet server.

use anyhow::{bail, Context, Result};
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
    /// Serve plain HTTP. Required for now: HTTPS and device mTLS are not built yet.
    #[arg(long)]
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
    if !a.insecure_http {
        bail!("HTTPS is not built yet; pass --insecure-http to serve plain HTTP (on a trusted network or behind a TLS proxy)");
    }
    let config = ServerConfig {
        data_dir: a.data_dir.clone(),
        listen: a.listen,
        database: a.database.clone(),
        admin_token: admin_token(&a)?,
        keyring: a.keyring.clone(),
        max_upload: a.max_upload_mib << 20,
        poll_seconds: a.poll_seconds,
        ddi_gateway_token: a.ddi_gateway_token.clone(),
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
        println!("listening on http://{addr}");
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
