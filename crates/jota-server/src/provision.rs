//! Provisioning (seed 003 §5.1) and device certificates.
//!
//! A device sends a CSR (proof that it holds its private key) with its serial number and MAC;
//! its id is `sha256("SERIAL-MAC")[:16]` in hex, as in the seed's provisioning script. It is
//! accepted at once when it brings a pre-authorised provisioning token (baked into a factory
//! image) or the token `jota fleet add-device` printed for that id, or when it holds the key
//! it was accepted with before (renewal, or an answer lost on the way); otherwise it waits,
//! `pending`, for an operator to accept or reject it. An accepted device gets a certificate
//! from the fleet CA (`DATA_DIR/tls/ca.pem`; common name = device id, client auth) and a
//! device token; over HTTPS it then authenticates by that certificate (mTLS). The server
//! stores only hashes: of the key, of the certificate, of the token. A new certificate
//! replaces the previous one, which stops working.

use crate::store::{db, now, Store};
use crate::{random_hex, token_hash, ServerError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::path::Path;

/// The sha256 (hex) of the verified client certificate a TLS connection presented.
#[derive(Clone, Debug)]
pub struct ClientCert(pub String);

/// How a device authenticates: the sha256 (hex) of its token or of its certificate.
#[derive(Clone, Debug)]
pub enum Credential {
    /// `Authorization: Bearer TOKEN`.
    Token(String),
    /// A client certificate issued by the fleet CA.
    Cert(String),
}

impl Credential {
    /// The `devices` column holding this kind of credential.
    pub(crate) fn column(&self) -> &'static str {
        match self {
            Credential::Token(_) => "token_sha256",
            Credential::Cert(_) => "cert_sha256",
        }
    }
    /// The hash to look up.
    pub(crate) fn hash(&self) -> &str {
        match self {
            Credential::Token(h) | Credential::Cert(h) => h,
        }
    }
}

/// The identity the seed's provisioning script derives: `sha256("SERIAL-MAC")`, first 16
/// hex digits.
pub fn device_id(serial: &str, mac: &str) -> String {
    hex::encode(Sha256::digest(format!("{serial}-{mac}").as_bytes()))[..16].to_string()
}

/// A verified certificate signing request.
pub struct Csr {
    params: rcgen::CertificateSigningRequestParams,
    /// sha256 (hex) of the public key: the device's lasting identity.
    pub key_sha256: String,
}

/// Parses a PEM CSR and checks its signature (the sender holds the key).
pub fn parse_csr(pem: &str) -> Result<Csr, ServerError> {
    use rcgen::PublicKeyData;
    let params = rcgen::CertificateSigningRequestParams::from_pem(pem).map_err(|e| {
        ServerError::BadRequest(format!(
            "csr: not a PEM certificate request with a valid signature ({e})"
        ))
    })?;
    let key_sha256 = hex::encode(Sha256::digest(params.public_key.der_bytes()));
    Ok(Csr { params, key_sha256 })
}

/// The fleet CA as the server uses it to sign device certificates.
pub struct DeviceCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    pem: String,
}

/// A certificate just issued.
pub struct Issued {
    /// The certificate then the CA, PEM.
    pub chain_pem: String,
    /// sha256 (hex) of the certificate's DER: what a TLS connection presents.
    pub sha256: String,
}

impl DeviceCa {
    /// The fleet CA in `dir`, made on first use (see [`crate::tls::ca`]).
    pub fn open(dir: &Path) -> Result<DeviceCa, ServerError> {
        let (cert, key, pem) = crate::tls::ca(dir)?;
        Ok(DeviceCa { cert, key, pem })
    }

    /// The CA certificate, PEM (what devices pin).
    pub fn pem(&self) -> String {
        self.pem.clone()
    }

    /// A client certificate for `device_id` over the CSR's key. Valid from 1975 to 4096:
    /// a device whose clock is wrong still connects (seed §19.1); a certificate is revoked
    /// by replacing it (the server accepts only the newest one per device).
    pub fn issue(&self, csr: Csr, device_id: &str) -> Result<Issued, ServerError> {
        use rcgen::{DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SerialNumber};
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, device_id);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "jota fleet device");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let serial = random_hex(16)?;
        params.serial_number = Some(SerialNumber::from_slice(
            &hex::decode(serial).unwrap_or_default(),
        ));
        let request = rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.params.public_key,
        };
        let cert = request
            .signed_by(&self.cert, &self.key)
            .map_err(|e| ServerError::BadRequest(format!("csr: cannot sign its key: {e}")))?;
        Ok(Issued {
            sha256: hex::encode(Sha256::digest(cert.der())),
            chain_pem: cert.pem() + &self.pem,
        })
    }
}

