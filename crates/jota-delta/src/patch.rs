//! Static patch bundles (`jota bundle delta OLD NEW -o PATCH`): the fewest bytes that turn
//! one exact release into the next, for links where every megabyte counts.
//!
//! A patch applies only to a verified base: for every raw image it records the base image's
//! size and sha256, and a device applies it only when its running slot hashes to exactly
//! that. It then rebuilds every chunk of the new bundle from blocks of the running slot
//! (copy runs) and from new data (zstd frames compressed against a prefix of base blocks
//! the new release dropped, which is where changed files' old versions are), and verifies
//! each rebuilt chunk against the new bundle's signed manifest before it is written. Any
//! mismatch falls back to the chunked delta path of the very same new bundle.
//!
//! ```text
//! header    64 bytes: "JOTAPTCH", format u32, 0 u32, manifest_len u64, signatures_len u64,
//!           payload_len u64, zeros
//! manifest  JSON (PatchManifest), the signed part
//! sigs      signatures over the manifest (same encoding as bundles)
//! payload   front (zstd: the new bundle's header, manifest, signatures and keyless block
//!           maps), per component the copy/data ops (zstd), the data frames (zstd with
//!           the prefix)
//! ```

use jota_bundle::format::{Header, HEADER_LEN, MAX_MANIFEST, MAX_SIGNATURES};
use jota_bundle::index::{block_key, get_varint, put_varint, BlockMap};
use jota_bundle::manifest::{ComponentType, Digest, Manifest, BLOCK_SIZE};
use jota_bundle::read::{Bundle, ChunkBytes, Parsed, ReadError};
use jota_bundle::sign::{self, Keyring, SigCheck, Signature, Signer};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The patch file magic.
pub const MAGIC: &[u8; 8] = b"JOTAPTCH";
/// The patch format this code writes and reads.
pub const FORMAT: u32 = 1;
/// Largest data frame (uncompressed) a reader accepts: a device holds one frame at a time.
pub const MAX_FRAME_LEN: u64 = 64 << 20;
/// Largest prefix (base blocks the new release dropped) a reader accepts.
pub const MAX_PREFIX_LEN: u64 = 16 << 20;
/// Largest zstd window a frame may need (prefix + frame).
pub const MAX_WINDOW_LOG: u32 = 27;
const BS: u64 = BLOCK_SIZE as u64;

/// A patch that cannot be read, built or applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// Not a patch, or a damaged one.
    #[error("patch: {0}")]
    Format(String),
    /// Signatures (of the patch or of the new release inside it).
    #[error("patch: {0}")]
    Signature(#[from] sign::SignError),
    /// The new release inside the patch.
    #[error("patch: new release: {0}")]
    Bundle(#[from] ReadError),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

fn fmt_err(s: impl Into<String>) -> PatchError {
    PatchError::Format(s.into())
}

/// A byte range of the payload, compressed with zstd.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blob {
    /// Offset in the payload.
    pub offset: u64,
    /// Stored length.
    pub size: u64,
    /// Length once decompressed.
    pub length: u64,
    /// sha256 of the stored bytes.
    pub sha256: Digest,
}

/// The release a patch produces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Version of the new release.
    pub version: String,
    /// sha256 of the new bundle's manifest (its identity).
    pub manifest_sha256: Digest,
    /// File name of the new bundle: the fallback, next to the patch (same directory or URL).
    pub bundle: String,
    /// Size of the new bundle file.
    pub bundle_size: u64,
    /// Bytes a device holding the base fetches with the chunked delta of the new bundle
    /// (front and chunks not in the base): what the fallback costs.
    pub chunked_bytes: u64,
}

/// The release a patch applies to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRelease {
    /// Version of the base release.
    pub version: String,
    /// sha256 of the base bundle's manifest.
    pub manifest_sha256: Digest,
}

/// The exact image a component is patched from (the running slot's partition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseImage {
    /// Image size: the first `size` bytes of the running slot's partition.
    pub size: u64,
    /// Their sha256 (the base release's component hash).
    pub sha256: Digest,
    /// sha256 of the base blocks the patch reads (copies and prefix), in ascending order,
    /// each once: what a device checks. Blocks the patch does not read may differ.
    pub used_sha256: Digest,
    /// How many blocks that covers.
    pub used_blocks: u64,
}

/// How one component of the new release is rebuilt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchComponent {
    /// Component name (as in the new manifest, same order).
    pub name: String,
    /// The base image, for raw images the base release also has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseImage>,
    /// The ops over the component's stored blocks.
    pub ops: Blob,
    /// Stored blocks taken from the data frames.
    pub data_blocks: u64,
}

/// Base blocks placed before every frame as a zstd prefix.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixExtent {
    /// Component index.
    pub component: usize,
    /// First base block.
    pub block: u64,
    /// Blocks.
    pub count: u64,
}

/// A data frame: the data blocks of whole chunks, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Frame {
    /// Where it is.
    #[serde(flatten)]
    pub blob: Blob,
    /// zstd window log the frame needs.
    pub window_log: u32,
}

/// The signed description of a patch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchManifest {
    /// Format version.
    pub format: u32,
    /// What it produces.
    pub target: Target,
    /// What it applies to.
    pub base: BaseRelease,
    /// The new bundle's front (zstd).
    pub front: Blob,
    /// Per component of the new release.
    pub components: Vec<PatchComponent>,
    /// The zstd prefix of every frame.
    pub prefix: Vec<PrefixExtent>,
    /// The data frames.
    pub frames: Vec<Frame>,
    /// Payload length.
    pub payload_length: u64,
}

/// One op over a component's stored blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// The next `len` stored blocks are the next `len` blocks of the data frames.
    Data {
        /// Blocks.
        len: u64,
    },
    /// The next `len` stored blocks are base blocks `block..block+len`.
    Copy {
        /// Blocks.
        len: u64,
        /// First base block.
        block: u64,
    },
}

/// Encodes ops: varint `len << 1 | copy`, copies followed by the zigzag distance of their
/// first block from where the previous copy ended (runs of a file's blocks stay together).
pub fn encode_ops(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut expect = 0u64;
    for op in ops {
        match *op {
            Op::Data { len } => put_varint(&mut out, len << 1),
            Op::Copy { len, block } => {
                put_varint(&mut out, (len << 1) | 1);
                let d = block.wrapping_sub(expect) as i64;
                put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
                expect = block + len;
            }
        }
    }
    out
}

