//! The agent against a fleet server in this process: install policies, cancel, inventory
//! and telemetry from the device's sysfs/procfs, and the hawkBit DDI client.

mod common;

use common::Fleet;
use jota_fleetsim::Behaviour;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn wait<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until deployment `id` has ended; its view with events.
fn ended(fleet: &Fleet, id: &str, secs: u64, what: &str) -> Value {
    wait(secs, what, || {
        let d = fleet.get(&format!("/api/v1/deployments/{id}"));
        (d["deployment"]["active"] == false).then_some(d)
    })
}

fn on(list: &[Value], id: &str, version: &str) -> bool {
    list.iter()
        .any(|d| d["id"] == id && d["version"] == version)
}

fn behaviour() -> Behaviour {
    Behaviour {
        max_sleep: Some(Duration::from_millis(500)),
        ..Behaviour::default()
    }
}

fn write(root: &Path, abs: &str, text: &str) {
    let p = root.join(abs.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn download_only_holds_the_install_then_cancel_drops_it_and_a_new_one_installs() {
    let mut fleet = Fleet::new(2);
    let server = fleet.server.clone();
    let (id, dir, config) = fleet.device(1, &server);
    // The device's sysfs/procfs (the simulator has none of its own).
    write(
        &dir,
        "/sys/devices/virtual/thermal/thermal_zone0/temp",
        "47500\n",
    );
    write(
        &dir,
        "/sys/devices/virtual/thermal/thermal_zone1/temp",
        "51000\n",
    );
    write(
        &dir,
        "/proc/meminfo",
        "MemTotal: 7620000 kB\nMemAvailable: 5123456 kB\n",
    );
    write(&dir, "/proc/uptime", "1234.56 2000.00\n");
    let _ev = fleet.run(vec![(id.clone(), dir.clone(), config, behaviour())]);
    fleet.wait_devices(60, "the device on 1.0.0", |l| on(l, &id, "1.0.0"));

    // Inventory after boot and telemetry from the device's files.
    let d = wait(30, "inventory and telemetry", || {
        let d = fleet.get(&format!("/api/v1/devices/{id}"));
        (d["inventory"]["ota_version"] == "1.0.0" && d["telemetry"].is_object()).then_some(d)
    });
    assert_eq!(d["inventory"]["boards"][0], "3767-0005-300", "{d}");
    assert_eq!(d["inventory"]["uptime_seconds"], 1234, "{d}");
    let t = &d["telemetry"]["report"];
    assert_eq!(t["temperature_mc"], 51000, "the hottest zone: {t}");
    assert_eq!(t["memory_available_kb"], 5123456, "{t}");
    assert_eq!(t["boot_slot"], "A", "{t}");
    assert!(
        t.get("gpu_utilization_pct").is_none(),
        "absent on this device: {t}"
    );

    // Download-only: fetched and held, nothing written to the inactive slot.
    fleet.put(
        &format!("/api/v1/devices/{id}/tags"),
        &json!({ "tags": ["install=download-only"] }),
    );
    let dep = fleet.post(
        "/api/v1/deployments",
        &json!({ "artifact": fleet.v2, "device": id }),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    let held = wait(60, "the download held", || {
        let d = fleet.get(&format!("/api/v1/deployments/{dep_id}"));
        d["deployment"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("install held"))
            .then_some(d)
    });
    assert_eq!(held["deployment"]["state"], "downloading", "{held}");
    assert_eq!(held["deployment"]["progress"], 100, "{held}");
    assert!(
        held["deployment"]["downloaded_bytes"].as_i64().unwrap() > 0,
        "{held}"
    );
    let cache = dir.join("data/ota/delta");
    assert!(
        std::fs::read_dir(&cache).unwrap().count() == 1,
        "the chunks are kept"
    );
    std::thread::sleep(Duration::from_secs(2));
    let st: Value =
        serde_json::from_slice(&std::fs::read(dir.join("data/ota/fleet.json")).unwrap()).unwrap();
    assert_eq!(st["stage"], "held");
    assert!(
        !dir.join("data/ota/journal.json").exists() || {
            let j: Value =
                serde_json::from_slice(&std::fs::read(dir.join("data/ota/journal.json")).unwrap())
                    .unwrap();
            j["version"] != "2.0.0"
        },
        "nothing installed while held"
    );

    // Cancel: the device stops, says so, and drops what it fetched.
    fleet.post(&format!("/api/v1/deployments/{dep_id}/cancel"), &json!({}));
    let d = ended(&fleet, &dep_id, 30, "the cancel confirmed");
    assert_eq!(d["deployment"]["state"], "failure", "{d}");
    assert!(
        d["deployment"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{d}"
    );
    wait(10, "the chunk cache dropped", || {
        (!cache.exists()).then_some(())
    });

    // The policy lifted, a new deployment installs, reboots, commits, and says so.
    fleet.put(
        &format!("/api/v1/devices/{id}/tags"),
        &json!({ "tags": [] }),
    );
    let dep = fleet.post(
        "/api/v1/deployments",
        &json!({ "artifact": fleet.v2, "device": id }),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    let d = ended(&fleet, &dep_id, 90, "the update committed");
    assert_eq!(d["deployment"]["state"], "success", "{d}");
    let states: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    for s in ["downloading", "installing", "rebooting", "success"] {
        assert!(states.contains(&s), "{s} reported: {states:?}");
    }
    let dev = fleet.get(&format!("/api/v1/devices/{id}"));
    assert_eq!(dev["version"], "2.0.0");
    wait(10, "the inventory after the update", || {
        let d = fleet.get(&format!("/api/v1/devices/{id}"));
        (d["inventory"]["ota_version"] == "2.0.0").then_some(())
    });
    fleet.stop();
}

#[test]
fn the_agent_speaks_hawkbit_ddi() {
    let mut fleet = Fleet::new(1);
    let server = fleet.server.clone();
    let (id, dir, mut config) = fleet.device(7, &server);
    // Registered by the operator, with the target token hawkBit would show.
    let token = fleet.post(
        "/api/v1/devices",
        &json!({ "id": id, "hardware": "3767-0005-300" }),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    config.server.protocol = "ddi".into();
    config.server.ddi_tenant = "DEFAULT".into();
    config.server.ddi_token = token;
    let _ev = fleet.run(vec![(id.clone(), dir, config, behaviour())]);
    let dep = fleet.post(
        "/api/v1/deployments",
        &json!({ "artifact": fleet.v2, "device": id }),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    let d = ended(&fleet, &dep_id, 90, "the DDI action closed");
    assert_eq!(d["deployment"]["state"], "success", "{d}");
    let messages: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains("jota: rebooting")),
        "{messages:?}"
    );
    let dev = fleet.get(&format!("/api/v1/devices/{id}"));
    assert_eq!(dev["version"], "2.0.0", "{dev}");
    fleet.stop();
}

#[test]
fn an_application_bundle_is_applied_live_and_reported_without_a_reboot() {
    let mut fleet = Fleet::new(1);
    let server = fleet.server.clone();
    let (id, dir, config) = fleet.device(3, &server);
    // A model layer: two files for /data/models, version 2024.03.15.
    let src = fleet.dir.path().join("model");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("engine"), vec![7u8; 300_000]).unwrap();
    std::fs::write(src.join("manifest.json"), b"{\"inputs\":1}").unwrap();
    let out = fleet.dir.path().join("model-2024.03.15.jota");
    let mut b = jota_bundle::build::Builder::new(
        fleet.dir.path(),
        jota_bundle::build::Options::default(),
        jota_bundle::build::BaseKeys::default(),
    )
    .unwrap();
    for (name, path) in [
        ("engine", "/data/models/model.engine"),
        ("manifest", "/data/models/manifest.json"),
    ] {
        let mut s = jota_bundle::build::ComponentSpec::new(name, jota_bundle::ComponentType::Model);
        s.path = Some(path.into());
        b.add(
            s,
            &src.join(if name == "engine" {
                "engine"
            } else {
                "manifest.json"
            }),
            &jota_bundle::build::NoProgress,
        )
        .unwrap();
    }
    let signers: [&dyn jota_bundle::sign::Signer; 1] = [&fleet.key];
    b.finish(
        jota_bundle::build::Release {
            version: "2024.03.15".into(),
            ..Default::default()
        },
        &signers,
        &out,
    )
    .unwrap();
    let up = fleet.call(
        fleet
            .http
            .post(format!("{}/api/v1/artifacts", fleet.server))
            .header("content-type", "application/octet-stream")
            .body(std::fs::read(&out).unwrap()),
    );
    let _ev = fleet.run(vec![(id.clone(), dir.clone(), config, behaviour())]);
    fleet.wait_devices(60, "the device on 1.0.0", |l| on(l, &id, "1.0.0"));
    let dep = fleet.post(
        "/api/v1/deployments",
        &json!({ "artifact": up["id"], "device": id }),
    );
    let dep_id = dep["id"].as_str().unwrap().to_string();
    let d = ended(&fleet, &dep_id, 60, "the application update");
    assert_eq!(d["deployment"]["state"], "success", "{d}");
    let states: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(
        !states.contains(&"rebooting"),
        "no reboot for a model: {states:?}"
    );
    assert_eq!(
        std::fs::read_link(dir.join("data/models/current")).unwrap(),
        Path::new("2024.03.15")
    );
    assert_eq!(
        std::fs::read(dir.join("data/models/current/model.engine")).unwrap(),
        vec![7u8; 300_000]
    );
    wait(20, "the layer in the inventory", || {
        let dev = fleet.get(&format!("/api/v1/devices/{id}"));
        (dev["inventory"]["layers"]["dirs"]["/data/models"]["current"] == "2024.03.15"
            && dev["version"] == "1.0.0")
            .then_some(())
    });
    fleet.stop();
}
