//! Reading a bundle: structure checks, signature checks, chunk and component verification,
//! and extraction of a component's image.
//!
//! Order matters for untrusted input: signatures are checked over the raw manifest bytes
//! before the manifest is trusted; the index's sha256 (from the manifest) is checked before
//! it is decompressed; every chunk's sha256 is checked before its bytes are used.

use crate::format::{Front, FrontError, Header};
use crate::index::{BlockMap, IndexError, Run};
use crate::manifest::{Component, Digest, Manifest, ManifestError, BLOCK_SIZE};
use crate::sign::{self, Keyring, SigCheck, SignError, Signature};
use sha2::Digest as _;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

const BS: u64 = BLOCK_SIZE as u64;

/// Reading or verifying a bundle failed; every variant names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Header or a front section.
    #[error(transparent)]
    Front(#[from] FrontError),
    /// The manifest.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Signatures.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// A block map.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The header disagrees with the signed manifest.
    #[error("bundle header says {field} is {header} bytes but the manifest says {manifest}")]
    HeaderMismatch {
        /// Field.
        field: &'static str,
        /// Header value.
        header: u64,
        /// Manifest value.
        manifest: u64,
    },
    /// The index does not hash to what the manifest says.
    #[error(
        "block index sha256 is {actual}, the manifest says {expected} (the index was altered)"
    )]
    IndexHash {
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// The index does not decompress to its stated length.
    #[error("block index does not decompress to {expected} bytes: {reason}")]
    IndexDecompress {
        /// From the manifest.
        expected: u64,
        /// Why.
        reason: String,
    },
    /// File length.
    #[error("bundle is {actual} bytes but its header says {expected}: {what}")]
    Length {
        /// From the header.
        expected: u64,
        /// Actual.
        actual: u64,
        /// "truncated" or "trailing bytes".
        what: &'static str,
    },
    /// A chunk is damaged.
    #[error("component `{component}` chunk {chunk} (bundle bytes {start}..{end}): {reason}")]
    Chunk {
        /// Component.
        component: String,
        /// Chunk index.
        chunk: usize,
        /// Absolute start in the bundle.
        start: u64,
        /// Absolute end.
        end: u64,
        /// What is wrong.
        reason: String,
    },
    /// The payload area does not hash to what the manifest says.
    #[error(
        "payload sha256 is {actual}, the manifest says {expected} (payload bytes were altered)"
    )]
    PayloadHash {
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// A component does not hash to what the manifest says.
    #[error("component `{component}` sha256 is {actual}, the manifest says {expected}")]
    ComponentHash {
        /// Component.
        component: String,
        /// From the manifest.
        expected: Digest,
        /// Computed.
        actual: Digest,
    },
    /// No such component.
    #[error("no component `{0}` in the bundle")]
    NoComponent(String),
    /// I/O on the bundle or an output.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

type Result<T, E = ReadError> = std::result::Result<T, E>;

/// The front of a bundle, parsed and structurally checked (not yet trusted).
#[derive(Clone, Debug)]
pub struct Parsed {
    /// Header.
    pub header: Header,
    /// Manifest bytes as stored (what signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// Manifest.
    pub manifest: Manifest,
    /// Signatures.
    pub signatures: Vec<Signature>,
    /// Block map of each component (same order as the manifest's components).
    pub maps: Vec<BlockMap>,
}

impl Parsed {
    /// Checks a front: manifest, signatures block structure, header vs manifest, index
    /// hash, index decompression and every block map.
    pub fn from_front(front: Front) -> Result<Parsed> {
        let manifest = Manifest::parse(&front.manifest)?;
        let signatures = sign::decode_signatures(&front.signatures)?;
        let h = front.header;
        for (field, header, m) in [
            ("the index length", h.index_len, manifest.index.length),
            ("the payload length", h.payload_len, manifest.payload.length),
        ] {
            if header != m {
                return Err(ReadError::HeaderMismatch {
                    field,
                    header,
                    manifest: m,
                });
            }
        }
        let actual = Digest::of(&front.index);
        if actual != manifest.index.sha256 {
            return Err(ReadError::IndexHash {
                expected: manifest.index.sha256,
                actual,
            });
        }
        let want = manifest.index.uncompressed_length;
        if want > crate::format::MAX_INDEX {
            return Err(ReadError::IndexDecompress {
                expected: want,
                reason: "over the 1 GiB limit".into(),
            });
        }
        let index = zstd::bulk::decompress(&front.index, want as usize).map_err(|e| {
            ReadError::IndexDecompress {
                expected: want,
                reason: e.to_string(),
            }
        })?;
        if index.len() as u64 != want {
            return Err(ReadError::IndexDecompress {
                expected: want,
                reason: format!("got {} bytes", index.len()),
            });
        }
        let maps = manifest
            .components
            .iter()
            .map(|c| {
                let s = c.blocks.index_offset as usize;
                let e = s + c.blocks.index_length as usize;
                BlockMap::decode(c, &index[s..e])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Parsed {
            header: h,
            manifest_bytes: front.manifest,
            manifest,
            signatures,
            maps,
        })
    }

    /// Checks the signatures against a keyring (see [`sign::check`] for the policy).
    pub fn check_signatures(&self, keyring: &Keyring) -> Result<Vec<SigCheck>, SignError> {
        sign::check(&self.manifest_bytes, &self.signatures, keyring)
    }

    /// Bytes a device holding the bundle's base fetches by chunked delta: the front and
    /// every chunk not marked as in the base (all of them for a bundle built without
    /// `--base`, so then an upper bound).
    pub fn chunked_delta_bytes(&self) -> u64 {
        self.header.payload_offset()
            + self
                .manifest
                .components
                .iter()
                .flat_map(|c| &c.chunks)
                .filter(|ch| !ch.in_base)
                .map(|ch| ch.size)
                .sum::<u64>()
    }

    /// Index of the component named `name`.
    pub fn component_index(&self, name: &str) -> Result<usize> {
        self.manifest
            .components
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| ReadError::NoComponent(name.to_string()))
    }
}

/// Signature checks to do when opening.
pub enum Trust<'a> {
    /// Check signatures against this keyring before parsing anything else.
    Keyring(&'a Keyring),
    /// Do not check (inspection only).
    Unchecked,
}

/// A bundle file opened for reading.
pub struct Bundle {
    /// The parsed front.
    pub parsed: Parsed,
    /// Signature results (empty when opened unchecked).
    pub signature_checks: Vec<SigCheck>,
    file: File,
    path: PathBuf,
}

impl Bundle {
    /// Opens a bundle file: header, signatures (when `trust` has a keyring, over the raw
    /// manifest bytes, before anything else is parsed), structure, file length.
    pub fn open(path: &Path, trust: Trust<'_>) -> Result<Bundle> {
        let io = |source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let front = Front::read(&mut std::io::BufReader::new(&file))?;
        let mut checks = Vec::new();
        if let Trust::Keyring(k) = trust {
            let sigs = sign::decode_signatures(&front.signatures)?;
            checks = sign::check(&front.manifest, &sigs, k)?;
        }
        let parsed = Parsed::from_front(front)?;
        let total = parsed.header.total_len();
        if len != total {
            return Err(ReadError::Length {
                expected: total,
                actual: len,
                what: if len < total {
                    "truncated"
                } else {
                    "trailing bytes after the payload"
                },
            });
        }
        Ok(Bundle {
            parsed,
            signature_checks: checks,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes a copy of this bundle to `out` with `extra` signatures added (a signature by a
    /// key that already signed replaces it). Signatures must be over this manifest.
    pub fn add_signatures(
        &self,
        extra: &[Signature],
        out: &Path,
    ) -> Result<Vec<Signature>, crate::build::BuildError> {
        let p = &self.parsed;
        let mut sigs = p.signatures.clone();
        for s in extra {
            sigs.retain(|x| x.key != s.key);
            sigs.push(s.clone());
        }
        if sigs.len() > sign::MAX_SIGNATURES {
            return Err(crate::build::BuildError::Invalid(format!(
                "{} signatures (at most {})",
                sigs.len(),
                sign::MAX_SIGNATURES
            )));
        }
        let sbytes = sign::encode_signatures(&sigs);
        let mut index = vec![0u8; p.header.index_len as usize];
        self.file
            .read_exact_at(&mut index, p.header.index_offset())
            .map_err(|source| crate::build::BuildError::Io {
                path: self.path.clone(),
                source,
            })?;
        let header = Header {
            signatures_len: sbytes.len() as u64,
            ..p.header
        };
        crate::build::write_bundle(
            out,
            &header,
            &p.manifest_bytes,
            &sbytes,
            &index,
            (&self.file, &self.path, p.header.payload_offset()),
        )?;
        Ok(sigs)
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.parsed.manifest
    }

    /// Reads, decompresses and verifies one chunk.
    pub fn read_chunk(&self, comp: usize, chunk: usize) -> Result<Vec<u8>> {
        load_chunk(
            &self.file,
            &self.path,
            self.parsed.header.payload_offset(),
            &self.parsed.manifest.components[comp],
            chunk,
        )
    }

    /// Writes component `comp`'s image, in order, to `out`, verifying every chunk it uses
    /// and the component's sha256 (checked at the end: on a mismatch `out` has received
    /// bytes that must be discarded). `threads` decompress ahead (0 = one per CPU).
    pub fn extract(
        &self,
        comp: usize,
        out: &mut dyn Write,
        threads: usize,
        progress: &dyn Fn(u64),
    ) -> Result<Digest> {
        self.extract_with(comp, out, threads, progress, true)
            .map(|d| d.unwrap_or_default())
    }

    /// [`extract`](Self::extract), optionally without the whole-component sha256 (every chunk
    /// is still verified). For callers that hash what they wrote anyway — an installer reading
    /// the partition back — the second hash of the same bytes is pure cost. Returns the
    /// component digest when it was computed.
    pub fn extract_with(
        &self,
        comp: usize,
        out: &mut dyn Write,
        threads: usize,
        progress: &dyn Fn(u64),
        hash_component: bool,
    ) -> Result<Option<Digest>> {
        let c = &self.parsed.manifest.components[comp];
        let payload_off = self.parsed.header.payload_offset();
        let load = |ci: usize| {
            load_chunk(&self.file, &self.path, payload_off, c, ci).map(ChunkBytes::from)
        };
        extract_parsed(
            &self.parsed,
            comp,
            &load,
            out,
            progress,
            ExtractOptions {
                threads,
                hash_component,
                cache_bytes: CACHE_BYTES,
            },
        )
    }

    /// Verifies the payload hash, every chunk and every component hash (signatures were
    /// checked by `open`). The payload hash runs beside the chunk checks.
    pub fn verify_payload(&self, threads: usize, progress: &dyn Fn(u64)) -> Result<()> {
        std::thread::scope(|s| {
            let whole = s.spawn(|| self.check_payload_hash());
            let comps = (|| {
                for i in 0..self.parsed.manifest.components.len() {
                    self.extract(i, &mut std::io::sink(), threads, progress)?;
                }
                Ok(())
            })();
            let whole = whole.join().unwrap_or_else(|_| Err(poisoned()));
            // A damaged chunk names itself more precisely than the payload hash does.
            comps.and(whole)
        })
    }

    /// Hashes the payload area and compares it with the manifest.
    pub fn check_payload_hash(&self) -> Result<()> {
        let p = &self.parsed;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let (mut at, end) = (
            p.header.payload_offset(),
            p.header.payload_offset() + p.manifest.payload.length,
        );
        while at < end {
            let k = (end - at).min(buf.len() as u64) as usize;
            self.file
                .read_exact_at(&mut buf[..k], at)
                .map_err(|source| ReadError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            hasher.update(&buf[..k]);
            at += k as u64;
        }
        let actual = Digest(hasher.finalize().into());
        if actual != p.manifest.payload.sha256 {
            return Err(ReadError::PayloadHash {
                expected: p.manifest.payload.sha256,
                actual,
            });
        }
        Ok(())
    }
}

/// Decompressed chunk bytes: owned, or a range of a larger shared buffer (a patch frame
/// holds many chunks' bytes; handing out ranges of it saves a copy of each).
#[derive(Clone)]
pub struct ChunkBytes {
    buf: Arc<Vec<u8>>,
    range: std::ops::Range<usize>,
    shared: bool,
}

impl ChunkBytes {
    /// `range` of `buf`; `None` when it is out of bounds.
    pub fn shared(buf: Arc<Vec<u8>>, range: std::ops::Range<usize>) -> Option<ChunkBytes> {
        (range.start <= range.end && range.end <= buf.len()).then_some(ChunkBytes {
            buf,
            range,
            shared: true,
        })
    }

    /// Bytes this chunk holds on its own (0 for a range of a shared buffer, whose memory is
    /// accounted where that buffer is kept).
    pub fn owned_len(&self) -> u64 {
        if self.shared {
            0
        } else {
            self.range.len() as u64
        }
    }
}

impl From<Vec<u8>> for ChunkBytes {
    fn from(v: Vec<u8>) -> ChunkBytes {
        let range = 0..v.len();
        ChunkBytes {
            buf: Arc::new(v),
            range,
            shared: false,
        }
    }
}

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

impl std::fmt::Debug for ChunkBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkBytes({} bytes)", self.range.len())
    }
}

/// How [`extract_parsed`] works.
#[derive(Clone, Copy, Debug)]
pub struct ExtractOptions {
    /// Workers loading chunks ahead (0 = one per CPU).
    pub threads: usize,
    /// Hash the whole component and check it (callers that read back what they wrote
    /// and hash that can skip it; every chunk is verified either way).
    pub hash_component: bool,
    /// Bytes of owned chunks kept for blocks that occur again.
    pub cache_bytes: u64,
}

impl Default for ExtractOptions {
    fn default() -> ExtractOptions {
        ExtractOptions {
            threads: 0,
            hash_component: true,
            cache_bytes: CACHE_BYTES,
        }
    }
}

/// Writes component `comp` of `parsed` to `out` in image order, taking each chunk's
/// verified, decompressed bytes from `load` (a bundle file, a seed slot, an HTTP range: the
/// caller decides), which prefetching workers call in parallel. See [`Bundle::extract`].
pub fn extract_parsed(
    parsed: &Parsed,
    comp: usize,
    load: &(dyn Fn(usize) -> Result<ChunkBytes> + Sync),
    out: &mut dyn Write,
    progress: &dyn Fn(u64),
    o: ExtractOptions,
) -> Result<Option<Digest>> {
    let ExtractOptions {
        threads,
        hash_component,
        cache_bytes,
    } = o;
    let c = &parsed.manifest.components[comp];
    let map = &parsed.maps[comp];
    let firsts = chunk_firsts(c);
    let chunk_of = |id: u64| firsts.partition_point(|&f| f <= id) - 1;
    // Chunks in the order the image first needs them: the prefetch order.
    let mut order = Vec::with_capacity(c.chunks.len());
    let mut seen = vec![false; c.chunks.len()];
    for r in &map.runs {
        if let Run::Stored { len, first } = *r {
            let (a, b) = (chunk_of(first), chunk_of(first + len - 1));
            for (ci, s) in seen.iter_mut().enumerate().take(b + 1).skip(a) {
                if !*s {
                    *s = true;
                    order.push(ci);
                }
            }
        }
    }
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let out_err = |source| ReadError::Io {
        path: PathBuf::from("<output>"),
        source,
    };
    // Memory stays bounded whatever the chunk size: at most ~16 MiB decompressed ahead,
    // and at least two chunks so decompression and output overlap.
    let biggest = c
        .chunks
        .iter()
        .map(|ch| ch.length)
        .max()
        .unwrap_or(1)
        .max(1);
    let window = ((AHEAD_BYTES / biggest) as usize).clamp(2, threads * 2 + 2);
    let prefetch = Prefetch::new(order.len(), window);
    std::thread::scope(|s| -> Result<Option<Digest>> {
        for _ in 0..threads {
            let (p, order) = (&prefetch, &order);
            s.spawn(move || p.work(|pos| load(order[pos])));
        }
        let res = (|| -> Result<Option<Digest>> {
            let mut hasher = sha2::Sha256::new();
            let mut cache: VecDeque<(usize, ChunkBytes)> = VecDeque::new();
            let mut next = 0usize;
            let mut left = c.size;
            let zeros = vec![0u8; 1 << 20];
            let mut emit = |b: &[u8], left: &mut u64| -> Result<()> {
                let take = (b.len() as u64).min(*left) as usize;
                if hash_component {
                    hasher.update(&b[..take]);
                }
                out.write_all(&b[..take]).map_err(out_err)?;
                *left -= take as u64;
                progress(take as u64);
                Ok(())
            };
            for r in &map.runs {
                match *r {
                    Run::Zero { len } => {
                        let mut n = len * BS;
                        while n > 0 && left > 0 {
                            let k = n.min(zeros.len() as u64) as usize;
                            emit(&zeros[..k], &mut left)?;
                            n -= k as u64;
                        }
                    }
                    Run::Stored { len, first } => {
                        let mut id = first;
                        while id < first + len {
                            let ci = chunk_of(id);
                            let hit = cache.iter().position(|(i, _)| *i == ci);
                            let data = match hit.and_then(|p| cache.remove(p)) {
                                // Least recently used goes first: a base-grouped image
                                // keeps returning to its current new-blocks chunk, which
                                // must not be evicted by the old-blocks chunks between.
                                Some((_, d)) => {
                                    cache.push_back((ci, d.clone()));
                                    d
                                }
                                None => {
                                    let d = if order.get(next) == Some(&ci) {
                                        next += 1;
                                        prefetch.take(next - 1)?
                                    } else {
                                        // A block seen before, in a chunk since evicted.
                                        load(ci)?
                                    };
                                    // Recently used chunks, for blocks that occur again:
                                    // bounded by count and bytes, but never fewer than
                                    // two (a base-grouped image alternates between the
                                    // current old-blocks chunk and new-blocks chunk).
                                    while cache.len() >= 64
                                        || (cache.len() >= 2
                                            && cache
                                                .iter()
                                                .map(|(_, d)| d.owned_len())
                                                .sum::<u64>()
                                                + d.owned_len()
                                                > cache_bytes)
                                    {
                                        cache.pop_front();
                                    }
                                    cache.push_back((ci, d.clone()));
                                    d
                                }
                            };
                            let within = id - firsts[ci];
                            let n = (len - (id - first)).min(c.chunks[ci].blocks as u64 - within);
                            emit(
                                &data[(within * BS) as usize..((within + n) * BS) as usize],
                                &mut left,
                            )?;
                            id += n;
                        }
                    }
                }
            }
            if !hash_component {
                return Ok(None);
            }
            let actual = Digest(hasher.finalize().into());
            if actual != c.sha256 {
                return Err(ReadError::ComponentHash {
                    component: c.name.clone(),
                    expected: c.sha256,
                    actual,
                });
            }
            Ok(Some(actual))
        })();
        prefetch.stop();
        res
    })
}

/// How much `extract` decompresses ahead of its output.
const AHEAD_BYTES: u64 = 16 << 20;
/// How much decompressed data `extract` keeps by default for blocks that occur again (the
/// `cache_bytes` of [`extract_parsed`]).
pub const CACHE_BYTES: u64 = 16 << 20;

/// Stored id of each chunk's first block.
fn chunk_firsts(c: &Component) -> Vec<u64> {
    let mut v = Vec::with_capacity(c.chunks.len());
    let mut id = 0u64;
    for ch in &c.chunks {
        v.push(id);
        id += ch.blocks as u64;
    }
    v
}

/// Reads, decompresses and verifies one chunk of component `c`.
pub fn load_chunk(
    file: &File,
    path: &Path,
    payload_off: u64,
    c: &Component,
    chunk: usize,
) -> Result<Vec<u8>> {
    let ch = &c.chunks[chunk];
    let start = payload_off + ch.offset;
    let err = |reason: String| ReadError::Chunk {
        component: c.name.clone(),
        chunk,
        start,
        end: start + ch.size,
        reason,
    };
    // Each thread reuses its read buffer and zstd context: a verify loads thousands of
    // chunks, and fresh allocations cost page faults.
    RAW.with(|cell| {
        let mut raw = cell.borrow_mut();
        raw.clear();
        raw.resize(ch.size as usize, 0);
        file.read_exact_at(&mut raw, start)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    err("the bundle ends inside it (truncated)".into())
                }
                _ => ReadError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        verify_chunk(c, chunk, start, &raw)
    })
}

thread_local! {
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses and verifies a chunk's stored bytes (`start` is only for messages).
pub fn verify_chunk(c: &Component, chunk: usize, start: u64, raw: &[u8]) -> Result<Vec<u8>> {
    let ch = &c.chunks[chunk];
    let err = |reason: String| ReadError::Chunk {
        component: c.name.clone(),
        chunk,
        start,
        end: start + ch.size,
        reason,
    };
    // Decompression is bounded by the manifest's length, so a hostile frame cannot
    // make us allocate more; its content is then checked against the signed sha256.
    let mut data = Vec::with_capacity(ch.length as usize);
    DCTX.with(|cell| -> std::io::Result<usize> {
        let mut d = cell.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        match d.as_mut() {
            Some(d) => d.decompress_to_buffer(raw, &mut data),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
    .map_err(|e| err(format!("does not decompress: {e}")))?;
    if data.len() as u64 != ch.length {
        return Err(err(format!(
            "decompresses to {} bytes, the manifest says {}",
            data.len(),
            ch.length
        )));
    }
    let actual = Digest::of(&data);
    if actual != ch.sha256 {
        return Err(err(format!(
            "sha256 is {actual}, the manifest says {}",
            ch.sha256
        )));
    }
    Ok(data)
}

/// Ordered prefetch: workers load positions 0, 1, 2, ... at most `window` ahead of the
/// consumer; the consumer takes them in order.
struct Prefetch {
    total: usize,
    window: usize,
    next: AtomicUsize,
    stop: AtomicBool,
    state: Mutex<PrefetchState>,
    cv: Condvar,
}

struct PrefetchState {
    taken: usize,
    ready: BTreeMap<usize, Result<ChunkBytes>>,
}

impl Prefetch {
    fn new(total: usize, window: usize) -> Prefetch {
        Prefetch {
            total,
            window,
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            state: Mutex::new(PrefetchState {
                taken: 0,
                ready: BTreeMap::new(),
            }),
            cv: Condvar::new(),
        }
    }

    fn work(&self, load: impl Fn(usize) -> Result<ChunkBytes>) {
        loop {
            let pos = self.next.fetch_add(1, Ordering::SeqCst);
            if pos >= self.total {
                return;
            }
            // Wait until the consumer is within `window` of this position.
            {
                let Ok(mut g) = self.state.lock() else { return };
                while pos >= g.taken + self.window && !self.stop.load(Ordering::SeqCst) {
                    g = match self.cv.wait(g) {
                        Ok(g) => g,
                        Err(_) => return,
                    };
                }
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let r = load(pos);
            let Ok(mut g) = self.state.lock() else { return };
            g.ready.insert(pos, r);
            self.cv.notify_all();
        }
    }

    fn take(&self, pos: usize) -> Result<ChunkBytes> {
        let mut g = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(r) = g.ready.remove(&pos) {
                g.taken = pos + 1;
                self.cv.notify_all();
                return r;
            }
            g = self.cv.wait(g).map_err(|_| poisoned())?;
        }
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.next.store(self.total, Ordering::SeqCst);
        if let Ok(_g) = self.state.lock() {
            self.cv.notify_all();
        }
    }
}

fn poisoned() -> ReadError {
    ReadError::Io {
        path: PathBuf::from("<prefetch>"),
        source: std::io::Error::other("a decompression thread panicked"),
    }
}

/// The block keys of every component of `bundle`, to group a new release's chunks
/// against it (`jota bundle create --base`).
pub fn base_keys(bundle: &Bundle) -> crate::build::BaseKeys {
    let p = &bundle.parsed;
    crate::build::BaseKeys {
        base: Some(crate::manifest::Base {
            version: p.manifest.version.clone(),
            manifest_sha256: Digest::of(&p.manifest_bytes),
        }),
        keys: p
            .manifest
            .components
            .iter()
            .zip(&p.maps)
            .map(|(c, m)| (c.name.clone(), m.keys.iter().copied().collect()))
            .collect(),
    }
}
