//! BUP, NVIDIA's bootloader update payload: `NVIDIA__BLOB__V2` (R32, cboot era) and
//! `NVIDIA__BLOB__V3` (R35/R36, wrapped in the UEFI capsule).
//!
//! Layout (all integers little-endian, strings NUL-padded):
//!
//! ```text
//! 0   magic[16]      "NVIDIA__BLOB__V2" | "NVIDIA__BLOB__V3"
//! 16  version u32    BCD: minor<<24 | major<<16 | rev<<14 | month<<8 | year
//! 20  blob_size u32  whole payload
//! 24  header_size    start of the entry table (40, or 48 with the 8-byte accessory)
//! 28  entry_count
//! 32  blob_type      0 = update (1 = BMP splash blob, not an update)
//! 36  uncomp_size    (absent in the legacy 36-byte T210 header)
//! 40  accessory[header_size-40]  V3: RatchetInfo / rollback.bin
//! header_size: entries, 120 bytes (V2) or 184 bytes (V3) each:
//!     partition[40] offset u32 length u32 version u32 op_mode u32 spec[64 | 128]
//! then the entry data; `offset` counts from the start of the file.
//! ```
//!
//! Validation follows what the consumers accept: tegra-boot-tools / `nv_update_engine` for
//! V2 and edk2-nvidia's `FwPackageLib` for V3 (which also requires that the payload is
//! exactly header + table + data, with no gaps).

pub mod tnspec;

pub use tnspec::{
    edk2_spec_matches, is_production_fused, r32_spec_matches, Selection, SelectionRule, Target,
};

use crate::bytes::{le_u32, padded_ascii, put_padded, CStrError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Size of the fixed header (without accessory).
pub const HEADER_LEN: u32 = 40;
/// Size of the legacy T210 V2 header that has no `uncomp_size`.
pub const LEGACY_HEADER_LEN: u32 = 36;
/// Size of the partition-name field of an entry.
pub const PARTITION_FIELD_LEN: usize = 40;
/// Length of the V3 header accessory (RatchetInfo) that L4T always writes.
pub const V3_ACCESSORY_LEN: usize = 8;

/// The two on-disk generations of the BUP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BupFormat {
    /// `NVIDIA__BLOB__V2`: R32 (TX1/Nano/TX2/Xavier with cboot), 64-byte spec.
    V2,
    /// `NVIDIA__BLOB__V3`: R35/R36 (UEFI), 128-byte TnSpec.
    V3,
}

impl BupFormat {
    /// The 16-byte magic (not NUL-terminated).
    pub fn magic(self) -> &'static [u8; 16] {
        match self {
            BupFormat::V2 => b"NVIDIA__BLOB__V2",
            BupFormat::V3 => b"NVIDIA__BLOB__V3",
        }
    }

    /// Size of one entry of the table.
    pub fn entry_len(self) -> u32 {
        PARTITION_FIELD_LEN as u32 + 16 + self.spec_field_len() as u32
    }

    /// Size of the spec field of an entry.
    pub fn spec_field_len(self) -> usize {
        match self {
            BupFormat::V2 => 64,
            BupFormat::V3 => 128,
        }
    }

    /// Longest partition name the consumer accepts (V3: NUL must fit in 40 bytes).
    pub fn max_partition_len(self) -> usize {
        match self {
            BupFormat::V2 => PARTITION_FIELD_LEN,
            BupFormat::V3 => PARTITION_FIELD_LEN - 1,
        }
    }

    /// Longest spec the consumer accepts (V3 copies it into a 128-byte C string).
    pub fn max_spec_len(self) -> usize {
        match self {
            BupFormat::V2 => 64,
            BupFormat::V3 => 127,
        }
    }

    /// The version word NVIDIA's generator writes for this generation.
    pub fn default_version(self) -> u32 {
        match self {
            // Old generators wrote a flat 0x00020000 ("v2.0").
            BupFormat::V2 => 0x0002_0000,
            // BUP_generator.py of R35/R36: v3.1, 2022-06, revision 0.
            BupFormat::V3 => 0x0103_0622,
        }
    }

    fn from_magic(m: &[u8]) -> Option<BupFormat> {
        [BupFormat::V2, BupFormat::V3]
            .into_iter()
            .find(|f| f.magic().as_slice() == m)
    }
}

