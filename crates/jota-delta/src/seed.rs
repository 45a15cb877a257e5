//! Seeds: the blocks a device already has (its active slot), found by their 4 KiB block keys.

use jota_bundle::index::block_key;
use jota_bundle::manifest::BLOCK_SIZE;
use std::collections::{HashMap, HashSet};

const BS: usize = BLOCK_SIZE as usize;

/// Where each wanted block key was found in a seed.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    /// Block key → byte offset of the first block with that key.
    pub found: HashMap<u64, u64>,
    /// Bytes scanned.
    pub scanned: u64,
}

/// Scans `len` bytes of a seed through `read_at`, keeping only keys in `wanted` (so memory
/// follows the new release's stored blocks, not the seed's size).
pub fn scan(
    read_at: &dyn Fn(u64, &mut [u8]) -> std::io::Result<()>,
    len: u64,
    wanted: &HashSet<u64>,
) -> std::io::Result<Seed> {
    let mut seed = Seed::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    let whole = len - len % BS as u64;
    while at < whole {
        let k = (whole - at).min(buf.len() as u64) as usize;
        read_at(at, &mut buf[..k])?;
        for (i, b) in buf[..k].chunks_exact(BS).enumerate() {
            let key = block_key(b);
            if wanted.contains(&key) {
                seed.found.entry(key).or_insert(at + (i * BS) as u64);
            }
        }
        at += k as u64;
    }
    seed.scanned = whole;
    Ok(seed)
}
