//! The store on SQLite and on the local PostgreSQL (JOTA_TEST_POSTGRES, default
//! postgres://postgres@127.0.0.1:5432/test; each run in a schema of its own): the same
//! scenario, including concurrent deployments to one device.

use jota_server::provision::Credential;
use jota_server::store::{now, Store};
use jota_server::ServerError;

mod common;

async fn scenario(store: Store) {
    store
        .add_device("orin-1", "h1", "3767-0005-300", &["canary".into()])
        .await
        .unwrap();
    let e = store.add_device("orin-1", "h2", "", &[]).await.unwrap_err();
    assert!(matches!(e, ServerError::Conflict(_)), "{e}");
    assert_eq!(
        store.device_by_token("h1").await.unwrap().unwrap().id,
        "orin-1"
    );
    assert!(store.device_by_token("nope").await.unwrap().is_none());
    let row = store.device_by_token("h1").await.unwrap().unwrap();
    store.seen(&row, Some("1.0.0")).await.unwrap();
    // A new version is committed before the poll is answered.
    let r = store.device_by_token("h1").await.unwrap().unwrap();
    assert_eq!(r.version.as_deref(), Some("1.0.0"));
    let d = &store.devices().await.unwrap()[0];
    assert_eq!(
        (d.version.as_deref(), d.tags.as_slice()),
        (Some("1.0.0"), &["canary".to_string()][..])
    );
    assert!(d.last_seen.unwrap() >= now() - 5);

    // Bare heartbeats of many devices are buffered and written in one batch (over one
    // 100-row statement); versions reported later land at once, and never go back to none.
    let many: Vec<(String, String, String, Vec<String>)> = (0..250)
        .map(|i| {
            (
                format!("hb-{i:03}"),
                format!("hbt-{i}"),
                String::new(),
                vec![],
            )
        })
        .collect();
    store.add_devices(&many).await.unwrap();
    let mut rows = Vec::new();
    for i in 0..250 {
        let r = store
            .device_by_token(&format!("hbt-{i}"))
            .await
            .unwrap()
            .unwrap();
        store.seen(&r, None).await.unwrap();
        rows.push(r);
    }
    assert_eq!(
        store
            .device_by_token("hbt-7")
            .await
            .unwrap()
            .unwrap()
            .last_seen,
        None
    );
    assert_eq!(store.flush_heartbeats().await.unwrap(), 250);
    assert_eq!(store.flush_heartbeats().await.unwrap(), 0);
    let r = store.device_by_token("hbt-7").await.unwrap().unwrap();
    assert_eq!((r.version, r.last_seen.is_some()), (None, true));
    // Concurrent version reports share commits; each is there when its call returns.
    let mut hs = Vec::new();
    for (i, r) in rows.into_iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let s = store.clone();
        hs.push(tokio::spawn(async move {
            s.seen(&r, Some(&format!("1.{i}"))).await.unwrap();
            let back = s
                .device_by_token(&format!("hbt-{i}"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(back.version, Some(format!("1.{i}")));
        }));
    }
    for h in hs {
        h.await.unwrap();
    }
    let r = store.device_by_token("hbt-248").await.unwrap().unwrap();
    store.seen(&r, None).await.unwrap();
    store.flush_heartbeats().await.unwrap();
    let r = store.device_by_token("hbt-248").await.unwrap().unwrap();
    assert_eq!(r.version.as_deref(), Some("1.248"));

    store
        .add_artifact(&common::artifact("a1", "2.0.0", now()))
        .await
        .unwrap();
    store
        .add_artifact(&common::artifact("a1", "2.0.0", now()))
        .await
        .unwrap(); // idempotent
    assert_eq!(store.artifacts().await.unwrap().len(), 1);
    assert!(matches!(
        store.deploy("x", "ghost", "a1").await,
        Err(ServerError::NotFound(_))
    ));
    assert!(matches!(
        store.deploy("x", "orin-1", "nope").await,
        Err(ServerError::NotFound(_))
    ));

    // Concurrent deployments to one device: all succeed one after the other; one stays active.
    let mut hs = Vec::new();
    for i in 0..8 {
        let s = store.clone();
        hs.push(tokio::spawn(async move {
            s.deploy(&format!("d{i}"), "orin-1", "a1").await
        }));
    }
    for h in hs {
        h.await.unwrap().unwrap();
    }
    let all = store.deployments().await.unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().filter(|d| d.active).count(), 1);
    assert_eq!(all.iter().filter(|d| d.state == "canceled").count(), 7);
    let active = store.active_deployment("orin-1").await.unwrap().unwrap();
    // The poll's one query sees the same deployment and its artifact.
    let v = store
        .poll_view(&Credential::Token("h1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.device.id, "orin-1");
    let pd = v.deployment.unwrap();
    assert_eq!(
        (pd.id.as_str(), pd.artifact.version.as_str(), pd.rollout_id),
        (active.id.as_str(), "2.0.0", None)
    );
    assert!(store
        .poll_view(&Credential::Token("nope".into()))
        .await
        .unwrap()
        .is_none());

    // Reports: a bad state or a stale deployment changes nothing; a final state ends it.
    let e = store
        .report("orin-1", &active.id, "exploded", 5, 0, "")
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::BadRequest(_)), "{e}");
    let stale = all.iter().find(|d| !d.active).unwrap();
    let e = store
        .report("orin-1", &stale.id, "installing", 5, 0, "")
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::Conflict(_)), "{e}");
    store
        .report("orin-1", &active.id, "downloading", 40, 4_000, "fetching")
        .await
        .unwrap();
    let done = store
        .report("orin-1", &active.id, "success", 100, 10_000, "committed")
        .await
        .unwrap();
    assert!(!done.active);
    assert_eq!(done.downloaded_bytes, 10_000);
    assert!(store.active_deployment("orin-1").await.unwrap().is_none());
    let v = store
        .poll_view(&Credential::Token("h1".into()))
        .await
        .unwrap()
        .unwrap();
    assert!(v.deployment.is_none());
    let ev = store.events(&active.id).await.unwrap();
    assert_eq!(
        ev.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["downloading", "success"]
    );
    let e = store
        .report("orin-1", &active.id, "failure", 0, 0, "")
        .await
        .unwrap_err();
    assert!(
        matches!(e, ServerError::Conflict(_)),
        "an ended deployment takes no reports: {e}"
    );

    // The same metrics on either database.
    let m = jota_server::metrics::render(&store, &Default::default(), 60)
        .await
        .unwrap();
    for line in [
        "jota_devices 251",
        "jota_deployments{state=\"success\"} 1",
        "jota_deployments{state=\"canceled\"} 7",
    ] {
        assert!(m.lines().any(|l| l == line), "no `{line}` in\n{m}");
    }
}

#[tokio::test]
async fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    let url = common::sqlite_url(d.path());
    scenario(Store::open(&url).await.unwrap()).await;
    // Reopening runs no migration twice and keeps the data.
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.deployments().await.unwrap().len(), 8);
}

#[tokio::test]
async fn postgres() {
    let pg = common::PgSchema::new().await;
    scenario(Store::open(&pg.url).await.unwrap()).await;
    let s = Store::open(&pg.url).await.unwrap();
    assert_eq!(s.deployments().await.unwrap().len(), 8);
    drop(s);
    pg.drop().await;
}
