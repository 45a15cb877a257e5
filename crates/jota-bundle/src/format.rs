//! The bundle file: a fixed header, then manifest, signatures, block index and payload.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "JOTABNDL"
//! 8       4     container format, u32 LE (1)
//! 12      4     flags, u32 LE (0; anything else is refused)
//! 16      8     manifest length, u64 LE
//! 24      8     signatures length, u64 LE
//! 32      8     index length, u64 LE
//! 40      8     payload length, u64 LE
//! 48      16    zero
//! 64            manifest (JSON) | signatures (JSON) | index (zstd) | payload (chunks)
//! ```
//!
//! Everything a device needs before the payload is at the front, so a bundle can be
//! installed from a stream, and a delta install fetches the front and then only the chunks
//! it lacks with HTTP Range requests. The header is not signed; its lengths are checked
//! against the signed manifest.

use std::io::Read;

/// File magic.
pub const MAGIC: &[u8; 8] = b"JOTABNDL";
/// Container format version.
pub const CONTAINER_FORMAT: u32 = 1;
/// Header length.
pub const HEADER_LEN: u64 = 64;
/// Largest manifest a reader accepts.
pub const MAX_MANIFEST: u64 = 64 << 20;
/// Largest signatures block a reader accepts.
pub const MAX_SIGNATURES: u64 = 1 << 20;
/// Largest (compressed or uncompressed) index a reader accepts.
pub const MAX_INDEX: u64 = 1 << 30;

/// The fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Manifest length.
    pub manifest_len: u64,
    /// Signatures length.
    pub signatures_len: u64,
    /// Index length.
    pub index_len: u64,
    /// Payload length.
    pub payload_len: u64,
}

/// A header that is not a jota bundle header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle header field `{field}` at offset {offset}: {reason}")]
pub struct HeaderError {
    /// Field name.
    pub field: &'static str,
    /// Byte offset.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl Header {
    /// Offset of the manifest.
    pub fn manifest_offset(&self) -> u64 {
        HEADER_LEN
    }

    /// Offset of the signatures.
    pub fn signatures_offset(&self) -> u64 {
        HEADER_LEN + self.manifest_len
    }

    /// Offset of the index.
    pub fn index_offset(&self) -> u64 {
        self.signatures_offset() + self.signatures_len
    }

    /// Offset of the payload (chunk offsets are relative to it).
    pub fn payload_offset(&self) -> u64 {
        self.index_offset() + self.index_len
    }

    /// Length of the whole bundle.
    pub fn total_len(&self) -> u64 {
        self.payload_offset() + self.payload_len
    }

    /// The 64 header bytes.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&CONTAINER_FORMAT.to_le_bytes());
        b[16..24].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.signatures_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_len.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }

    /// Parses and bounds-checks the header.
    pub fn parse(b: &[u8]) -> Result<Header, HeaderError> {
        let err = |field, offset, reason: String| HeaderError {
            field,
            offset,
            reason,
        };
        if b.len() < HEADER_LEN as usize {
            return Err(err(
                "magic",
                0,
                format!("file is {} bytes, shorter than the 64-byte header", b.len()),
            ));
        }
        if &b[..8] != MAGIC {
            return Err(err(
                "magic",
                0,
                format!(
                    "{:?} is not \"JOTABNDL\" (not a jota bundle)",
                    String::from_utf8_lossy(&b[..8])
                ),
            ));
        }
        let fmt = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if fmt != CONTAINER_FORMAT {
            return Err(err(
                "format",
                8,
                format!("container format {fmt} is not supported (this jota reads 1)"),
            ));
        }
        let flags = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        if flags != 0 {
            return Err(err("flags", 12, format!("unknown flags {flags:#x}")));
        }
        if b[48..64].iter().any(|&x| x != 0) {
            return Err(err("reserved", 48, "reserved bytes are not zero".into()));
        }
        let h = Header {
            manifest_len: le64(b, 16),
            signatures_len: le64(b, 24),
            index_len: le64(b, 32),
            payload_len: le64(b, 40),
        };
        if h.manifest_len == 0 || h.manifest_len > MAX_MANIFEST {
            return Err(err(
                "manifest length",
                16,
                format!("{} is outside 1..={MAX_MANIFEST}", h.manifest_len),
            ));
        }
        if h.signatures_len > MAX_SIGNATURES {
            return Err(err(
                "signatures length",
                24,
                format!("{} is over {MAX_SIGNATURES}", h.signatures_len),
            ));
        }
        if h.index_len > MAX_INDEX {
            return Err(err(
                "index length",
                32,
                format!("{} is over {MAX_INDEX}", h.index_len),
            ));
        }
        if h.payload_len > 1 << 50 {
            return Err(err(
                "payload length",
                40,
                format!("{} is over 1 PiB", h.payload_len),
            ));
        }
        Ok(h)
    }
}

