//! `jota keys`: signing keys for bundles.

use crate::util::{print_json, write_atomic};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use jota_bundle::sign::{Algorithm, PublicKey, SecretKey};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Arguments of `jota keys`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Key algorithms `jota keys generate` makes.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Algo {
    /// Ed25519: small, fast, deterministic.
    Ed25519,
    /// ECDSA over P-256 with SHA-256 (openssl prime256v1).
    EcdsaP256,
    /// RSA-4096 with PSS/SHA-256 signatures.
    Rsa4096,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a key pair: DIR/NAME.key.pem (PKCS#8, mode 0600) and DIR/NAME.pub.pem (SPKI).
    ///
    /// Put the .pub.pem into the devices' keyring directory; keep the .key.pem on the build
    /// host (or in an HSM: see `jota bundle sign --signature`). openssl reads both files,
    /// and keys made by openssl (seed 001 §7.2) work in jota.
    Generate {
        /// Algorithm.
        #[arg(long, value_enum, default_value = "ed25519")]
        algo: Algo,
        /// Output directory (created if missing).
        #[arg(short, long)]
        output: PathBuf,
        /// Base name of the two files.
        #[arg(long, default_value = "jota-signing")]
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a key's algorithm and id (the sha256 of its SPKI DER).
    Show {
        /// A private or public key PEM.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the public key (SPKI PEM) of a private key.
    Public {
        /// A private key PEM.
        file: PathBuf,
    },
}

#[derive(serde::Serialize)]
struct KeyInfo {
    algorithm: Algorithm,
    id: String,
    private: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// Runs `jota keys`.
pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Generate {
            algo,
            output,
            name,
            json,
        } => {
            jota_bundle::manifest::check_name("key name", &name).map_err(anyhow::Error::msg)?;
            let alg = match algo {
                Algo::Ed25519 => Algorithm::Ed25519,
                Algo::EcdsaP256 => Algorithm::EcdsaP256,
                Algo::Rsa4096 => Algorithm::RsaPss,
            };
            std::fs::create_dir_all(&output)
                .with_context(|| format!("creating {}", output.display()))?;
            let key_path = output.join(format!("{name}.key.pem"));
            let pub_path = output.join(format!("{name}.pub.pem"));
            for p in [&key_path, &pub_path] {
                if p.exists() {
                    bail!("{} exists; refusing to overwrite a key", p.display());
                }
            }
            let k = SecretKey::generate(alg)?;
            let pem = k.to_pkcs8_pem()?;
            write_atomic(&key_path, |f| {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
                Ok(f.write_all(pem.as_bytes())?)
            })?;
            write_atomic(&pub_path, |f| {
                Ok(f.write_all(k.public().to_pem().as_bytes())?)
            })?;
            let info = KeyInfo {
                algorithm: alg,
                id: k.public().id().to_string(),
                private: true,
                private_key: Some(key_path.display().to_string()),
                public_key: Some(pub_path.display().to_string()),
            };
            if json {
                print_json(&info)?;
            } else {
                outln!("{} key {}", alg, info.id);
                outln!("private: {}", key_path.display());
                outln!("public:  {}", pub_path.display());
            }
        }
        Cmd::Show { file, json } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let path = file.display().to_string();
            let (pk, private) = if text.contains("PRIVATE KEY-----") {
                let k = SecretKey::from_pem(&text, &path)?;
                (PublicKey::from_pem(&k.public().to_pem(), &path)?, true)
            } else {
                (PublicKey::from_pem(&text, &path)?, false)
            };
            let info = KeyInfo {
                algorithm: pk.algorithm(),
                id: pk.id().to_string(),
                private,
                private_key: None,
                public_key: None,
            };
            if json {
                print_json(&info)?;
            } else {
                outln!(
                    "{} {} key {}",
                    info.algorithm,
                    if private { "private" } else { "public" },
                    info.id
                );
            }
        }
        Cmd::Public { file } => {
            let k = SecretKey::load(&file)?;
            let mut out = std::io::stdout().lock();
            out.write_all(k.public().to_pem().as_bytes())?;
        }
    }
    Ok(())
}