impl fmt::Display for BupFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BupFormat::V2 => "V2",
            BupFormat::V3 => "V3",
        })
    }
}

/// The BCD-coded BUP version word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BupVersion(pub u32);

impl BupVersion {
    /// Major version (BCD byte, bits 16-23).
    pub fn major(self) -> u32 {
        (self.0 >> 16) & 0xff
    }
    /// Minor version (BCD nibble, bits 24-27).
    pub fn minor(self) -> u32 {
        (self.0 >> 24) & 0x0f
    }
    /// Release year within the century (BCD, bits 0-7).
    pub fn year(self) -> u32 {
        self.0 & 0xff
    }
    /// Release month (BCD, bits 8-12).
    pub fn month(self) -> u32 {
        (self.0 >> 8) & 0x1f
    }
    /// Release revision within the month (bits 14-15).
    pub fn revision(self) -> u32 {
        (self.0 >> 14) & 0x3
    }
}

impl fmt::Display for BupVersion {
    /// Same rendering as `BUP_generator.py -c`: `v3.1-2022.6-0` (BCD shown as hex digits).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "v{:x}.{:x}-20{:02x}.{:x}-{:x}",
            self.major(),
            self.minor(),
            self.year(),
            self.month(),
            self.revision()
        )
    }
}

/// Which firmware builds an entry is for (`op_mode` / `UpdateMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpMode {
    /// 0: any fusing.
    Common,
    /// 1: only devices not production-fused (`_dev` images, "preproduction").
    NonProduction,
    /// 2: only production-fused devices (`_prod` images).
    Production,
}

impl OpMode {
    /// The on-disk value.
    pub fn code(self) -> u32 {
        match self {
            OpMode::Common => 0,
            OpMode::NonProduction => 1,
            OpMode::Production => 2,
        }
    }

    /// Decodes the on-disk value.
    pub fn from_code(v: u32) -> Option<OpMode> {
        match v {
            0 => Some(OpMode::Common),
            1 => Some(OpMode::NonProduction),
            2 => Some(OpMode::Production),
            _ => None,
        }
    }
}

impl std::str::FromStr for OpMode {
    type Err = String;
    /// Accepts the number or a name: `0|common`, `1|dev|non-production`, `2|prod|production`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" | "common" => Ok(OpMode::Common),
            "1" | "dev" | "non-production" | "preproduction" => Ok(OpMode::NonProduction),
            "2" | "prod" | "production" => Ok(OpMode::Production),
            other => Err(format!(
                "op_mode `{other}` is not 0 (common), 1 (dev) or 2 (prod)"
            )),
        }
    }
}

impl fmt::Display for OpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpMode::Common => "common",
            OpMode::NonProduction => "dev",
            OpMode::Production => "prod",
        })
    }
}

/// A problem in a BUP, naming the field and its byte offset in the file.
#[derive(Debug, thiserror::Error)]
pub enum BupError {
    /// The file ends before a structure that must be there.
    #[error("BUP truncated: {what} needs bytes {offset}..{end} but the file has {len} bytes")]
    Truncated {
        /// What was being read.
        what: String,
        /// First byte needed.
        offset: u64,
        /// One past the last byte needed.
        end: u64,
        /// Length of the file.
        len: u64,
    },
    /// The first 16 bytes are not a BUP magic.
    #[error("not a BUP: magic at offset 0 is {found:?}, expected \"NVIDIA__BLOB__V2\" or \"NVIDIA__BLOB__V3\"")]
    BadMagic {
        /// The bytes found, lossily decoded.
        found: String,
    },
    /// A header field has a value the consumer rejects.
    #[error("BUP header field `{field}` at offset {offset} is {value:#x}: {reason}")]
    Header {
        /// Field name as in NVIDIA's struct.
        field: &'static str,
        /// Byte offset of the field.
        offset: u64,
        /// The value found.
        value: u64,
        /// Why it is wrong.
        reason: String,
    },
    /// An entry field has a value the consumer rejects.
    #[error("BUP entry {index} ({partition}) field `{field}` at offset {offset}: {reason}")]
    Entry {
        /// Index in the entry table.
        index: usize,
        /// Partition name (or `?` if the name itself is bad).
        partition: String,
        /// Field name.
        field: &'static str,
        /// Byte offset of the field in the file.
        offset: u64,
        /// Why it is wrong.
        reason: String,
    },
    /// An entry given to the builder is not representable.
    #[error("cannot build BUP entry {index} ({partition}): {reason}")]
    Build {
        /// Index of the entry in the build list.
        index: usize,
        /// Partition name.
        partition: String,
        /// Why.
        reason: String,
    },
    /// Reading or writing failed.
    #[error("BUP I/O: {0}")]
    Io(#[from] io::Error),
}

/// The parsed header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BupHeader {
    /// V2 or V3.
    pub format: BupFormat,
    /// BCD version word.
    pub version: BupVersion,
    /// Total payload size.
    pub blob_size: u32,
    /// Offset of the entry table.
    pub header_size: u32,
    /// Number of entries.
    pub entry_count: u32,
    /// 0 = update.
    pub blob_type: u32,
    /// Uncompressed size (`None` for the legacy 36-byte header).
    pub uncomp_size: Option<u32>,
    /// Bytes between the fixed header and the table (V3: RatchetInfo).
    #[serde(with = "hex_bytes")]
    pub accessory: Vec<u8>,
}