/// The front of a bundle: everything before the payload, as read from a stream.
#[derive(Clone, Debug)]
pub struct Front {
    /// The header.
    pub header: Header,
    /// Manifest bytes (what the signatures cover).
    pub manifest: Vec<u8>,
    /// Signatures block.
    pub signatures: Vec<u8>,
    /// Index bytes (zstd).
    pub index: Vec<u8>,
}

/// Reading the front failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// Bad header.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// The stream ended inside a section.
    #[error("bundle is truncated: it ends inside the {section} (bytes {start}..{end})")]
    Truncated {
        /// Which section.
        section: &'static str,
        /// Section start.
        start: u64,
        /// Section end.
        end: u64,
    },
    /// I/O.
    #[error("reading the bundle: {0}")]
    Io(#[from] std::io::Error),
}

fn read_section(
    r: &mut impl Read,
    len: u64,
    section: &'static str,
    start: u64,
) -> Result<Vec<u8>, FrontError> {
    let mut v = Vec::new();
    // `take` + read_to_end grows with the data actually present, so a lying length
    // cannot make us allocate more than the stream holds.
    r.take(len).read_to_end(&mut v)?;
    if (v.len() as u64) < len {
        return Err(FrontError::Truncated {
            section,
            start,
            end: start + len,
        });
    }
    Ok(v)
}

impl Front {
    /// Reads header, manifest, signatures and index from the start of a stream.
    pub fn read(r: &mut impl Read) -> Result<Front, FrontError> {
        let mut hb = Vec::with_capacity(64);
        r.take(HEADER_LEN).read_to_end(&mut hb)?;
        let header = Header::parse(&hb)?;
        let manifest = read_section(r, header.manifest_len, "manifest", HEADER_LEN)?;
        let signatures = read_section(
            r,
            header.signatures_len,
            "signatures",
            header.signatures_offset(),
        )?;
        let index = read_section(r, header.index_len, "block index", header.index_offset())?;
        Ok(Front {
            header,
            manifest,
            signatures,
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_nonsense() {
        let h = Header {
            manifest_len: 100,
            signatures_len: 20,
            index_len: 30,
            payload_len: 40,
        };
        let b = h.encode();
        assert_eq!(Header::parse(&b).unwrap(), h);
        assert_eq!(h.payload_offset(), 64 + 150);
        assert_eq!(h.total_len(), 64 + 190);
        let cases: [(usize, u8, &str); 5] = [
            (0, b'X', "magic"),
            (8, 2, "format"),
            (13, 1, "flags"),
            (23, 1, "manifest length"),
            (60, 1, "reserved"),
        ];
        for (off, v, field) in cases {
            let mut c = b;
            c[off] = v;
            let e = Header::parse(&c).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        assert!(Header::parse(&b[..63]).is_err());
    }

    #[test]
    fn truncated_front_names_the_section() {
        let h = Header {
            manifest_len: 10,
            signatures_len: 5,
            index_len: 7,
            payload_len: 0,
        };
        let mut b = h.encode().to_vec();
        b.extend_from_slice(&[b'x'; 12]);
        let e = Front::read(&mut &b[..]).unwrap_err();
        assert!(e.to_string().contains("signatures"), "{e}");
        b.extend_from_slice(&[0; 10]);
        let f = Front::read(&mut &b[..]).unwrap();
        assert_eq!(f.index.len(), 7);
    }
}
