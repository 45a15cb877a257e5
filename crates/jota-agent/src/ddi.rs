//! hawkBit's Direct Device Integration API, client side: so a jota device can join an
//! existing hawkBit installation (or jota's own server's DDI face). The agent's work is the
//! same as with jota's API ([`crate::fleet`]); only the words on the wire differ:
//!
//! | agent | DDI |
//! |---|---|
//! | poll | `GET {tenant}/controller/v1/{id}`, then `deploymentBase` or `cancelAction` |
//! | status report | `POST …/deploymentBase/{action}/feedback` (`execution`, `result`, `progress`) |
//! | cancelled | `POST …/cancelAction/{action}/feedback` (`closed`/`success`) |
//! | inventory | `PUT …/configData` (string attributes, `merge`) |
//! | download-only, window | `deployment.update = skip`, `maintenanceWindow = unavailable` |

use crate::fleet::Assignment;
use crate::AgentError;
use serde_json::{json, Value};

/// One controller (target) of a hawkBit tenant.
#[derive(Clone, Debug)]
pub struct Controller {
    /// `https://host/{tenant}/controller/v1/{controllerId}`.
    pub base: String,
}

fn net(url: &str, e: impl std::fmt::Display) -> AgentError {
    AgentError::Download(format!("{url}: {e}"))
}

fn get(http: &reqwest::blocking::Client, url: &str) -> Result<Value, AgentError> {
    let r = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/hal+json")
        .send()
        .map_err(|e| net(url, e))?;
    if !r.status().is_success() {
        return Err(net(url, format!("HTTP {}", r.status())));
    }
    r.json().map_err(|e| net(url, e))
}

/// `HH:MM:SS` (DDI's polling sleep) in seconds.
pub fn parse_hms(s: &str) -> Option<u64> {
    let mut parts = s.split(':').map(|p| p.parse::<u64>().ok());
    let (h, m, sec) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || m >= 60 || sec >= 60 {
        return None;
    }
    Some(h * 3600 + m * 60 + sec)
}

fn href<'a>(links: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| links[*n]["href"].as_str())
}

