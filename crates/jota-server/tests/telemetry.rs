//! Telemetry, inventory, alerts and per-rollout metrics in the store, on SQLite and on the
//! local PostgreSQL. Alerts are asked for "later" (`alerts(now + …)`) instead of waiting.

use jota_server::rollout::{Filter, NewRollout, Phase, Policy};
use jota_server::store::{now, Store};
use jota_server::telemetry::Telemetry;

mod common;

fn up(uptime: u64) -> Telemetry {
    Telemetry {
        uptime_seconds: Some(uptime),
        temperature_mc: Some(51_500),
        ..Default::default()
    }
}

async fn scenario(store: Store) {
    let t0 = now();
    for i in 0..16 {
        store
            .add_device(&format!("d{i:02}"), &format!("t{i}"), "3767", &[])
            .await
            .unwrap();
    }
    store
        .add_artifact(&common::artifact("v2", "2.0.0", now()))
        .await
        .unwrap();

    // d00 reported every 5 minutes for the last 40 minutes, each time just booted: a boot loop.
    let b = t0 - 2400;
    for k in 0..9 {
        store
            .add_telemetry("d00", &up(30), b + k * 300)
            .await
            .unwrap();
    }
    // d01 reports as often, staying up: one boot, no loop.
    for k in 0..9 {
        store
            .add_telemetry("d01", &up(1000 + k as u64 * 300), b + k * 300)
            .await
            .unwrap();
    }
    assert_eq!(store.boots_of("d00", 0).await.unwrap().len(), 9);
    assert_eq!(store.boots_of("d01", 0).await.unwrap(), vec![b - 1000]);
    let history = store.telemetry_of("d01", 3).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].at, b + 8 * 300, "newest first");
    assert_eq!(history[0].report.uptime_seconds, Some(1000 + 8 * 300));

    // Inventory replaces, and its uptime counts as a boot report too.
    let mut inv = serde_json::Map::new();
    inv.insert("l4t".into(), "R36 (release), REVISION: 4.0".into());
    inv.insert("uptime_seconds".into(), 10.into());
    store.set_inventory("d02", &inv, t0).await.unwrap();
    let (got, at) = store.inventory("d02").await.unwrap();
    assert_eq!(got["l4t"], "R36 (release), REVISION: 4.0");
    assert_eq!(at, Some(t0));
    assert_eq!(store.boots_of("d02", 0).await.unwrap(), vec![t0 - 10]);

    // A rollout to d03..d15: d03 stops in `rebooting`, d04 rolls back, the rest succeed —
    // and then none of them is heard of again.
    let r = store
        .create_rollout(
            "r1",
            &NewRollout {
                name: "r1".into(),
                artifact: "v2".into(),
                filter: Filter::default(),
                phases: Some(vec![Phase {
                    name: "all".into(),
                    percent: 100.0,
                    soak_seconds: 0,
                }]),
                policy: Policy {
                    max_rollback_percent: 100.0,
                    max_failure_percent: 100.0,
                    ..Policy::default()
                },
            },
            t0,
        )
        .await
        .unwrap();
    assert_eq!(r.total.assigned, 16);
    for d in store.rollout_deployments("r1").await.unwrap() {
        let n: usize = d.device_id[1..].parse().unwrap();
        if n < 3 {
            continue;
        }
        let report = |state: &'static str, bytes: i64| {
            let (store, dev, id) = (&store, d.device_id.clone(), d.id.clone());
            async move { store.report(&dev, &id, state, 50, bytes, "").await.unwrap() }
        };
        report("downloading", 1000).await;
        report("rebooting", 1000).await;
        match n {
            3 => {}
            4 => {
                report("rolled-back", 1000).await;
            }
            _ => {
                report("success", 1000).await;
            }
        }
    }
    let st = store.rollout_status("r1").await.unwrap().unwrap();
    let m = &st.metrics;
    assert_eq!(m.finished, 12);
    assert!(
        (m.success_percent - 100.0 * 11.0 / 12.0).abs() < 1e-9,
        "{m:?}"
    );
    assert!((m.rollback_percent - 100.0 / 12.0).abs() < 1e-9, "{m:?}");
    assert_eq!(m.bytes_downloaded, 13 * 1000);
    assert!(
        m.mean_update_seconds >= 0.0 && m.mean_update_seconds < 60.0,
        "{m:?}"
    );

    // Now: only d00's loop (the rollout's devices were heard of just now).
    let a = store.alerts(t0 + 60, 60).await.unwrap();
    let kinds: Vec<_> = a
        .iter()
        .map(|a| (a.kind.as_str(), a.device_id.as_deref()))
        .collect();
    assert_eq!(kinds, vec![("boot-loop", Some("d00"))], "{a:#?}");
    assert_eq!(a[0].severity, "page");
    assert!(a[0].message.starts_with("9 boots"), "{}", a[0].message);

    // Hours on: d00 stopped rebooting; d03 is stuck in its reboot; of the 12 devices that
    // finished only d05 was heard of since (telemetry): 12 unreachable, more than 10 of one
    // rollout.
    let later = t0 + 3 * 3600;
    store
        .add_telemetry("d05", &up(7000), later - 60)
        .await
        .unwrap();
    let a = store.alerts(later, 60).await.unwrap();
    let count = |k: &str| a.iter().filter(|x| x.kind == k).count();
    assert_eq!(count("boot-loop"), 0, "{a:#?}");
    assert_eq!(count("stuck-update"), 1);
    let stuck = a.iter().find(|x| x.kind == "stuck-update").unwrap();
    assert_eq!(stuck.device_id.as_deref(), Some("d03"));
    assert_eq!(stuck.rollout_id.as_deref(), Some("r1"));
    assert_eq!(
        count("unreachable-after-update"),
        12,
        "d03..d15 but d05: {a:#?}"
    );
    assert!(!a.iter().any(|x| x.device_id.as_deref() == Some("d05")));
    assert_eq!(count("rollout-unreachable"), 1);
    assert_eq!(a[0].severity, "page", "pages first");

    // The rollout's numbers on /metrics.
    assert_eq!(st.rollout.state, "running");
    let m = jota_server::metrics::render(&store, &Default::default(), 60)
        .await
        .unwrap();
    assert!(
        m.contains("jota_rollout_bytes_downloaded{rollout=\"r1\"} 13000"),
        "{m}"
    );

    // Retention: reports before the cut go, with their boots.
    let gone = store.prune_telemetry(b + 4 * 300).await.unwrap();
    assert_eq!(gone, 8, "d00 and d01 before the cut");
    assert_eq!(store.boots_of("d00", 0).await.unwrap().len(), 4);
    assert_eq!(store.telemetry_of("d01", 100).await.unwrap().len(), 5);
}

#[tokio::test]
async fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    scenario(Store::open(&common::sqlite_url(d.path())).await.unwrap()).await;
}

#[tokio::test]
async fn postgres() {
    let pg = common::PgSchema::new().await;
    scenario(Store::open(&pg.url).await.unwrap()).await;
    pg.drop().await;
}
