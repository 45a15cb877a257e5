//! How the simulator knows a slot is complete and consistent.
//!
//! Every kernel, DTB and bootloader image a simulated release contains starts with a sealed
//! 4 KiB identity header; the content follows it:
//!
//! ```text
//! 0     "JOTASIM1"
//! 8     u32 length of the JSON that follows
//! 12    JSON {kind, release, version, l4t, content_len, content_sha256, ...}
//! 4064  sha256 of bytes 0..4064 (the seal)
//! 4096  content
//! ```
//!
//! The kernel's identity also names the exact rootfs image (length and sha256) and DTB it
//! belongs to and the bootloader release (L4T major.minor) it needs. At boot the simulated
//! firmware checks the seal and content hash of each image, hashes the rootfs partition, and
//! compares: a torn write (a partial image, an old header with new content, a half-written
//! rootfs) or a mix of releases fails exactly where a real Jetson would fail to boot.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};

/// Magic of an identity header.
pub const MAGIC: &[u8; 8] = b"JOTASIM1";
/// Size of the header.
pub const HEADER_LEN: usize = 4096;
const SEAL_AT: usize = HEADER_LEN - 32;

/// What an image says it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `kernel`, `kernel-dtb`, or `bootloader:<partition>`.
    pub kind: String,
    /// Release id (hex), shared by every image of one release.
    pub release: String,
    /// Release version (e.g. `1.2.0`).
    pub version: String,
    /// L4T version of the release.
    pub l4t: String,
    /// Bytes of content after the header.
    pub content_len: u64,
    /// sha256 of the content.
    pub content_sha256: String,
    /// Kernel: length of the rootfs image it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_len: Option<u64>,
    /// Kernel: sha256 of that rootfs image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_sha256: Option<String>,
    /// Kernel: sha256 of the DTB content it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtb_sha256: Option<String>,
    /// Kernel: the bootloader (L4T major.minor) it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_bootloader: Option<String>,
    /// The release's health checks fail once booted (for rollback tests).
    #[serde(default)]
    pub fails_health_check: bool,
}

/// Builds an image: sealed header + content.
pub fn seal(id: &Identity, content: &[u8]) -> Vec<u8> {
    let mut id = id.clone();
    id.content_len = content.len() as u64;
    id.content_sha256 = crate::sha256_hex(content);
    // Serialising a plain struct cannot fail.
    let json = serde_json::to_vec(&id).unwrap_or_default();
    let mut out = vec![0u8; HEADER_LEN];
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&(json.len() as u32).to_le_bytes());
    let n = json.len().min(SEAL_AT - 12);
    out[12..12 + n].copy_from_slice(&json[..n]);
    let seal = {
        use sha2::Digest;
        sha2::Sha256::digest(&out[..SEAL_AT])
    };
    out[SEAL_AT..].copy_from_slice(&seal);
    out.extend_from_slice(content);
    out
}

/// Reads and checks the header of an image (not its content).
pub fn read_header(h: &[u8]) -> Result<Identity, String> {
    if h.len() < HEADER_LEN {
        return Err("image shorter than its identity header".into());
    }
    if &h[..8] != MAGIC {
        return Err("no identity header (blank or foreign image)".into());
    }
    let seal = {
        use sha2::Digest;
        sha2::Sha256::digest(&h[..SEAL_AT])
    };
    if seal.as_slice() != &h[SEAL_AT..HEADER_LEN] {
        return Err("identity header is damaged (seal mismatch)".into());
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len > SEAL_AT - 12 {
        return Err("identity header length is invalid".into());
    }
    serde_json::from_slice(&h[12..12 + len]).map_err(|e| format!("identity header: {e}"))
}

/// Reads an image from `r` (a partition), checks the seal and the content hash.
pub fn verify<R: Read + Seek>(r: &mut R, limit: u64) -> Result<Identity, String> {
    let mut h = vec![0u8; HEADER_LEN];
    r.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    r.read_exact(&mut h)
        .map_err(|e| format!("reading header: {e}"))?;
    let id = read_header(&h)?;
    if HEADER_LEN as u64 + id.content_len > limit {
        return Err(format!(
            "content of {} bytes does not fit the partition",
            id.content_len
        ));
    }
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let n = std::io::copy(&mut r.take(id.content_len), &mut HashWriter(&mut hasher))
        .map_err(|e| e.to_string())?;
    if n != id.content_len {
        return Err("content is cut short".into());
    }
    let got = hex::encode(sha2::Digest::finalize(hasher));
    if got != id.content_sha256 {
        return Err(format!(
            "{} content does not match its identity (torn or overwritten)",
            id.kind
        ));
    }
    Ok(id)
}

/// sha256 of the first `len` bytes of `r`.
pub fn hash_prefix<R: Read + Seek>(r: &mut R, len: u64) -> std::io::Result<String> {
    r.seek(SeekFrom::Start(0))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let n = std::io::copy(&mut r.take(len), &mut HashWriter(&mut hasher))?;
    if n != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "partition shorter than the image",
        ));
    }
    Ok(hex::encode(sha2::Digest::finalize(hasher)))
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn id() -> Identity {
        Identity {
            kind: "kernel".into(),
            release: "abc".into(),
            version: "1.0.0".into(),
            l4t: "36.4.3".into(),
            content_len: 0,
            content_sha256: String::new(),
            rootfs_len: Some(10),
            rootfs_sha256: Some("x".into()),
            dtb_sha256: None,
            requires_bootloader: Some("36.4".into()),
            fails_health_check: false,
        }
    }

    #[test]
    fn sealed_images_verify_and_torn_ones_do_not() {
        let img = seal(&id(), &[7u8; 10000]);
        let mut part = img.clone();
        part.extend_from_slice(&[0u8; 5000]); // the partition is larger than the image
        let got = verify(&mut Cursor::new(&part), part.len() as u64).unwrap();
        assert_eq!(got.content_len, 10000);
        // torn: the second half never arrived
        let mut torn = img.clone();
        for b in &mut torn[9000..] {
            *b = 0;
        }
        assert!(verify(&mut Cursor::new(&torn), torn.len() as u64)
            .unwrap_err()
            .contains("torn"));
        // damaged header
        let mut bad = img.clone();
        bad[20] ^= 1;
        assert!(verify(&mut Cursor::new(&bad), bad.len() as u64)
            .unwrap_err()
            .contains("seal"));
        // blank partition
        let blank = vec![0u8; 8192];
        assert!(verify(&mut Cursor::new(&blank), 8192).is_err());
    }
}