/// Decodes ops and checks them: `stored` blocks in all, copies within `base_blocks`,
/// `data` data blocks.
pub fn decode_ops(
    b: &[u8],
    stored: u64,
    base_blocks: u64,
    data: u64,
) -> Result<Vec<Op>, PatchError> {
    let mut ops = Vec::new();
    let (mut pos, mut total, mut data_seen, mut expect) = (0usize, 0u64, 0u64, 0u64);
    while pos < b.len() {
        let at = pos;
        let bad = |what: &str| fmt_err(format!("ops at byte {at}: {what}"));
        let tag = get_varint(b, &mut pos).ok_or_else(|| bad("bad varint"))?;
        let len = tag >> 1;
        if len == 0 {
            return Err(bad("empty op"));
        }
        total = total
            .checked_add(len)
            .filter(|t| *t <= stored)
            .ok_or_else(|| bad(&format!("ops exceed the {stored} stored blocks")))?;
        if tag & 1 == 0 {
            data_seen += len;
            ops.push(Op::Data { len });
        } else {
            let z = get_varint(b, &mut pos).ok_or_else(|| bad("bad varint"))?;
            let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
            let block = expect.wrapping_add(d as u64);
            if block.checked_add(len).is_none_or(|e| e > base_blocks) {
                return Err(bad(&format!(
                    "copy of base blocks {block}+{len} is beyond the base's {base_blocks}"
                )));
            }
            expect = block + len;
            ops.push(Op::Copy { len, block });
        }
    }
    if total != stored || data_seen != data {
        return Err(fmt_err(format!(
            "ops cover {total} stored blocks ({data_seen} data); the patch says {stored} ({data})"
        )));
    }
    Ok(ops)
}

fn header_bytes(manifest_len: u64, sigs_len: u64, payload_len: u64) -> [u8; 64] {
    let mut h = [0u8; 64];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[16..24].copy_from_slice(&manifest_len.to_le_bytes());
    h[24..32].copy_from_slice(&sigs_len.to_le_bytes());
    h[32..40].copy_from_slice(&payload_len.to_le_bytes());
    h
}

/// Whether `b` starts like a patch file.
pub fn is_patch(b: &[u8]) -> bool {
    b.starts_with(MAGIC)
}

/// Whether the file at `path` is a patch.
pub fn is_patch_file(path: &Path) -> bool {
    let mut m = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut m))
        .is_ok()
        && is_patch(&m)
}

// ---------------------------------------------------------------------------------------
// Building

/// How to build a patch.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// zstd level of the data frames (up to 22).
    pub level: i32,
    /// A frame is closed at the first chunk boundary past this many bytes.
    pub frame_target: u64,
    /// Largest prefix.
    pub prefix_max: u64,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions {
            level: 22,
            frame_target: 48 << 20,
            prefix_max: 8 << 20,
        }
    }
}

/// What a build produced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildReport {
    /// Patch file size.
    pub patch_bytes: u64,
    /// The new bundle's size (a full download).
    pub full_bytes: u64,
    /// What the chunked delta of the new bundle fetches for a base holder.
    pub chunked_bytes: u64,
    /// Stored blocks copied from the base.
    pub copied_blocks: u64,
    /// Stored blocks carried as data.
    pub data_blocks: u64,
    /// Prefix bytes.
    pub prefix_bytes: u64,
    /// Frames.
    pub frames: usize,
}

/// An image read from the base bundle into a temporary file, with its block keys.
struct BaseFile {
    file: std::fs::File,
    size: u64,
    /// Key of every whole block, in order.
    keys: Vec<u64>,
    /// Key → first block with it.
    first: HashMap<u64, u64>,
}

impl BaseFile {
    fn read_block(&self, block: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, block * BS)
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> PatchError + '_ {
    move |source| PatchError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Bytes a device holding the base fetches with the chunked delta of `new` (see
/// [`Parsed::chunked_delta_bytes`]).
pub fn chunked_estimate(new: &Parsed) -> u64 {
    new.chunked_delta_bytes()
}

fn compress_frame(data: &[u8], prefix: &[u8], level: i32) -> Result<(Vec<u8>, u32), PatchError> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let need = (prefix.len() + data.len()).max(1 << 20) as u64;
    let wlog = (64 - (need - 1).leading_zeros()).clamp(20, MAX_WINDOW_LOG);
    let mut c = CCtx::create();
    let z = |e: usize| fmt_err(format!("zstd: {}", zstd::zstd_safe::get_error_name(e)));
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(z)?;
    c.set_parameter(CParameter::WindowLog(wlog)).map_err(z)?;
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(z)?;
    if level >= 19 {
        // What zstd suggests for patches: longer matches, deeper search.
        c.set_parameter(CParameter::TargetLength(4096)).map_err(z)?;
        c.set_parameter(CParameter::ChainLog((wlog + 1).min(28)))
            .map_err(z)?;
        c.set_parameter(CParameter::SearchLog(9)).map_err(z)?;
    }
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(z)?;
    c.set_pledged_src_size(Some(data.len() as u64)).map_err(z)?;
    c.ref_prefix(prefix).map_err(z)?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).map_err(z)?;
    Ok((out, wlog))
}

fn zstd19(data: &[u8]) -> Result<Vec<u8>, PatchError> {
    zstd::bulk::compress(data, 19).map_err(|e| fmt_err(format!("zstd: {e}")))
}

