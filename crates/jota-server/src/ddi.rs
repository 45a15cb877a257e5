//! hawkBit's Direct Device Integration (DDI) API, so that devices running SWUpdate's
//! suricatta (or any other hawkBit client) get and report deployments from jota as they
//! would from hawkBit. Paths are hawkBit's, `/{tenant}/controller/v1/{controllerId}/…`
//! (any tenant; the controller id is the device id); clients authenticate with
//! `Authorization: TargetToken T` (the device's own token) or `GatewayToken T` (the
//! server's `--ddi-gateway-token`, acting for any registered device).
//!
//! DDI action ids are numbers; jota's deployment ids are not, so a deployment's action id is
//! derived from its id (31 bits of its sha256) and looked up among the device's deployments.

use crate::api::AppState;
use crate::store::{ArtifactRow, DeploymentRow, DeviceRow};
use crate::{artifacts, token_hash, ServerError};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};

type Res<T> = Result<T, ServerError>;

/// The DDI routes (merged into the server's router).
pub fn routes() -> Router<AppState> {
    const C: &str = "/{tenant}/controller/v1/{controller}";
    Router::new()
        .route(C, get(base))
        .route(
            &format!("{C}/deploymentBase/{{action}}"),
            get(deployment_base),
        )
        .route(
            &format!("{C}/deploymentBase/{{action}}/feedback"),
            post(feedback),
        )
        .route(
            &format!("{C}/installedBase/{{action}}"),
            get(installed_base),
        )
        .route(&format!("{C}/cancelAction/{{action}}"), get(cancel_action))
        .route(
            &format!("{C}/cancelAction/{{action}}/feedback"),
            post(cancel_feedback),
        )
        .route(&format!("{C}/configData"), put(config_data))
        .route(
            &format!("{C}/softwaremodules/{{module}}/artifacts/{{file}}"),
            get(download),
        )
}

/// The DDI action id of a deployment.
pub fn action_id(deployment_id: &str) -> u32 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(deployment_id.as_bytes());
    (u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff).max(1)
}

/// The device a request acts for, by its `TargetToken` or the `GatewayToken`.
async fn controller(s: &AppState, h: &HeaderMap, id: &str) -> Res<DeviceRow> {
    crate::metrics::Counters::inc(&s.counters().ddi);
    let auth = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (scheme, token) = auth.split_once(' ').unwrap_or(("", ""));
    let token = token.trim();
    match scheme {
        "TargetToken" if !token.is_empty() => {
            let d = s
                .store()
                .device_by_token(&token_hash(token))
                .await?
                .ok_or_else(|| ServerError::Unauthorized("unknown target token".into()))?;
            if d.id != id {
                return Err(ServerError::Unauthorized(format!(
                    "the target token is not controller `{id}`'s"
                )));
            }
            Ok(d)
        }
        "GatewayToken" if !token.is_empty() => {
            let Some(g) = s.config().ddi_gateway_token.as_deref() else {
                return Err(ServerError::Unauthorized(
                    "gateway tokens are not enabled on this server".into(),
                ));
            };
            // Hashes compared, so the comparison takes the same time wherever they differ.
            if token_hash(token) != token_hash(g) {
                return Err(ServerError::Unauthorized("not the gateway token".into()));
            }
            s.store()
                .device(id)
                .await?
                .ok_or_else(|| ServerError::NotFound(format!("no controller `{id}` is registered")))
        }
        _ => Err(ServerError::Unauthorized(
            "no `Authorization: TargetToken T` or `GatewayToken T` header".into(),
        )),
    }
}

/// `scheme://host` of the request, for the absolute links DDI clients follow.
fn origin(s: &AppState, h: &HeaderMap) -> Res<String> {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    {
        return Err(ServerError::BadRequest(format!(
            "Host `{host}` is not a host"
        )));
    }
    let https = s.config().tls.is_some()
        || h.get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Ok(format!("{}://{host}", if https { "https" } else { "http" }))
}

fn me(s: &AppState, h: &HeaderMap, tenant: &str, controller: &str) -> Res<String> {
    Ok(format!(
        "{}/{tenant}/controller/v1/{controller}",
        origin(s, h)?
    ))
}

