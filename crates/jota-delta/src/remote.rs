//! A bundle on a static HTTP server, read with Range requests: the front first, then only
//! the chunks a device lacks, coalesced and fetched on parallel connections into a
//! resumable cache; and the chunk source the installer reads, seed first.

use crate::plan::Plan;
use crate::seed::Seed;
use crate::DeltaError;
use jota_bundle::format::{Header, HEADER_LEN};
use jota_bundle::manifest::{Digest, BLOCK_SIZE};
use jota_bundle::read::{verify_chunk, Parsed, ReadError};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Per-request overhead counted in [`Remote::bytes`] (request and response headers).
pub const REQUEST_OVERHEAD: u64 = 400;

/// A bundle URL.
pub struct Remote {
    url: String,
    client: reqwest::blocking::Client,
    /// The bundle's validator (its ETag) from the first answer: later requests carry it in
    /// `If-Range`, so a bundle replaced on the server is never stitched to the old one.
    validator: Mutex<Option<String>>,
    /// Body bytes received plus [`REQUEST_OVERHEAD`] per request.
    pub bytes: AtomicU64,
    /// Requests made.
    pub requests: AtomicU64,
    /// Requests that continued an answer cut off part-way (a dropped connection).
    pub resumed: AtomicU64,
}

/// What one Range request delivered: the bytes that arrived from `start`, and why it
/// stopped short, if it did (a dropped connection keeps what came before the drop).
struct Partial {
    body: Vec<u8>,
    error: Option<(DeltaError, bool)>,
}

impl Remote {
    /// A client for `url`.
    pub fn new(url: &str, timeout: Duration) -> Result<Remote, DeltaError> {
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(timeout)
            .user_agent(concat!("jota-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| DeltaError::Http {
                url: url.into(),
                reason: e.to_string(),
            })?;
        Ok(Remote::with_client(url, client))
    }