/// Builds a patch from bundle `old` to bundle `new` (both already opened and trusted),
/// writing it to `out`. The new bundle's file name is recorded as the fallback.
pub fn build(
    old: &Bundle,
    new: &Bundle,
    new_name: &str,
    new_size: u64,
    signers: &[&dyn Signer],
    opts: &BuildOptions,
    out: &Path,
) -> Result<BuildReport, PatchError> {
    let om = &old.parsed.manifest;
    let nm = &new.parsed.manifest;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let tmpdir = dir.unwrap_or(Path::new("."));
    let mut report = BuildReport {
        full_bytes: new_size,
        chunked_bytes: chunked_estimate(&new.parsed),
        ..BuildReport::default()
    };

    // 1. Bases: raw images the old release has under the same name and partition.
    let mut bases: Vec<Option<BaseFile>> = Vec::new();
    for c in &nm.components {
        let oi = om.components.iter().position(|o| {
            o.name == c.name
                && o.kind == ComponentType::RawImage
                && c.kind == ComponentType::RawImage
                && o.partition == c.partition
        });
        let Some(oi) = oi else {
            bases.push(None);
            continue;
        };
        let mut f = tempfile::tempfile_in(tmpdir).map_err(io_err(tmpdir))?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut f);
            old.extract(oi, &mut w, 0, &|_| {})?;
            w.flush().map_err(io_err(tmpdir))?;
        }
        let size = om.components[oi].size;
        f.seek(SeekFrom::Start(0)).map_err(io_err(tmpdir))?;
        let mut keys = Vec::with_capacity((size / BS) as usize);
        let mut first = HashMap::new();
        let mut r = std::io::BufReader::with_capacity(1 << 20, &f);
        let mut buf = vec![0u8; BS as usize];
        for b in 0..size / BS {
            r.read_exact(&mut buf).map_err(io_err(tmpdir))?;
            let k = block_key(&buf);
            keys.push(k);
            first.entry(k).or_insert(b);
        }
        drop(r);
        bases.push(Some(BaseFile {
            file: f,
            size,
            keys,
            first,
        }));
    }

    // 2. The prefix: base blocks the new release no longer has (old versions of changed
    // files), up to the limit, deduplicated.
    let mut prefix = Vec::new();
    let mut extents: Vec<PrefixExtent> = Vec::new();
    let mut buf = vec![0u8; BS as usize];
    let zero_key = block_key(&buf);
    'prefix: for (i, b) in bases.iter().enumerate() {
        let Some(b) = b else { continue };
        let new_keys: HashSet<u64> = new.parsed.maps[i].keys.iter().copied().collect();
        let mut seen = HashSet::new();
        for (blk, k) in b.keys.iter().enumerate() {
            if *k == zero_key || new_keys.contains(k) || !seen.insert(*k) {
                continue;
            }
            if prefix.len() as u64 + BS > opts.prefix_max {
                break 'prefix;
            }
            b.read_block(blk as u64, &mut buf).map_err(io_err(tmpdir))?;
            prefix.extend_from_slice(&buf);
            match extents.last_mut() {
                Some(e) if e.component == i && e.block + e.count == blk as u64 => e.count += 1,
                _ => extents.push(PrefixExtent {
                    component: i,
                    block: blk as u64,
                    count: 1,
                }),
            }
        }
    }
    report.prefix_bytes = prefix.len() as u64;

    // 3. Ops over every component's stored blocks, data gathered into frames cut at chunk
    // boundaries.
    let mut payload: Vec<u8> = Vec::new();
    let mut frames_data: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut comps = Vec::new();
    let mut ops_blobs = Vec::new();
    let mut other = vec![0u8; BS as usize];
    for (i, c) in nm.components.iter().enumerate() {
        let keys = &new.parsed.maps[i].keys;
        let base = bases[i].as_ref();
        let mut ops: Vec<Op> = Vec::new();
        let mut data_blocks = 0u64;
        let mut id = 0usize;
        for ci in 0..c.chunks.len() {
            let chunk = new.read_chunk(i, ci)?;
            if !cur.is_empty() && (cur.len() + chunk.len()) as u64 > opts.frame_target {
                frames_data.push(std::mem::take(&mut cur));
            }
            for blk in chunk.chunks(BS as usize) {
                let key = keys.get(id).copied().unwrap_or_default();
                id += 1;
                let copy = base.and_then(|b| {
                    // Continue the previous copy run when the next base block matches.
                    if let Some(Op::Copy { len, block }) = ops.last() {
                        let next = block + len;
                        if b.keys.get(next as usize) == Some(&key)
                            && b.read_block(next, &mut other).is_ok()
                            && other.as_slice() == blk
                        {
                            return Some(next);
                        }
                    }
                    let at = *b.first.get(&key)?;
                    (b.read_block(at, &mut other).is_ok() && other.as_slice() == blk).then_some(at)
                });
                match (copy, ops.last_mut()) {
                    (Some(at), Some(Op::Copy { len, block })) if *block + *len == at => *len += 1,
                    (Some(at), _) => ops.push(Op::Copy { len: 1, block: at }),
                    (None, Some(Op::Data { len })) => *len += 1,
                    (None, _) => ops.push(Op::Data { len: 1 }),
                }
                if copy.is_some() {
                    report.copied_blocks += 1;
                } else {
                    // A short last block is stored padded; the chunk holds it as is.
                    cur.extend_from_slice(blk);
                    data_blocks += 1;
                }
            }
        }
        report.data_blocks += data_blocks;
        let enc = encode_ops(&ops);
        ops_blobs.push((zstd19(&enc)?, enc.len() as u64));
        let used = match base {
            Some(b) => {
                let ranges = used_ranges(&ops, &extents, i);
                let f = &b.file;
                let read = |off: u64, buf: &mut [u8]| {
                    use std::os::unix::fs::FileExt;
                    f.read_exact_at(buf, off)
                };
                let d = hash_ranges(&read, &ranges).map_err(io_err(tmpdir))?;
                (d, ranges.iter().map(|(a, b)| b - a).sum())
            }
            None => (Digest::default(), 0),
        };
        comps.push(PatchComponent {
            name: c.name.clone(),
            base: base.map(|b| BaseImage {
                size: b.size,
                sha256: om
                    .components
                    .iter()
                    .find(|o| o.name == c.name)
                    .map(|o| o.sha256)
                    .unwrap_or_default(),
                used_sha256: used.0,
                used_blocks: used.1,
            }),
            ops: Blob {
                offset: 0,
                size: 0,
                length: 0,
                sha256: Digest::default(),
            },
            data_blocks,
        });
    }
    if !cur.is_empty() {
        frames_data.push(cur);
    }
    drop(bases);

    // 4. The front: the new bundle's header, manifest, signatures and keyless maps.
    let mut front = Vec::new();
    let h = new.parsed.header;
    front.extend_from_slice(&h.encode());
    front.extend_from_slice(&(new.parsed.manifest_bytes.len() as u64).to_le_bytes());
    front.extend_from_slice(&new.parsed.manifest_bytes);
    let sigs = sign::encode_signatures(&new.parsed.signatures);
    front.extend_from_slice(&(sigs.len() as u64).to_le_bytes());
    front.extend_from_slice(&sigs);
    for m in &new.parsed.maps {
        let runs = m.encode_runs();
        front.extend_from_slice(&(runs.len() as u64).to_le_bytes());
        front.extend_from_slice(&runs);
    }
    let put = |payload: &mut Vec<u8>, stored: &[u8], length: u64| Blob {
        offset: {
            let o = payload.len() as u64;
            payload.extend_from_slice(stored);
            o
        },
        size: stored.len() as u64,
        length,
        sha256: Digest::of(stored),
    };
    let front_blob = put(&mut payload, &zstd19(&front)?, front.len() as u64);
    for (c, (z, n)) in comps.iter_mut().zip(&ops_blobs) {
        c.ops = put(&mut payload, z, *n);
    }

    // 5. Frames, compressed in parallel (each against the same prefix).
    let compressed: Vec<Result<(Vec<u8>, u32), PatchError>> = std::thread::scope(|s| {
        let hs: Vec<_> = frames_data
            .iter()
            .map(|d| s.spawn(|| compress_frame(d, &prefix, opts.level)))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(fmt_err("a compression thread panicked")))
            })
            .collect()
    });
    let mut frames = Vec::new();
    for (d, z) in frames_data.iter().zip(compressed) {
        let (z, window_log) = z?;
        frames.push(Frame {
            blob: put(&mut payload, &z, d.len() as u64),
            window_log,
        });
    }
    report.frames = frames.len();

    let m = PatchManifest {
        format: FORMAT,
        target: Target {
            version: nm.version.clone(),
            manifest_sha256: Digest::of(&new.parsed.manifest_bytes),
            bundle: new_name.to_string(),
            bundle_size: new_size,
            chunked_bytes: report.chunked_bytes,
        },
        base: BaseRelease {
            version: om.version.clone(),
            manifest_sha256: Digest::of(&old.parsed.manifest_bytes),
        },
        front: front_blob,
        components: comps,
        prefix: extents,
        frames,
        payload_length: payload.len() as u64,
    };
    let mbytes = serde_json::to_vec(&m).map_err(|e| fmt_err(e.to_string()))?;
    let sigs: Vec<Signature> = signers
        .iter()
        .map(|s| s.sign(&mbytes))
        .collect::<Result<_, _>>()?;
    let sbytes = sign::encode_signatures(&sigs);
    let tmp = out.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(&header_bytes(
        mbytes.len() as u64,
        sbytes.len() as u64,
        payload.len() as u64,
    ))
    .and_then(|_| f.write_all(&mbytes))
    .and_then(|_| f.write_all(&sbytes))
    .and_then(|_| f.write_all(&payload))
    .and_then(|_| f.sync_all())
    .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    report.patch_bytes = HEADER_LEN + (mbytes.len() + sbytes.len() + payload.len()) as u64;
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// Reading

