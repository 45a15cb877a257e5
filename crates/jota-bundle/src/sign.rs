//! Signing keys, signatures over the manifest, and the device keyring.
//!
//! Three algorithms, all interoperable with the `openssl` CLI:
//!
//! | `--algo` | signature | openssl verify command |
//! |---|---|---|
//! | `ed25519` | 64 raw bytes | `openssl pkeyutl -verify -rawin -pubin -inkey pub.pem -in m -sigfile s` |
//! | `ecdsa-p256` | DER, SHA-256 | `openssl dgst -sha256 -verify pub.pem -signature s m` |
//! | `rsa4096` | RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 | `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:digest -verify pub.pem -signature s m` |
//!
//! Keys are PEM: private keys as PKCS#8 (`PRIVATE KEY`), or the PKCS#1 (`RSA PRIVATE KEY`) and
//! SEC1 (`EC PRIVATE KEY`) forms `openssl genrsa -traditional` and `openssl ecparam -genkey`
//! write; public keys as SPKI (`PUBLIC KEY`, what `openssl ... -pubout` writes). A key's id is
//! the sha256 of its SPKI DER (`openssl pkey -pubin -outform DER | sha256sum`).

use crate::manifest::Digest;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, ObjectIdentifier};
use serde::{Deserialize, Serialize};
use signature::{SignatureEncoding, Signer as _, Verifier as _};
use spki::{DecodePublicKey, EncodePublicKey};
use std::fmt;
use std::path::{Path, PathBuf};

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Most signatures a bundle may carry.
pub const MAX_SIGNATURES: usize = 16;

/// Key and signature problems.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A key file that is not a usable key.
    #[error("{path}: {reason}")]
    Key {
        /// File (or `<memory>`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The bundle has no signature.
    #[error("bundle is not signed")]
    Unsigned,
    /// The signatures block does not parse.
    #[error("signatures block: {0}")]
    Block(String),
    /// No signature is by a key in the keyring.
    #[error("no signature is by a trusted key: signed by {}; the keyring {} holds {}", .signed_by.join(", "), .keyring, .trusted.join(", "))]
    Untrusted {
        /// Key ids that signed.
        signed_by: Vec<String>,
        /// Keyring directory.
        keyring: String,
        /// Key ids in it.
        trusted: Vec<String>,
    },
    /// A trusted key's signature does not verify.
    #[error("signature {index} by trusted key {key} ({path}) does not match the manifest: the manifest or the signature was altered")]
    Invalid {
        /// Position in the signatures block.
        index: usize,
        /// Key id.
        key: String,
        /// Keyring file.
        path: String,
    },
    /// Signing failed.
    #[error("signing with {key}: {reason}")]
    Signing {
        /// Key id.
        key: String,
        /// Why.
        reason: String,
    },
}

type Result<T, E = SignError> = std::result::Result<T, E>;

/// A signature algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519.
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA over P-256 with SHA-256, DER signatures.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    /// RSASSA-PSS with SHA-256 (keys generated at 4096 bits; 2048 to 8192 accepted).
    #[serde(rename = "rsa-pss-sha256")]
    RsaPss,
}

