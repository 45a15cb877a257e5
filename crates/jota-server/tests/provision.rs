//! Provisioning decisions in the store, on SQLite and on the local PostgreSQL: provisioning
//! tokens (uses, expiry, revocation, no double use under concurrency), an operator's accept
//! and reject, renewal with the same key, and devices found by certificate.

use jota_server::provision::{
    device_id, parse_csr, Credential, DeviceCa, Outcome, ProvisionRequest,
};
use jota_server::store::Store;
use jota_server::ServerError;
use std::sync::Arc;

mod common;

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn request(serial: &str, csr: &str) -> ProvisionRequest {
    serde_json::from_value(serde_json::json!({
        "serial": serial, "mac": "48:b0:2d:00:00:01", "hardware": "3767-0005-300", "csr": csr
    }))
    .unwrap()
}

async fn ask(
    store: &Store,
    ca: &DeviceCa,
    serial: &str,
    csr: &str,
    token: Option<&str>,
) -> Result<Outcome, ServerError> {
    let id = device_id(serial, "48:b0:2d:00:00:01");
    store
        .provision(
            ca,
            &id,
            &request(serial, csr),
            parse_csr(csr).unwrap(),
            token,
        )
        .await
}

async fn scenario(store: Store, ca: DeviceCa) {
    let store = Arc::new(store);
    let ca = Arc::new(ca);
    // A token for two devices, with tags.
    let t = store
        .add_provision_token("", &["region=eu".into()], 2, None)
        .await
        .unwrap();
    let token = t.token.clone().unwrap();
    let key_a = csr();
    let Outcome::Accepted(cert_a, tok_a) =
        ask(&store, &ca, "A", &key_a, Some(&token)).await.unwrap()
    else {
        panic!("a token with uses left accepts")
    };
    let id_a = device_id("A", "48:b0:2d:00:00:01");
    let by_cert = store
        .device_by(&Credential::Cert(cert_a.sha256.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_cert.id, id_a);
    assert_eq!(by_cert.tags, vec!["region=eu".to_string()]);
    assert_eq!(by_cert.hardware, "3767-0005-300");
    let by_token = store
        .device_by(&Credential::Token(jota_server::token_hash(&tok_a)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_token.id, id_a);
    assert!(cert_a.chain_pem.ends_with(&ca.pem()));

    // One use left; two devices race for it: exactly one wins, the other waits.
    let (s1, c1, s2, c2) = (store.clone(), ca.clone(), store.clone(), ca.clone());
    let (t1, t2) = (token.clone(), token.clone());
    let (k1, k2) = (csr(), csr());
    let (r1, r2) = tokio::join!(
        tokio::spawn(async move { ask(&s1, &c1, "B", &k1, Some(&t1)).await }),
        tokio::spawn(async move { ask(&s2, &c2, "C", &k2, Some(&t2)).await }),
    );
    let accepted = [r1.unwrap().unwrap(), r2.unwrap().unwrap()]
        .iter()
        .filter(|o| matches!(o, Outcome::Accepted(..)))
        .count();
    assert_eq!(accepted, 1);
    assert_eq!(store.provision_tokens().await.unwrap()[0].uses_left, 0);
    let pending = store.provision_requests().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, "pending");

    // The operator accepts it; its next request with the same key gets a certificate.
    let waiting = pending[0].id.clone();
    let serial = if waiting == device_id("B", "48:b0:2d:00:00:01") {
        "B"
    } else {
        "C"
    };
    let p = store
        .decide_provision(&waiting, true, &["risk=canary".into()])
        .await
        .unwrap();
    assert_eq!(p.state, "accepted");
    let e = store
        .decide_provision(&waiting, false, &[])
        .await
        .unwrap_err();
    assert!(matches!(e, ServerError::Conflict(_)), "{e}");
    // Another key for the accepted id waits for an operator again (a reflashed device),
    let other = csr();
    assert!(matches!(
        ask(&store, &ca, serial, &other, None).await.unwrap(),
        Outcome::Pending
    ));
    // who accepts it; the device is the same, with a new key.
    store.decide_provision(&waiting, true, &[]).await.unwrap();
    assert!(matches!(
        ask(&store, &ca, serial, &other, None).await.unwrap(),
        Outcome::Accepted(..)
    ));
    assert_eq!(
        store.device(&waiting).await.unwrap().unwrap().tags,
        vec!["risk=canary".to_string()]
    );

    // Renewal: the same key, a new certificate; the old one no longer finds the device.
    let Outcome::Accepted(renewed, _) = ask(&store, &ca, "A", &key_a, None).await.unwrap() else {
        panic!("its own key renews")
    };
    assert_ne!(renewed.sha256, cert_a.sha256);
    assert!(store
        .device_by(&Credential::Cert(cert_a.sha256.clone()))
        .await
        .unwrap()
        .is_none());

    // Rejected: that key stays refused.
    let mallory = csr();
    assert!(matches!(
        ask(&store, &ca, "A", &mallory, None).await.unwrap(),
        Outcome::Pending
    ));
    store.decide_provision(&id_a, false, &[]).await.unwrap();
    let e = ask(&store, &ca, "A", &mallory, None).await.err().unwrap();
    assert!(matches!(e, ServerError::Forbidden(_)), "{e}");
    assert!(store
        .device_by(&Credential::Cert(renewed.sha256.clone()))
        .await
        .unwrap()
        .is_some());

    // Expired and revoked tokens register nobody.
    let expired = store
        .add_provision_token("", &[], 5, Some(-1))
        .await
        .unwrap();
    assert!(matches!(
        ask(&store, &ca, "D", &csr(), expired.token.as_deref())
            .await
            .unwrap(),
        Outcome::Pending
    ));
    let fresh = store.add_provision_token("", &[], 5, None).await.unwrap();
    store.revoke_provision_token(&fresh.id).await.unwrap();
    assert!(matches!(
        ask(&store, &ca, "E", &csr(), fresh.token.as_deref())
            .await
            .unwrap(),
        Outcome::Pending
    ));
    assert!(matches!(
        store.revoke_provision_token("nope").await,
        Err(ServerError::NotFound(_))
    ));
    assert!(matches!(
        store
            .add_provision_token("", &["window=25:00-26:00".into()], 1, None)
            .await,
        Err(ServerError::BadRequest(_))
    ));
    assert_eq!(
        store.devices().await.unwrap().len(),
        3,
        "A, the race's winner, the accepted one"
    );
}

#[tokio::test]
async fn sqlite() {
    let d = tempfile::tempdir().unwrap();
    let ca = DeviceCa::open(&d.path().join("tls")).unwrap();
    scenario(
        Store::open(&common::sqlite_url(d.path())).await.unwrap(),
        ca,
    )
    .await;
}

#[tokio::test]
async fn postgres() {
    let d = tempfile::tempdir().unwrap();
    let ca = DeviceCa::open(&d.path().join("tls")).unwrap();
    let pg = common::PgSchema::new().await;
    scenario(Store::open(&pg.url).await.unwrap(), ca).await;
    pg.drop().await;
}