/// Polls: the poll interval and the action offered, if any.
pub fn poll(
    http: &reqwest::blocking::Client,
    c: &Controller,
) -> Result<(u64, Option<Assignment>), AgentError> {
    let v = get(http, &c.base)?;
    let sleep = v["config"]["polling"]["sleep"]
        .as_str()
        .and_then(parse_hms)
        .unwrap_or(300);
    let links = &v["_links"];
    if let Some(url) = href(links, &["cancelAction"]) {
        let a = get(http, url)?;
        let id = a["cancelAction"]["stopId"]
            .as_str()
            .or(a["id"].as_str())
            .ok_or_else(|| net(url, "cancelAction without an id"))?;
        return Ok((
            sleep,
            Some(Assignment {
                id: id.to_string(),
                version: String::new(),
                url: String::new(),
                size: 0,
                manifest_sha256: String::new(),
                cancel: true,
                install: false,
                hold_reason: String::new(),
            }),
        ));
    }
    let Some(url) = href(links, &["deploymentBase"]) else {
        return Ok((sleep, None));
    };
    let a = get(http, url)?;
    let id = a["id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| a["id"].as_u64().map(|n| n.to_string()))
        .ok_or_else(|| net(url, "deploymentBase without an id"))?;
    let d = &a["deployment"];
    let chunks = d["chunks"].as_array().cloned().unwrap_or_default();
    // The jota bundle among the chunks' artifacts (a .swu is for SWUpdate, not for jota).
    let found = chunks.iter().find_map(|ch| {
        ch["artifacts"].as_array()?.iter().find_map(|art| {
            let name = art["filename"].as_str()?;
            name.ends_with(".jota").then_some((ch, art))
        })
    });
    let Some((chunk, art)) = found else {
        return Err(AgentError::Rejected(format!(
            "action {id} carries no .jota artifact"
        )));
    };
    let dl = href(&art["_links"], &["download", "download-http"])
        .ok_or_else(|| net(url, "artifact without a download link"))?;
    let update = d["update"].as_str().unwrap_or("forced");
    let window = d["maintenanceWindow"].as_str().unwrap_or("available");
    let hold_reason = if update == "skip" {
        "download only (update: skip)".to_string()
    } else if window == "unavailable" {
        "outside the maintenance window".to_string()
    } else {
        String::new()
    };
    Ok((
        sleep,
        Some(Assignment {
            id,
            version: chunk["version"].as_str().unwrap_or("").to_string(),
            url: dl.to_string(),
            size: art["size"].as_i64().unwrap_or(0),
            manifest_sha256: String::new(),
            cancel: false,
            install: hold_reason.is_empty(),
            hold_reason,
        }),
    ))
}

fn post(http: &reqwest::blocking::Client, url: &str, body: &Value) -> Result<bool, AgentError> {
    let r = http.post(url).json(body).send().map_err(|e| net(url, e))?;
    match r.status().as_u16() {
        200..=299 => Ok(true),
        // The action is closed or gone: nothing more to say about it.
        404 | 409 | 410 => Ok(false),
        s => Err(net(url, format!("HTTP {s}"))),
    }
}

/// Reports an agent state (`downloading`, `installing`, `rebooting`, `validating`, `success`,
/// `failure`, `rolled-back`, `held`) as DDI feedback. `Ok(false)`: the action is closed.
pub fn feedback(
    http: &reqwest::blocking::Client,
    c: &Controller,
    action: &str,
    state: &str,
    progress: u64,
    message: &str,
) -> Result<bool, AgentError> {
    let (execution, finished) = match state {
        "downloading" => ("download", "none"),
        "held" => ("downloaded", "none"),
        "success" => ("closed", "success"),
        "failure" => ("closed", "failure"),
        "rolled-back" => ("closed", "failure"),
        _ => ("proceeding", "none"),
    };
    let mut details = vec![format!("jota: {state}")];
    if !message.is_empty() {
        details.push(message.to_string());
    }
    post(
        http,
        &format!("{}/deploymentBase/{action}/feedback", c.base),
        &json!({
            "id": action,
            "status": {
                "execution": execution,
                "result": { "finished": finished, "progress": { "cnt": progress.min(100), "of": 100 } },
                "details": details,
            },
        }),
    )
}

/// Confirms (or refuses, after the switch) a cancellation.
pub fn cancel_feedback(
    http: &reqwest::blocking::Client,
    c: &Controller,
    action: &str,
    done: bool,
    message: &str,
) -> Result<bool, AgentError> {
    post(
        http,
        &format!("{}/cancelAction/{action}/feedback", c.base),
        &json!({
            "id": action,
            "status": {
                "execution": if done { "closed" } else { "rejected" },
                "result": { "finished": if done { "success" } else { "failure" } },
                "details": [message],
            },
        }),
    )
}

/// Sends the inventory as the target's attributes (DDI attributes are strings).
pub fn config_data(
    http: &reqwest::blocking::Client,
    c: &Controller,
    inventory: &Value,
) -> Result<(), AgentError> {
    let mut data = serde_json::Map::new();
    if let Some(o) = inventory.as_object() {
        for (k, v) in o {
            let s = match v {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Array(a) if a.iter().all(|x| x.is_string()) => a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                Value::Object(_) | Value::Array(_) => continue,
                other => other.to_string(),
            };
            data.insert(k.clone(), Value::String(s));
        }
    }
    let url = format!("{}/configData", c.base);
    let r = http
        .put(&url)
        .json(&json!({ "mode": "merge", "data": data }))
        .send()
        .map_err(|e| net(&url, e))?;
    if !r.status().is_success() {
        return Err(net(&url, format!("HTTP {}", r.status())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_sleep() {
        assert_eq!(parse_hms("00:05:00"), Some(300));
        assert_eq!(parse_hms("12:00:01"), Some(43201));
        assert_eq!(parse_hms("00:60:00"), None);
        assert_eq!(parse_hms("5"), None);
        assert_eq!(parse_hms("1:2:3:4"), None);
        assert_eq!(parse_hms("a:b:c"), None);
    }
}