/// Random access to a patch's bytes (a file on the data partition, or memory in tests and
/// fuzzing).
pub trait PatchBytes: Send + Sync {
    /// Total length.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads `buf.len()` bytes at `off`.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()>;
}

impl PatchBytes for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let s = usize::try_from(off)
            .ok()
            .and_then(|o| self.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(s);
        Ok(())
    }
}

/// A patch file.
pub struct PatchFile {
    file: std::fs::File,
    len: u64,
}

impl PatchFile {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<PatchFile, PatchError> {
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        let len = file.metadata().map_err(io_err(path))?.len();
        Ok(PatchFile { file, len })
    }
}

impl PatchBytes for PatchFile {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.read_exact_at(buf, off)
    }
}

/// Where a chunk's blocks come from, worked out once while parsing.
#[derive(Clone, Copy, Debug, Default)]
struct ChunkData {
    /// Stored id of the chunk's first block.
    first: u64,
    /// Index of the op that holds it, and the stored id that op starts at.
    op: usize,
    op_start: u64,
    /// How many of its blocks come from the frames.
    data_blocks: u64,
    /// The frame holding them, and their offset in it.
    frame: usize,
    offset: u64,
}

/// A parsed patch: structure checked, not yet trusted (see [`Patch::check_signatures`]).
pub struct Patch {
    /// The signed manifest.
    pub manifest: PatchManifest,
    /// Its bytes as stored.
    pub manifest_bytes: Vec<u8>,
    /// Its signatures.
    pub signatures: Vec<Signature>,
    /// The new release's front, with keyless block maps.
    pub new: Parsed,
    /// Per component: ops.
    pub ops: Vec<Vec<Op>>,
    /// Per component, per chunk: where its data blocks start.
    chunk_data: Vec<Vec<ChunkData>>,
    payload_offset: u64,
    bytes: Box<dyn PatchBytes>,
}

