//! The HTTP API: admin endpoints behind the admin token, device endpoints behind each
//! device's token. Every error is JSON `{"error": "..."}` with a 4xx/5xx status, and a
//! rejected request changes nothing.

use crate::provision::{
    ClientCert, Credential, DeviceCa, Outcome, ProvisionReply, ProvisionRequest,
};
use crate::rollout::{NewRollout, RolloutRow, RolloutStatus};
use crate::store::{now, ArtifactRow, DeploymentRow, DeviceRow, Store};
use crate::{artifacts, random_hex, token_hash, ServerConfig, ServerError};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// Shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    store: Store,
    artifacts: PathBuf,
    artifact_store: artifacts::ArtifactStore,
    keyring: PathBuf,
    admin_hash: String,
    counters: crate::metrics::Counters,
    device_ca: DeviceCa,
}

impl AppState {
    /// State over an opened store.
    pub fn new(
        config: ServerConfig,
        store: Store,
        device_ca: DeviceCa,
    ) -> Result<AppState, ServerError> {
        if config.admin_token.len() < 16 {
            return Err(ServerError::BadRequest(
                "the admin token must be at least 16 characters".into(),
            ));
        }
        let artifacts = config.data_dir.join("artifacts");
        let keyring = config
            .keyring
            .clone()
            .unwrap_or_else(|| config.data_dir.join("keyring"));
        let admin_hash = token_hash(&config.admin_token);
        let artifact_store =
            artifacts::ArtifactStore::open(config.artifact_store.as_deref(), &artifacts)?;
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                store,
                artifacts,
                artifact_store,
                keyring,
                admin_hash,
                counters: Default::default(),
                device_ca,
            }),
        })
    }
}

impl AppState {
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }
    pub(crate) fn config(&self) -> &ServerConfig {
        &self.inner.config
    }
    pub(crate) fn artifact_store(&self) -> &artifacts::ArtifactStore {
        &self.inner.artifact_store
    }
    /// Whether `token` is the admin token (compared by hash, as stored).
    pub(crate) fn is_admin_token(&self, token: &str) -> bool {
        token_hash(token) == self.inner.admin_hash
    }
    pub(crate) fn counters(&self) -> &crate::metrics::Counters {
        &self.inner.counters
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServerError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServerError::Forbidden(_) => StatusCode::FORBIDDEN,
            ServerError::NotFound(_) => StatusCode::NOT_FOUND,
            ServerError::Conflict(_) => StatusCode::CONFLICT,
            ServerError::Gone(_) => StatusCode::GONE,
            ServerError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServerError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ServerError::Database(_) | ServerError::Storage(_) | ServerError::Io { .. } => {
                tracing::error!("{self}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

type Res<T> = Result<T, ServerError>;

fn bearer(h: &HeaderMap) -> Res<&str> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ServerError::Unauthorized("no `Authorization: Bearer TOKEN` header".into()))
}

fn admin(s: &AppState, h: &HeaderMap) -> Res<()> {
    if !s.is_admin_token(bearer(h)?) {
        return Err(ServerError::Unauthorized("not the admin token".into()));
    }
    Ok(())
}

/// How a device authenticates on this request: its certificate (mTLS) when it presented
/// one, else its token — unless the server requires certificates.
fn credential(s: &AppState, h: &HeaderMap, cert: Option<Extension<ClientCert>>) -> Res<Credential> {
    if let Some(Extension(c)) = cert {
        return Ok(Credential::Cert(c.0));
    }
    let token = bearer(h)?;
    if s.inner.config.require_device_cert {
        return Err(ServerError::Forbidden(
            "this server requires a device certificate (mTLS); provision the device".into(),
        ));
    }
    Ok(Credential::Token(token_hash(token)))
}

fn unknown(cred: &Credential) -> ServerError {
    ServerError::Unauthorized(match cred {
        Credential::Token(_) => "unknown device token".into(),
        Credential::Cert(_) => {
            "this certificate is not (or no longer) a device's: provision the device again".into()
        }
    })
}

async fn device(
    s: &AppState,
    h: &HeaderMap,
    cert: Option<Extension<ClientCert>>,
) -> Res<DeviceRow> {
    let cred = credential(s, h, cert)?;
    s.inner
        .store
        .device_by(&cred)
        .await?
        .ok_or_else(|| unknown(&cred))
}

/// The body of a JSON request, or the 400/413 that names what is wrong with it.
pub(crate) fn json<T>(r: Result<Json<T>, JsonRejection>) -> Res<T> {
    r.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ServerError::TooLarge("request bodies are limited to 64 KiB".into())
        } else {
            ServerError::BadRequest(e.body_text())
        }
    })
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/artifacts",
            post(upload)
                .get(list_artifacts)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/devices", post(add_device).get(list_devices))
        .route(
            "/api/v1/devices/batch",
            post(add_devices).layer(DefaultBodyLimit::max(8 << 20)),
        )
        .route("/api/v1/deployments", post(deploy).get(list_deployments))
        .route("/api/v1/deployments/{id}", get(show_deployment))
        .route("/api/v1/deployments/{id}/cancel", post(cancel_deployment))
        .route("/api/v1/rollouts", post(create_rollout).get(list_rollouts))
        .route("/api/v1/rollouts/{id}", get(show_rollout))
        .route("/api/v1/rollouts/{id}/{action}", post(control_rollout))
        .route("/api/v1/devices/provision", post(provision))
        .route("/api/v1/devices/{id}", get(show_device))
        .route("/api/v1/devices/{id}/tags", axum::routing::put(set_tags))
        .route("/api/v1/devices/{id}/telemetry", get(device_telemetry))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/dashboard/links", post(dashboard_link))
        .route("/api/v1/device/telemetry", post(telemetry))
        // The seed's ota-telemetry.sh posts here (with X-Device-ID and its certificate).
        .route("/api/v1/telemetry", post(telemetry))
        .route("/api/v1/device/inventory", axum::routing::put(inventory))
        .route("/api/v1/provisioning", get(list_provisioning))
        .route(
            "/api/v1/provisioning/{id}/{decision}",
            post(decide_provisioning),
        )
        .route(
            "/api/v1/provision-tokens",
            post(add_provision_token).get(list_provision_tokens),
        )
        .route(
            "/api/v1/provision-tokens/{id}/revoke",
            post(revoke_provision_token),
        )
        .route("/api/v1/device/poll", get(poll))
        .route("/api/v1/device/status", post(status))
        .route("/artifacts/{id}", get(download))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .merge(crate::ddi::routes())
        .merge(crate::dashboard::routes())
        .layer(DefaultBodyLimit::max(64 << 10))
        .with_state(state)
}