    /// `url` through `client` (a device's mTLS client with the pinned fleet CA, or one with
    /// its token in the default headers).
    pub fn with_client(url: &str, client: reqwest::blocking::Client) -> Remote {
        Remote {
            url: url.to_string(),
            client,
            validator: Mutex::new(None),
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            resumed: AtomicU64::new(0),
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn http(&self, reason: impl std::fmt::Display) -> DeltaError {
        DeltaError::Http {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    /// One request for `[start, end)`: what arrived, and the error that cut it short with
    /// whether trying again may help.
    fn range_once(&self, start: u64, end: u64) -> Partial {
        let fail = |e: DeltaError, retry: bool| Partial {
            body: Vec::new(),
            error: Some((e, retry)),
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(REQUEST_OVERHEAD, Ordering::Relaxed);
        let validator = self.validator.lock().ok().and_then(|v| v.clone());
        let mut req = self
            .client
            .get(&self.url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
        if let Some(v) = &validator {
            req = req.header(reqwest::header::IF_RANGE, v);
        }
        let mut resp = match req.send() {
            Ok(r) => r,
            Err(e) => return fail(self.http(e), true),
        };
        match resp.status().as_u16() {
            206 => {}
            200 if validator.is_some() => {
                return fail(
                    self.http(
                        "the bundle changed on the server (If-Range answered the whole file)",
                    ),
                    false,
                )
            }
            200 => return fail(DeltaError::NoRanges(self.url.clone()), false),
            s if s >= 500 || s == 429 || s == 408 => {
                return fail(self.http(format!("HTTP {s}")), true)
            }
            s => {
                return fail(
                    self.http(format!("HTTP {s} for bytes {start}-{}", end - 1)),
                    false,
                )
            }
        }
        let cr = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !cr.starts_with(&format!("bytes {start}-{}/", end - 1)) {
            return fail(
                self.http(format!(
                    "asked for bytes {start}-{}, got Content-Range `{cr}`",
                    end - 1
                )),
                false,
            );
        }
        if validator.is_none() {
            let etag = resp
                .headers()
                .get(reqwest::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.starts_with("W/"))
                .map(str::to_string);
            if let (Some(e), Ok(mut v)) = (etag, self.validator.lock()) {
                v.get_or_insert(e);
            }
        }
        let want = (end - start) as usize;
        let mut body = Vec::with_capacity(want);
        let error = match (&mut resp).take(want as u64 + 1).read_to_end(&mut body) {
            Ok(_) if body.len() == want => None,
            Ok(_) if body.len() > want => {
                body.truncate(want);
                None
            }
            Ok(_) => Some((self.http(format!("{} of {want} bytes", body.len())), true)),
            Err(e) => Some((self.http(e), true)),
        };
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        Partial { body, error }
    }

    /// Bytes `[start, end)` of the bundle (a 206 answer for exactly that range, or
    /// [`DeltaError::NoRanges`]). An answer cut off part-way is continued from where it
    /// stopped; four attempts in a row without progress give up.
    pub fn range(&self, start: u64, end: u64) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::with_capacity((end - start) as usize);
        self.range_with(start, end, &mut |b| {
            out.extend_from_slice(b);
            Ok(b.len() as u64)
        })?;
        Ok(out)
    }

    /// Reads `[start, end)` and hands what arrives to `take`, which answers how many of
    /// the bytes it kept (whole chunks; the rest is asked for again, from the first byte
    /// it did not keep). A dropped connection resumes after what was kept.
    fn range_with(
        &self,
        start: u64,
        end: u64,
        take: &mut dyn FnMut(&[u8]) -> Result<u64, DeltaError>,
    ) -> Result<(), DeltaError> {
        let mut pos = start;
        let mut fruitless = 0u64;
        loop {
            let p = self.range_once(pos, end);
            let kept = take(&p.body)?;
            pos += kept;
            match p.error {
                None if pos >= end => return Ok(()),
                None => return Err(self.http(format!("bytes {start}-{}: short answer", end - 1))),
                Some((e, false)) => return Err(e),
                Some((e, true)) => {
                    if p.body.is_empty() {
                        fruitless += 1;
                    } else {
                        // Something came before the drop: the next request continues it.
                        fruitless = 0;
                        self.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    if fruitless >= 4 {
                        return Err(self.http(format!("bytes {start}-{}: {e}", end - 1)));
                    }
                    std::thread::sleep(Duration::from_millis(200 * fruitless.max(1)));
                }
            }
        }
    }

    /// Fetches and checks the front: header, manifest, signatures and index (signatures are
    /// the caller's to check).
    pub fn front(&self) -> Result<Parsed, DeltaError> {
        let h = self.range(0, HEADER_LEN)?;
        let header = Header::parse(&h)?;
        let rest = self.range(HEADER_LEN, header.payload_offset())?;
        let mut all = h;
        all.extend_from_slice(&rest);
        let front = jota_bundle::format::Front::read(&mut all.as_slice())
            .map_err(|e| self.http(format!("front: {e}")))?;
        Ok(Parsed::from_front(front)?)
    }
}

/// Chunks fetched so far, kept on the data partition: the payload's bytes at their payload
/// offsets in a sparse file, and the list of chunks verified into it (so an interrupted
/// delta resumes at the first chunk it does not have).
pub struct ChunkCache {
    file: File,
    path: PathBuf,
    list: PathBuf,
    done: Mutex<HashSet<(usize, usize)>>,
    // One persist at a time: they share the temporary file.
    persisting: Mutex<()>,
}

impl ChunkCache {
    /// Opens (or creates) the cache for a bundle in `dir`.
    pub fn open(dir: &Path) -> Result<ChunkCache, DeltaError> {
        std::fs::create_dir_all(dir).map_err(|e| DeltaError::io(dir, e))?;
        let path = dir.join("payload.part");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| DeltaError::io(&path, e))?;
        let list = dir.join("verified.json");
        let done: HashSet<(usize, usize)> = std::fs::read(&list)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<(usize, usize)>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        Ok(ChunkCache {
            file,
            path,
            list,
            done: Mutex::new(done),
            persisting: Mutex::new(()),
        })
    }

    /// Whether chunk `(comp, chunk)` was verified into the cache.
    pub fn has(&self, comp: usize, chunk: usize) -> bool {
        self.done.lock().is_ok_and(|d| d.contains(&(comp, chunk)))
    }

    /// Chunks held.
    pub fn len(&self) -> usize {
        self.done.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn put(&self, comp: usize, chunk: usize, offset: u64, raw: &[u8]) -> Result<(), DeltaError> {
        self.file
            .write_all_at(raw, offset)
            .map_err(|e| DeltaError::io(&self.path, e))?;
        if let Ok(mut d) = self.done.lock() {
            d.insert((comp, chunk));
        }
        Ok(())
    }

    /// Makes the cache durable and records what it holds (atomically).
    pub fn persist(&self) -> Result<(), DeltaError> {
        let _one = self.persisting.lock();
        self.file
            .sync_data()
            .map_err(|e| DeltaError::io(&self.path, e))?;
        let list: Vec<(usize, usize)> = self
            .done
            .lock()
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        let tmp = self.list.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&list).unwrap_or_default())
            .map_err(|e| DeltaError::io(&tmp, e))?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| DeltaError::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.list).map_err(|e| DeltaError::io(&self.list, e))
    }

    fn raw(&self, offset: u64, size: u64) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; size as usize];
        self.file.read_exact_at(&mut v, offset)?;
        Ok(v)
    }
}

/// How fetching went.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FetchReport {
    /// Chunks fetched now.
    pub chunks: usize,
    /// Chunks already in the cache from an interrupted run.
    pub resumed: usize,
    /// Range requests.
    pub requests: usize,
}