fn read_vec(b: &dyn PatchBytes, off: u64, len: u64, what: &str) -> Result<Vec<u8>, PatchError> {
    let end = off
        .checked_add(len)
        .filter(|e| *e <= b.len())
        .ok_or_else(|| {
            fmt_err(format!(
                "{what} (bytes {off}+{len}) is beyond the end of the file ({} bytes)",
                b.len()
            ))
        })?;
    let mut v = vec![0u8; (end - off) as usize];
    b.read_at(off, &mut v)
        .map_err(|e| fmt_err(format!("{what}: {e}")))?;
    Ok(v)
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl Patch {
    /// Parses a patch: header, manifest, the new release's front (its manifest must be the
    /// one the patch names) and every component's ops; checks that every range fits.
    pub fn parse(bytes: Box<dyn PatchBytes>) -> Result<Patch, PatchError> {
        let b = bytes.as_ref();
        let h = read_vec(b, 0, HEADER_LEN, "the header")
            .map_err(|_| fmt_err("shorter than the 64-byte header"))?;
        if !is_patch(&h) {
            return Err(fmt_err("not a jota patch (no JOTAPTCH magic)"));
        }
        let format = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if format != FORMAT {
            return Err(fmt_err(format!(
                "format {format}; this jota reads {FORMAT}"
            )));
        }
        if h[12..16].iter().chain(&h[40..64]).any(|b| *b != 0) {
            return Err(fmt_err("flags or reserved header bytes are not zero"));
        }
        let (ml, sl, pl) = (le64(&h, 16), le64(&h, 24), le64(&h, 32));
        if ml > MAX_MANIFEST || sl > MAX_SIGNATURES {
            return Err(fmt_err("manifest or signatures over the size limit"));
        }
        let payload_offset = HEADER_LEN + ml + sl;
        if payload_offset.checked_add(pl) != Some(b.len()) {
            return Err(fmt_err(format!(
                "the header says {} bytes, the file has {}",
                payload_offset.saturating_add(pl),
                b.len()
            )));
        }
        let manifest_bytes = read_vec(b, HEADER_LEN, ml, "the manifest")?;
        let manifest: PatchManifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| fmt_err(format!("manifest: {e}")))?;
        if manifest.format != FORMAT || manifest.payload_length != pl {
            return Err(fmt_err(
                "manifest format or payload length does not match the header",
            ));
        }
        let signatures =
            sign::decode_signatures(&read_vec(b, HEADER_LEN + ml, sl, "the signatures")?)?;
        let blob = |blob: &Blob, what: &str, max: u64| -> Result<Vec<u8>, PatchError> {
            if blob.length > max {
                return Err(fmt_err(format!(
                    "{what} is {} bytes, over the {max} limit",
                    blob.length
                )));
            }
            let end = blob.offset.checked_add(blob.size).filter(|e| *e <= pl);
            if end.is_none() {
                return Err(fmt_err(format!("{what} is beyond the payload")));
            }
            let raw = read_vec(b, payload_offset + blob.offset, blob.size, what)?;
            if Digest::of(&raw) != blob.sha256 {
                return Err(fmt_err(format!(
                    "{what}: sha256 does not match the manifest"
                )));
            }
            let d = zstd::bulk::decompress(&raw, blob.length as usize)
                .map_err(|e| fmt_err(format!("{what}: does not decompress: {e}")))?;
            if d.len() as u64 != blob.length {
                return Err(fmt_err(format!(
                    "{what}: decompresses to {} bytes, not {}",
                    d.len(),
                    blob.length
                )));
            }
            Ok(d)
        };
        let front = blob(&manifest.front, "the new release's front", 2 * MAX_MANIFEST)?;
        let new = parse_front(&front)?;
        if Digest::of(&new.manifest_bytes) != manifest.target.manifest_sha256 {
            return Err(fmt_err(
                "the new release inside is not the one the patch names",
            ));
        }
        let nm = &new.manifest;
        if manifest.components.len() != nm.components.len()
            || manifest
                .components
                .iter()
                .zip(&nm.components)
                .any(|(p, c)| p.name != c.name)
        {
            return Err(fmt_err("components differ from the new release's"));
        }
        for f in &manifest.frames {
            if f.blob.length > MAX_FRAME_LEN || f.window_log > MAX_WINDOW_LOG {
                return Err(fmt_err("a frame is over the size or window limit"));
            }
            if f.blob
                .offset
                .checked_add(f.blob.size)
                .is_none_or(|e| e > pl)
            {
                return Err(fmt_err("a frame is beyond the payload"));
            }
        }
        let mut prefix_len = 0u64;
        for e in &manifest.prefix {
            let base = manifest
                .components
                .get(e.component)
                .and_then(|c| c.base.as_ref())
                .ok_or_else(|| fmt_err("a prefix extent names a component without a base"))?;
            if e.block
                .checked_add(e.count)
                .is_none_or(|x| x > base.size / BS)
            {
                return Err(fmt_err("a prefix extent is beyond its base"));
            }
            prefix_len = prefix_len.saturating_add(e.count.saturating_mul(BS));
        }
        if prefix_len > MAX_PREFIX_LEN {
            return Err(fmt_err("the prefix is over its size limit"));
        }
        let mut ops = Vec::new();
        let mut chunk_data = Vec::new();
        let (mut frame, mut in_frame) = (0usize, 0u64);
        for (p, c) in manifest.components.iter().zip(&nm.components) {
            let base_blocks = p.base.as_ref().map_or(0, |b| b.size / BS);
            let enc = blob(&p.ops, &format!("ops of `{}`", c.name), 64 << 20)?;
            let o = decode_ops(&enc, c.blocks.stored, base_blocks, p.data_blocks)?;
            // Data blocks per chunk: walk the ops alongside the chunks.
            let mut per_chunk = Vec::with_capacity(c.chunks.len());
            let (mut k, mut left) = (0usize, o.first().map_or(0, op_len));
            let (mut id, mut op_start) = (0u64, 0u64);
            for ch in &c.chunks {
                let mut need = ch.blocks as u64;
                let mut data = 0u64;
                let mut at = None;
                while need > 0 {
                    while left == 0 {
                        op_start += o.get(k).map_or(0, op_len);
                        k += 1;
                        left = o.get(k).map(op_len).ok_or_else(|| {
                            fmt_err(format!("ops of `{}` end before its chunks", c.name))
                        })?;
                    }
                    at.get_or_insert((k, op_start));
                    let n = need.min(left);
                    if matches!(o[k], Op::Data { .. }) {
                        data += n;
                    }
                    need -= n;
                    left -= n;
                }
                let bytes = data * BS;
                if bytes > 0 {
                    // A chunk's data sits in one frame: move on when this one is used up.
                    while manifest
                        .frames
                        .get(frame)
                        .is_some_and(|f| in_frame >= f.blob.length)
                    {
                        frame += 1;
                        in_frame = 0;
                    }
                    let f = manifest.frames.get(frame).ok_or_else(|| {
                        fmt_err(format!(
                            "data of `{}` chunk {} is beyond the frames",
                            c.name,
                            per_chunk.len()
                        ))
                    })?;
                    if in_frame + bytes > f.blob.length {
                        return Err(fmt_err(format!(
                            "data of `{}` chunk {} straddles frames",
                            c.name,
                            per_chunk.len()
                        )));
                    }
                }
                let (op, start) = at.unwrap_or((k, op_start));
                per_chunk.push(ChunkData {
                    first: id,
                    op,
                    op_start: start,
                    data_blocks: data,
                    frame,
                    offset: in_frame,
                });
                id += ch.blocks as u64;
                in_frame += bytes;
            }
            ops.push(o);
            chunk_data.push(per_chunk);
        }
        let used: u64 = manifest.frames.iter().map(|f| f.blob.length).sum();
        let data: u64 = manifest.components.iter().map(|c| c.data_blocks * BS).sum();
        if used != data {
            return Err(fmt_err(format!(
                "frames hold {used} bytes, the components' data is {data}"
            )));
        }
        Ok(Patch {
            manifest,
            manifest_bytes,
            signatures,
            new,
            ops,
            chunk_data,
            payload_offset,
            bytes,
        })
    }

    /// Checks both signatures against the keyring: the patch's own (its manifest vouches for
    /// every byte of the patch) and the new release's (what gets installed).
    pub fn check_signatures(&self, ring: &Keyring) -> Result<Vec<SigCheck>, PatchError> {
        sign::check(&self.manifest_bytes, &self.signatures, ring)?;
        Ok(self.new.check_signatures(ring)?)
    }

    /// Reads, decompresses and checks frame `i` with `prefix`. The stored bytes are streamed
    /// in 1 MiB pieces and decoded straight into the frame's buffer, which zstd also uses as
    /// its window: the frame's length is the only large allocation.
    pub fn frame(&self, i: usize, prefix: &[u8]) -> Result<Vec<u8>, PatchError> {
        use sha2::Digest as _;
        use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};
        let f = self
            .manifest
            .frames
            .get(i)
            .ok_or_else(|| fmt_err(format!("no frame {i}")))?;
        let z = |e: usize| {
            fmt_err(format!(
                "frame {i}: zstd: {}",
                zstd::zstd_safe::get_error_name(e)
            ))
        };
        let start = self.payload_offset + f.blob.offset;
        if start
            .checked_add(f.blob.size)
            .is_none_or(|e| e > self.bytes.len())
        {
            return Err(fmt_err(format!("frame {i} is beyond the end of the file")));
        }
        let mut d = DCtx::create();
        d.set_parameter(DParameter::WindowLogMax(MAX_WINDOW_LOG))
            .map_err(z)?;
        d.set_parameter(DParameter::StableOutBuffer(true))
            .map_err(z)?;
        d.ref_prefix(prefix).map_err(z)?;
        let mut out: Vec<u8> = Vec::with_capacity(f.blob.length as usize);
        let mut h = sha2::Sha256::new();
        let mut piece = vec![0u8; (1usize << 20).min(f.blob.size as usize)];
        let mut done = false;
        {
            let mut ob = OutBuffer::around(&mut out);
            let mut at = 0u64;
            while at < f.blob.size {
                let n = (f.blob.size - at).min(piece.len() as u64) as usize;
                self.bytes
                    .read_at(start + at, &mut piece[..n])
                    .map_err(|e| fmt_err(format!("frame {i}: {e}")))?;
                h.update(&piece[..n]);
                let mut ib = InBuffer::around(&piece[..n]);
                while ib.pos() < n && !done {
                    done = d.decompress_stream(&mut ob, &mut ib).map_err(z)? == 0;
                    if !done && ob.pos() == f.blob.length as usize && ib.pos() < n {
                        return Err(fmt_err(format!(
                            "frame {i}: decompresses to more than {} bytes",
                            f.blob.length
                        )));
                    }
                }
                at += n as u64;
            }
        }
        if Digest(h.finalize().into()) != f.blob.sha256 {
            return Err(fmt_err(format!(
                "frame {i}: sha256 does not match the manifest"
            )));
        }
        if !done || out.len() as u64 != f.blob.length {
            return Err(fmt_err(format!(
                "frame {i}: {} bytes, not {}",
                out.len(),
                f.blob.length
            )));
        }
        Ok(out)
    }
}

fn op_len(o: &Op) -> u64 {
    match *o {
        Op::Data { len } | Op::Copy { len, .. } => len,
    }
}

