//! The dashboard: server-rendered pages (no JavaScript) with the fleet overview (versions,
//! alerts, rollouts with per-phase progress, recent rollbacks, devices unreachable after an
//! update), a rollout's phases and metrics, the device list, and a device's inventory,
//! telemetry history (with a temperature chart), boots, deployments and alerts.
//!
//! A person signs in with the admin token (a form) or a one-time link that `jota fleet
//! dashboard` prints (`POST /api/v1/dashboard/links`); either gives a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS) valid for 12 hours. Sessions are in
//! the database, so any replica serves them.

use crate::api::AppState;
use crate::rollout::RolloutStatus;
use crate::store::{db, now, DeploymentRow, Store};
use crate::{random_hex, token_hash, ServerError};
use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use sqlx::Row;

/// Seconds a session lasts.
const SESSION_SECONDS: i64 = 12 * 3600;
/// Seconds a one-time link lasts.
const LINK_SECONDS: i64 = 600;
/// The session cookie.
const COOKIE: &str = "jota_session";

/// The dashboard's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(overview))
        .route("/dashboard/login", get(login_link).post(login_form))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/devices", get(devices))
        .route("/dashboard/devices/{id}", get(device))
        .route("/dashboard/rollouts/{id}", get(rollout))
}

impl Store {
    /// Creates a session or one-time link (`kind`) leading to `next`; returns its secret.
    pub async fn add_session(
        &self,
        kind: &str,
        next: &str,
        at: i64,
    ) -> Result<String, ServerError> {
        let secret = random_hex(32)?;
        let ttl = if kind == "link" {
            LINK_SECONDS
        } else {
            SESSION_SECONDS
        };
        // Expired ones go whenever a new one comes.
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires < $1")
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO dashboard_sessions (token_sha256, kind, next, expires) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash(&secret))
        .bind(kind)
        .bind(next)
        .bind(at + ttl)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(secret)
    }

    /// Whether `secret` is a live session.
    pub async fn session_ok(&self, secret: &str, at: i64) -> Result<bool, ServerError> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n FROM dashboard_sessions WHERE token_sha256 = $1 AND kind = 'session' AND expires >= $2",
        )
        .bind(token_hash(secret))
        .bind(at)
        .fetch_one(&self.read)
        .await
        .map_err(db)?;
        Ok(r.try_get::<i64, _>("n").map_err(db)? > 0)
    }

    /// Uses up a one-time link: where it leads, if it was live.
    pub async fn take_link(&self, secret: &str, at: i64) -> Result<Option<String>, ServerError> {
        let r = sqlx::query(
            "DELETE FROM dashboard_sessions WHERE token_sha256 = $1 AND kind = 'link' AND expires >= $2 RETURNING next",
        )
        .bind(token_hash(secret))
        .bind(at)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        r.map(|r| r.try_get("next").map_err(db)).transpose()
    }

    /// Ends a session.
    pub async fn end_session(&self, secret: &str) -> Result<(), ServerError> {
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_sha256 = $1")
            .bind(token_hash(secret))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// Where a link may lead: a dashboard page, nothing else (no open redirect).
pub fn check_next(next: &str) -> Result<(), ServerError> {
    let ok = (next == "/dashboard" || next.starts_with("/dashboard/"))
        && next
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.?=&%".contains(&b));
    if !ok {
        return Err(ServerError::BadRequest(format!(
            "next `{next}`: a /dashboard page"
        )));
    }
    Ok(())
}

fn cookie(h: &HeaderMap) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(String::from)
        })
}

/// The signed-in check: `Ok(())` or the sign-in page to answer with.
async fn signed_in(s: &AppState, h: &HeaderMap) -> Result<(), Response> {
    let ok = match cookie(h) {
        Some(c) => s
            .store()
            .session_ok(&c, now())
            .await
            .map_err(IntoResponse::into_response)?,
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err((StatusCode::UNAUTHORIZED, login_page(None)).into_response())
    }
}