/// One entry of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BupEntry {
    /// Position in the table.
    pub index: usize,
    /// Partition base name (`mb1`, `cpu-bootloader`, `BCT`, ...; no `A_` prefix).
    pub partition: String,
    /// Offset of the data from the start of the file.
    pub offset: u32,
    /// Length of the data.
    pub length: u32,
    /// Entry version (L4T: BSP version as hex digits, e.g. 0x3620 for R36.2.0).
    pub version: u32,
    /// Which fusing the entry is for.
    pub op_mode: OpMode,
    /// TNSPEC the entry is for; empty = common to all boards.
    pub spec: String,
}

/// A parsed BUP: header and entry table (the data stays where it is).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bup {
    /// Header.
    pub header: BupHeader,
    /// Entry table.
    pub entries: Vec<BupEntry>,
}

/// What the builder needs to know about one entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Partition base name.
    pub partition: String,
    /// Entry version.
    pub version: u32,
    /// Fusing.
    pub op_mode: OpMode,
    /// TNSPEC, empty (or `common`) for all boards.
    pub spec: String,
    /// Length of the data that will follow.
    pub length: u32,
}

fn header_err(field: &'static str, offset: u64, value: u64, reason: impl Into<String>) -> BupError {
    BupError::Header {
        field,
        offset,
        value,
        reason: reason.into(),
    }
}

impl Bup {
    /// Parses a whole BUP held in memory.
    pub fn parse(data: &[u8]) -> Result<Bup, BupError> {
        Bup::parse_index(data, data.len() as u64)
    }