/// Fetch settings.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// Parallel connections.
    pub connections: usize,
    /// Neighbouring chunks closer than this are fetched in one request (the gap is fetched
    /// too).
    pub max_gap: u64,
    /// Largest single request (bounds memory: connections × this).
    pub max_request: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            connections: 4,
            max_gap: 64 << 10,
            max_request: 2 << 20,
        }
    }
}

/// Fetches every chunk the plan does not seed and the cache lacks, verifying each.
pub fn fetch_missing(
    remote: &Remote,
    parsed: &Parsed,
    plan: &Plan,
    cache: &ChunkCache,
    o: &FetchOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<FetchReport, DeltaError> {
    let mut want = Vec::new();
    let mut report = FetchReport::default();
    for (i, c) in parsed.manifest.components.iter().enumerate() {
        for (ci, ch) in c.chunks.iter().enumerate() {
            let seeded = plan.components.get(i).is_some_and(|p| p.seeded[ci]);
            if seeded {
                continue;
            }
            if cache.has(i, ci) {
                report.resumed += 1;
                continue;
            }
            want.push((ch.offset, ch.size, i, ci));
        }
    }
    want.sort();
    // Coalesce neighbours into requests.
    let mut groups: Vec<Vec<(u64, u64, usize, usize)>> = Vec::new();
    for w in want {
        match groups.last_mut() {
            Some(g)
                if {
                    let (s, _, _, _) = g[0];
                    let (ls, lz, _, _) = g[g.len() - 1];
                    w.0 <= ls + lz + o.max_gap && w.0 + w.1 - s <= o.max_request
                } =>
            {
                g.push(w)
            }
            _ => groups.push(vec![w]),
        }
    }
    report.requests = groups.len();
    let next = AtomicU64::new(0);
    let fetched = AtomicU64::new(0);
    let failure: Mutex<Option<DeltaError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..o.connections.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                let Some(g) = groups.get(i) else { break };
                if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                    break;
                }
                let r = fetch_group(remote, parsed, cache, g, &fetched, progress);
                if let Err(e) = r {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert(e);
                    }
                    break;
                }
            });
        }
    });
    report.chunks = fetched.load(Ordering::Relaxed) as usize;
    if let Some(e) = failure.into_inner().ok().flatten() {
        return Err(e);
    }
    Ok(report)
}

/// Fetches one coalesced group of chunks. Whole chunks are verified and kept as they
/// arrive, so a dropped connection continues at the first chunk not yet kept: a verified
/// chunk is never fetched again (seed 001 §21.2).
fn fetch_group(
    remote: &Remote,
    parsed: &Parsed,
    cache: &ChunkCache,
    g: &[(u64, u64, usize, usize)],
    fetched: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), DeltaError> {
    let payload = parsed.header.payload_offset();
    let start = g[0].0;
    let (ls, lz, _, _) = g[g.len() - 1];
    let mut next = 0usize;
    let mut at = start;
    remote.range_with(payload + start, payload + ls + lz, &mut |body| {
        let mut used = 0u64;
        while let Some(&(off, size, comp, ci)) = g.get(next) {
            let rel = (off - at) as usize;
            let Some(raw) = body.get(rel..rel + size as usize) else {
                break;
            };
            verify_chunk(&parsed.manifest.components[comp], ci, payload + off, raw)?;
            cache.put(comp, ci, off, raw)?;
            fetched.fetch_add(1, Ordering::Relaxed);
            progress(size);
            next += 1;
            used = (off + size) - at;
        }
        if used > 0 {
            cache.persist()?;
        }
        // Continue at the next chunk (skipping a gap between chunks too).
        let kept = match g.get(next) {
            Some(&(off, _, _, _)) if used > 0 => off - at,
            _ => used,
        };
        at += kept;
        Ok(kept)
    })
}

/// Reads `buf.len()` bytes at an offset of a seed.
pub type ReadAt = Box<dyn Fn(u64, &mut [u8]) -> std::io::Result<()> + Send + Sync>;

/// A seed with a way to read it.
pub struct SeedSlot {
    /// Where the wanted blocks are.
    pub seed: Seed,
    /// Reads the seed (the active slot's partition).
    pub read_at: ReadAt,
}

/// Counters of a delta install.
#[derive(Debug, Default, serde::Serialize)]
pub struct SourceStats {
    /// Chunks assembled from the seed and verified.
    pub seeded: AtomicU64,
    /// Seeded chunks whose bytes did not verify (the seed changed or is damaged): fetched.
    pub seed_mismatch: AtomicU64,
    /// Chunks read from the cache.
    pub cached: AtomicU64,
    /// Chunks fetched while writing (after a seed mismatch).
    pub fetched_late: AtomicU64,
}

