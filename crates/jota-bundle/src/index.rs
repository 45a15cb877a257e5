//! The block index: for every component, which stored block each image block is, and a
//! short key per stored block for finding it in a seed (the old slot) during a delta install.
//!
//! A component's section is
//!
//! ```text
//! map_len   u64 LE
//! map       runs, each: varint (len << 1 | kind); kind 1 is followed by a zigzag varint
//!           (first stored id - id expected after the previous stored run)
//!             kind 0: `len` all-zero blocks
//!             kind 1: `len` blocks that are stored blocks first, first+1, ...
//! keys      8 bytes LE per stored block: the low 64 bits of XXH3-128 of its 4 KiB
//! ```
//!
//! Stored ids count blocks in chunk order: chunk 0 holds ids `0..blocks0`, chunk 1 the next,
//! and so on. Keys only find candidates; a seeded chunk is trusted only once its sha256
//! matches the manifest.

use crate::manifest::Component;

/// A block map that does not decode or does not fit its component.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block index of `{component}` at byte {offset}: {reason}")]
pub struct IndexError {
    /// Component name.
    pub component: String,
    /// Byte offset in the component's section.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// A run of image blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// `len` all-zero blocks.
    Zero {
        /// Blocks in the run.
        len: u64,
    },
    /// `len` blocks that are stored blocks `first..first+len`.
    Stored {
        /// Blocks in the run.
        len: u64,
        /// First stored id.
        first: u64,
    },
}

impl Run {
    /// Blocks in the run.
    pub fn len(&self) -> u64 {
        match *self {
            Run::Zero { len } | Run::Stored { len, .. } => len,
        }
    }

    /// Whether the run is empty (never true for decoded runs).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A component's decoded block map and keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockMap {
    /// Runs in image order.
    pub runs: Vec<Run>,
    /// Key of each stored block.
    pub keys: Vec<u64>,
}

/// Appends `v` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 varint at `*pos` and advances it; `None` when cut short or over 64 bits.
pub fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        let part = (byte & 0x7f) as u64;
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl BlockMap {
    /// Appends a run, merging it with the previous one where they continue each other.
    pub fn push(&mut self, run: Run) {
        if run.is_empty() {
            return;
        }
        match (self.runs.last_mut(), run) {
            (Some(Run::Zero { len }), Run::Zero { len: n }) => *len += n,
            (Some(Run::Stored { len, first }), Run::Stored { len: n, first: f })
                if *first + *len == f =>
            {
                *len += n
            }
            _ => self.runs.push(run),
        }
    }

    /// Total blocks.
    pub fn total(&self) -> u64 {
        self.runs.iter().map(Run::len).sum()
    }

    /// The component's section bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_runs();
        out.reserve(self.keys.len() * 8);
        for k in &self.keys {
            out.extend_from_slice(&k.to_le_bytes());
        }
        out
    }

    /// The section without keys (a static patch carries the layout but needs no keys).
    pub fn encode_runs(&self) -> Vec<u8> {
        let mut map = Vec::new();
        let mut expect = 0u64;
        for r in &self.runs {
            match *r {
                Run::Zero { len } => put_varint(&mut map, len << 1),
                Run::Stored { len, first } => {
                    put_varint(&mut map, (len << 1) | 1);
                    let d = first.wrapping_sub(expect) as i64;
                    put_varint(&mut map, ((d << 1) ^ (d >> 63)) as u64);
                    expect = first + len;
                }
            }
        }
        let mut out = Vec::with_capacity(8 + map.len());
        out.extend_from_slice(&(map.len() as u64).to_le_bytes());
        out.extend_from_slice(&map);
        out
    }

    /// Decodes `c`'s section and checks it against the manifest: runs cover exactly
    /// `blocks.total` blocks with `blocks.zero` zeros, every stored id is in range and
    /// referenced, and there is one key per stored block.
    pub fn decode(c: &Component, section: &[u8]) -> Result<BlockMap, IndexError> {
        Self::decode_with(c, section, 8)
    }

    /// Decodes a section written by [`BlockMap::encode_runs`]: the same checks, no keys.
    pub fn decode_runs(c: &Component, section: &[u8]) -> Result<BlockMap, IndexError> {
        Self::decode_with(c, section, 0)
    }

    fn decode_with(c: &Component, section: &[u8], key_len: u64) -> Result<BlockMap, IndexError> {
        let err = |offset: usize, reason: String| IndexError {
            component: c.name.clone(),
            offset,
            reason,
        };
        let map_len = section
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            .ok_or_else(|| err(0, "shorter than its 8-byte length".into()))?;
        let stored = c.blocks.stored;
        let want = map_len
            .checked_add(8)
            .and_then(|n| n.checked_add(stored.checked_mul(key_len)?))
            .ok_or_else(|| err(0, format!("map length {map_len} overflows")))?;
        if want != section.len() as u64 {
            return Err(err(
                0,
                format!(
                    "section is {} bytes but a {map_len}-byte map and {} keys need {want}",
                    section.len(),
                    if key_len == 0 { 0 } else { stored }
                ),
            ));
        }
        let map = &section[8..8 + map_len as usize];
        let mut pos = 0;
        let mut runs = Vec::new();
        let (mut total, mut zero, mut expect) = (0u64, 0u64, 0u64);
        // Each stored id must be referenced at least once; ids are dense so a bitmap works.
        let mut seen = vec![0u64; stored.div_ceil(64) as usize];
        while pos < map.len() {
            let at = pos + 8;
            let tag = get_varint(map, &mut pos).ok_or_else(|| err(at, "bad varint".into()))?;
            let len = tag >> 1;
            if len == 0 {
                return Err(err(at, "empty run".into()));
            }
            total = total
                .checked_add(len)
                .filter(|t| *t <= c.blocks.total)
                .ok_or_else(|| err(at, format!("runs exceed the {} blocks", c.blocks.total)))?;
            if tag & 1 == 0 {
                zero += len;
                runs.push(Run::Zero { len });
            } else {
                let z = get_varint(map, &mut pos).ok_or_else(|| err(at, "bad varint".into()))?;
                let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
                let first = expect.wrapping_add(d as u64);
                if first.checked_add(len).is_none_or(|e| e > stored) {
                    return Err(err(
                        at,
                        format!("stored run {first}+{len} is beyond the {stored} stored blocks"),
                    ));
                }
                for id in first..first + len {
                    seen[(id / 64) as usize] |= 1 << (id % 64);
                }
                expect = first + len;
                runs.push(Run::Stored { len, first });
            }
        }
        if total != c.blocks.total || zero != c.blocks.zero {
            return Err(err(
                8 + map.len(),
                format!(
                    "runs give {total} blocks ({zero} zero); the manifest says {} ({} zero)",
                    c.blocks.total, c.blocks.zero
                ),
            ));
        }
        if let Some(id) = (0..stored).find(|id| seen[(id / 64) as usize] & (1 << (id % 64)) == 0) {
            return Err(err(
                8 + map.len(),
                format!("stored block {id} is never used"),
            ));
        }
        let keys = section[8 + map.len()..]
            .chunks_exact(8)
            .map(|k| u64::from_le_bytes(k.try_into().unwrap_or_default()))
            .collect();
        Ok(BlockMap { runs, keys })
    }
}