impl Algorithm {
    /// The name used in signatures and `--json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::EcdsaP256 => "ecdsa-p256",
            Algorithm::RsaPss => "rsa-pss-sha256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Public {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A public key.
pub struct PublicKey {
    key: Public,
    spki: Vec<u8>,
}

enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// A private signing key.
pub struct SecretKey {
    key: Secret,
    public: PublicKey,
}

fn kerr(path: &str, reason: impl fmt::Display) -> SignError {
    SignError::Key {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

/// The PEM blocks of a text: (label, DER).
fn pem_blocks(text: &str, path: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let label_end = block[11..]
            .find("-----")
            .ok_or_else(|| kerr(path, "unterminated PEM BEGIN line"))?;
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let end = block
            .find(&end_marker)
            .ok_or_else(|| kerr(path, format!("no `{end_marker}` line")))?;
        let pem = &block[..end + end_marker.len()];
        let (l, der) = pem_rfc7468::decode_vec(pem.as_bytes())
            .map_err(|e| kerr(path, format!("bad PEM block `{label}`: {e}")))?;
        out.push((l.to_string(), der));
        rest = &block[end + end_marker.len()..];
    }
    if out.is_empty() {
        return Err(kerr(path, "no PEM block (expected -----BEGIN ...-----)"));
    }
    Ok(out)
}

fn algorithm_of(
    path: &str,
    oid: ObjectIdentifier,
    params: Option<der::asn1::AnyRef<'_>>,
) -> Result<Algorithm> {
    Ok(match oid {
        OID_ED25519 => Algorithm::Ed25519,
        OID_RSA => Algorithm::RsaPss,
        OID_EC => {
            let curve: ObjectIdentifier = params
                .ok_or_else(|| kerr(path, "EC key without a curve"))?
                .decode_as()
                .map_err(|e| kerr(path, format!("EC curve: {e}")))?;
            if curve != OID_P256 {
                return Err(kerr(
                    path,
                    format!("EC curve {curve} is not supported (only P-256, prime256v1)"),
                ));
            }
            Algorithm::EcdsaP256
        }
        o => {
            return Err(kerr(
                path,
                format!("key algorithm {o} is not supported (ed25519, ECDSA P-256 or RSA)"),
            ))
        }
    })
}

fn check_rsa_bits(path: &str, k: &rsa::RsaPublicKey) -> Result<()> {
    use rsa::traits::PublicKeyParts;
    let bits = k.n().bits();
    if !(2048..=8192).contains(&bits) {
        return Err(kerr(
            path,
            format!("RSA key of {bits} bits (2048 to 8192 accepted)"),
        ));
    }
    Ok(())
}

impl PublicKey {
    /// Parses an SPKI `PUBLIC KEY` PEM.
    pub fn from_pem(text: &str, path: &str) -> Result<PublicKey> {
        let blocks = pem_blocks(text, path)?;
        let (_, der) = blocks
            .into_iter()
            .find(|(l, _)| l == "PUBLIC KEY")
            .ok_or_else(|| kerr(path, "no `PUBLIC KEY` block (a public key in SPKI PEM, as `openssl pkey -pubout` writes)"))?;
        PublicKey::from_spki_der(&der, path)
    }

    /// Parses SPKI DER.
    pub fn from_spki_der(der: &[u8], path: &str) -> Result<PublicKey> {
        use der::Decode;
        let info = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| kerr(path, format!("not a public key: {e}")))?;
        let bad = |e: spki::Error| kerr(path, format!("bad public key: {e}"));
        let key = match algorithm_of(path, info.algorithm.oid, info.algorithm.parameters)? {
            Algorithm::Ed25519 => {
                Public::Ed25519(ed25519_dalek::VerifyingKey::from_public_key_der(der).map_err(bad)?)
            }
            Algorithm::EcdsaP256 => {
                Public::P256(p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(bad)?)
            }
            Algorithm::RsaPss => {
                let k = rsa::RsaPublicKey::from_public_key_der(der).map_err(bad)?;
                check_rsa_bits(path, &k)?;
                Public::Rsa(k)
            }
        };
        Ok(PublicKey {
            key,
            spki: der.to_vec(),
        })
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| kerr(&p, e))?;
        PublicKey::from_pem(&text, &p)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.key {
            Public::Ed25519(_) => Algorithm::Ed25519,
            Public::P256(_) => Algorithm::EcdsaP256,
            Public::Rsa(_) => Algorithm::RsaPss,
        }
    }

    /// The key id: sha256 of the SPKI DER.
    pub fn id(&self) -> Digest {
        Digest::of(&self.spki)
    }