/// What a device sends to `POST /api/v1/devices/provision`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ProvisionRequest {
    /// Device id; default (and must equal, when serial and MAC are given)
    /// `sha256("SERIAL-MAC")[:16]`.
    #[serde(default)]
    pub id: Option<String>,
    /// Module serial number (`/proc/device-tree/serial-number`).
    #[serde(default)]
    pub serial: String,
    /// MAC address (`/sys/class/net/eth0/address`).
    #[serde(default)]
    pub mac: String,
    /// Hardware (board id, e.g. `3767-0005-300`); a provisioning token's wins.
    #[serde(default)]
    pub hardware: String,
    /// PEM certificate signing request.
    pub csr: String,
    /// Anything else the device wants to say (model, CUDA, memory); stored with a request.
    #[serde(default)]
    pub info: serde_json::Map<String, serde_json::Value>,
}

/// The answer: `accepted` with credentials, or `pending`.
#[derive(Serialize, Deserialize, Debug)]
pub struct ProvisionReply {
    /// Device id.
    pub id: String,
    /// `accepted` or `pending`.
    pub state: String,
    /// The device certificate then the CA (PEM), when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The fleet CA (PEM), when accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// A device token (for DDI, or HTTP without TLS), when accepted. Replaces earlier ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Seconds to wait before asking again (pending) or between polls (accepted).
    pub poll_seconds: u64,
}

/// A pre-authorised provisioning token (the token itself is shown once, at creation).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ProvisionToken {
    /// Its id.
    pub id: String,
    /// Hardware the devices it registers get.
    pub hardware: String,
    /// Tags the devices it registers get.
    pub tags: Vec<String>,
    /// Registrations left.
    pub uses_left: i64,
    /// Expiry (Unix seconds), if any.
    pub expires: Option<i64>,
    /// Created (Unix seconds).
    pub created: i64,
    /// The token: only in the answer to its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// A device waiting for an operator (or one they decided on).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PendingDevice {
    /// Device id.
    pub id: String,
    /// Serial it gave.
    pub serial: String,
    /// MAC it gave.
    pub mac: String,
    /// Hardware it gave.
    pub hardware: String,
    /// sha256 of its key.
    pub key_sha256: String,
    /// What else it said.
    pub info: serde_json::Value,
    /// `pending`, `accepted` or `rejected`.
    pub state: String,
    /// First asked (Unix seconds).
    pub created: i64,
    /// Last asked or decided (Unix seconds).
    pub updated: i64,
}

/// Most requests waiting for an operator; more are refused until some are decided.
pub const MAX_PENDING: i64 = 10_000;

/// How a provisioning request was decided.
pub enum Outcome {
    /// Credentials issued: (certificate, token).
    Accepted(Issued, String),
    /// Waiting for an operator.
    Pending,
}