/// The key of a block.
pub fn block_key(block: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_128(block) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::*;

    fn comp(total: u64, zero: u64, stored: u64) -> Component {
        Component {
            name: "rootfs".into(),
            kind: ComponentType::RawImage,
            partition: Some("APP".into()),
            path: None,
            mode: None,
            phase: None,
            version: None,
            size: total * 4096,
            sha256: Digest::default(),
            compression: Compression::Zstd,
            blocks: Blocks {
                total,
                zero,
                stored,
                index_offset: 0,
                index_length: 0,
            },
            chunks: vec![],
            tegra: None,
        }
    }

    #[test]
    fn runs_round_trip_and_merge() {
        let mut m = BlockMap::default();
        m.push(Run::Stored { len: 3, first: 0 });
        m.push(Run::Stored { len: 2, first: 3 });
        m.push(Run::Zero { len: 4 });
        m.push(Run::Zero { len: 1 });
        m.push(Run::Stored { len: 1, first: 1 });
        m.push(Run::Stored { len: 2, first: 5 });
        assert_eq!(m.runs.len(), 4);
        m.keys = (0..7).collect();
        let b = m.encode();
        let d = BlockMap::decode(&comp(13, 5, 7), &b).unwrap();
        assert_eq!(d, m);
    }

    #[test]
    fn bad_sections_are_errors() {
        let mut m = BlockMap::default();
        m.push(Run::Stored { len: 2, first: 0 });
        m.push(Run::Zero { len: 2 });
        m.keys = vec![1, 2];
        let b = m.encode();
        // Wrong totals, a never-used stored block, truncation, trailing bytes.
        for (c, why) in [
            (comp(5, 2, 2), "runs give 4"),
            (comp(4, 1, 2), "zero"),
            (comp(4, 2, 3), "section is"),
        ] {
            let e = BlockMap::decode(&c, &b).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
        }
        let e = BlockMap::decode(&comp(4, 2, 2), &b[..b.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("section is"), "{e}");
        let mut m2 = BlockMap::default();
        m2.push(Run::Stored { len: 1, first: 1 });
        m2.keys = vec![1, 2];
        let e = BlockMap::decode(&comp(1, 0, 2), &m2.encode()).unwrap_err();
        assert!(e.to_string().contains("never used"), "{e}");
        let mut m3 = BlockMap::default();
        m3.push(Run::Stored { len: 2, first: 1 });
        m3.keys = vec![1, 2];
        let e = BlockMap::decode(&comp(2, 0, 2), &m3.encode()).unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
    }
}