/// The chunk source of a delta install: seed, else cache, else a Range request.
pub struct DeltaSource {
    /// The bundle's front (signatures checked by the caller).
    pub parsed: Parsed,
    /// The bundle URL.
    pub remote: Remote,
    /// Fetched chunks.
    pub cache: ChunkCache,
    /// The plan, once the seeds are scanned.
    pub plan: std::sync::OnceLock<Plan>,
    /// One optional seed per component, once scanned.
    pub seeds: std::sync::OnceLock<Vec<Option<SeedSlot>>>,
    /// Counters.
    pub stats: SourceStats,
}

fn other(e: impl std::fmt::Display) -> ReadError {
    ReadError::Io {
        path: PathBuf::from("<delta>"),
        source: std::io::Error::other(e.to_string()),
    }
}

impl DeltaSource {
    /// A source for `parsed` at `remote`, caching fetched chunks in `cache`.
    pub fn new(parsed: Parsed, remote: Remote, cache: ChunkCache) -> DeltaSource {
        DeltaSource {
            parsed,
            remote,
            cache,
            plan: std::sync::OnceLock::new(),
            seeds: std::sync::OnceLock::new(),
            stats: SourceStats::default(),
        }
    }

    /// Plans with these seeds and fetches every chunk they do not provide.
    pub fn seed_and_fetch(
        &self,
        seeds: Vec<Option<SeedSlot>>,
        o: &FetchOptions,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<FetchReport, DeltaError> {
        let found: Vec<Option<Seed>> = seeds
            .iter()
            .map(|s| s.as_ref().map(|s| s.seed.clone()))
            .collect();
        let plan = crate::plan::plan(&self.parsed, &found);
        let plan = self.plan.get_or_init(|| plan);
        let _ = self.seeds.set(seeds);
        fetch_missing(&self.remote, &self.parsed, plan, &self.cache, o, progress)
    }

    /// Chunk `ci` of component `comp`, decompressed and verified against the manifest.
    pub fn load(&self, comp: usize, ci: usize) -> Result<Vec<u8>, ReadError> {
        let c = &self.parsed.manifest.components[comp];
        let ch = &c.chunks[ci];
        let seeded = self
            .plan
            .get()
            .and_then(|p| p.components.get(comp))
            .is_some_and(|p| p.seeded[ci]);
        if seeded {
            if let Some(Some(slot)) = self.seeds.get().and_then(|s| s.get(comp)) {
                if let Some(data) = self.assemble_from_seed(comp, ci, slot) {
                    self.stats.seeded.fetch_add(1, Ordering::Relaxed);
                    return Ok(data);
                }
                self.stats.seed_mismatch.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(component = %c.name, chunk = ci, "seed blocks do not verify; fetching the chunk");
            }
        }
        if self.cache.has(comp, ci) {
            if let Ok(raw) = self.cache.raw(ch.offset, ch.size) {
                let start = self.parsed.header.payload_offset() + ch.offset;
                if let Ok(d) = verify_chunk(c, ci, start, &raw) {
                    self.stats.cached.fetch_add(1, Ordering::Relaxed);
                    return Ok(d);
                }
            }
        }
        let start = self.parsed.header.payload_offset() + ch.offset;
        let raw = self.remote.range(start, start + ch.size).map_err(other)?;
        let d = verify_chunk(c, ci, start, &raw)?;
        self.cache.put(comp, ci, ch.offset, &raw).map_err(other)?;
        self.stats.fetched_late.fetch_add(1, Ordering::Relaxed);
        Ok(d)
    }

    fn assemble_from_seed(&self, comp: usize, ci: usize, slot: &SeedSlot) -> Option<Vec<u8>> {
        let c = &self.parsed.manifest.components[comp];
        let ch = &c.chunks[ci];
        let first: u64 = c.chunks[..ci].iter().map(|x| x.blocks as u64).sum();
        let keys = &self.parsed.maps[comp].keys;
        let bs = BLOCK_SIZE as usize;
        let n = ch.blocks as usize;
        let mut offs = Vec::with_capacity(n);
        for k in 0..n {
            offs.push(*slot.seed.found.get(keys.get(first as usize + k)?)?);
        }
        let mut data = vec![0u8; n * bs];
        // Blocks that sit one after another in the seed are read in one go.
        let mut k = 0;
        while k < n {
            let mut run = 1;
            while k + run < n && offs[k + run] == offs[k] + (run * bs) as u64 {
                run += 1;
            }
            (slot.read_at)(offs[k], &mut data[k * bs..(k + run) * bs]).ok()?;
            k += run;
        }
        (data.len() as u64 == ch.length && Digest::of(&data) == ch.sha256).then_some(data)
    }
}