/// `HH:MM:SS`, as DDI writes polling intervals.
fn hms(secs: u64) -> String {
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Whether a deployment is handed out now: not one a paused or halted rollout holds back,
/// nor an unstarted one outside the device's maintenance window.
async fn offered(s: &AppState, dev: &DeviceRow, d: &DeploymentRow) -> Res<bool> {
    if d.state == "assigned" && !crate::window::open(&dev.tags, crate::store::now()) {
        return Ok(false);
    }
    match &d.rollout_id {
        Some(r) if d.state == "assigned" => Ok(s
            .store()
            .rollout(r)
            .await?
            .is_some_and(|r| r.state == "running")),
        _ => Ok(true),
    }
}

async fn base(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((tenant, controller_id)): Path<(String, String)>,
) -> Res<Json<Value>> {
    let d = controller(&s, &h, &controller_id).await?;
    s.store().seen(&d, None).await?;
    let me = me(&s, &h, &tenant, &controller_id)?;
    let deps = s.store().deployments_of(&d.id).await?;
    let mut links = Map::new();
    if let Some(dep) = deps.iter().find(|x| x.active) {
        if dep.cancel_requested {
            links.insert(
                "cancelAction".into(),
                json!({ "href": format!("{me}/cancelAction/{}", action_id(&dep.id)) }),
            );
        } else if offered(&s, &d, dep).await? {
            // `c` changes with the action's state, so caches between never serve a stale one.
            links.insert(
                "deploymentBase".into(),
                json!({ "href": format!("{me}/deploymentBase/{}?c=-{}", action_id(&dep.id), action_id(&dep.state)) }),
            );
        }
    }
    if let Some(done) = deps.iter().find(|x| x.state == "success") {
        links.insert(
            "installedBase".into(),
            json!({ "href": format!("{me}/installedBase/{}", action_id(&done.id)) }),
        );
    }
    if s.store()
        .attributes(&d.id)
        .await?
        .as_object()
        .is_none_or(|m| m.is_empty())
    {
        links.insert(
            "configData".into(),
            json!({ "href": format!("{me}/configData") }),
        );
    }
    Ok(Json(json!({
        "config": { "polling": { "sleep": hms(s.config().poll_seconds) } },
        "_links": links,
    })))
}

/// The device's deployment whose action id is `action`.
async fn action(s: &AppState, d: &DeviceRow, action: &str) -> Res<DeploymentRow> {
    let n: u32 = action
        .parse()
        .map_err(|_| ServerError::BadRequest(format!("action id `{action}` is not a number")))?;
    s.store()
        .deployments_of(&d.id)
        .await?
        .into_iter()
        .find(|x| action_id(&x.id) == n)
        .ok_or_else(|| ServerError::NotFound(format!("no action {n} for controller `{}`", d.id)))
}

/// The file name a DDI client saves an artifact as.
fn filename(a: &ArtifactRow) -> String {
    let v: String = a
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "update-{v}.{}",
        if a.kind == "swu" { "swu" } else { "jota" }
    )
}

/// sha1 and md5 of an artifact (recorded at upload; computed for older records).
async fn hashes(s: &AppState, a: &ArtifactRow) -> Res<(String, String)> {
    if !a.sha1.is_empty() && !a.md5.is_empty() {
        return Ok((a.sha1.clone(), a.md5.clone()));
    }
    use futures_util::StreamExt;
    use sha1::Digest;
    let mut stream = s.artifact_store().stream(&a.id, None).await?;
    let (mut h1, mut h5) = (sha1::Sha1::new(), md5::Md5::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ServerError::Storage(format!("reading {}: {e}", a.id)))?;
        h1.update(&chunk);
        h5.update(&chunk);
    }
    Ok((hex::encode(h1.finalize()), hex::encode(h5.finalize())))
}

/// The body of `deploymentBase` and `installedBase`.
async fn action_body(
    s: &AppState,
    h: &HeaderMap,
    tenant: &str,
    d: &DeviceRow,
    dep: &DeploymentRow,
) -> Res<Value> {
    let a =
        s.store().artifact(&dep.artifact_id).await?.ok_or_else(|| {
            ServerError::NotFound(format!("artifact `{}` is gone", dep.artifact_id))
        })?;
    let (sha1, md5) = hashes(s, &a).await?;
    let file = filename(&a);
    let dl = format!(
        "{}/softwaremodules/{}/artifacts/{file}",
        me(s, h, tenant, &d.id)?,
        a.id
    );
    let https = dl.starts_with("https:");
    let mut links = Map::new();
    links.insert(
        if https { "download" } else { "download-http" }.into(),
        json!({ "href": dl }),
    );
    links.insert(
        if https { "md5sum" } else { "md5sum-http" }.into(),
        json!({ "href": format!("{dl}.MD5SUM") }),
    );
    let mut deployment = json!({
        "download": "forced",
        "update": "forced",
        "chunks": [{
                "part": "os",
                "version": a.version,
                "name": "jota",
                "artifacts": [{
                    "filename": file,
                    "hashes": { "sha1": sha1, "md5": md5, "sha256": a.sha256 },
                    "size": a.size,
                    "_links": links,
                }],
            }],
    });
    // hawkBit's field for devices with a maintenance window: offered only inside it.
    if crate::window::of_tags(&d.tags).ok().flatten().is_some() {
        deployment["maintenanceWindow"] = json!("available");
    }
    Ok(json!({
        "id": action_id(&dep.id).to_string(),
        "deployment": deployment,
        "actionHistory": {
            "status": dep.state,
            "messages": if dep.message.is_empty() { vec![] } else { vec![dep.message.clone()] },
        },
    }))
}

