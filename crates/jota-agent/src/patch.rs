//! Install from a static patch (`jota bundle delta`): only on the exact base release.
//!
//! The running slot's images are hashed first; only when every one equals the base the
//! patch was made from is it applied. Otherwise the caller installs the new bundle named by
//! the patch (next to it) by chunked delta — the patch never guesses. While applying, every
//! rebuilt chunk is verified against the new release's signed manifest; a chunk that does
//! not verify is taken from that same bundle instead.

use crate::delta::open_remote_with;
use crate::device::Device;
use crate::install::{
    install_from, keyring, keyring_dir, ChunkSource, InstallOptions, InstallReport,
};
use crate::journal::DataDir;
use crate::AgentError;
use jota_bundle::read::{Bundle, ReadError, Trust};
use jota_bundle::sign::{self, Keyring};
use jota_bundle::Digest;
use jota_delta::patch::{
    hash_ranges, sibling, used_ranges, BaseRead, Fallback, Patch, PatchFile, PatchSource,
};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

/// What a patch install did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PatchReport {
    /// Base release the patch applies to.
    pub base_version: String,
    /// Patch file size (what a device downloads).
    pub patch_bytes: u64,
    /// Chunks rebuilt from the base and the patch, verified.
    pub rebuilt_chunks: u64,
    /// Chunks that did not verify and came from the new bundle instead.
    pub fallback_chunks: u64,
}

/// The outcome of [`install_patch`].
#[derive(Debug)]
pub enum PatchOutcome {
    /// Installed from the patch.
    Installed(InstallReport, PatchReport),
    /// The running slot is not the patch's base: install this bundle (path or URL) instead.
    NotBase {
        /// Why.
        reason: String,
        /// The new bundle, next to the patch.
        bundle: String,
    },
}

/// Whether the running slot holds the patch's base, and what each way would cost.
#[derive(Clone, Debug, Serialize)]
pub struct PatchPlan {
    /// The base the patch needs.
    pub base_version: String,
    /// The release it installs.
    pub target_version: String,
    /// Whether every base image matches the running slot.
    pub base_matches: bool,
    /// The first mismatch, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
    /// Patch size.
    pub patch_bytes: u64,
    /// What the chunked delta of the new bundle fetches for a base holder.
    pub chunked_bytes: u64,
    /// The new bundle's size.
    pub full_bytes: u64,
    /// The fallback bundle.
    pub bundle: Option<String>,
}

/// Opens a patch file and checks both its signatures.
pub fn open(dev: &Device, file: &Path, opts: &InstallOptions) -> Result<Patch, AgentError> {
    let rej = |e: &dyn std::fmt::Display| AgentError::Rejected(format!("{}: {e}", file.display()));
    let f = PatchFile::open(file).map_err(|e| rej(&e))?;
    let patch = Patch::parse(Box::new(f)).map_err(|e| rej(&e))?;
    let ring = keyring(dev, opts)?;
    patch.check_signatures(&ring).map_err(|e| rej(&e))?;
    Ok(patch)
}