impl Store {
    /// Decides a provisioning request for `id` whose CSR is `csr`; `bearer` is the
    /// `Authorization: Bearer` token it came with, if any. See the module documentation.
    pub async fn provision(
        &self,
        ca: &DeviceCa,
        id: &str,
        req: &ProvisionRequest,
        csr: Csr,
        bearer: Option<&str>,
    ) -> Result<Outcome, ServerError> {
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let existing = sqlx::query("SELECT token_sha256, key_sha256 FROM devices WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let bearer_hash = bearer.map(token_hash);
        let allowed = match &existing {
            Some(r) => {
                let key: Option<String> = r.try_get("key_sha256").map_err(db)?;
                let token: String = r.try_get("token_sha256").map_err(db)?;
                // Its own key again (renewal, or a lost answer), or its own device token.
                key.as_deref() == Some(csr.key_sha256.as_str())
                    || bearer_hash.as_deref() == Some(token.as_str())
            }
            None => match &bearer_hash {
                // A new device with a provisioning token that still has a use.
                Some(h) => {
                    let t = sqlx::query(
                        "UPDATE provision_tokens SET uses_left = uses_left - 1 \
                         WHERE token_sha256 = $1 AND uses_left > 0 AND (expires IS NULL OR expires > $2) \
                         RETURNING hardware, tags",
                    )
                    .bind(h)
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
                    match t {
                        Some(t) => {
                            let hardware: String = t.try_get("hardware").map_err(db)?;
                            let tags: String = t.try_get("tags").map_err(db)?;
                            let tags: Vec<String> = serde_json::from_str(&tags).unwrap_or_default();
                            let hardware = if hardware.is_empty() {
                                req.hardware.clone()
                            } else {
                                hardware
                            };
                            insert_device(&mut tx, id, &hardware, &tags, at).await?;
                            true
                        }
                        None => false,
                    }
                }
                None => false,
            },
        };
        if !allowed {
            // Remember the request for an operator. A rejected key stays rejected; a new key
            // asks afresh.
            let prior =
                sqlx::query("SELECT key_sha256, state FROM provision_requests WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db)?;
            if let Some(p) = &prior {
                let key: String = p.try_get("key_sha256").map_err(db)?;
                let state: String = p.try_get("state").map_err(db)?;
                if key == csr.key_sha256 && state == "rejected" {
                    return Err(ServerError::Forbidden(format!(
                        "device `{id}`: an operator rejected this key"
                    )));
                }
            }
            if prior.is_none() {
                // Anyone may ask: keep what waits for an operator bounded.
                let waiting: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM provision_requests WHERE state = 'pending'",
                )
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get("n")
                .map_err(db)?;
                if waiting >= MAX_PENDING {
                    return Err(ServerError::Conflict(format!(
                        "{MAX_PENDING} devices already wait for an operator: accept or reject some, or provision with a token"
                    )));
                }
            }
            let info = serde_json::to_string(&req.info).unwrap_or_else(|_| "{}".into());
            sqlx::query(
                "INSERT INTO provision_requests (id, serial, mac, hardware, key_sha256, info, state, created, updated) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) \
                 ON CONFLICT (id) DO UPDATE SET serial = $2, mac = $3, hardware = $4, key_sha256 = $5, \
                 info = $6, state = 'pending', updated = $7",
            )
            .bind(id)
            .bind(&req.serial)
            .bind(&req.mac)
            .bind(&req.hardware)
            .bind(&csr.key_sha256)
            .bind(info)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            return Ok(Outcome::Pending);
        }
        let key = csr.key_sha256.clone();
        let issued = ca.issue(csr, id)?;
        let token = random_hex(32)?;
        sqlx::query(
            "UPDATE devices SET key_sha256 = $1, cert_sha256 = $2, token_sha256 = $3 WHERE id = $4",
        )
        .bind(&key)
        .bind(&issued.sha256)
        .bind(token_hash(&token))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Outcome::Accepted(issued, token))
    }