fn secure(h: &HeaderMap, s: &AppState) -> bool {
    s.config().tls.is_some()
        || h.get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn session_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={secret}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// A page: title, navigation, body.
fn page(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " — jota fleet" }
                    style { (PreEscaped(CSS)) }
                }
                body {
                    header {
                        strong { "jota fleet" }
                        nav {
                            a href="/dashboard" { "Overview" }
                            a href="/dashboard/devices" { "Devices" }
                            form method="post" action="/dashboard/logout" { button { "Sign out" } }
                        }
                    }
                    main {
                        h1 { (title) }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}\
header{display:flex;gap:2em;align-items:center;background:#1d2433;color:#fff;padding:.6em 1.5em}\
header nav{display:flex;gap:1.2em;align-items:center}header a{color:#cfe0ff}\
header form{margin:0}header button{background:none;border:1px solid #cfe0ff;color:#cfe0ff;border-radius:3px;cursor:pointer}\
main{padding:1em 1.5em;max-width:1200px}h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}\
table{border-collapse:collapse;background:#fff;width:100%}th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #e3e6ea}\
th{background:#eef0f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border:1px solid #e3e6ea;border-radius:6px;padding:.6em 1em;min-width:9em}\
.card b{display:block;font-size:1.6em}.bar{display:flex;height:.9em;width:16em;background:#dde1e6;border-radius:3px;overflow:hidden}\
.bar span{display:block;height:100%}.ok{background:#2e9e5b}.run{background:#3a78d8}.fail{background:#d64545}.back{background:#e8912d}.wait{background:#aab2bd}\
.page{color:#fff;background:#d64545;padding:0 .4em;border-radius:3px}.investigate{background:#e8912d;color:#fff;padding:0 .4em;border-radius:3px}\
.warning{background:#f3d35b;padding:0 .4em;border-radius:3px}.muted{color:#6b7380}.cur{font-weight:bold}";

fn login_page(error: Option<&str>) -> Html<String> {
    Html(html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Sign in — jota fleet" } style { (PreEscaped(CSS)) } }
            body { main {
                h1 { "jota fleet: sign in" }
                @if let Some(e) = error { p.page { (e) } }
                form method="post" action="/dashboard/login" {
                    label { "Admin token " input type="password" name="token" autocomplete="off"; }
                    " " button { "Sign in" }
                }
                p.muted { "Or open the link " code { "jota fleet dashboard" } " prints." }
            } }
        }
    }
    .into_string())
}

/// "3 min ago" and the UTC time.
fn ago(t: Option<i64>) -> Markup {
    let Some(t) = t else {
        return html! { span.muted { "never" } };
    };
    let d = now() - t;
    let rel = match d {
        d if d < 0 => "just now".to_string(),
        d if d < 90 => format!("{d} s ago"),
        d if d < 5400 => format!("{} min ago", d / 60),
        d if d < 2 * 86400 => format!("{} h ago", d / 3600),
        d => format!("{} days ago", d / 86400),
    };
    let abs = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_secs(t.max(0) as u64))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default();
    html! { span title=(abs) { (rel) } }
}

/// A stacked bar of a phase's (or rollout's) devices.
fn bar(c: &crate::rollout::PhaseCounts) -> Markup {
    let total = c.devices.max(1) as f64;
    let w = |n: u64| format!("width:{:.2}%", 100.0 * n as f64 / total);
    html! {
        div.bar title={ (c.success) " succeeded, " (c.updating + c.assigned) " updating, " (c.failure) " failed, " (c.rolled_back) " rolled back, " (c.waiting + c.canceled) " waiting or canceled" } {
            span.ok style=(w(c.success)) {}
            span.run style=(w(c.updating + c.assigned)) {}
            span.fail style=(w(c.failure)) {}
            span.back style=(w(c.rolled_back)) {}
        }
    }
}

fn legend() -> Markup {
    html! {
        p.muted {
            span.bar style="display:inline-flex;width:1em" { span.ok style="width:100%" {} } " succeeded "
            span.bar style="display:inline-flex;width:1em" { span.run style="width:100%" {} } " updating (or assigned) "
            span.bar style="display:inline-flex;width:1em" { span.fail style="width:100%" {} } " failed "
            span.bar style="display:inline-flex;width:1em" { span.back style="width:100%" {} } " rolled back "
            span.bar style="display:inline-flex;width:1em" {} " waiting"
        }
    }
}

fn counts_text(c: &crate::rollout::PhaseCounts) -> String {
    format!(
        "{} of {} succeeded · {} updating · {} failed · {} rolled back · {} waiting",
        c.success,
        c.devices,
        c.updating + c.assigned,
        c.failure,
        c.rolled_back,
        c.waiting
    )
}

fn alerts_table(alerts: &[crate::alerts::Alert]) -> Markup {
    html! {
        @if alerts.is_empty() { p.muted { "No alerts." } } @else {
            table {
                tr { th { "severity" } th { "alert" } th { "device or rollout" } th { "since" } th { "what" } }
                @for a in alerts {
                    tr {
                        td { span class=(a.severity) { (a.severity) } }
                        td { (a.kind) }
                        td {
                            @if let Some(d) = &a.device_id { a href={ "/dashboard/devices/" (d) } { (d) } }
                            @else if let Some(r) = &a.rollout_id { "rollout " a href={ "/dashboard/rollouts/" (r) } { (r) } }
                        }
                        td { (ago(Some(a.since))) }
                        td { (a.message) }
                    }
                }
            }
        }
    }
}

type Page = Result<Response, Response>;

fn err(e: ServerError) -> Response {
    e.into_response()
}

async fn overview(State(s): State<AppState>, h: HeaderMap) -> Page {
    signed_in(&s, &h).await?;
    let store = s.store();
    store.flush_heartbeats().await.map_err(err)?;
    let at = now();
    let online_since = at - 3 * s.config().poll_seconds as i64;
    let one = |sql: &'static str, bind: i64| async move {
        sqlx::query(sql)
            .bind(bind)
            .fetch_one(&store.read)
            .await
            .and_then(|r| r.try_get::<i64, _>("n"))
            .map_err(|e| err(db(e)))
    };
    let devices = one("SELECT COUNT(*) AS n FROM devices WHERE 1 = $1", 1).await?;
    let online = one(
        "SELECT COUNT(*) AS n FROM devices WHERE last_seen >= $1",
        online_since,
    )
    .await?;
    let updating = one(
        "SELECT COUNT(*) AS n FROM deployments WHERE active = 1 AND state NOT IN ('assigned') AND 1 = $1",
        1,
    )
    .await?;
    let rollbacks_day = one(
        "SELECT COUNT(*) AS n FROM deployments WHERE state = 'rolled-back' AND updated >= $1",
        at - 86400,
    )
    .await?;
    let versions: Vec<(Option<String>, i64)> = sqlx::query(
        "SELECT version, COUNT(*) AS n FROM devices GROUP BY version ORDER BY n DESC, version",
    )
    .fetch_all(&store.read)
    .await
    .and_then(|rows| {
        rows.iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("n")?)))
            .collect()
    })
    .map_err(|e| err(db(e)))?;
    let alerts = store
        .alerts(at, s.config().poll_seconds)
        .await
        .map_err(err)?;
    let mut rollouts: Vec<RolloutStatus> = Vec::new();
    for r in store.rollouts().await.map_err(err)?.into_iter().take(20) {
        if let Some(st) = store.rollout_status(&r.id).await.map_err(err)? {
            rollouts.push(st);
        }
    }
    let artifacts: std::collections::HashMap<String, String> = store
        .artifacts()
        .await
        .map_err(err)?
        .into_iter()
        .map(|a| (a.id, a.version))
        .collect();
    let rollbacks: Vec<DeploymentRow> = sqlx::query(
        "SELECT * FROM deployments WHERE state = 'rolled-back' ORDER BY updated DESC, id LIMIT 20",
    )
    .fetch_all(&store.read)
    .await
    .and_then(|rows| rows.iter().map(crate::store::deployment).collect())
    .map_err(|e| err(db(e)))?;
    let unreachable: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == "unreachable-after-update")
        .collect();
    let body = html! {
        div.cards {
            div.card { b { (devices) } "devices" }
            div.card { b { (online) } "online" span.muted { " (polled in 3 intervals)" } }
            div.card { b { (updating) } "updating now" }
            div.card { b { (rollbacks_day) } "rollbacks in 24 h" }
            div.card { b { (alerts.len()) } "alerts" }
        }
        h2 { "Alerts" }
        (alerts_table(&alerts))
        h2 { "Rollouts" }
        @if rollouts.is_empty() { p.muted { "No rollouts." } } @else {
            table {
                tr { th { "rollout" } th { "version" } th { "state" } th { "phase" } th { "progress" } th { "devices" } }
                @for st in &rollouts {
                    @let r = &st.rollout;
                    tr {
                        td { a href={ "/dashboard/rollouts/" (r.id) } { (r.name) } br; span.muted { (r.id) } }
                        td { (artifacts.get(&r.artifact_id).cloned().unwrap_or_else(|| r.artifact_id.clone())) }
                        td { (r.state) @if !r.reason.is_empty() { br; span.muted { (r.reason) } } }
                        td { (r.phases.get(r.phase as usize).map(|p| p.name.as_str()).unwrap_or("-")) " (" (r.phase + 1) "/" (r.phases.len()) ")" }
                        td { (bar(&st.total)) }
                        td { (counts_text(&st.total)) }
                    }
                }
            }
            (legend())
        }
        h2 { "Versions" }
        table {
            tr { th { "version" } th { "devices" } }
            @for (v, n) in &versions {
                tr { td { (v.as_deref().unwrap_or("(not reported)")) } td.n { (n) } }
            }
        }
        h2 { "Recent rollbacks" }
        @if rollbacks.is_empty() { p.muted { "No rollbacks." } } @else {
            table {
                tr { th { "device" } th { "version" } th { "when" } th { "rollout" } th { "message" } }
                @for d in &rollbacks {
                    tr {
                        td { a href={ "/dashboard/devices/" (d.device_id) } { (d.device_id) } }
                        td { (artifacts.get(&d.artifact_id).cloned().unwrap_or_default()) }
                        td { (ago(Some(d.updated))) }
                        td { @if let Some(r) = &d.rollout_id { a href={ "/dashboard/rollouts/" (r) } { (r) } } }
                        td { (d.message) }
                    }
                }
            }
        }
        h2 { "Unreachable after update" }
        @if unreachable.is_empty() { p.muted { "None." } } @else {
            table {
                tr { th { "device" } th { "last heard of" } th { "rollout" } }
                @for a in &unreachable {
                    tr {
                        td { @if let Some(d) = &a.device_id { a href={ "/dashboard/devices/" (d) } { (d) } } }
                        td { (ago(Some(a.since))) }
                        td { @if let Some(r) = &a.rollout_id { a href={ "/dashboard/rollouts/" (r) } { (r) } } }
                    }
                }
            }
        }
    };
    Ok(page("Fleet overview", body).into_response())
}

async fn rollout(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Page {
    signed_in(&s, &h).await?;
    let store = s.store();
    let st = store
        .rollout_status(&id)
        .await
        .map_err(err)?
        .ok_or_else(|| err(ServerError::NotFound(format!("no rollout `{id}`"))))?;
    let r = &st.rollout;
    let version = store
        .artifact(&r.artifact_id)
        .await
        .map_err(err)?
        .map(|a| a.version)
        .unwrap_or_default();
    let troubled: Vec<DeploymentRow> = store
        .rollout_deployments(&id)
        .await
        .map_err(err)?
        .into_iter()
        .filter(|d| matches!(d.state.as_str(), "failure" | "rolled-back"))
        .collect();
    let m = &st.metrics;
    let body = html! {
        p { "Version " b { (version) } " · state " b { (r.state) } @if !r.reason.is_empty() { ": " (r.reason) } " · created " (ago(Some(r.created))) }
        div.cards {
            div.card { b { (format!("{:.1} %", m.success_percent)) } "success rate" }
            div.card { b { (format!("{:.1} %", m.rollback_percent)) } "rollback rate" }
            div.card { b { (format!("{:.0} s", m.mean_update_seconds)) } "mean update time" }
            div.card { b { (format!("{:.1} MB", m.bytes_downloaded as f64 / 1e6)) } "downloaded" }
            div.card { b { (m.finished) } "finished" }
            @if let Some(t) = m.seconds_to_done { div.card { b { (format!("{:.1} h", t as f64 / 3600.0)) } "to the whole fleet" } }
        }
        h2 { "Phases" }
        table {
            tr { th { "phase" } th { "share" } th { "soak" } th { "progress" } th { "devices" } }
            @for (i, (p, c)) in r.phases.iter().zip(&st.phases).enumerate() {
                tr class=[(i as i64 == r.phase).then_some("cur")] {
                    td { (p.name) @if i as i64 == r.phase { " ◀ current" } }
                    td.n { (p.percent) " %" }
                    td.n { (p.soak_seconds) " s" }
                    td { (bar(c)) }
                    td { (counts_text(c)) }
                }
            }
            tr { td { "total" } td {} td {} td { (bar(&st.total)) } td { (counts_text(&st.total)) } }
        }
        (legend())
        h2 { "Failures and rollbacks" }
        @if troubled.is_empty() { p.muted { "None." } } @else {
            table {
                tr { th { "device" } th { "state" } th { "when" } th { "message" } }
                @for d in &troubled {
                    tr {
                        td { a href={ "/dashboard/devices/" (d.device_id) } { (d.device_id) } }
                        td { (d.state) } td { (ago(Some(d.updated))) } td { (d.message) }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Rollout {}", r.name), body).into_response())
}

/// A row of the device list: id, hardware, version, last poll, deployment state, progress.
type ListRow = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
);

#[derive(Deserialize)]
struct DeviceFilter {
    q: Option<String>,
}

async fn devices(State(s): State<AppState>, h: HeaderMap, Query(f): Query<DeviceFilter>) -> Page {
    signed_in(&s, &h).await?;
    let store = s.store();
    store.flush_heartbeats().await.map_err(err)?;
    let q = f.q.unwrap_or_default();
    let pattern = format!("%{}%", q.replace(['%', '_'], ""));
    let rows = sqlx::query(
        "SELECT d.id AS id, d.hardware AS hardware, d.version AS version, d.last_seen AS last_seen, \
         x.state AS state, x.progress AS progress FROM devices d \
         LEFT JOIN deployments x ON x.device_id = d.id AND x.active = 1 \
         WHERE d.id LIKE $1 OR d.version LIKE $1 OR d.hardware LIKE $1 ORDER BY d.id LIMIT 500",
    )
    .bind(&pattern)
    .fetch_all(&store.read)
    .await
    .map_err(|e| err(db(e)))?;
    let list: Vec<ListRow> = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get("id")?,
                r.try_get("hardware")?,
                r.try_get("version")?,
                r.try_get("last_seen")?,
                r.try_get("state")?,
                r.try_get("progress")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| err(db(e)))?;
    let body = html! {
        form method="get" action="/dashboard/devices" {
            input type="search" name="q" value=(q) placeholder="id, version or hardware";
            " " button { "Filter" }
        }
        p.muted { (list.len()) " shown (at most 500)" }
        table {
            tr { th { "device" } th { "hardware" } th { "version" } th { "last poll" } th { "update" } }
            @for (id, hw, v, seen, state, progress) in &list {
                tr {
                    td { a href={ "/dashboard/devices/" (id) } { (id) } }
                    td { (hw) } td { (v.as_deref().unwrap_or("-")) } td { (ago(*seen)) }
                    td { @if let Some(st) = state { (st) " " (progress.unwrap_or(0)) "%" } @else { span.muted { "-" } } }
                }
            }
        }
    };
    Ok(page("Devices", body).into_response())
}

/// A line chart of `points` (time, value) as inline SVG.
fn chart(points: &[(i64, f64)], unit: &str) -> Markup {
    if points.len() < 2 {
        return html! { p.muted { "Not enough reports for a chart." } };
    }
    let (w, hgt) = (600.0, 120.0);
    let (t0, t1) = (points[0].0 as f64, points[points.len() - 1].0 as f64);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let span_t = (t1 - t0).max(1.0);
    let span_v = (hi - lo).max(1.0);
    // Reports received in the same second are spread evenly instead.
    let same = t1 <= t0;
    let n = (points.len() - 1) as f64;
    let path: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (t, v))| {
            format!(
                "{:.1},{:.1}",
                if same {
                    i as f64 / n * w
                } else {
                    (*t as f64 - t0) / span_t * w
                },
                hgt - (v - lo) / span_v * (hgt - 10.0) - 5.0
            )
        })
        .collect();
    html! {
        svg width=(w) height=(hgt) viewBox={ "0 0 " (w) " " (hgt) } role="img" aria-label={ "temperature " (format!("{lo:.1}")) " to " (format!("{hi:.1}")) " " (unit) } {
            rect width=(w) height=(hgt) fill="#fff" stroke="#e3e6ea" {}
            polyline points=(path.join(" ")) fill="none" stroke="#3a78d8" stroke-width="2" {}
        }
        p.muted { (format!("{lo:.1}")) "–" (format!("{hi:.1}")) " " (unit) " over " (points.len()) " reports" }
    }
}

async fn device(State(s): State<AppState>, h: HeaderMap, Path(id): Path<String>) -> Page {
    signed_in(&s, &h).await?;
    let store = s.store();
    // What the API's device view has, plus the telemetry history and each deployment's reports.
    let crate::api::DeviceDetail {
        device: d,
        inventory,
        inventory_at,
        boots,
        mut deployments,
        alerts,
        ..
    } = crate::api::device_detail(&s, &id).await.map_err(err)?;
    let history = store.telemetry_of(&id, 50).await.map_err(err)?;
    deployments.truncate(10);
    let mut events = Vec::new();
    for dep in &deployments {
        events.push(store.events(&dep.id).await.map_err(err)?);
    }
    let mut temps: Vec<(i64, f64)> = history
        .iter()
        .filter_map(|r| r.report.temperature_mc.map(|t| (r.at, t as f64 / 1000.0)))
        .collect();
    temps.reverse();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let body = html! {
        p { "Hardware " b { (d.hardware) } " · version " b { (d.version.as_deref().unwrap_or("-")) } " · last poll " (ago(d.last_seen)) " · registered " (ago(Some(d.created))) }
        @if !d.tags.is_empty() { p { "Tags: " @for t in &d.tags { code { (t) } " " } } }
        h2 { "Alerts" }
        (alerts_table(&alerts))
        h2 { "Inventory" }
        @if let Some(obj) = inventory.as_object().filter(|o| !o.is_empty()) {
            p.muted { "reported " (ago(inventory_at)) }
            table { @for (k, v) in obj { tr { th { (k) } td { (v.as_str().map(String::from).unwrap_or_else(|| v.to_string())) } } } }
        } @else { p.muted { "Not reported." } }
        h2 { "Telemetry" }
        (chart(&temps, "°C"))
        @if history.is_empty() { p.muted { "No telemetry." } } @else {
            table {
                tr { th { "received" } th { "version" } th { "slot" } th { "uptime" } th { "temp °C" } th { "mem avail MB" } th { "rootfs %" } th { "GPU %" } th { "rollbacks" } }
                @for r in &history {
                    @let t = &r.report;
                    tr {
                        td { (ago(Some(r.at))) }
                        td { (opt(t.ota_version.clone())) }
                        td { (opt(t.boot_slot.clone())) }
                        td.n { (opt(t.uptime_seconds.map(|u| format!("{} min", u / 60)))) }
                        td.n { (opt(t.temperature_mc.map(|x| format!("{:.1}", x as f64 / 1000.0)))) }
                        td.n { (opt(t.memory_available_kb.map(|x| (x / 1024).to_string()))) }
                        td.n { (opt(t.rootfs_usage_pct.map(|x| format!("{x:.0}")))) }
                        td.n { (opt(t.gpu_utilization_pct.map(|x| format!("{x:.0}")))) }
                        td.n { (opt(t.rollback_count.map(|x| x.to_string()))) }
                    }
                }
            }
        }
        h2 { "Boots in the last day: " (boots.len()) }
        @if !boots.is_empty() { p { @for b in &boots { (ago(Some(*b))) "; " } } }
        h2 { "Deployments" }
        @if deployments.is_empty() { p.muted { "None." } } @else {
            table {
                tr { th { "deployment" } th { "artifact" } th { "state" } th { "updated" } th { "reports" } }
                @for (dep, ev) in deployments.iter().zip(&events) {
                    tr {
                        td { (dep.id) @if let Some(r) = &dep.rollout_id { br; "rollout " a href={ "/dashboard/rollouts/" (r) } { (r) } } }
                        td { (dep.artifact_id) }
                        td { (dep.state) @if dep.active { " (active)" } }
                        td { (ago(Some(dep.updated))) }
                        td { @for (state, progress, message, _) in ev { (state) " " (progress) "%" @if !message.is_empty() { ": " (message) } br; } }
                    }
                }
            }
        }
    };
    Ok(page(&format!("Device {}", d.id), body).into_response())
}

#[derive(Deserialize)]
struct LinkQuery {
    once: String,
}

async fn login_link(State(s): State<AppState>, h: HeaderMap, Query(q): Query<LinkQuery>) -> Page {
    let at = now();
    let Some(next) = s.store().take_link(&q.once, at).await.map_err(err)? else {
        return Err((
            StatusCode::UNAUTHORIZED,
            login_page(Some(
                "That link is used up or expired: ask for another one.",
            )),
        )
            .into_response());
    };
    let session = s
        .store()
        .add_session("session", "", at)
        .await
        .map_err(err)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (header::SET_COOKIE, session_cookie(&session, secure(&h, &s))),
        ],
    )
        .into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form(State(s): State<AppState>, h: HeaderMap, Form(f): Form<LoginForm>) -> Page {
    if !s.is_admin_token(&f.token) {
        return Err((
            StatusCode::UNAUTHORIZED,
            login_page(Some("Not the admin token.")),
        )
            .into_response());
    }
    let session = s
        .store()
        .add_session("session", "", now())
        .await
        .map_err(err)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/dashboard".to_string()),
            (header::SET_COOKIE, session_cookie(&session, secure(&h, &s))),
        ],
    )
        .into_response())
}

async fn logout(State(s): State<AppState>, h: HeaderMap) -> Page {
    if let Some(c) = cookie(&h) {
        s.store().end_session(&c).await.map_err(err)?;
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/dashboard".to_string()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lead_only_to_dashboard_pages() {
        for ok in [
            "/dashboard",
            "/dashboard/devices/orin-1",
            "/dashboard/devices?q=3767",
        ] {
            check_next(ok).unwrap();
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/dashboard",
            "/dashboardx",
            "/api/v1/devices",
            "/dashboard/\"><script>",
        ] {
            assert!(check_next(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            "a=1; jota_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "jota_sessionx=1".parse().unwrap());
        assert_eq!(cookie(&h), None);
    }
}
