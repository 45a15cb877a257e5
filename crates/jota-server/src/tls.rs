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

/// The self-issued CA and server certificate in `dir`, made on the first call: a CA
/// (`ca.pem`, `ca.key`) and a server certificate for `names` (DNS names or IP addresses)
/// signed by it (`server.pem`, `server.key`). Later calls reuse them.
pub fn self_issued(dir: &Path, names: &[String]) -> Result<TlsFiles, ServerError> {
    let files = TlsFiles {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(|e| ServerError::io(dir, e))?;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().map_err(|e| bad("CA key", e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| bad("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "jota fleet CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| bad("CA", e))?;
    let key = KeyPair::generate().map_err(|e| bad("server key", e))?;
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| bad("server names", e))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "jota fleet server");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| bad("server certificate", e))?;
    // Keys first, then certificates: a half-written set is never mistaken for a whole one.
    let write = |name: &str, text: String, secret: bool| -> Result<(), ServerError> {
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
    };
    write("ca.key", ca_key.serialize_pem(), true)?;
    write("server.key", key.serialize_pem(), true)?;
    write("ca.pem", ca_cert.pem(), false)?;
    write("server.pem", cert.pem() + &ca_cert.pem(), false)?;
    Ok(files)
}

/// A TLS acceptor for the certificate chain and key in `files`.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
