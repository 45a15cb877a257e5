//! Delta install from a URL: fetch the bundle's front with a Range request, check its
//! signatures, seed from the active slot, fetch only the missing chunks, install.
//!
//! The base hint of a bundle is advisory here: every seeded chunk is verified against the
//! signed manifest, so a device on another version (seed 001 §21.3) fetches more, never
//! writes anything wrong.

use crate::device::Device;
use crate::install::{install_from, keyring, ChunkSource, InstallOptions, InstallReport};
use crate::journal::DataDir;
use crate::AgentError;
use jota_bundle::manifest::{ComponentType, Digest};
use jota_bundle::sign::Keyring;
use jota_delta::plan::Plan;
use jota_delta::remote::{ChunkCache, DeltaSource, FetchOptions, FetchReport, Remote, SeedSlot};
use jota_delta::seed::scan;
use jota_delta::DeltaError;
use jota_tegra::efivar::Slot;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What a delta install fetched and reused.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeltaReport {
    /// The plan (per component: seeded chunks, bytes to fetch).
    pub plan: Plan,
    /// The fetch phase.
    pub fetch: FetchReport,
    /// Bytes downloaded (front, chunks, and a stated overhead per request).
    pub downloaded_bytes: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Chunks assembled from the active slot and verified.
    pub seeded_chunks: u64,
    /// Seeded chunks that did not verify and were fetched instead.
    pub seed_mismatches: u64,
    /// Chunk loads served from the fetched-chunk cache.
    pub cached_loads: u64,
}

fn dl(e: DeltaError) -> AgentError {
    AgentError::Download(e.to_string())
}

/// Opens a remote bundle: fetches and checks its front and signatures, opens the chunk cache.
/// `Ok(None)` when the server does not serve ranges.
pub fn open_remote(
    dev: &Device,
    url: &str,
    opts: &InstallOptions,
) -> Result<Option<DeltaSource>, AgentError> {
    let ring = keyring(dev, opts)?;
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    open_remote_with(url, &ring, &data.host_path().join("delta"))
}

/// [`open_remote`] with the keyring and the directory of chunk caches given (one cache per
/// bundle, named by its manifest hash).
pub fn open_remote_with(
    url: &str,
    ring: &Keyring,
    caches: &Path,
) -> Result<Option<DeltaSource>, AgentError> {
    let remote = Remote::new(url, Duration::from_secs(30)).map_err(dl)?;
    open(remote, ring, caches)
}

/// [`open_remote_with`] over a given [`Remote`] (the fleet agent's, with its mTLS client).
pub fn open(
    remote: Remote,
    ring: &Keyring,
    caches: &Path,
) -> Result<Option<DeltaSource>, AgentError> {
    let url = remote.url().to_string();
    let parsed = match remote.front() {
        Ok(p) => p,
        Err(DeltaError::NoRanges(_)) => return Ok(None),
        Err(DeltaError::Bundle(e)) => return Err(AgentError::Rejected(format!("{url}: {e}"))),
        Err(e) => return Err(dl(e)),
    };
    parsed
        .check_signatures(ring)
        .map_err(|e| AgentError::Rejected(format!("{url}: {e}")))?;
    let id = Digest::of(&parsed.manifest_bytes).to_string();
    let cache = ChunkCache::open(&caches.join(&id[..16])).map_err(dl)?;
    if !cache.is_empty() {
        tracing::info!(
            chunks = cache.len(),
            "resuming a delta: chunks already fetched and verified"
        );
    }
    Ok(Some(DeltaSource::new(parsed, remote, cache)))
}

/// Scans the running slot's partitions for the blocks each raw image needs.
pub fn seeds(
    dev: &Device,
    src: &DeltaSource,
    current: Slot,
) -> Result<Vec<Option<SeedSlot>>, AgentError> {
    let m = &src.parsed.manifest;
    if let (Some(base), Some(running)) = (&m.base, dev.running_version()) {
        if base.version != running {
            tracing::info!(
                expected = %base.version, running = %running,
                "the bundle was grouped against another base; seeding by content (every chunk is verified)"
            );
        }
    }
    let mut out = Vec::new();
    for (i, c) in m.components.iter().enumerate() {
        let part = match (&c.kind, &c.partition) {
            (ComponentType::RawImage, Some(base)) => dev.label(base, current).ok(),
            _ => None,
        };
        let Some(part) = part else {
            out.push(None);
            continue;
        };
        let io = dev.storage.open(&part, false)?;
        let wanted: HashSet<u64> = src.parsed.maps[i].keys.iter().copied().collect();
        let read = |off: u64, buf: &mut [u8]| {
            io.read_at(off, buf)
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let seed = scan(&read, part.size, &wanted).map_err(|e| AgentError::io(&part.file, e))?;
        tracing::info!(component = %c.name, seed = %part.label, found = seed.found.len(), wanted = wanted.len(), "seed scanned");
        out.push(Some(SeedSlot {
            seed,
            read_at: Box::new(move |off, buf| {
                io.read_at(off, buf)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }),
        }));
    }
    Ok(out)
}

/// What a delta install of `url` would download, without writing anything.
pub fn dry_run(dev: &Device, url: &str, opts: &InstallOptions) -> Result<Option<Plan>, AgentError> {
    let Some(src) = open_remote(dev, url, opts)? else {
        return Ok(None);
    };
    let current = dev.current_slot()?;
    let s = seeds(dev, &src, current)?;
    let found: Vec<_> = s
        .iter()
        .map(|x| x.as_ref().map(|x| x.seed.clone()))
        .collect();
    Ok(Some(jota_delta::plan::plan(&src.parsed, &found)))
}

/// Installs `url` by delta. `Ok(None)`: the server serves no ranges (download it whole).
pub fn install_url(
    dev: &mut Device,
    url: &str,
    opts: &InstallOptions,
    fetch: &FetchOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<Option<(InstallReport, DeltaReport)>, AgentError> {
    let Some(src) = open_remote(dev, url, opts)? else {
        return Ok(None);
    };
    let mut fetched = FetchReport::default();
    let mut prepare = |dev: &Device, current: Slot| -> Result<(), AgentError> {
        let s = seeds(dev, &src, current)?;
        fetched = src.seed_and_fetch(s, fetch, &|_| {}).map_err(dl)?;
        Ok(())
    };
    let src_ref: &dyn ChunkSource = &src;
    let rep = install_from(dev, src_ref, opts, &mut prepare, progress)?;
    let report = DeltaReport {
        plan: src.plan.get().cloned().unwrap_or_default(),
        fetch: fetched,
        downloaded_bytes: src.remote.bytes.load(Ordering::Relaxed),
        requests: src.remote.requests.load(Ordering::Relaxed),
        seeded_chunks: src.stats.seeded.load(Ordering::Relaxed),
        seed_mismatches: src.stats.seed_mismatch.load(Ordering::Relaxed),
        cached_loads: src.stats.cached.load(Ordering::Relaxed),
    };
    // Installed: the fetched chunks have served their purpose.
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    let id = Digest::of(&src.parsed.manifest_bytes).to_string();
    let _ = std::fs::remove_dir_all(data.host_path().join("delta").join(&id[..16]));
    Ok(Some((rep, report)))
}