/// Hashes the running slot's images the patch is based on. `Err(reason)` on the first that
/// is not the base; else a reader per component.
fn bases(dev: &Device, patch: &Patch) -> Result<Result<Vec<Option<BaseRead>>, String>, AgentError> {
    let (m, new) = (&patch.manifest, &patch.new);
    let current = dev.current_slot()?;
    let mut out: Vec<Option<BaseRead>> = Vec::new();
    for (i, (p, c)) in m
        .components
        .iter()
        .zip(&new.manifest.components)
        .enumerate()
    {
        let (Some(base), Some(label)) = (&p.base, &c.partition) else {
            out.push(None);
            continue;
        };
        let part = dev.label(label, current)?;
        if part.size < base.size {
            return Ok(Err(format!(
                "{} ({} bytes) is smaller than the base image ({} bytes)",
                part.label, part.size, base.size
            )));
        }
        let io = dev.storage.open(&part, false)?;
        let read: BaseRead = Box::new(move |off, buf| {
            io.read_at(off, buf)
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
        // Only the blocks the patch reads need to be the base's (every rebuilt chunk is
        // verified anyway): cheaper than hashing the whole image, and tolerant of changes
        // the new release overwrites.
        let used = used_ranges(&patch.ops[i], &m.prefix, i);
        let got = hash_ranges(&read, &used).map_err(|e| AgentError::io(&part.file, e))?;
        if got != base.used_sha256 {
            return Ok(Err(format!(
                "{} is not release {}'s `{}` (the {} blocks the patch reads hash to {}, not {})",
                part.label,
                m.base.version,
                c.name,
                base.used_blocks,
                sign::short(&got),
                sign::short(&base.used_sha256)
            )));
        }
        tracing::info!(component = %c.name, partition = %part.label, "running slot is the patch's base");
        out.push(Some(read));
    }
    Ok(Ok(out))
}

/// What installing `file` would do, without writing anything.
pub fn dry_run(
    dev: &Device,
    file: &Path,
    source: &str,
    opts: &InstallOptions,
) -> Result<PatchPlan, AgentError> {
    let patch = open(dev, file, opts)?;
    let m = &patch.manifest;
    let b = bases(dev, &patch)?;
    Ok(PatchPlan {
        base_version: m.base.version.clone(),
        target_version: m.target.version.clone(),
        base_matches: b.is_ok(),
        mismatch: b.err(),
        patch_bytes: std::fs::metadata(file).map(|x| x.len()).unwrap_or(0),
        chunked_bytes: m.target.chunked_bytes,
        full_bytes: m.target.bundle_size,
        bundle: sibling(source, &m.target.bundle),
    })
}

/// The new bundle at `loc` (URL: by chunked delta without seeds; else a local file), opened
/// on first use, as a per-chunk fallback. It must be the release the patch installs.
fn fallback(loc: String, ring_dir: PathBuf, caches: PathBuf, want: Digest) -> Fallback {
    type Src = Box<dyn ChunkSource + Send>;
    let cell: OnceLock<Result<Src, String>> = OnceLock::new();
    let open = move || -> Result<Src, String> {
        let ring = Keyring::load(&ring_dir).map_err(|e| e.to_string())?;
        let src: Src = if loc.starts_with("http://") || loc.starts_with("https://") {
            match open_remote_with(&loc, &ring, &caches).map_err(|e| e.to_string())? {
                Some(s) => Box::new(s),
                None => return Err(format!("{loc}: the server does not serve byte ranges")),
            }
        } else {
            Box::new(
                Bundle::open(Path::new(&loc), Trust::Keyring(&ring)).map_err(|e| e.to_string())?,
            )
        };
        if Digest::of(&src.parsed().manifest_bytes) != want {
            return Err(format!("{loc} is not the release the patch installs"));
        }
        Ok(src)
    };
    Box::new(move |comp, ci| match cell.get_or_init(&open) {
        Ok(s) => s.load(comp, ci),
        Err(e) => Err(ReadError::Io {
            path: PathBuf::from("<patch fallback>"),
            source: std::io::Error::other(e.clone()),
        }),
    })
}

/// Installs the patch `file` (downloaded from, or found at, `source`) when the running
/// slot is its base; says which bundle to install instead when it is not.
pub fn install_patch(
    dev: &mut Device,
    file: &Path,
    source: &str,
    opts: &InstallOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<PatchOutcome, AgentError> {
    let patch = open(dev, file, opts)?;
    let bundle = sibling(source, &patch.manifest.target.bundle);
    let readers = match bases(dev, &patch)? {
        Ok(r) => r,
        Err(reason) => {
            let Some(bundle) = bundle else {
                return Err(AgentError::Rejected(format!(
                    "the running slot is not the patch's base: {reason}"
                )));
            };
            tracing::info!(%reason, %bundle, "not the patch's base: installing the new bundle instead");
            return Ok(PatchOutcome::NotBase { reason, bundle });
        }
    };
    let want = patch.manifest.target.manifest_sha256;
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    let caches = data.host_path().join("delta");
    // Where open_remote_with keeps a fallback's fetched chunks: gone once installed.
    let cache_dir = caches.join(&want.to_string()[..16]);
    let fb = bundle.map(|b| fallback(b, keyring_dir(dev, opts), caches, want));
    let mut report = PatchReport {
        base_version: patch.manifest.base.version.clone(),
        patch_bytes: std::fs::metadata(file).map(|x| x.len()).unwrap_or(0),
        ..PatchReport::default()
    };
    let src = PatchSource::new(patch, readers, fb);
    let rep = install_from(dev, &src, opts, &mut |_, _| Ok(()), progress)?;
    report.rebuilt_chunks = src.stats.rebuilt.load(Ordering::Relaxed);
    report.fallback_chunks = src.stats.fallback.load(Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&cache_dir);
    Ok(PatchOutcome::Installed(rep, report))
}
