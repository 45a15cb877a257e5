//! `jota demo` (the README's first command): the scenario runs, the command says the fleet
//! ended as expected, and the server it leaves running agrees — checked through its API.

mod common;

use serde_json::Value;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn the_demo_ends_in_the_expected_fleet_state_as_the_server_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::jota_bin())
        .args([
            "demo",
            "--devices",
            "6",
            "--json",
            "--keep-running",
            "--timeout",
            "180",
            "--dir",
        ])
        .arg(dir.path().join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The report is one JSON document; the process then keeps serving.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let report: Value = loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "the demo ended without a report: {text}\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        text.push_str(&line);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            break v;
        }
    };
    let check = || -> Result<(), String> {
        let problems = report["problems"].as_array().cloned().unwrap_or_default();
        if !problems.is_empty() {
            return Err(format!("the demo found problems: {problems:?}"));
        }
        let base = report["server"]["url"].as_str().unwrap();
        let token = report["server"]["admin_token"].as_str().unwrap();
        let ca = std::fs::read(report["server"]["ca"].as_str().unwrap()).unwrap();
        let http = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let get = |p: &str| -> Value {
            http.get(format!("{base}{p}"))
                .bearer_auth(token)
                .send()
                .unwrap()
                .json()
                .unwrap()
        };
        let rid = report["rollout"]["id"].as_str().unwrap();
        let r = get(&format!("/api/v1/rollouts/{rid}"));
        assert_eq!(r["rollout"]["state"], "done", "{r}");
        assert_eq!(r["total"]["success"], 5, "{r}");
        assert_eq!(r["total"]["rolled_back"], 1, "{r}");
        assert_eq!(
            r["phases"].as_array().unwrap().len(),
            3,
            "canary, 50%, all: {r}"
        );
        let devices = get("/api/v1/devices");
        let devices = devices.as_array().unwrap();
        assert_eq!(devices.len(), 6);
        let role = |d: &Value| -> String {
            report["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == d["id"])
                .map(|x| x["role"].as_str().unwrap().to_string())
                .unwrap()
        };
        for d in devices {
            let detail = get(&format!("/api/v1/devices/{}", d["id"].as_str().unwrap()));
            let dep = &detail["deployments"][0];
            match role(d).as_str() {
                "its application fails on 2.0.0" => {
                    assert_eq!(d["version"], "1.0.0", "{detail}");
                    assert_eq!(dep["state"], "rolled-back", "{detail}");
                }
                other => {
                    assert_eq!(d["version"], "2.0.0", "{other}: {detail}");
                    assert_eq!(dep["state"], "success", "{other}: {detail}");
                    // Inventory after the commit, over the device's mTLS connection.
                    assert_eq!(detail["inventory"]["ota_version"], "2.0.0", "{detail}");
                }
            }
            if role(d) == "loses power mid-install" {
                // The install started twice: the events show installing, then a new download
                // (resumed from the kept chunks) after the power came back.
                let ev = get(&format!(
                    "/api/v1/deployments/{}",
                    dep["id"].as_str().unwrap()
                ));
                let states: Vec<&str> = ev["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["state"].as_str().unwrap())
                    .collect();
                let first_install = states.iter().position(|s| *s == "installing").unwrap();
                assert!(
                    states[first_install..].contains(&"downloading"),
                    "a second download after the power cut: {states:?}"
                );
            }
        }
        Ok(())
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    let _ = child.kill();
    let _ = child.wait();
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}