/// Parses the new release's front as a patch carries it.
fn parse_front(b: &[u8]) -> Result<Parsed, PatchError> {
    let header = Header::parse(b.get(..HEADER_LEN as usize).unwrap_or_default())
        .map_err(|e| fmt_err(format!("new release: {e}")))?;
    let mut pos = HEADER_LEN as usize;
    let mut take = |what: &str| -> Result<&[u8], PatchError> {
        let n = le64(b, pos) as usize;
        let s = pos
            .checked_add(8)
            .and_then(|s| Some((s, s.checked_add(n)?)))
            .and_then(|(s, e)| b.get(s..e))
            .ok_or_else(|| fmt_err(format!("new release: {what} is cut short")))?;
        pos += 8 + n;
        Ok(s)
    };
    let manifest_bytes = take("the manifest")?.to_vec();
    let manifest = Manifest::parse(&manifest_bytes).map_err(ReadError::from)?;
    let signatures = sign::decode_signatures(take("the signatures")?)?;
    let mut maps = Vec::new();
    for c in &manifest.components {
        let sec = take("a block map")?;
        maps.push(BlockMap::decode_runs(c, sec).map_err(ReadError::from)?);
    }
    if pos != b.len() {
        return Err(fmt_err("new release: trailing bytes after the block maps"));
    }
    Ok(Parsed {
        header,
        manifest_bytes,
        manifest,
        signatures,
        maps,
    })
}

// ---------------------------------------------------------------------------------------
// Applying

/// Reads a base image (the running slot's partition).
pub type BaseRead = Box<dyn Fn(u64, &mut [u8]) -> std::io::Result<()> + Send + Sync>;

/// sha256 of the first `len` bytes through `read`.
pub fn hash_base(read: &BaseRead, len: u64) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        read(at, &mut buf[..n])?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(Digest(h.finalize().into()))
}

/// The base blocks component `comp`'s ops and the prefix read: sorted, merged ranges of
/// block numbers (`start..end`).
pub fn used_ranges(ops: &[Op], prefix: &[PrefixExtent], comp: usize) -> Vec<(u64, u64)> {
    let mut r: Vec<(u64, u64)> = ops
        .iter()
        .filter_map(|o| match *o {
            Op::Copy { len, block } => Some((block, block + len)),
            Op::Data { .. } => None,
        })
        .chain(
            prefix
                .iter()
                .filter(|e| e.component == comp)
                .map(|e| (e.block, e.block + e.count)),
        )
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// sha256 of the blocks in `ranges` (from [`used_ranges`]), read in order through `read`.
pub fn hash_ranges(
    read: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>,
    ranges: &[(u64, u64)],
) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for &(a, b) in ranges {
        let (mut at, end) = (a * BS, b * BS);
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            read(at, &mut buf[..n])?;
            h.update(&buf[..n]);
            at += n as u64;
        }
    }
    Ok(Digest(h.finalize().into()))
}

/// Counters of a patch install.
#[derive(Debug, Default, Serialize)]
pub struct PatchStats {
    /// Chunks rebuilt from the patch and verified.
    pub rebuilt: std::sync::atomic::AtomicU64,
    /// Chunks that did not verify and came from the fallback.
    pub fallback: std::sync::atomic::AtomicU64,
}

struct FrameCache {
    /// Decoded frames: held while chunks remain to be served from them, then only weakly
    /// (chunks handed out may still share them; a chunk loaded again finds them there).
    frames: HashMap<usize, CachedFrame>,
    /// Chunks served at least once (a chunk loaded again must not count twice).
    served: HashSet<(usize, usize)>,
}

struct CachedFrame {
    weak: std::sync::Weak<Vec<u8>>,
    strong: Option<Arc<Vec<u8>>>,
    left: usize,
}

/// A fallback chunk loader (the chunked delta of the new bundle).
pub type Fallback = Box<dyn Fn(usize, usize) -> Result<ChunkBytes, ReadError> + Send + Sync>;

/// The chunk source of a patch install: every chunk of the new release rebuilt from the
/// base (checked beforehand) and the frames, verified against the new manifest.
pub struct PatchSource {
    /// The patch (signatures checked by the caller).
    pub patch: Patch,
    bases: Vec<Option<BaseRead>>,
    prefix: Mutex<Option<Arc<Vec<u8>>>>,
    cache: Mutex<FrameCache>,
    /// Chunks using each frame.
    users: Vec<usize>,
    fallback: Option<Fallback>,
    /// Counters.
    pub stats: PatchStats,
}

impl PatchSource {
    /// A source over `patch` whose components' bases are read through `bases` (every one
    /// already hashed and found equal to the patch's base), with an optional fallback.
    pub fn new(
        patch: Patch,
        bases: Vec<Option<BaseRead>>,
        fallback: Option<Fallback>,
    ) -> PatchSource {
        let mut users = vec![0usize; patch.manifest.frames.len()];
        for (comp, per) in patch.chunk_data.iter().enumerate() {
            for (ci, d) in per.iter().enumerate() {
                if patch.chunk_data[comp][ci].data_blocks > 0 {
                    if let Some(u) = users.get_mut(d.frame) {
                        *u += 1;
                    }
                }
            }
        }
        PatchSource {
            patch,
            bases,
            prefix: Mutex::new(None),
            cache: Mutex::new(FrameCache {
                frames: HashMap::new(),
                served: HashSet::new(),
            }),
            users,
            fallback,
            stats: PatchStats::default(),
        }
    }

    fn prefix(&self) -> Result<Arc<Vec<u8>>, String> {
        let mut g = self
            .prefix
            .lock()
            .map_err(|_| "prefix poisoned".to_string())?;
        if let Some(p) = g.as_ref() {
            return Ok(Arc::clone(p));
        }
        let mut p = Vec::new();
        for e in &self.patch.manifest.prefix {
            let Some(Some(read)) = self.bases.get(e.component) else {
                return Err(format!("no base for component {}", e.component));
            };
            let at = p.len();
            p.resize(at + (e.count * BS) as usize, 0);
            read(e.block * BS, &mut p[at..]).map_err(|e| e.to_string())?;
        }
        let p = Arc::new(p);
        *g = Some(Arc::clone(&p));
        Ok(p)
    }

    fn frame(&self, i: usize) -> Result<Arc<Vec<u8>>, String> {
        let mut c = self
            .cache
            .lock()
            .map_err(|_| "frame cache poisoned".to_string())?;
        if let Some(f) = c.frames.get(&i).and_then(|f| f.weak.upgrade()) {
            return Ok(f);
        }
        let prefix = self.prefix()?;
        let f = Arc::new(self.patch.frame(i, &prefix).map_err(|e| e.to_string())?);
        if i + 1 == self.patch.manifest.frames.len() {
            // Frames are decoded in order: after the last, the prefix is read again only
            // if a frame has to be decoded again.
            if let Ok(mut g) = self.prefix.lock() {
                *g = None;
            }
        }
        let left = match c.frames.get(&i) {
            Some(old) => old.left,
            None => self.users.get(i).copied().unwrap_or(0),
        };
        c.frames.insert(
            i,
            CachedFrame {
                weak: Arc::downgrade(&f),
                strong: (left > 0).then(|| Arc::clone(&f)),
                left,
            },
        );
        Ok(f)
    }