async fn deployment_base(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((tenant, controller_id, action_id)): Path<(String, String, String)>,
) -> Res<Json<Value>> {
    let d = controller(&s, &h, &controller_id).await?;
    let dep = action(&s, &d, &action_id).await?;
    if !dep.active || !offered(&s, &d, &dep).await? {
        return Err(ServerError::NotFound(format!(
            "action {action_id} is not open (it is {})",
            dep.state
        )));
    }
    Ok(Json(action_body(&s, &h, &tenant, &d, &dep).await?))
}

async fn installed_base(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((tenant, controller_id, action_id)): Path<(String, String, String)>,
) -> Res<Json<Value>> {
    let d = controller(&s, &h, &controller_id).await?;
    let dep = action(&s, &d, &action_id).await?;
    Ok(Json(action_body(&s, &h, &tenant, &d, &dep).await?))
}

#[derive(Deserialize)]
struct Feedback {
    status: FeedbackStatus,
}

#[derive(Deserialize)]
struct FeedbackStatus {
    execution: String,
    #[serde(default)]
    result: FeedbackResult,
    #[serde(default)]
    details: Vec<String>,
}

#[derive(Deserialize, Default)]
struct FeedbackResult {
    #[serde(default)]
    finished: Option<String>,
    #[serde(default)]
    progress: Option<Progress>,
}

#[derive(Deserialize)]
struct Progress {
    cnt: u64,
    of: u64,
}

/// jota's deployment state for a DDI `execution`/`finished` pair, or an error naming the
/// values DDI defines. `None` keeps the current state.
fn state_of(execution: &str, finished: Option<&str>) -> Res<Option<&'static str>> {
    Ok(match execution {
        "closed" => Some(match finished {
            Some("success") => "success",
            _ => "failure",
        }),
        "canceled" | "rejected" => Some("failure"),
        "download" => Some("downloading"),
        // suricatta streams the download into the installer: proceeding is installing.
        "proceeding" | "downloaded" => Some("installing"),
        "scheduled" | "resumed" => None,
        other => {
            return Err(ServerError::BadRequest(format!(
                "execution `{other}` is not one of closed, proceeding, canceled, scheduled, \
                 rejected, resumed, downloaded, download"
            )))
        }
    })
}

