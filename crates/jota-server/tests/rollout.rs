//! Staged rollouts in the store, on SQLite and on the local PostgreSQL: phases in order with
//! canaries first, soak time, the rollback gate halting, resume accepting what tripped it,
//! pause, stragglers, max concurrent, abort, and concurrent evaluations assigning no device
//! twice.

use jota_server::rollout::{Filter, NewRollout, Phase, Policy, RolloutStatus, Step};
use jota_server::store::Store;
use jota_server::ServerError;

mod common;

const T0: i64 = 1_000_000;

fn phase(name: &str, percent: f64, soak_seconds: u64) -> Phase {
    Phase {
        name: name.into(),
        percent,
        soak_seconds,
    }
}

/// The active deployments of a rollout's devices: (device, deployment id).
async fn active(store: &Store, rollout: &str) -> Vec<(String, String)> {
    store
        .rollout_deployments(rollout)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.active)
        .map(|d| (d.device_id, d.id))
        .collect()
}

async fn status(store: &Store, id: &str) -> RolloutStatus {
    store.rollout_status(id).await.unwrap().unwrap()
}

async fn scenario(store: Store) {
    for i in 0..20 {
        let id = format!("dev-{i:02}");
        let hw = if i >= 18 {
            "3701-0005-500"
        } else {
            "3767-0005-300"
        };
        let mut tags = vec![];
        if i < 10 {
            tags.push("region=eu".to_string());
        }
        if i == 7 {
            tags.push("risk=canary".to_string());
        }
        store
            .add_device(&id, &format!("t{i}"), hw, &tags)
            .await
            .unwrap();
        let v = if i == 3 { "2.0.0" } else { "1.0.0" };
        let row = store
            .device_by_token(&format!("t{i}"))
            .await
            .unwrap()
            .unwrap();
        store.seen(&row, Some(v)).await.unwrap();
    }
    store
        .add_artifact(&common::artifact("v2", "2.0.0", T0))
        .await
        .unwrap();
    store
        .add_artifact(&common::artifact("v3", "3.0.0", T0))
        .await
        .unwrap();

    let new = |artifact: &str, filter: Filter, phases: Vec<Phase>, policy: Policy| NewRollout {
        name: "test".into(),
        artifact: artifact.into(),
        filter,
        phases: Some(phases),
        policy,
    };
    // Refusals name what is wrong and create nothing.
    let orin = Filter {
        hardware: Some("3767".into()),
        tags: vec![],
    };
    let e = store
        .create_rollout(
            "x",
            &new(
                "nope",
                orin.clone(),
                vec![phase("all", 100.0, 0)],
                Policy::default(),
            ),
            T0,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::NotFound(_)), "{e}");
    let nobody = Filter {
        hardware: None,
        tags: vec!["region=mars".into()],
    };
    let e = store
        .create_rollout(
            "x",
            &new(
                "v2",
                nobody,
                vec![phase("all", 100.0, 0)],
                Policy::default(),
            ),
            T0,
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no registered device"), "{e}");
    let e = store
        .create_rollout(
            "x",
            &new(
                "v2",
                orin.clone(),
                vec![phase("half", 50.0, 0)],
                Policy::default(),
            ),
            T0,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::BadRequest(_)), "{e}");
    assert!(store.rollouts().await.unwrap().is_empty());

    // Rollout A: 18 Orin Nanos (two AGX excluded by hardware), canary 5% → 50% → all.
    let policy = Policy {
        max_failure_percent: 20.0,
        max_rollback_percent: 10.0,
        max_concurrent: None,
        straggler_seconds: 1000,
    };
    let phases = vec![
        phase("canary", 5.0, 100),
        phase("half", 50.0, 100),
        phase("all", 100.0, 0),
    ];
    let st = store
        .create_rollout("ra", &new("v2", orin.clone(), phases, policy), T0)
        .await
        .unwrap();
    assert_eq!(
        st.phases.iter().map(|p| p.devices).collect::<Vec<_>>(),
        [1, 8, 9]
    );
    // The canary-tier device goes first, alone.
    assert_eq!(st.phases[0].assigned, 1);
    let a = active(&store, "ra").await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].0, "dev-07");
    assert!(store.active_deployment("dev-18").await.unwrap().is_none());
    store
        .report("dev-07", &a[0].1, "success", 100, 10, "")
        .await
        .unwrap();
    // Soak: nothing moves before 100 s.
    assert_eq!(store.evaluate_rollout("ra", T0 + 50).await.unwrap(), []);
    // Several replicas evaluating at once: one moves the phase, nobody assigns twice.
    let mut hs = Vec::new();
    for _ in 0..6 {
        let s = store.clone();
        hs.push(tokio::spawn(async move {
            s.evaluate_rollout("ra", T0 + 100).await
        }));
    }
    let mut steps = Vec::new();
    for h in hs {
        steps.extend(h.await.unwrap().unwrap());
    }
    assert_eq!(steps, [Step::Advanced(1), Step::Assigned(8)], "{steps:?}");
    assert_eq!(store.rollout_deployments("ra").await.unwrap().len(), 9);
    let st = status(&store, "ra").await;
    assert_eq!(st.rollout.phase, 1);
    assert_eq!(st.phases[1].waiting, 0);

    // A device already on 2.0.0 is recorded as done, without a deployment to act on.
    let dev3 = store
        .rollout_deployments("ra")
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.device_id == "dev-03");
    if let Some(d) = &dev3 {
        assert_eq!((d.state.as_str(), d.active), ("success", false));
        assert_eq!(d.message, "already running 2.0.0");
    }

    // One rollback in nine is over 10%: the rollout halts and hands out nothing more.
    let a = active(&store, "ra").await;
    store
        .report(&a[0].0, &a[0].1, "rolled-back", 100, 10, "boot failed")
        .await
        .unwrap();
    let steps = store.evaluate_rollout("ra", T0 + 101).await.unwrap();
    match &steps[..] {
        [Step::Halted(why)] => assert!(why.contains("rollback rate 11.1% (1 of 9)"), "{why}"),
        s => panic!("{s:?}"),
    }
    let st = status(&store, "ra").await;
    assert_eq!(st.rollout.state, "halted");
    assert_eq!(store.evaluate_rollout("ra", T0 + 500).await.unwrap(), []);
    let e = store.control_rollout("ra", "pause", T0).await.unwrap_err();
    assert!(matches!(e, ServerError::Conflict(_)), "{e}");
    // Resuming accepts that rollback; a failure (11% < 20%) does not halt it again.
    let st = store
        .control_rollout("ra", "resume", T0 + 102)
        .await
        .unwrap();
    assert_eq!(
        (st.rollout.state.as_str(), st.rollout.accepted_rollbacks),
        ("running", 1)
    );
    store
        .report(&a[1].0, &a[1].1, "failure", 30, 10, "download failed")
        .await
        .unwrap();
    assert_eq!(store.evaluate_rollout("ra", T0 + 103).await.unwrap(), []);
    for (dev, dep) in &a[2..] {
        store
            .report(dev, dep, "success", 100, 10, "")
            .await
            .unwrap();
    }
    let steps = store.evaluate_rollout("ra", T0 + 200).await.unwrap();
    assert_eq!(steps[0], Step::Advanced(2), "{steps:?}");

    // Pause holds the phase; resume goes on.
    store
        .control_rollout("ra", "pause", T0 + 201)
        .await
        .unwrap();
    assert_eq!(store.evaluate_rollout("ra", T0 + 300).await.unwrap(), []);
    store
        .control_rollout("ra", "resume", T0 + 301)
        .await
        .unwrap();

    // All but one of the last phase succeed; the last one is offline. The phase waits for
    // it through the straggler window, then the rollout ends and its deployment is canceled.
    let a = active(&store, "ra").await;
    assert!(!a.is_empty());
    for (dev, dep) in &a[1..] {
        store
            .report(dev, dep, "success", 100, 10, "")
            .await
            .unwrap();
    }
    assert_eq!(store.evaluate_rollout("ra", T0 + 400).await.unwrap(), []);
    assert_eq!(
        store.evaluate_rollout("ra", T0 + 200 + 1000).await.unwrap(),
        [Step::Done]
    );
    let st = status(&store, "ra").await;
    assert_eq!(st.rollout.state, "done");
    let t = &st.total;
    assert_eq!(
        (
            t.devices,
            t.success,
            t.failure,
            t.rolled_back,
            t.canceled,
            t.waiting,
            t.assigned
        ),
        (18, 15, 1, 1, 1, 0, 0),
        "{t:?}"
    );
    let off = store.active_deployment(&a[0].0).await.unwrap();
    assert!(off.is_none(), "the straggler's deployment ended");

    // Rollout B: the EU devices, three at a time; abort cancels what has not started.
    let eu = Filter {
        hardware: None,
        tags: vec!["region=eu".into()],
    };
    let policy = Policy {
        max_concurrent: Some(3),
        ..Policy::default()
    };
    let st = store
        .create_rollout(
            "rb",
            &new("v3", eu, vec![phase("all", 100.0, 0)], policy),
            T0 + 2000,
        )
        .await
        .unwrap();
    assert_eq!(
        (st.total.devices, st.total.assigned, st.total.waiting),
        (10, 3, 7)
    );
    let a = active(&store, "rb").await;
    store
        .report(&a[0].0, &a[0].1, "installing", 50, 10, "")
        .await
        .unwrap();
    store
        .report(&a[1].0, &a[1].1, "success", 100, 10, "")
        .await
        .unwrap();
    store
        .report(&a[2].0, &a[2].1, "success", 100, 10, "")
        .await
        .unwrap();
    assert_eq!(
        store.evaluate_rollout("rb", T0 + 2001).await.unwrap(),
        [Step::Assigned(2)]
    );
    let st = store
        .control_rollout("rb", "abort", T0 + 2002)
        .await
        .unwrap();
    let t = &st.total;
    assert_eq!(st.rollout.state, "aborted");
    assert_eq!(
        (t.updating, t.success, t.canceled, t.waiting),
        (1, 2, 2, 5),
        "{t:?}"
    );
    let e = store.control_rollout("rb", "resume", T0).await.unwrap_err();
    assert!(matches!(e, ServerError::Conflict(_)), "{e}");
    assert!(matches!(
        store.control_rollout("zz", "pause", T0).await.unwrap_err(),
        ServerError::NotFound(_)
    ));
    assert!(matches!(
        store
            .control_rollout("rb", "explode", T0)
            .await
            .unwrap_err(),
        ServerError::BadRequest(_)
    ));
    // The device still updating may finish and report.
    store
        .report(&a[0].0, &a[0].1, "success", 100, 10, "")
        .await
        .unwrap();
    assert_eq!(store.rollouts().await.unwrap().len(), 2);

    // Maintenance windows (UTC): T0 is 13:46. A device is assigned only inside its window.
    for (id, w) in [
        ("w-in", "13:00-14:00"),
        ("w-out", "02:00-03:00"),
        ("w-wrap", "23:00-14:00"),
    ] {
        store
            .add_device(
                id,
                &format!("tw-{id}"),
                "",
                &["fleet=w".into(), format!("window={w}")],
            )
            .await
            .unwrap();
    }
    let e = store
        .add_device("w-bad", "tw-bad", "", &["window=2:00-3:00".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, ServerError::BadRequest(_)) && e.to_string().contains("HH:MM"),
        "{e}"
    );
    let w = Filter {
        hardware: None,
        tags: vec!["fleet=w".into()],
    };
    let st = store
        .create_rollout(
            "rw",
            &new("v3", w, vec![phase("all", 100.0, 0)], Policy::default()),
            T0,
        )
        .await
        .unwrap();
    assert_eq!(
        (st.total.assigned, st.total.waiting),
        (2, 1),
        "{:?}",
        st.total
    );
    let mut got: Vec<String> = active(&store, "rw")
        .await
        .into_iter()
        .map(|a| a.0)
        .collect();
    got.sort();
    assert_eq!(got, ["w-in", "w-wrap"]);
    let at_0230 = T0 + (24 * 60 - 826 + 150) * 60;
    assert_eq!(
        store.evaluate_rollout("rw", at_0230).await.unwrap(),
        [Step::Assigned(1)]
    );
    assert_eq!(store.rollouts().await.unwrap().len(), 3);
}

#[tokio::test]
async fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    scenario(Store::open(&common::sqlite_url(d.path())).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres() {
    let pg = common::PgSchema::new().await;
    scenario(Store::open(&pg.url).await.unwrap()).await;
    pg.drop().await;
}