    /// Chunk `ci` of `comp` served from frame `i`: let the frame go once all its chunks are.
    fn served(&self, i: usize, comp: usize, ci: usize) {
        if let Ok(mut c) = self.cache.lock() {
            if !c.served.insert((comp, ci)) {
                return;
            }
            if let Some(f) = c.frames.get_mut(&i) {
                f.left = f.left.saturating_sub(1);
                if f.left == 0 {
                    f.strong = None;
                }
            }
        }
    }

    fn rebuild(&self, comp: usize, ci: usize) -> Result<ChunkBytes, String> {
        let c = &self.patch.new.manifest.components[comp];
        let ch = &c.chunks[ci];
        let cd = self.patch.chunk_data[comp][ci];
        let (first, data_blocks) = (cd.first, cd.data_blocks);
        let has_data = data_blocks > 0;
        let frame = if has_data {
            Some(self.frame(cd.frame)?)
        } else {
            None
        };
        if let (Some(f), true) = (&frame, data_blocks == ch.blocks as u64) {
            // All new: the chunk is a range of the frame, handed out without a copy.
            let start = cd.offset as usize;
            let end = start.saturating_add(ch.length as usize);
            let bytes =
                ChunkBytes::shared(Arc::clone(f), start..end).ok_or("data beyond its frame")?;
            self.served(cd.frame, comp, ci);
            if Digest::of(&bytes) != ch.sha256 {
                return Err("rebuilt bytes do not match the sha256 in the new manifest".into());
            }
            return Ok(bytes);
        }
        let mut out = vec![0u8; (ch.blocks as u64 * BS) as usize];
        let mut data_at = cd.offset as usize;
        let mut id = cd.op_start; // stored id at the start of the current op
        let mut filled = 0u64;
        for op in self.patch.ops[comp].get(cd.op..).unwrap_or_default() {
            let len = op_len(op);
            let (s, e) = (id.max(first), (id + len).min(first + ch.blocks as u64));
            if s < e {
                let dst = &mut out[((s - first) * BS) as usize..((e - first) * BS) as usize];
                match *op {
                    Op::Copy { block, .. } => {
                        let read = self
                            .bases
                            .get(comp)
                            .and_then(|b| b.as_ref())
                            .ok_or("no base for a copy")?;
                        read((block + (s - id)) * BS, dst).map_err(|e| e.to_string())?;
                    }
                    Op::Data { .. } => {
                        let f = frame.as_ref().ok_or("data without a frame")?;
                        let src = f
                            .get(data_at..data_at + dst.len())
                            .ok_or("data beyond its frame")?;
                        dst.copy_from_slice(src);
                        data_at += dst.len();
                    }
                }
                filled += e - s;
            }
            id += len;
            if id >= first + ch.blocks as u64 {
                break;
            }
        }
        if has_data {
            self.served(cd.frame, comp, ci);
        }
        if filled != ch.blocks as u64 {
            return Err("the ops do not cover the chunk".into());
        }
        out.truncate(ch.length as usize);
        if out.len() as u64 != ch.length || Digest::of(&out) != ch.sha256 {
            return Err("rebuilt bytes do not match the sha256 in the new manifest".into());
        }
        Ok(out.into())
    }

    /// Chunk `ci` of component `comp`, rebuilt and verified (else from the fallback).
    pub fn load(&self, comp: usize, ci: usize) -> Result<ChunkBytes, ReadError> {
        use std::sync::atomic::Ordering;
        match self.rebuild(comp, ci) {
            Ok(d) => {
                self.stats.rebuilt.fetch_add(1, Ordering::Relaxed);
                Ok(d)
            }
            Err(why) => {
                let c = &self.patch.new.manifest.components[comp];
                tracing::warn!(component = %c.name, chunk = ci, %why, "patch chunk does not verify; using the fallback");
                let fail = |then: String| ReadError::Chunk {
                    component: c.name.clone(),
                    chunk: ci,
                    start: 0,
                    end: 0,
                    reason: format!("from the patch: {why}; {then}"),
                };
                let fb = self
                    .fallback
                    .as_ref()
                    .ok_or_else(|| fail("and no bundle to fall back to".into()))?;
                let d = fb(comp, ci).map_err(|e| fail(format!("from the new bundle: {e}")))?;
                self.stats.fallback.fetch_add(1, Ordering::Relaxed);
                Ok(d)
            }
        }
    }
}