async fn feedback(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((_tenant, controller_id, action_id)): Path<(String, String, String)>,
    body: Result<Json<Feedback>, JsonRejection>,
) -> Res<StatusCode> {
    let d = controller(&s, &h, &controller_id).await?;
    let f = crate::api::json(body)?;
    if let Some(x) = f.status.result.finished.as_deref() {
        if !matches!(x, "success" | "failure" | "none") {
            return Err(ServerError::BadRequest(format!(
                "result.finished `{x}` is not one of success, failure, none"
            )));
        }
    }
    let state = state_of(&f.status.execution, f.status.result.finished.as_deref())?;
    let dep = action(&s, &d, &action_id).await?;
    let mut message = f.status.details.join("\n");
    if message.len() > 16 << 10 {
        let mut cut = 16 << 10;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    if !dep.active {
        // A client resending its final word is answered as before; anything else is late.
        if state == Some(dep.state.as_str()) {
            return Ok(StatusCode::OK);
        }
        return Err(ServerError::Gone(format!(
            "action {action_id} is closed ({})",
            dep.state
        )));
    }
    let state = state.unwrap_or(if dep.state == "assigned" {
        "downloading"
    } else {
        dep.state.as_str()
    });
    let progress = match (&f.status.result.progress, state) {
        (_, "success") => 100,
        (Some(p), _) if p.of > 0 => (p.cnt.min(p.of) * 100 / p.of) as i64,
        _ => dep.progress,
    };
    let done = state == "success";
    let artifact = if done {
        s.store().artifact(&dep.artifact_id).await?
    } else {
        None
    };
    let bytes = artifact.as_ref().map_or(dep.downloaded_bytes, |a| a.size);
    s.store()
        .report(&d.id, &dep.id, state, progress, bytes, &message)
        .await?;
    // DDI polls carry no version: a successful action is how the registry learns it.
    if let Some(a) = &artifact {
        s.store().seen(&d, Some(&a.version)).await?;
    }
    tracing::info!(device = %d.id, deployment = %dep.id, execution = %f.status.execution, state, "DDI feedback");
    Ok(StatusCode::OK)
}

async fn cancel_action(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((_tenant, controller_id, action_id)): Path<(String, String, String)>,
) -> Res<Json<Value>> {
    let d = controller(&s, &h, &controller_id).await?;
    let dep = action(&s, &d, &action_id).await?;
    if !(dep.active && dep.cancel_requested) {
        return Err(ServerError::NotFound(format!(
            "no cancel of action {action_id} is pending"
        )));
    }
    Ok(Json(json!({
        "id": action_id,
        "cancelAction": { "stopId": action_id },
    })))
}

/// The device's answer to a cancel: `closed`+`success` (stopped: the deployment ends
/// `canceled`), `rejected` or `closed`+`failure` (it goes on), anything else noted.
async fn cancel_feedback(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((_tenant, controller_id, action_id)): Path<(String, String, String)>,
    body: Result<Json<Feedback>, JsonRejection>,
) -> Res<StatusCode> {
    let d = controller(&s, &h, &controller_id).await?;
    let f = crate::api::json(body)?;
    state_of(&f.status.execution, f.status.result.finished.as_deref())?;
    let dep = action(&s, &d, &action_id).await?;
    let message = f.status.details.join("\n");
    let finished = f.status.result.finished.as_deref();
    if !dep.active {
        if dep.state == "canceled" && f.status.execution == "closed" {
            return Ok(StatusCode::OK);
        }
        return Err(ServerError::Gone(format!(
            "action {action_id} is closed ({})",
            dep.state
        )));
    }
    match (f.status.execution.as_str(), finished) {
        ("closed", Some("success")) | ("canceled", _) => {
            let why = if message.is_empty() {
                "canceled on the device".to_string()
            } else {
                message
            };
            s.store().end_canceled(&d.id, &dep.id, &why).await?;
        }
        ("rejected", _) | ("closed", _) => {
            s.store()
                .refuse_cancel(&dep.id, &format!("the device refused to cancel: {message}"))
                .await?;
        }
        _ => {}
    }
    Ok(StatusCode::OK)
}

#[derive(Deserialize)]
struct ConfigData {
    data: Map<String, Value>,
    #[serde(default)]
    mode: Option<String>,
}

async fn config_data(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((_tenant, controller_id)): Path<(String, String)>,
    body: Result<Json<ConfigData>, JsonRejection>,
) -> Res<StatusCode> {
    let d = controller(&s, &h, &controller_id).await?;
    let c = crate::api::json(body)?;
    let mut attrs = match s.store().attributes(&d.id).await? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    match c.mode.as_deref().unwrap_or("merge") {
        "merge" => attrs.extend(c.data),
        "replace" => attrs = c.data,
        "remove" => {
            for k in c.data.keys() {
                attrs.remove(k);
            }
        }
        m => {
            return Err(ServerError::BadRequest(format!(
                "mode `{m}` is not one of merge, replace, remove"
            )))
        }
    }
    s.store().set_attributes(&d.id, &attrs).await?;
    Ok(StatusCode::OK)
}

async fn download(
    State(s): State<AppState>,
    h: HeaderMap,
    Path((_tenant, controller_id, module, file)): Path<(String, String, String, String)>,
) -> Res<Response> {
    let d = controller(&s, &h, &controller_id).await?;
    let a = s
        .store()
        .artifact(&module)
        .await?
        .ok_or_else(|| ServerError::NotFound(format!("no software module `{module}`")))?;
    // A device fetches only what it was given.
    if !s
        .store()
        .deployments_of(&d.id)
        .await?
        .iter()
        .any(|x| x.artifact_id == a.id)
    {
        return Err(ServerError::NotFound(format!(
            "no action of controller `{}` has software module `{module}`",
            d.id
        )));
    }
    let name = filename(&a);
    if file == format!("{name}.MD5SUM") {
        let (_, md5) = hashes(&s, &a).await?;
        return Ok((
            [(header::CONTENT_TYPE, "text/plain")],
            Body::from(format!("{md5}  {name}\n")),
        )
            .into_response());
    }
    if file != name {
        return Err(ServerError::NotFound(format!(
            "software module `{module}` has no artifact `{file}`"
        )));
    }
    artifacts::serve(s.artifact_store(), &a.id, a.size as u64, &a.sha256, &h).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddi_values() {
        assert_eq!(hms(45), "00:00:45");
        assert_eq!(hms(3725), "01:02:05");
        assert_eq!(
            state_of("closed", Some("success")).unwrap(),
            Some("success")
        );
        assert_eq!(
            state_of("closed", Some("failure")).unwrap(),
            Some("failure")
        );
        assert_eq!(state_of("proceeding", None).unwrap(), Some("installing"));
        assert_eq!(state_of("resumed", None).unwrap(), None);
        assert!(state_of("exploded", None)
            .unwrap_err()
            .to_string()
            .contains("closed, proceeding"));
        let a = action_id("r1-orin-7");
        assert!(a > 0 && a <= i32::MAX as u32);
        assert_eq!(a, action_id("r1-orin-7"));
    }
}