    /// SPKI PEM.
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, &self.spki)
            .unwrap_or_default()
    }

    /// Whether `sig` is this key's signature of `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.key {
            Public::Ed25519(k) => ed25519_dalek::Signature::from_slice(sig)
                .is_ok_and(|s| k.verify_strict(msg, &s).is_ok()),
            Public::P256(k) => {
                p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            Public::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                let Ok(s) = rsa::pss::Signature::try_from(sig) else {
                    return false;
                };
                // rsa's PSS check wants the salt length: jota signs with 32 (the digest
                // length, OpenSSL >= 3.1's default); OpenSSL 3.0 signs with the maximum.
                let max = (k.n().bits() + 6) / 8 - 32 - 2;
                [32, max].into_iter().any(|salt| {
                    rsa::pss::VerifyingKey::<sha2::Sha256>::new_with_salt_len(k.clone(), salt)
                        .verify(msg, &s)
                        .is_ok()
                })
            }
        }
    }
}

impl SecretKey {
    /// Generates a key.
    pub fn generate(alg: Algorithm) -> Result<SecretKey> {
        let mut rng = rsa::rand_core::OsRng;
        let key = match alg {
            Algorithm::Ed25519 => Secret::Ed25519(ed25519_dalek::SigningKey::generate(&mut rng)),
            Algorithm::EcdsaP256 => Secret::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            Algorithm::RsaPss => Secret::Rsa(Box::new(
                rsa::RsaPrivateKey::new(&mut rng, 4096)
                    .map_err(|e| kerr("<new key>", format!("RSA key generation: {e}")))?,
            )),
        };
        SecretKey::from_secret(key, "<new key>")
    }

    fn from_secret(key: Secret, path: &str) -> Result<SecretKey> {
        let der = match &key {
            Secret::Ed25519(k) => k.verifying_key().to_public_key_der(),
            Secret::P256(k) => k.verifying_key().to_public_key_der(),
            Secret::Rsa(k) => k.to_public_key().to_public_key_der(),
        }
        .map_err(|e| kerr(path, format!("deriving the public key: {e}")))?;
        let public = PublicKey::from_spki_der(der.as_bytes(), path)?;
        Ok(SecretKey { key, public })
    }