    /// Creates a provisioning token for up to `uses` devices, valid for `ttl_seconds` if given.
    pub async fn add_provision_token(
        &self,
        hardware: &str,
        tags: &[String],
        uses: i64,
        ttl_seconds: Option<i64>,
    ) -> Result<ProvisionToken, ServerError> {
        crate::window::of_tags(tags)?;
        if uses < 1 {
            return Err(ServerError::BadRequest("uses must be at least 1".into()));
        }
        let at = now();
        let token = random_hex(32)?;
        let t = ProvisionToken {
            id: random_hex(8)?,
            hardware: hardware.to_string(),
            tags: tags.to_vec(),
            uses_left: uses,
            expires: ttl_seconds.map(|s| at.saturating_add(s)),
            created: at,
            token: Some(token.clone()),
        };
        sqlx::query(
            "INSERT INTO provision_tokens (id, token_sha256, hardware, tags, uses_left, expires, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&t.id)
        .bind(token_hash(&token))
        .bind(&t.hardware)
        .bind(serde_json::to_string(&t.tags).unwrap_or_else(|_| "[]".into()))
        .bind(t.uses_left)
        .bind(t.expires)
        .bind(t.created)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(t)
    }

    /// Provisioning tokens, newest first (without the tokens).
    pub async fn provision_tokens(&self) -> Result<Vec<ProvisionToken>, ServerError> {
        let rows = sqlx::query("SELECT * FROM provision_tokens ORDER BY created DESC, id")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let tags: String = r.try_get("tags")?;
                Ok(ProvisionToken {
                    id: r.try_get("id")?,
                    hardware: r.try_get("hardware")?,
                    tags: serde_json::from_str(&tags).unwrap_or_default(),
                    uses_left: r.try_get("uses_left")?,
                    expires: r.try_get("expires")?,
                    created: r.try_get("created")?,
                    token: None,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    /// Revokes a provisioning token: it registers nobody from now on.
    pub async fn revoke_provision_token(&self, id: &str) -> Result<(), ServerError> {
        let r = sqlx::query("UPDATE provision_tokens SET uses_left = 0 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if r.rows_affected() == 0 {
            return Err(ServerError::NotFound(format!(
                "no provisioning token `{id}`"
            )));
        }
        Ok(())
    }

    /// Provisioning requests, newest first.
    pub async fn provision_requests(&self) -> Result<Vec<PendingDevice>, ServerError> {
        let rows = sqlx::query("SELECT * FROM provision_requests ORDER BY updated DESC, id")
            .fetch_all(&self.read)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                let info: String = r.try_get("info")?;
                Ok(PendingDevice {
                    id: r.try_get("id")?,
                    serial: r.try_get("serial")?,
                    mac: r.try_get("mac")?,
                    hardware: r.try_get("hardware")?,
                    key_sha256: r.try_get("key_sha256")?,
                    info: serde_json::from_str(&info).unwrap_or_default(),
                    state: r.try_get("state")?,
                    created: r.try_get("created")?,
                    updated: r.try_get("updated")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    /// An operator's decision on a pending request. Accepting registers the device (or, for
    /// an id already registered, binds it to the new key, which ends the old certificate)
    /// with `tags`; the device gets its credentials when it next asks with that key.
    pub async fn decide_provision(
        &self,
        id: &str,
        accept: bool,
        tags: &[String],
    ) -> Result<PendingDevice, ServerError> {
        crate::window::of_tags(tags)?;
        let at = now();
        let mut tx = self.pool.begin().await.map_err(db)?;
        let r =
            sqlx::query("SELECT hardware, key_sha256, state FROM provision_requests WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?
                .ok_or_else(|| {
                    ServerError::NotFound(format!("no provisioning request for `{id}`"))
                })?;
        let state: String = r.try_get("state").map_err(db)?;
        if state != "pending" {
            return Err(ServerError::Conflict(format!(
                "the request of `{id}` is already {state}"
            )));
        }
        if accept {
            let hardware: String = r.try_get("hardware").map_err(db)?;
            let key: String = r.try_get("key_sha256").map_err(db)?;
            let n =
                sqlx::query("UPDATE devices SET key_sha256 = $1, cert_sha256 = NULL WHERE id = $2")
                    .bind(&key)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?
                    .rows_affected();
            if n == 0 {
                insert_device(&mut tx, id, &hardware, tags, at).await?;
                sqlx::query("UPDATE devices SET key_sha256 = $1 WHERE id = $2")
                    .bind(&key)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        sqlx::query("UPDATE provision_requests SET state = $1, updated = $2 WHERE id = $3")
            .bind(if accept { "accepted" } else { "rejected" })
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        self.provision_requests()
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| ServerError::NotFound(format!("no provisioning request for `{id}`")))
    }
}

/// Registers `id` inside `tx` with a token nobody knows (the device gets a real one when its
/// certificate is issued).
async fn insert_device(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    hardware: &str,
    tags: &[String],
    at: i64,
) -> Result<(), ServerError> {
    crate::store::insert_device(
        &mut **tx,
        id,
        &token_hash(&random_hex(32)?),
        hardware,
        tags,
        at,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_identity() {
        // python3 -c 'import hashlib; print(hashlib.sha256(b"1424621012345-48:b0:2d:01:02:03").hexdigest()[:16])'
        assert_eq!(
            device_id("1424621012345", "48:b0:2d:01:02:03"),
            "70854f56040d67c4"
        );
    }

    #[test]
    fn a_csr_is_checked() {
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(vec![])
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let parsed = parse_csr(&csr).unwrap();
        assert_eq!(
            parsed.key_sha256,
            hex::encode(Sha256::digest(key.public_key_raw()))
        );
        // A flipped bit in the signed part breaks the signature.
        let (label, mut der) = pem_rfc7468::decode_vec(csr.as_bytes()).unwrap();
        der[40] ^= 1;
        let bad = pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, &der).unwrap();
        assert!(matches!(parse_csr(&bad), Err(ServerError::BadRequest(_))));
        assert!(parse_csr("hello").is_err());
    }

    /// A valid CSR's DER, made once.
    fn valid_der() -> &'static [u8] {
        static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        DER.get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let pem = rcgen::CertificateParams::new(vec![])
                .unwrap()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
        })
    }

    proptest::proptest! {
        // The CSR comes from the network: no text and no damaged CSR makes it panic.
        #[test]
        fn any_text_is_an_answer(s in ".{0,600}") {
            let _ = parse_csr(&s);
        }

        #[test]
        fn damaged_csrs_are_refused_or_parsed(at in 0usize..2000, xor in 1u8..=255, cut in 0usize..2000) {
            let mut der = valid_der().to_vec();
            let i = at % der.len();
            der[i] ^= xor;
            der.truncate(cut.max(1).min(der.len()));
            let pem = pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, &der).unwrap();
            let _ = parse_csr(&pem);
        }
    }
}
