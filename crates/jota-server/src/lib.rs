//! The jota fleet server: device registry, artifacts (bundles and `.swu` files verified on
//! upload, served with HTTP Range, ETag and If-Range so devices resume and CDNs cache),
//! deployments, staged rollouts, the device-facing poll and status API and hawkBit's DDI API,
//! over HTTPS. SQLite by default, PostgreSQL by URL; artifacts on disk or in S3.
//!
//! Devices provision themselves (a CSR, answered with a certificate from the fleet CA) and
//! then authenticate by that certificate (mTLS) or by token.
//!
//! Devices report telemetry and inventory; alerts are worked out from them.
//!
//! A server-rendered dashboard shows the fleet, its rollouts and each device.

pub mod alerts;
pub mod api;
pub mod artifacts;
pub mod dashboard;
pub mod ddi;
pub mod metrics;
pub mod provision;
pub mod rollout;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod window;

use std::net::SocketAddr;
use std::path::PathBuf;

/// What went wrong; each maps to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Malformed request (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Missing or wrong credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Known, and refused (403): a rejected provisioning request, a token where a
    /// certificate is required.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such thing (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// Over and done with: feedback for a closed DDI action (410, as hawkBit answers).
    #[error("gone: {0}")]
    Gone(String),
    /// Conflicts with the current state (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Body too large (413).
    #[error("too large: {0}")]
    TooLarge(String),
    /// An uploaded artifact is not acceptable (422).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The database (500).
    #[error("database: {0}")]
    Database(String),
    /// The artifact store (500).
    #[error("artifact storage: {0}")]
    Storage(String),
    /// Local I/O (500).
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

impl ServerError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> ServerError {
        ServerError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Data directory: the SQLite file, artifacts, keyring.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Database URL; default `sqlite://DATA_DIR/jota.db`.
    pub database: Option<String>,
    /// Admin API token.
    pub admin_token: String,
    /// Artifact storage: `s3://bucket[/prefix]`; default the directory `DATA_DIR/artifacts`.
    pub artifact_store: Option<String>,
    /// Trusted bundle signing keys (a directory of PEM files); default `DATA_DIR/keyring`.
    pub keyring: Option<PathBuf>,
    /// Largest artifact upload.
    pub max_upload: u64,
    /// Seconds a device waits between polls.
    pub poll_seconds: u64,
    /// Serve HTTPS with this certificate and key; none: plain HTTP.
    pub tls: Option<tls::TlsFiles>,
    /// hawkBit DDI gateway token (acts for any registered device); none: gateway auth off.
    pub ddi_gateway_token: Option<String>,
    /// How often rollouts are evaluated (gates, phases, assignments).
    pub rollout_interval: std::time::Duration,
    /// jota's device endpoints accept only a device certificate (mTLS), not a token.
    pub require_device_cert: bool,
    /// Telemetry older than this is deleted.
    pub telemetry_retention: std::time::Duration,
}

impl ServerConfig {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("jota.db").display()
            )
        })
    }
}

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Stops it (so does dropping it).
    pub shutdown: tokio::sync::oneshot::Sender<()>,
    /// Ends when it has stopped.
    pub task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

/// Opens the store, binds and serves until `shutdown` fires.
pub async fn start(config: ServerConfig) -> Result<Running, ServerError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::io(&config.data_dir, e))?;
    let store = store::Store::open(&config.database_url()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::io(std::path::Path::new(&config.listen.to_string()), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServerError::io(std::path::Path::new("<listener>"), e))?;
    let interval = config.rollout_interval;
    let evaluator = store.clone();
    let heartbeats = store.clone();
    let pruner = store.clone();
    let retention = config.telemetry_retention.as_secs() as i64;
    // The fleet CA signs device certificates, and the TLS listener checks them against it.
    let ca_dir = config.data_dir.join("tls");
    let device_ca = provision::DeviceCa::open(&ca_dir)?;
    let acceptor = config
        .tls
        .as_ref()
        .map(|f| tls::acceptor(f, Some(&ca_dir.join("ca.pem"))))
        .transpose()?;
    let app = api::router(api::AppState::new(config, store, device_ca)?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = async move {
            match acceptor {
                None => axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .map_err(|e| ServerError::io(std::path::Path::new("<server>"), e)),
                Some(acceptor) => serve_tls(listener, acceptor, app, rx).await,
            }
        };
        // Rollouts move on a timer on every replica; the store makes that safe.
        let tick = async move {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                t.tick().await;
                if let Err(e) = evaluator.evaluate_rollouts(store::now()).await {
                    tracing::error!("rollout evaluation: {e}");
                }
            }
        };
        let flush = async {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                t.tick().await;
                if let Err(e) = heartbeats.flush_heartbeats().await {
                    tracing::error!("writing heartbeats: {e}");
                }
            }
        };
        let prune = async move {
            let mut t = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                t.tick().await;
                match pruner.prune_telemetry(store::now() - retention).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(reports = n, "old telemetry deleted"),
                    Err(e) => tracing::error!("deleting old telemetry: {e}"),
                }
            }
        };
        let r = tokio::select! {
            r = serve => r,
            _ = tick => Ok(()),
            _ = flush => Ok(()),
            _ = prune => Ok(()),
        };
        // What was buffered is written before a clean stop.
        heartbeats.flush_heartbeats().await?;
        r
    });
    tracing::info!(%addr, "jota server listening");
    Ok(Running {
        addr,
        shutdown: tx,
        task,
    })
}

/// Accepts TLS connections until `stop` fires; each is served by `app` on its own task (a
/// failed handshake is logged and dropped).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), ServerError> {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait a little instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(30),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The sha256 of a verified client certificate identifies the device (the
            // handlers look it up); rustls has checked that the fleet CA issued it.
            let client = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| {
                    provision::ClientCert(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(c)))
                });
            let svc = tower::ServiceExt::map_request(
                app,
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(c) = &client {
                        req.extensions_mut().insert(c.clone());
                    }
                    req
                },
            );
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            if let Err(e) =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

/// sha256 of a token, as stored (tokens themselves are never stored).
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A new random token or id: `bytes` random bytes as hex.
pub fn random_hex(bytes: usize) -> Result<String, ServerError> {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b)
        .map_err(|e| ServerError::io(std::path::Path::new("<random>"), std::io::Error::other(e)))?;
    Ok(hex::encode(b))
}