    /// Parses a private key PEM (PKCS#8, PKCS#1 RSA or SEC1 EC; an `EC PARAMETERS` block
    /// before the key is skipped). Encrypted keys are refused.
    pub fn from_pem(text: &str, path: &str) -> Result<SecretKey> {
        let blocks = pem_blocks(text, path)?;
        let bad = |e: &dyn fmt::Display| kerr(path, format!("bad private key: {e}"));
        for (label, der) in &blocks {
            let key = match label.as_str() {
                "PRIVATE KEY" => {
                    use der::Decode;
                    let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| bad(&e))?;
                    match algorithm_of(path, info.algorithm.oid, info.algorithm.parameters)? {
                        Algorithm::Ed25519 => Secret::Ed25519(
                            ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| bad(&e))?,
                        ),
                        Algorithm::EcdsaP256 => Secret::P256(
                            p256::ecdsa::SigningKey::from_pkcs8_der(der).map_err(|e| bad(&e))?,
                        ),
                        Algorithm::RsaPss => Secret::Rsa(Box::new(
                            rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(|e| bad(&e))?,
                        )),
                    }
                }
                "RSA PRIVATE KEY" => {
                    use rsa::pkcs1::DecodeRsaPrivateKey;
                    Secret::Rsa(Box::new(
                        rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| bad(&e))?,
                    ))
                }
                "EC PRIVATE KEY" => {
                    let sk = p256::SecretKey::from_sec1_der(der).map_err(|e| bad(&e))?;
                    Secret::P256(p256::ecdsa::SigningKey::from(sk))
                }
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(kerr(
                        path,
                        "encrypted private keys are not supported (decrypt with `openssl pkey`)",
                    ))
                }
                _ => continue,
            };
            let k = SecretKey::from_secret(key, path)?;
            if let Public::Rsa(p) = &k.public.key {
                check_rsa_bits(path, p)?;
            }
            return Ok(k);
        }
        Err(kerr(
            path,
            format!(
                "no private key block (found {})",
                blocks
                    .iter()
                    .map(|(l, _)| l.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }

    /// Reads a private key file.
    pub fn load(path: &Path) -> Result<SecretKey> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| kerr(&p, e))?;
        SecretKey::from_pem(&text, &p)
    }

    /// The public half.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// PKCS#8 PEM (version 1, which OpenSSL 3.0 reads; ed25519-dalek's own writer emits
    /// version 2, which it does not).
    pub fn to_pkcs8_pem(&self) -> Result<String> {
        let le = pkcs8::LineEnding::LF;
        let id = self.public.id().to_string();
        let err = |e: &dyn fmt::Display| SignError::Signing {
            key: id.clone(),
            reason: format!("encoding: {e}"),
        };
        Ok(match &self.key {
            Secret::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(le)
            .map_err(|e| err(&e))?
            .to_string(),
            Secret::P256(k) => k.to_pkcs8_pem(le).map_err(|e| err(&e))?.to_string(),
            Secret::Rsa(k) => k.to_pkcs8_pem(le).map_err(|e| err(&e))?.to_string(),
        })
    }

    /// Signs `msg`.
    pub fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>> {
        Ok(match &self.key {
            Secret::Ed25519(k) => k.sign(msg).to_bytes().to_vec(),
            Secret::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().to_vec()
            }
            Secret::Rsa(k) => {
                use signature::RandomizedSigner;
                let sk = rsa::pss::BlindedSigningKey::<sha2::Sha256>::new((**k).clone());
                sk.try_sign_with_rng(&mut rsa::rand_core::OsRng, msg)
                    .map_err(|e| SignError::Signing {
                        key: self.public.id().to_string(),
                        reason: e.to_string(),
                    })?
                    .to_vec()
            }
        })
    }

    /// The RSA key, for CMS signing of `.swu` files.
    pub(crate) fn rsa(&self) -> Option<&rsa::RsaPrivateKey> {
        match &self.key {
            Secret::Rsa(k) => Some(k),
            _ => None,
        }
    }

    /// The P-256 key, for CMS signing of `.swu` files.
    pub(crate) fn p256(&self) -> Option<&p256::ecdsa::SigningKey> {
        match &self.key {
            Secret::P256(k) => Some(k),
            _ => None,
        }
    }
}

/// One signature in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Id of the signing key.
    pub key: Digest,
    /// Signature bytes, hex.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s.len() > 4096 {
            return Err(serde::de::Error::custom("signature longer than 2048 bytes"));
        }
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom("signature hex must be lower case"));
        }
        hex::decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Something that signs manifests (a key file; an HSM could implement it too).
pub trait Signer {
    /// Signs the manifest bytes.
    fn sign(&self, manifest: &[u8]) -> Result<Signature>;
}