    /// Parses header and table from `prefix` (at least [`Bup::index_len`] bytes of the file)
    /// and checks every entry against `file_len`, the length of the whole file.
    pub fn parse_index(prefix: &[u8], file_len: u64) -> Result<Bup, BupError> {
        let need = |what: &str, offset: u64, end: u64| -> Result<(), BupError> {
            if end > prefix.len() as u64 || end > file_len {
                Err(BupError::Truncated {
                    what: what.to_string(),
                    offset,
                    end,
                    len: file_len.min(prefix.len() as u64),
                })
            } else {
                Ok(())
            }
        };
        need("magic", 0, 16)?;
        let format = BupFormat::from_magic(&prefix[..16]).ok_or_else(|| BupError::BadMagic {
            found: String::from_utf8_lossy(&prefix[..16]).into_owned(),
        })?;
        need("header", 0, u64::from(LEGACY_HEADER_LEN))?;
        let rd = |off: usize| le_u32(prefix, off).unwrap_or(0);
        let version = BupVersion(rd(16));
        let blob_size = rd(20);
        let header_size = rd(24);
        let entry_count = rd(28);
        let blob_type = rd(32);

        match format {
            // tegra-boot-tools: major 2, minor <= 1.
            BupFormat::V2 if version.major() != 2 || version.minor() > 1 => {
                return Err(header_err(
                    "version",
                    16,
                    version.0.into(),
                    format!("V2 payloads must be version 2.0 or 2.1, this is {version}"),
                ))
            }
            _ => {}
        }
        if blob_type != 0 {
            let what = if blob_type == 1 {
                "a BMP (splash image) blob, not an update payload"
            } else {
                "unknown blob type (0 = update)"
            };
            return Err(header_err("blob_type", 32, blob_type.into(), what));
        }
        let min_header = match format {
            BupFormat::V2 => LEGACY_HEADER_LEN,
            BupFormat::V3 => HEADER_LEN,
        };
        if header_size < min_header {
            return Err(header_err(
                "header_size",
                24,
                header_size.into(),
                format!("must be at least {min_header}"),
            ));
        }
        if header_size != LEGACY_HEADER_LEN && header_size < HEADER_LEN {
            return Err(header_err(
                "header_size",
                24,
                header_size.into(),
                format!("must be {LEGACY_HEADER_LEN} (legacy) or at least {HEADER_LEN}"),
            ));
        }
        if u64::from(blob_size) > file_len {
            return Err(header_err(
                "blob_size",
                20,
                blob_size.into(),
                format!("payload claims {blob_size} bytes but the file has {file_len}"),
            ));
        }
        let entry_len = u64::from(format.entry_len());
        let table_end = u64::from(header_size) + u64::from(entry_count) * entry_len;
        if table_end > u64::from(blob_size) {
            return Err(header_err(
                "entry_count",
                28,
                entry_count.into(),
                format!(
                    "{entry_count} entries end at byte {table_end}, beyond blob_size {blob_size}"
                ),
            ));
        }
        need("header accessory", 0, u64::from(header_size))?;
        let uncomp_size = (header_size >= HEADER_LEN).then(|| rd(36));
        let accessory = if header_size > HEADER_LEN {
            prefix[HEADER_LEN as usize..header_size as usize].to_vec()
        } else {
            Vec::new()
        };
        need("entry table", u64::from(header_size), table_end)?;

        let mut entries = Vec::with_capacity(entry_count as usize);
        let mut data_total: u64 = 0;
        for index in 0..entry_count as usize {
            let base = u64::from(header_size) + index as u64 * entry_len;
            let b = base as usize;
            let e = parse_entry(format, &prefix[b..b + entry_len as usize], index, base)?;
            let end = u64::from(e.offset) + u64::from(e.length);
            let entry_err = |field: &'static str, off: u64, reason: String| BupError::Entry {
                index,
                partition: e.partition.clone(),
                field,
                offset: off,
                reason,
            };
            if end > u64::from(blob_size) {
                return Err(entry_err(
                    "length",
                    base + 44,
                    format!("data {}..{end} runs past blob_size {blob_size}", e.offset),
                ));
            }
            if e.length > 0 && u64::from(e.offset) < table_end {
                return Err(entry_err(
                    "offset",
                    base + 40,
                    format!(
                        "data at {} overlaps the header/entry table (which ends at {table_end})",
                        e.offset
                    ),
                ));
            }
            data_total += u64::from(e.length);
            entries.push(e);
        }
        // edk2-nvidia FwPackageValidateImageInfoArray: the package is exactly
        // header + table + data; a capsule with anything else is refused.
        if format == BupFormat::V3 && table_end + data_total != u64::from(blob_size) {
            return Err(header_err(
                "blob_size",
                20,
                blob_size.into(),
                format!(
                    "V3 payload size must equal header+table+data = {}",
                    table_end + data_total
                ),
            ));
        }
        Ok(Bup {
            header: BupHeader {
                format,
                version,
                blob_size,
                header_size,
                entry_count,
                blob_type,
                uncomp_size,
                accessory,
            },
            entries,
        })
    }

    /// Reads header and table from a seekable file without reading the entry data.
    pub fn read_from<R: Read + Seek>(r: &mut R) -> Result<Bup, BupError> {
        let file_len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        let mut head = vec![0u8; (HEADER_LEN as u64).min(file_len) as usize];
        r.read_exact(&mut head)?;
        if head.len() < LEGACY_HEADER_LEN as usize {
            return Bup::parse_index(&head, file_len);
        }
        let format = BupFormat::from_magic(&head[..16]);
        let header_size = u64::from(le_u32(&head, 24).unwrap_or(0));
        let count = u64::from(le_u32(&head, 28).unwrap_or(0));
        let entry_len = u64::from(format.map(|f| f.entry_len()).unwrap_or(0));
        // Never trust the header for the allocation size: cap it by the file length.
        let want = (header_size + count * entry_len).min(file_len);
        let mut prefix = head;
        if want > prefix.len() as u64 {
            let mut rest = vec![0u8; (want - prefix.len() as u64) as usize];
            r.read_exact(&mut rest)?;
            prefix.extend_from_slice(&rest);
        }
        Bup::parse_index(&prefix, file_len)
    }

    /// Number of bytes taken by header, accessory and table.
    pub fn index_len(&self) -> u64 {
        u64::from(self.header.header_size)
            + u64::from(self.header.entry_count) * u64::from(self.header.format.entry_len())
    }

    /// Serialises header, accessory and entry table exactly as they are on disk.
    pub fn encode_index(&self) -> Vec<u8> {
        let h = &self.header;
        let mut out = Vec::with_capacity(self.index_len() as usize);
        out.extend_from_slice(h.format.magic());
        for v in [
            h.version.0,
            h.blob_size,
            h.header_size,
            h.entry_count,
            h.blob_type,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(u) = h.uncomp_size {
            out.extend_from_slice(&u.to_le_bytes());
        }
        out.extend_from_slice(&h.accessory);
        for e in &self.entries {
            put_padded(&mut out, &e.partition, PARTITION_FIELD_LEN);
            for v in [e.offset, e.length, e.version, e.op_mode.code()] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            put_padded(&mut out, &e.spec, h.format.spec_field_len());
        }
        out
    }

    /// Lays out a new BUP: header, table and data offsets for `entries` in order, as
    /// NVIDIA's `BUP_generator.py` does (data back to back, no alignment).
    pub fn layout(
        format: BupFormat,
        version: u32,
        accessory: Vec<u8>,
        entries: &[EntryMeta],
    ) -> Result<Bup, BupError> {
        let header_size = u64::from(HEADER_LEN) + accessory.len() as u64;
        let table_end = header_size + entries.len() as u64 * u64::from(format.entry_len());
        let mut offset = table_end;
        let mut out = Vec::with_capacity(entries.len());
        for (index, m) in entries.iter().enumerate() {
            let build_err = |reason: String| BupError::Build {
                index,
                partition: m.partition.clone(),
                reason,
            };
            validate_name(&m.partition, format.max_partition_len(), "partition name")
                .map_err(build_err)?;
            let spec = if m.spec == "common" {
                ""
            } else {
                m.spec.as_str()
            };
            validate_name(spec, format.max_spec_len(), "spec").map_err(build_err)?;
            if m.partition.is_empty() {
                return Err(build_err("partition name is empty".into()));
            }
            let off = u32::try_from(offset).map_err(|_| {
                build_err(format!(
                    "data would start at {offset}, beyond the 4 GiB limit"
                ))
            })?;
            out.push(BupEntry {
                index,
                partition: m.partition.clone(),
                offset: off,
                length: m.length,
                version: m.version,
                op_mode: m.op_mode,
                spec: spec.to_string(),
            });
            offset += u64::from(m.length);
        }
        let blob_size = u32::try_from(offset).map_err(|_| BupError::Build {
            index: entries.len().saturating_sub(1),
            partition: entries
                .last()
                .map(|m| m.partition.clone())
                .unwrap_or_default(),
            reason: format!("payload would be {offset} bytes, beyond the 4 GiB limit"),
        })?;
        Ok(Bup {
            header: BupHeader {
                format,
                version: BupVersion(version),
                blob_size,
                header_size: header_size as u32,
                entry_count: entries.len() as u32,
                blob_type: 0,
                // BUP_generator.py writes the blob size into uncomp_size too.
                uncomp_size: Some(blob_size),
                accessory,
            },
            entries: out,
        })
    }

    /// Writes a BUP laid out by [`Bup::layout`]: the index, then exactly `length` bytes from
    /// each reader in table order. Streams; never holds an entry in memory.
    pub fn write_with<W, R, F>(&self, w: &mut W, mut open: F) -> Result<(), BupError>
    where
        W: Write,
        R: Read,
        F: FnMut(&BupEntry) -> io::Result<R>,
    {
        w.write_all(&self.encode_index())?;
        for e in &self.entries {
            let r = open(e)?;
            let copied = io::copy(&mut r.take(u64::from(e.length)), w)?;
            if copied != u64::from(e.length) {
                return Err(BupError::Build {
                    index: e.index,
                    partition: e.partition.clone(),
                    reason: format!(
                        "data source gave {copied} bytes, {} were announced",
                        e.length
                    ),
                });
            }
        }
        Ok(())
    }

    /// Builds a whole BUP in memory from `(meta, data)` pairs (`meta.length` is taken from
    /// the data).
    pub fn build(
        format: BupFormat,
        version: u32,
        accessory: Vec<u8>,
        entries: &[(EntryMeta, &[u8])],
    ) -> Result<Vec<u8>, BupError> {
        let mut metas = Vec::with_capacity(entries.len());
        for (i, (m, d)) in entries.iter().enumerate() {
            let length = u32::try_from(d.len()).map_err(|_| BupError::Build {
                index: i,
                partition: m.partition.clone(),
                reason: "data is larger than 4 GiB".into(),
            })?;
            metas.push(EntryMeta {
                length,
                ..m.clone()
            });
        }
        let bup = Bup::layout(format, version, accessory, &metas)?;
        let mut out = Vec::with_capacity(bup.header.blob_size as usize);
        bup.write_with(&mut out, |e| Ok(entries[e.index].1))?;
        Ok(out)
    }

    /// The data of an entry, from the whole payload in memory.
    pub fn entry_data<'a>(&self, data: &'a [u8], entry: &BupEntry) -> Option<&'a [u8]> {
        let start = entry.offset as usize;
        data.get(start..start.checked_add(entry.length as usize)?)
    }

    /// Entries for a partition name, in table order.
    pub fn entries_for<'a>(&'a self, partition: &'a str) -> impl Iterator<Item = &'a BupEntry> {
        self.entries
            .iter()
            .filter(move |e| e.partition == partition)
    }

    /// Distinct partition names, in order of first appearance.
    pub fn partitions(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for e in &self.entries {
            if !seen.contains(&e.partition.as_str()) {
                seen.push(&e.partition);
            }
        }
        seen
    }
}