/// The fallback location of the new bundle: next to the patch.
pub fn sibling(patch_source: &str, bundle: &str) -> Option<String> {
    if bundle.is_empty() || bundle.contains('/') || bundle.contains('\\') || bundle == ".." {
        return None;
    }
    if patch_source.starts_with("http://") || patch_source.starts_with("https://") {
        let cut = patch_source
            .split(['?', '#'])
            .next()
            .unwrap_or(patch_source);
        let dir = cut.rsplit_once('/')?.0;
        return Some(format!("{dir}/{bundle}"));
    }
    let p = PathBuf::from(patch_source);
    Some(
        p.parent()
            .unwrap_or(Path::new(""))
            .join(bundle)
            .display()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jota_bundle::build::{BaseKeys, Builder, ComponentSpec, NoProgress, Options, Release};
    use jota_bundle::sign::SecretKey;

    fn key() -> SecretKey {
        SecretKey::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../jota-bundle/tests/fixtures/keys/ed25519.key.pem"),
        )
        .unwrap()
    }

    /// A pseudo-random block (deterministic).
    fn block(seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..BS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn bundle(
        dir: &Path,
        name: &str,
        version: &str,
        image: &[u8],
        base: Option<&Bundle>,
    ) -> PathBuf {
        let keys = base.map(jota_bundle::read::base_keys).unwrap_or_default();
        let keys: BaseKeys = keys;
        let opts = Options {
            chunk_blocks: 8,
            threads: 1,
            ..Options::default()
        };
        let img = dir.join(format!("{name}.img"));
        std::fs::write(&img, image).unwrap();
        let mut b = Builder::new(dir, opts, keys).unwrap();
        let mut s = ComponentSpec::new("rootfs", ComponentType::RawImage);
        // Not APP: the builder checks that a rootfs is ext4.
        s.partition = Some("extra".into());
        b.add(s, &img, &NoProgress).unwrap();
        let k = key();
        let out = dir.join(format!("{name}.jota"));
        b.finish(
            Release {
                version: version.into(),
                ..Release::default()
            },
            &[&k as &dyn Signer],
            &out,
        )
        .unwrap();
        out
    }

    /// v1: 64 blocks; v2: most of them (some moved), some changed a little, some new, zeros.
    fn images() -> (Vec<u8>, Vec<u8>) {
        let v1: Vec<u8> = (0..64).flat_map(block).collect();
        let mut v2 = Vec::new();
        for i in 0..64u64 {
            match i % 8 {
                0 => v2.extend(block(1000 + i)),
                1 => {
                    let mut b = block(i);
                    b[100] ^= 1;
                    v2.extend(b)
                }
                2 => v2.extend(vec![0u8; BS as usize]),
                _ => v2.extend(block((i + 3) % 64)),
            }
        }
        (v1, v2)
    }

    /// A temporary directory, v1's image, bundles of v1 and v2 (grouped against v1).
    fn releases() -> (tempfile::TempDir, Vec<u8>, Bundle, PathBuf, Bundle) {
        let d = tempfile::tempdir().unwrap();
        let (v1, v2) = images();
        let b1 = bundle(d.path(), "v1", "1.0", &v1, None);
        let o = Bundle::open(&b1, jota_bundle::Trust::Unchecked).unwrap();
        let b2 = bundle(d.path(), "v2", "2.0", &v2, Some(&o));
        let n = Bundle::open(&b2, jota_bundle::Trust::Unchecked).unwrap();
        (d, v1, o, b2, n)
    }

    fn reader(img: Vec<u8>) -> BaseRead {
        Box::new(move |off, buf| Vec::read_at(&img, off, buf))
    }

    #[test]
    fn ops_round_trip_and_are_checked() {
        let ops = vec![
            Op::Copy { len: 3, block: 10 },
            Op::Data { len: 2 },
            Op::Copy { len: 1, block: 2 },
        ];
        let b = encode_ops(&ops);
        assert_eq!(decode_ops(&b, 6, 13, 2).unwrap(), ops);
        for (stored, base, data, want) in [
            (5, 13, 2, "exceed"),
            (7, 13, 2, "cover 6"),
            (6, 12, 2, "beyond the base"),
            (6, 13, 1, "(1)"),
        ] {
            let e = decode_ops(&b, stored, base, data).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        assert!(decode_ops(&[0x80], 1, 1, 0).is_err());
        assert!(decode_ops(&[0], 1, 1, 0).is_err());
    }

    #[test]
    fn a_built_patch_rebuilds_every_chunk_of_the_new_release() {
        let (d, v1, o, b2, n) = releases();
        let out = d.path().join("v2.jotapatch");
        let k = key();
        let size = std::fs::metadata(&b2).unwrap().len();
        let r = build(
            &o,
            &n,
            "v2.jota",
            size,
            &[&k as &dyn Signer],
            &BuildOptions::default(),
            &out,
        )
        .unwrap();
        // 8 zero blocks are not stored; 8 new and 8 changed ones are data; 40 are copies.
        assert_eq!((r.copied_blocks, r.data_blocks), (40, 16), "{r:?}");
        assert!(
            r.prefix_bytes > 0,
            "old versions of changed blocks are the prefix"
        );
        let bytes = std::fs::read(&out).unwrap();
        assert!(is_patch(&bytes));
        let p = Patch::parse(Box::new(bytes.clone())).unwrap();
        let ring = Keyring::from_keys(vec![jota_bundle::sign::PublicKey::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../jota-bundle/tests/fixtures/keys/ed25519.pub.pem"),
        )
        .unwrap()]);
        p.check_signatures(&ring).unwrap();
        assert_eq!(p.manifest.target.bundle, "v2.jota");
        assert_eq!(
            p.manifest.components[0].base.as_ref().unwrap().size,
            v1.len() as u64
        );
        let base = p.manifest.components[0].base.clone().unwrap();
        assert_eq!(
            hash_base(&reader(v1.clone()), v1.len() as u64).unwrap(),
            base.sha256
        );
        let used = used_ranges(&p.ops[0], &p.manifest.prefix, 0);
        assert_eq!(
            used.iter().map(|(a, b)| b - a).sum::<u64>(),
            base.used_blocks
        );
        assert_eq!(
            hash_ranges(&reader(v1.clone()), &used).unwrap(),
            base.used_sha256
        );
        let chunks = n.manifest().components[0].chunks.len();
        let src = PatchSource::new(p, vec![Some(reader(v1.clone()))], None);
        for ci in 0..chunks {
            assert_eq!(
                *src.load(0, ci).unwrap(),
                n.read_chunk(0, ci).unwrap(),
                "chunk {ci}"
            );
        }
        // Every frame is let go once its chunks are served.
        assert!(src
            .cache
            .lock()
            .unwrap()
            .frames
            .values()
            .all(|f| f.strong.is_none()));

        // On a different base, chunks fail their sha256 and come from the fallback.
        let mut other = v1.clone();
        other[6 * BS as usize] ^= 1; // v2 block 3 is a copy of it
        let p = Patch::parse(Box::new(bytes.clone())).unwrap();
        let n2 = Bundle::open(&b2, jota_bundle::Trust::Unchecked).unwrap();
        let fb: Fallback = Box::new(move |c, ci| n2.read_chunk(c, ci).map(Into::into));
        let src = PatchSource::new(p, vec![Some(reader(other))], Some(fb));
        for ci in 0..chunks {
            assert_eq!(*src.load(0, ci).unwrap(), n.read_chunk(0, ci).unwrap());
        }
        assert!(src.stats.fallback.load(std::sync::atomic::Ordering::SeqCst) > 0);
    }

    #[test]
    fn damaged_patches_are_refused_with_a_reason() {
        let (d, _, o, _, n) = releases();
        let out = d.path().join("p");
        let k = key();
        build(
            &o,
            &n,
            "v2.jota",
            1,
            &[&k as &dyn Signer],
            &BuildOptions::default(),
            &out,
        )
        .unwrap();
        let good = std::fs::read(&out).unwrap();
        let parse = |b: Vec<u8>| Patch::parse(Box::new(b)).err().map(|e| e.to_string());
        assert!(parse(good[..40].to_vec())
            .unwrap()
            .contains("64-byte header"));
        assert!(parse(good[..good.len() - 1].to_vec())
            .unwrap()
            .contains("the header says"));
        let mut b = good.clone();
        b[0] = b'X';
        assert!(parse(b).unwrap().contains("magic"));
        // Every single-byte change is refused or leaves a patch whose frames fail their
        // sha256 — never a panic.
        for i in (0..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0x40;
            if let Ok(p) = Patch::parse(Box::new(b)) {
                for f in 0..p.manifest.frames.len() {
                    let _ = p.frame(f, &[]);
                }
            }
        }
    }

    #[test]
    fn the_fallback_sits_next_to_the_patch() {
        assert_eq!(
            sibling("https://cdn.example/r/2.0/x.jotapatch?sig=1", "x.jota").as_deref(),
            Some("https://cdn.example/r/2.0/x.jota")
        );
        assert_eq!(
            sibling("/data/x.jotapatch", "x.jota").as_deref(),
            Some("/data/x.jota")
        );
        assert_eq!(sibling("x.jotapatch", "x.jota").as_deref(), Some("x.jota"));
        assert_eq!(sibling("/data/x.jotapatch", "../etc/x"), None);
        assert_eq!(sibling("/data/x.jotapatch", ""), None);
    }
}