impl Signer for SecretKey {
    fn sign(&self, manifest: &[u8]) -> Result<Signature> {
        Ok(Signature {
            algorithm: self.public.algorithm(),
            key: self.public.id(),
            signature: self.sign_bytes(manifest)?,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    signatures: Vec<Signature>,
}

/// The signatures block bytes.
pub fn encode_signatures(sigs: &[Signature]) -> Vec<u8> {
    serde_json::to_vec(&Block {
        signatures: sigs.to_vec(),
    })
    .unwrap_or_default()
}

/// Parses a signatures block (empty = no signatures).
pub fn decode_signatures(b: &[u8]) -> Result<Vec<Signature>> {
    if b.is_empty() {
        return Ok(vec![]);
    }
    let block: Block = serde_json::from_slice(b).map_err(|e| SignError::Block(e.to_string()))?;
    if block.signatures.len() > MAX_SIGNATURES {
        return Err(SignError::Block(format!(
            "{} signatures (at most {MAX_SIGNATURES})",
            block.signatures.len()
        )));
    }
    Ok(block.signatures)
}

/// The trusted public keys of a device: every `*.pem` file of a directory.
pub struct Keyring {
    dir: PathBuf,
    keys: Vec<(PathBuf, PublicKey)>,
}

impl Keyring {
    /// Loads every `*.pem` in `dir`; a file that is not a public key is an error (a keyring
    /// holding a private key, or garbage, is a mistake worth stopping for).
    pub fn load(dir: &Path) -> Result<Keyring> {
        let d = dir.display().to_string();
        let mut keys = Vec::new();
        let rd = std::fs::read_dir(dir).map_err(|e| kerr(&d, format!("keyring: {e}")))?;
        let mut paths: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pem"))
            .collect();
        paths.sort();
        for p in paths {
            keys.push((p.clone(), PublicKey::load(&p)?));
        }
        if keys.is_empty() {
            return Err(kerr(&d, "keyring holds no public keys (*.pem)"));
        }
        Ok(Keyring {
            dir: dir.to_path_buf(),
            keys,
        })
    }

    /// A keyring from keys in memory.
    pub fn from_keys(keys: Vec<PublicKey>) -> Keyring {
        Keyring {
            dir: PathBuf::from("<memory>"),
            keys: keys
                .into_iter()
                .map(|k| (PathBuf::from("<memory>"), k))
                .collect(),
        }
    }

    /// The keys.
    pub fn keys(&self) -> impl Iterator<Item = (&Path, &PublicKey)> {
        self.keys.iter().map(|(p, k)| (p.as_path(), k))
    }
}

/// The result of checking one signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SigCheck {
    /// Position in the block.
    pub index: usize,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Key id.
    pub key: Digest,
    /// Keyring file of the key, when trusted.
    pub trusted_by: Option<String>,
    /// Whether it verified (`None`: key not in the keyring, not checked).
    pub valid: Option<bool>,
}

/// Checks signatures over `manifest`. Policy: at least one signature by a key of the
/// keyring must verify, and every signature by a keyring key must verify (a bad signature
/// by a trusted key means tampering, even if another one is good). Signatures by unknown
/// keys are reported and otherwise ignored, so bundles can carry the next rotation key's
/// signature before devices trust it.
pub fn check(manifest: &[u8], sigs: &[Signature], keyring: &Keyring) -> Result<Vec<SigCheck>> {
    if sigs.is_empty() {
        return Err(SignError::Unsigned);
    }
    let mut out = Vec::new();
    let mut good = 0;
    for (i, s) in sigs.iter().enumerate() {
        let trusted = keyring.keys.iter().find(|(_, k)| k.id() == s.key);
        let mut c = SigCheck {
            index: i,
            algorithm: s.algorithm,
            key: s.key,
            trusted_by: None,
            valid: None,
        };
        if let Some((path, k)) = trusted {
            let ok = k.algorithm() == s.algorithm && k.verify(manifest, &s.signature);
            if !ok {
                return Err(SignError::Invalid {
                    index: i,
                    key: s.key.to_string(),
                    path: path.display().to_string(),
                });
            }
            good += 1;
            c.trusted_by = Some(path.display().to_string());
            c.valid = Some(true);
        }
        out.push(c);
    }
    if good == 0 {
        return Err(SignError::Untrusted {
            signed_by: sigs.iter().map(|s| short(&s.key)).collect(),
            keyring: keyring.dir.display().to_string(),
            trusted: keyring.keys.iter().map(|(_, k)| short(&k.id())).collect(),
        });
    }
    Ok(out)
}

/// The first 16 hex digits of a key id, for messages.
pub fn short(d: &Digest) -> String {
    d.to_string()[..16].to_string()
}