async fn upload(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Body,
) -> Res<(StatusCode, Json<ArtifactRow>)> {
    admin(&s, &h)?;
    let a = artifacts::receive(
        &s.inner.artifact_store,
        &s.inner.artifacts,
        &s.inner.keyring,
        body,
        s.inner.config.max_upload,
    )
    .await?;
    s.inner.store.add_artifact(&a).await?;
    tracing::info!(artifact = %a.id, version = %a.version, bytes = a.size, "artifact uploaded");
    Ok((StatusCode::CREATED, Json(a)))
}

async fn list_artifacts(State(s): State<AppState>, h: HeaderMap) -> Res<Json<Vec<ArtifactRow>>> {
    admin(&s, &h)?;
    Ok(Json(s.inner.store.artifacts().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: String,
    #[serde(default)]
    hardware: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Serialize)]
struct NewDeviceReply {
    id: String,
    token: String,
}

fn check_id(id: &str) -> Res<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(ServerError::BadRequest(format!(
            "device id `{id}`: 1-64 letters, digits, `-`, `_`, `.`"
        )));
    }
    Ok(())
}

async fn add_device(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<NewDevice>, JsonRejection>,
) -> Res<(StatusCode, Json<NewDeviceReply>)> {
    admin(&s, &h)?;
    let d = json(body)?;
    check_id(&d.id)?;
    let token = random_hex(32)?;
    s.inner
        .store
        .add_device(&d.id, &token_hash(&token), &d.hardware, &d.tags)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NewDeviceReply { id: d.id, token }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevices {
    devices: Vec<NewDevice>,
}

/// Most devices registered by one batch request.
const MAX_BATCH: usize = 10_000;

async fn add_devices(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<NewDevices>, JsonRejection>,
) -> Res<(StatusCode, Json<Vec<NewDeviceReply>>)> {
    admin(&s, &h)?;
    let b = json(body)?;
    if b.devices.is_empty() || b.devices.len() > MAX_BATCH {
        return Err(ServerError::BadRequest(format!(
            "a batch registers 1 to {MAX_BATCH} devices"
        )));
    }
    let mut rows = Vec::with_capacity(b.devices.len());
    let mut out = Vec::with_capacity(b.devices.len());
    for d in b.devices {
        check_id(&d.id)?;
        let token = random_hex(32)?;
        rows.push((d.id.clone(), token_hash(&token), d.hardware, d.tags));
        out.push(NewDeviceReply { id: d.id, token });
    }
    s.inner.store.add_devices(&rows).await?;
    Ok((StatusCode::CREATED, Json(out)))
}

#[derive(Serialize)]
struct DeviceView {
    #[serde(flatten)]
    device: DeviceRow,
    deployment: Option<DeploymentRow>,
}

/// Which devices a listing shows: every filter given must match.
#[derive(Default)]
struct DeviceQuery {
    /// Hardware starts with this.
    hardware: Option<String>,
    /// Has every one of these tags.
    tags: Vec<String>,
    /// Runs this version (`none`: has not reported one).
    version: Option<String>,
    /// Its active deployment is in this state (`idle`: it has none).
    state: Option<String>,
}

impl DeviceQuery {
    fn parse(pairs: Vec<(String, String)>) -> Res<DeviceQuery> {
        let mut q = DeviceQuery::default();
        for (k, v) in pairs {
            match k.as_str() {
                "hardware" => q.hardware = Some(v),
                "tag" => q.tags.push(v),
                "version" => q.version = Some(v),
                "state" => q.state = Some(v),
                other => {
                    return Err(ServerError::BadRequest(format!(
                        "unknown filter `{other}` (hardware, tag, version, state)"
                    )))
                }
            }
        }
        Ok(q)
    }
    fn matches(&self, d: &DeviceRow, dep: Option<&DeploymentRow>) -> bool {
        self.hardware
            .as_ref()
            .is_none_or(|h| d.hardware.starts_with(h.as_str()))
            && self.tags.iter().all(|t| d.tags.contains(t))
            && self.version.as_ref().is_none_or(|v| match &d.version {
                None => v == "none",
                Some(x) => x == v,
            })
            && self.state.as_ref().is_none_or(|st| match dep {
                None => st == "idle",
                Some(x) => x.state == *st,
            })
    }
}

async fn list_devices(
    State(s): State<AppState>,
    h: HeaderMap,
    Query(filters): Query<Vec<(String, String)>>,
) -> Res<Json<Vec<DeviceView>>> {
    admin(&s, &h)?;
    let filter = DeviceQuery::parse(filters)?;
    // Two queries, not one per device.
    let mut active: std::collections::HashMap<String, DeploymentRow> = s
        .inner
        .store
        .active_deployments()
        .await?
        .into_iter()
        .map(|d| (d.device_id.clone(), d))
        .collect();
    let out = s
        .inner
        .store
        .devices()
        .await?
        .into_iter()
        .filter_map(|d| {
            let deployment = active.remove(&d.id);
            filter
                .matches(&d, deployment.as_ref())
                .then_some(DeviceView {
                    deployment,
                    device: d,
                })
        })
        .collect();
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDeployment {
    artifact: String,
    device: String,
}

async fn deploy(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<NewDeployment>, JsonRejection>,
) -> Res<(StatusCode, Json<DeploymentRow>)> {
    admin(&s, &h)?;
    let d = json(body)?;
    let id = random_hex(8)?;
    let row = s.inner.store.deploy(&id, &d.device, &d.artifact).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

async fn list_deployments(
    State(s): State<AppState>,
    h: HeaderMap,
) -> Res<Json<Vec<DeploymentRow>>> {
    admin(&s, &h)?;
    Ok(Json(s.inner.store.deployments().await?))
}

#[derive(Serialize)]
struct Event {
    state: String,
    progress: i64,
    message: String,
    at: i64,
}

async fn cancel_deployment(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Res<Json<DeploymentRow>> {
    admin(&s, &h)?;
    let d = s.inner.store.cancel(&id).await?;
    tracing::info!(deployment = %id, state = %d.state, "cancel asked");
    Ok(Json(d))
}

async fn show_deployment(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Res<Json<serde_json::Value>> {
    admin(&s, &h)?;
    let d = s
        .inner
        .store
        .deployment(&id)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("no deployment `{id}`")))?;
    let events: Vec<Event> = s
        .inner
        .store
        .events(&id)
        .await?
        .into_iter()
        .map(|(state, progress, message, at)| Event {
            state,
            progress,
            message,
            at,
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "deployment": d, "events": events }),
    ))
}

async fn create_rollout(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<NewRollout>, JsonRejection>,
) -> Res<(StatusCode, Json<RolloutStatus>)> {
    admin(&s, &h)?;
    let r = json(body)?;
    let id = random_hex(8)?;
    let st = s.inner.store.create_rollout(&id, &r, now()).await?;
    tracing::info!(rollout = %id, artifact = %r.artifact, devices = st.total.devices, "rollout created");
    Ok((StatusCode::CREATED, Json(st)))
}

async fn list_rollouts(State(s): State<AppState>, h: HeaderMap) -> Res<Json<Vec<RolloutRow>>> {
    admin(&s, &h)?;
    Ok(Json(s.inner.store.rollouts().await?))
}

async fn show_rollout(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Res<Json<RolloutStatus>> {
    admin(&s, &h)?;
    s.inner
        .store
        .rollout_status(&id)
        .await?
        .map(Json)
        .ok_or_else(|| ServerError::NotFound(format!("no rollout `{id}`")))
}

/// Prometheus metrics, behind the admin token (`authorization: credentials` in a scrape job).
async fn metrics(State(s): State<AppState>, h: HeaderMap) -> Res<Response> {
    admin(&s, &h)?;
    let text = crate::metrics::render(
        &s.inner.store,
        &s.inner.counters,
        s.inner.config.poll_seconds,
    )
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn control_rollout(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Res<Json<RolloutStatus>> {
    admin(&s, &h)?;
    let st = s.inner.store.control_rollout(&id, &action, now()).await?;
    tracing::info!(rollout = %id, %action, state = %st.rollout.state, "rollout control");
    Ok(Json(st))
}

#[derive(Deserialize)]
struct PollQuery {
    version: Option<String>,
}

/// What a device gets when it polls.
#[derive(Serialize, Deserialize, Debug)]
pub struct PollReply {
    /// Seconds until the next poll.
    pub poll_seconds: u64,
    /// The update to install, if any.
    pub deployment: Option<Assignment>,
}

/// An update assigned to a device.
#[derive(Serialize, Deserialize, Debug)]
pub struct Assignment {
    /// Deployment id (report status against it).
    pub id: String,
    /// Release version.
    pub version: String,
    /// Bundle URL, relative to the server.
    pub url: String,
    /// Bundle size (a full download).
    pub size: i64,
    /// Bundle sha256.
    pub sha256: String,
    /// The bundle's manifest sha256.
    pub manifest_sha256: String,
    /// What a device on the bundle's base downloads by chunked delta.
    pub chunked_bytes: i64,
    /// The operator asked to cancel it: stop if the device still can (before the switch),
    /// and report `failure` with a message saying so, or finish and report as usual.
    #[serde(default)]
    pub cancel: bool,
    /// Whether to install once downloaded; `false`: download and hold.
    #[serde(default = "yes")]
    pub install: bool,
    /// Why the install is held (download-only tag, maintenance window).
    #[serde(default)]
    pub hold_reason: String,
}

fn yes() -> bool {
    true
}

/// The tag that makes a device download deployments but not install them until it goes.
pub const DOWNLOAD_ONLY: &str = "install=download-only";

async fn poll(
    State(s): State<AppState>,
    h: HeaderMap,
    cert: Option<Extension<ClientCert>>,
    Query(q): Query<PollQuery>,
) -> Res<Json<PollReply>> {
    if let Some(v) = &q.version {
        if v.len() > 128 {
            return Err(ServerError::BadRequest(
                "version is over 128 characters".into(),
            ));
        }
    }
    let cred = credential(&s, &h, cert)?;
    let view = s
        .inner
        .store
        .poll_view(&cred)
        .await?
        .ok_or_else(|| unknown(&cred))?;
    s.inner
        .store
        .seen(&view.device, q.version.as_deref())
        .await?;
    let mut reply = PollReply {
        poll_seconds: s.inner.config.poll_seconds,
        deployment: None,
    };
    if let Some(dep) = view.deployment {
        // A paused or halted rollout holds back what its devices have not started.
        // So does a maintenance window the device is outside of.
        let held = dep.state == "assigned"
            && ((dep.rollout_id.is_some() && dep.rollout_state.as_deref() != Some("running"))
                || !crate::window::open(&view.device.tags, now()));
        // A .swu is for DDI clients (SWUpdate); a jota agent is not offered one.
        if !held && dep.artifact.kind == "jota" {
            let a = dep.artifact;
            // A started deployment is downloaded whenever the device asks; installing it
            // waits for the window and for a download-only tag to go (the server's clock
            // decides, so a device with a wrong clock still keeps its window).
            let hold_reason = if view.device.tags.iter().any(|t| t == DOWNLOAD_ONLY) {
                format!("download only (tag `{DOWNLOAD_ONLY}`)")
            } else if !crate::window::open(&view.device.tags, now()) {
                "outside the maintenance window".to_string()
            } else {
                String::new()
            };
            reply.deployment = Some(Assignment {
                install: hold_reason.is_empty(),
                hold_reason,
                id: dep.id,
                version: a.version,
                url: format!("/artifacts/{}", a.id),
                size: a.size,
                sha256: a.sha256,
                manifest_sha256: a.manifest_sha256,
                chunked_bytes: a.chunked_bytes,
                cancel: dep.cancel_requested,
            });
        }
    }
    Ok(Json(reply))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusReport {
    deployment: String,
    state: String,
    #[serde(default)]
    progress: i64,
    #[serde(default)]
    downloaded_bytes: i64,
    #[serde(default)]
    message: String,
}

async fn status(
    State(s): State<AppState>,
    h: HeaderMap,
    cert: Option<Extension<ClientCert>>,
    body: Result<Json<StatusReport>, JsonRejection>,
) -> Res<Json<DeploymentRow>> {
    let d = device(&s, &h, cert).await?;
    let r = json(body)?;
    crate::metrics::Counters::inc(&s.inner.counters.reports);
    if r.message.len() > 16 << 10 {
        return Err(ServerError::BadRequest("message is over 16 KiB".into()));
    }
    let row = s
        .inner
        .store
        .report(
            &d.id,
            &r.deployment,
            &r.state,
            r.progress,
            r.downloaded_bytes,
            &r.message,
        )
        .await?;
    Ok(Json(row))
}

async fn download(
    State(s): State<AppState>,
    h: HeaderMap,
    cert: Option<Extension<ClientCert>>,
    Path(id): Path<String>,
) -> Res<Response> {
    if admin(&s, &h).is_err() {
        device(&s, &h, cert).await?;
    }
    let a = s
        .inner
        .store
        .artifact(&id)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("no artifact `{id}`")))?;
    artifacts::serve(&s.inner.artifact_store, &a.id, a.size as u64, &a.sha256, &h).await
}

/// `POST /api/v1/devices/provision`: a device asks for its certificate (see
/// [`crate::provision`]). 201 with credentials, 202 while pending, 403 when rejected.
async fn provision(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<ProvisionRequest>, JsonRejection>,
) -> Res<(StatusCode, Json<ProvisionReply>)> {
    let r = json(body)?;
    for (name, v) in [
        ("serial", &r.serial),
        ("mac", &r.mac),
        ("hardware", &r.hardware),
    ] {
        if v.len() > 128 || v.chars().any(char::is_control) {
            return Err(ServerError::BadRequest(format!(
                "{name}: at most 128 printable characters"
            )));
        }
    }
    let derived = (!r.serial.is_empty() && !r.mac.is_empty())
        .then(|| crate::provision::device_id(&r.serial, &r.mac));
    let id = match (&r.id, derived) {
        (Some(id), Some(d)) if *id != d => {
            return Err(ServerError::BadRequest(format!(
                "id `{id}` is not sha256(serial-mac)[:16] = `{d}`"
            )))
        }
        (_, Some(d)) => d,
        (Some(id), None) => id.clone(),
        (None, None) => {
            return Err(ServerError::BadRequest(
                "give serial and mac (the id is derived from them) or id".into(),
            ))
        }
    };
    check_id(&id)?;
    let csr = crate::provision::parse_csr(&r.csr)?;
    // A bearer token is optional here: a provisioning token, or the device's own.
    let token = bearer(&h).ok();
    let poll_seconds = s.inner.config.poll_seconds;
    match s
        .inner
        .store
        .provision(&s.inner.device_ca, &id, &r, csr, token)
        .await?
    {
        Outcome::Accepted(issued, token) => {
            tracing::info!(device = %id, "device provisioned");
            Ok((
                StatusCode::CREATED,
                Json(ProvisionReply {
                    id,
                    state: "accepted".into(),
                    certificate: Some(issued.chain_pem),
                    ca: Some(s.inner.device_ca.pem()),
                    token: Some(token),
                    poll_seconds,
                }),
            ))
        }
        Outcome::Pending => {
            tracing::info!(device = %id, "provisioning request waits for an operator");
            Ok((
                StatusCode::ACCEPTED,
                Json(ProvisionReply {
                    id,
                    state: "pending".into(),
                    certificate: None,
                    ca: None,
                    token: None,
                    poll_seconds,
                }),
            ))
        }
    }
}

async fn list_provisioning(
    State(s): State<AppState>,
    h: HeaderMap,
) -> Res<Json<Vec<crate::provision::PendingDevice>>> {
    admin(&s, &h)?;
    Ok(Json(s.inner.store.provision_requests().await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    tags: Vec<String>,
}

async fn decide_provisioning(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((id, decision)): Path<(String, String)>,
    body: Option<Json<Decision>>,
) -> Res<Json<crate::provision::PendingDevice>> {
    admin(&s, &h)?;
    let accept = match decision.as_str() {
        "accept" => true,
        "reject" => false,
        other => {
            return Err(ServerError::NotFound(format!(
                "`{other}`: a request is accepted or rejected"
            )))
        }
    };
    let tags = body.map(|Json(d)| d.tags).unwrap_or_default();
    let p = s.inner.store.decide_provision(&id, accept, &tags).await?;
    tracing::info!(device = %id, %decision, "provisioning decided");
    Ok(Json(p))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProvisionToken {
    #[serde(default)]
    hardware: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default = "one_use")]
    uses: i64,
    #[serde(default)]
    expires_seconds: Option<i64>,
}

fn one_use() -> i64 {
    1
}

async fn add_provision_token(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Result<Json<NewProvisionToken>, JsonRejection>,
) -> Res<(StatusCode, Json<crate::provision::ProvisionToken>)> {
    admin(&s, &h)?;
    let t = json(body)?;
    if t.expires_seconds.is_some_and(|e| e < 1) {
        return Err(ServerError::BadRequest(
            "expires_seconds must be positive".into(),
        ));
    }
    let t = s
        .inner
        .store
        .add_provision_token(&t.hardware, &t.tags, t.uses, t.expires_seconds)
        .await?;
    Ok((StatusCode::CREATED, Json(t)))
}

async fn list_provision_tokens(
    State(s): State<AppState>,
    h: HeaderMap,
) -> Res<Json<Vec<crate::provision::ProvisionToken>>> {
    admin(&s, &h)?;
    Ok(Json(s.inner.store.provision_tokens().await?))
}

async fn revoke_provision_token(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Res<StatusCode> {
    admin(&s, &h)?;
    s.inner.store.revoke_provision_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/device/telemetry` (and the seed's `/api/v1/telemetry`): a report of the
/// authenticated device. A `device_id` in the body or an `X-Device-ID` header must name it.
async fn telemetry(
    State(s): State<AppState>,
    h: HeaderMap,
    cert: Option<Extension<ClientCert>>,
    body: Result<Json<crate::telemetry::Telemetry>, JsonRejection>,
) -> Res<StatusCode> {
    let d = device(&s, &h, cert).await?;
    let t = json(body)?;
    t.check()?;
    let header = h.get("x-device-id").and_then(|v| v.to_str().ok());
    for claimed in [t.device_id.as_deref(), header].into_iter().flatten() {
        if claimed != d.id {
            return Err(ServerError::Forbidden(format!(
                "telemetry for `{claimed}` from device `{}`",
                d.id
            )));
        }
    }
    crate::metrics::Counters::inc(&s.inner.counters.telemetry);
    s.inner.store.add_telemetry(&d.id, &t, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/device/inventory`: the device's version report (seed §9.3), a JSON object
/// that replaces the previous one.
async fn inventory(
    State(s): State<AppState>,
    h: HeaderMap,
    cert: Option<Extension<ClientCert>>,
    body: Result<Json<serde_json::Map<String, serde_json::Value>>, JsonRejection>,
) -> Res<StatusCode> {
    let d = device(&s, &h, cert).await?;
    let inv = json(body)?;
    if let Some(v) = inv.get("uptime_seconds") {
        if !v.is_u64() {
            return Err(ServerError::BadRequest(
                "inventory: uptime_seconds is a whole number of seconds".into(),
            ));
        }
    }
    s.inner.store.set_inventory(&d.id, &inv, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A device with everything known about it.
#[derive(Serialize)]
pub(crate) struct DeviceDetail {
    #[serde(flatten)]
    pub(crate) device: DeviceRow,
    pub(crate) inventory: serde_json::Value,
    pub(crate) inventory_at: Option<i64>,
    /// The newest report, if any.
    pub(crate) telemetry: Option<crate::telemetry::TelemetryRow>,
    /// Boots in the last day.
    pub(crate) boots: Vec<i64>,
    /// Its deployments, newest first (at most 20).
    pub(crate) deployments: Vec<DeploymentRow>,
    /// Its alerts now.
    pub(crate) alerts: Vec<crate::alerts::Alert>,
}

/// Everything known about device `id` (404 when there is none): the API's device view and
/// the dashboard's device page.
pub(crate) async fn device_detail(s: &AppState, id: &str) -> Res<DeviceDetail> {
    let store = &s.inner.store;
    store.flush_heartbeats().await?;
    let device = store
        .device(id)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("no device `{id}`")))?;
    let (inventory, inventory_at) = store.inventory(id).await?;
    let mut deployments = store.deployments_of(id).await?;
    deployments.truncate(20);
    let at = now();
    Ok(DeviceDetail {
        inventory,
        inventory_at,
        telemetry: store.telemetry_of(id, 1).await?.pop(),
        boots: store.boots_of(id, at - 86400).await?,
        deployments,
        alerts: store
            .alerts(at, s.inner.config.poll_seconds)
            .await?
            .into_iter()
            .filter(|a| a.device_id.as_deref() == Some(id))
            .collect(),
        device,
    })
}

async fn show_device(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Res<Json<DeviceDetail>> {
    admin(&s, &h)?;
    Ok(Json(device_detail(&s, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    tags: Vec<String>,
}

/// `PUT /api/v1/devices/{id}/tags`: replaces the device's tags (rollout filters, `window=`,
/// `install=download-only`).
async fn set_tags(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TagsBody>, JsonRejection>,
) -> Res<Json<DeviceDetail>> {
    admin(&s, &h)?;
    let b = json(body)?;
    if b.tags.len() > 64 || b.tags.iter().any(|t| t.is_empty() || t.len() > 128) {
        return Err(ServerError::BadRequest(
            "at most 64 tags of 1-128 characters".into(),
        ));
    }
    if !s.inner.store.set_tags(&id, &b.tags).await? {
        return Err(ServerError::NotFound(format!("no device `{id}`")));
    }
    Ok(Json(device_detail(&s, &id).await?))
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<i64>,
}

async fn device_telemetry(
    State(s): State<AppState>,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Res<Json<Vec<crate::telemetry::TelemetryRow>>> {
    admin(&s, &h)?;
    if s.inner.store.device(&id).await?.is_none() {
        return Err(ServerError::NotFound(format!("no device `{id}`")));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ServerError::BadRequest("limit: 1 to 10000".into()));
    }
    Ok(Json(s.inner.store.telemetry_of(&id, limit).await?))
}

async fn alerts(State(s): State<AppState>, h: HeaderMap) -> Res<Json<Vec<crate::alerts::Alert>>> {
    admin(&s, &h)?;
    Ok(Json(
        s.inner
            .store
            .alerts(now(), s.inner.config.poll_seconds)
            .await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LinkRequest {
    #[serde(default)]
    next: Option<String>,
}

/// `POST /api/v1/dashboard/links`: a one-time sign-in link to the dashboard (10 minutes).
async fn dashboard_link(
    State(s): State<AppState>,
    h: HeaderMap,
    body: Option<Json<LinkRequest>>,
) -> Res<(StatusCode, Json<serde_json::Value>)> {
    admin(&s, &h)?;
    let next = body
        .and_then(|Json(b)| b.next)
        .unwrap_or_else(|| "/dashboard".into());
    crate::dashboard::check_next(&next)?;
    let secret = s.inner.store.add_session("link", &next, now()).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            serde_json::json!({ "path": format!("/dashboard/login?once={secret}"), "expires_seconds": 600 }),
        ),
    ))
}