fn validate_name(s: &str, max: usize, what: &str) -> Result<(), String> {
    if s.len() > max {
        return Err(format!(
            "{what} `{s}` is {} bytes, at most {max} fit",
            s.len()
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "{what} `{s}` contains {c:?}; only printable ASCII without spaces is allowed"
        ));
    }
    Ok(())
}

fn parse_entry(
    format: BupFormat,
    raw: &[u8],
    index: usize,
    base: u64,
) -> Result<BupEntry, BupError> {
    let bad = |partition: &str, field: &'static str, off: u64, reason: String| BupError::Entry {
        index,
        partition: partition.to_string(),
        field,
        offset: base + off,
        reason,
    };
    let cstr_reason = |e: CStrError, what: &str| match e {
        CStrError::BadByte(i, c) => (i, format!("{what} has byte {c:#04x} at position {i}")),
        CStrError::Trailing(i) => (i, format!("{what} has data after its end, at position {i}")),
    };
    let partition = padded_ascii(&raw[..PARTITION_FIELD_LEN]).map_err(|e| {
        let (i, r) = cstr_reason(e, "partition name");
        bad("?", "partition", i as u64, r)
    })?;
    if partition.is_empty() {
        return Err(bad("?", "partition", 0, "partition name is empty".into()));
    }
    if partition.len() > format.max_partition_len() {
        return Err(bad(
            &partition,
            "partition",
            0,
            format!(
                "name is {} bytes, {format} allows {}",
                partition.len(),
                format.max_partition_len()
            ),
        ));
    }
    let rd = |off: usize| le_u32(raw, off).unwrap_or(0);
    let (offset, length, version, op_raw) = (rd(40), rd(44), rd(48), rd(52));
    let op_mode = OpMode::from_code(op_raw).ok_or_else(|| {
        bad(
            &partition,
            "op_mode",
            52,
            format!("{op_raw} is not 0 (common), 1 (non-production) or 2 (production)"),
        )
    })?;
    let spec = padded_ascii(&raw[56..]).map_err(|e| {
        let (i, r) = cstr_reason(e, "spec");
        bad(&partition, "spec", 56 + i as u64, r)
    })?;
    if spec.len() > format.max_spec_len() {
        return Err(bad(
            &partition,
            "spec",
            56,
            format!(
                "spec is {} bytes, {format} allows {}",
                spec.len(),
                format.max_spec_len()
            ),
        ));
    }
    Ok(BupEntry {
        index,
        partition,
        offset,
        length,
        version,
        op_mode,
        spec,
    })
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd number of hex digits"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("bad hex digit"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
