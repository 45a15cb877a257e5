//! HTTPS with rustls: the server's certificate and key from PEM files, or — when none are
//! given — a CA and a server certificate it issues itself on first start and keeps in
//! `DATA_DIR/tls/` (`ca.pem` is what devices and `jota fleet --ca` pin: the CA, not the
//! leaf, seed §21.4). The certificates are valid from 1975 to 4096, so a device whose clock
//! has not been set yet still accepts them (seed §19.1).

use crate::ServerError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A certificate chain and its key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server certificate (then any intermediates).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

fn bad(what: &str, e: impl std::fmt::Display) -> ServerError {
    ServerError::BadRequest(format!("TLS: {what}: {e}"))
}

/// Writes `text` to `dir/name` through a temporary file (mode 0600 when `secret`).
fn write_file(dir: &Path, name: &str, text: &str, secret: bool) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| ServerError::io(&tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| ServerError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| ServerError::io(&path, e))
}

/// The fleet CA in `dir` (`ca.pem`, `ca.key`), made on the first call. It signs the
/// self-issued server certificate and every device certificate (see [`crate::provision`]).
/// Returns the issuer, its key, and the CA certificate as written in `ca.pem` (the issuer is
/// rebuilt from it: same name and key, another signature).
pub fn ca(dir: &Path) -> Result<(rcgen::Certificate, rcgen::KeyPair, String), ServerError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let (pem, key) = (dir.join("ca.pem"), dir.join("ca.key"));
    if pem.exists() && key.exists() {
        let key_text = std::fs::read_to_string(&key).map_err(|e| ServerError::io(&key, e))?;
        let pem_text = std::fs::read_to_string(&pem).map_err(|e| ServerError::io(&pem, e))?;
        let ca_key =
            KeyPair::from_pem(&key_text).map_err(|e| bad(&key.display().to_string(), e))?;
        // Re-signing the CA's own parameters gives an issuer with the same name and key
        // identifier, which is all that signing a certificate takes from it.
        let ca = CertificateParams::from_ca_cert_pem(&pem_text)
            .map_err(|e| bad(&pem.display().to_string(), e))?
            .self_signed(&ca_key)
            .map_err(|e| bad(&pem.display().to_string(), e))?;
        return Ok((ca, ca_key, pem_text));
    }
    std::fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
    let ca_key = KeyPair::generate().map_err(|e| bad("CA key", e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad("CA", e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "jota fleet CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = params.self_signed(&ca_key).map_err(|e| bad("CA", e))?;
    // Key first: a CA certificate never exists without its key.
    write_file(dir, "ca.key", &ca_key.serialize_pem(), true)?;
    let pem_text = ca.pem();
    write_file(dir, "ca.pem", &pem_text, false)?;
    Ok((ca, ca_key, pem_text))
}

/// The self-issued CA and server certificate in `dir`, made on the first call: the fleet
/// CA ([`ca`]) and a server certificate for `names` (DNS names or IP addresses) signed by it
/// (`server.pem`, `server.key`). Later calls reuse them.
pub fn self_issued(dir: &Path, names: &[String]) -> Result<TlsFiles, ServerError> {
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let (ca_cert, ca_key, ca_pem) = ca(dir)?;
    let key = KeyPair::generate().map_err(|e| bad("server key", e))?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| bad("server names", e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "jota fleet server");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| bad("server certificate", e))?;
    // Key first, then certificate: a half-written pair is never mistaken for a whole one.
    write_file(dir, "server.key", &key.serialize_pem(), true)?;
    write_file(dir, "server.pem", &(cert.pem() + &ca_pem), false)?;
    Ok(files)
}

/// A TLS acceptor for the certificate chain and key in `files`. With `client_ca`, clients
/// may present a certificate issued by it (device mTLS); clients without one are let in
/// and authenticate by token, and the handlers decide what each may do.
pub fn acceptor(
    files: &TlsFiles,
    client_ca: Option<&Path>,
) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert.display().to_string(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(bad(
            &files.cert.display().to_string(),
            "no CERTIFICATE in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(&files.key.display().to_string(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in
                CertificateDer::pem_file_iter(ca).map_err(|e| bad(&ca.display().to_string(), e))?
            {
                roots
                    .add(c.map_err(|e| bad(&ca.display().to_string(), e))?)
                    .map_err(|e| bad(&ca.display().to_string(), e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| bad("client verifier", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
