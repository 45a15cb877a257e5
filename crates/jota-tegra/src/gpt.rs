//! GUID partition tables as the Tegra flash tools write them.
//!
//! A disk (NVMe, eMMC user area) gets the usual protective MBR, primary GPT at LBA 1 and
//! backup GPT in the last sectors. The T234 QSPI has no primary GPT at all (the boot ROM owns
//! LBA 0: BCT); only the backup GPT at the end of the flash, which is what the OS reads
//! (`TEGRA_OTA_GPT_DEVICE=/dev/mtdblock0`). Entry *numbers* matter on Jetson (`APP` is
//! `nvme0n1p1` although it lies last), so entries sit at the array index of their number.
//! General-purpose GPT crates compact the array and refuse partitions at LBA 0, hence this
//! small implementation.

use crate::bytes::{le_u32, le_u64};
use crate::guid::Guid;
use crate::layout::Resolved;
use serde::Serialize;
use std::io::{self, Read, Seek, SeekFrom};

/// "Microsoft basic data", what the L4T tools give partitions without a type.
pub const BASIC_DATA_TYPE: Guid = Guid([
    0xeb, 0xd0, 0xa0, 0xa2, 0xb9, 0xe5, 0x44, 0x33, 0x87, 0xc0, 0x68, 0xb6, 0xb7, 0x26, 0x99, 0xc7,
]);
/// EFI system partition.
pub const ESP_TYPE: Guid = Guid([
    0xc1, 0x2a, 0x73, 0x28, 0xf8, 0x1f, 0x11, 0xd2, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
]);

const SIGNATURE: &[u8; 8] = b"EFI PART";
const HEADER_SIZE: u32 = 92;
const ENTRY_SIZE: u32 = 128;
/// Entries in the array (the usual 128, 16 KiB).
pub const NUM_ENTRIES: u32 = 128;

/// Where the table was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// LBA 1.
    Primary,
    /// The last LBA (primary missing or corrupt).
    Backup,
}

/// Which tables to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Protective MBR, primary and backup GPT (disks).
    Full,
    /// Only the backup GPT at the end (T234 QSPI).
    BackupOnly,
}

/// One used entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GptEntry {
    /// Entry number (1-based; `nvme0n1pN`).
    pub number: u32,
    /// Partition name (label).
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique partition GUID (PARTUUID).
    pub unique_guid: Guid,
    /// First sector.
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
}

impl GptEntry {
    /// Byte offset on the disk.
    pub fn offset(&self, sector_size: u64) -> u64 {
        self.first_lba * sector_size
    }
    /// Size in bytes.
    pub fn size(&self, sector_size: u64) -> u64 {
        (self.last_lba + 1 - self.first_lba) * sector_size
    }
}

/// A partition table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gpt {
    /// Disk GUID.
    pub disk_guid: Guid,
    /// Sector size.
    pub sector_size: u64,
    /// First usable LBA.
    pub first_usable: u64,
    /// Last usable LBA.
    pub last_usable: u64,
    /// Used entries, by number.
    pub entries: Vec<GptEntry>,
    /// Where it was read from (`Primary` for a built table).
    pub source: Source,
}

/// A table that cannot be read or built.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    /// Neither header is valid.
    #[error("no valid GPT: primary: {primary}; backup: {backup}")]
    NoTable {
        /// Why the primary was rejected.
        primary: String,
        /// Why the backup was rejected.
        backup: String,
    },
    /// A layout cannot become a table.
    #[error("cannot build GPT: {0}")]
    Build(String),
    /// Reading failed.
    #[error("GPT I/O: {0}")]
    Io(#[from] io::Error),
}

fn entries_sectors(ss: u64) -> u64 {
    (u64::from(NUM_ENTRIES) * u64::from(ENTRY_SIZE)).div_ceil(ss)
}

fn name_utf16(name: &str) -> [u8; 72] {
    let mut out = [0u8; 72];
    for (i, u) in name.encode_utf16().take(36).enumerate() {
        out[i * 2..i * 2 + 2].copy_from_slice(&u.to_le_bytes());
    }
    out
}

impl Gpt {
    /// The table the flash tools would write for a placed layout device: every numbered
    /// partition, GUIDs from the layout when they are GUIDs, otherwise derived from
    /// `disk_guid` and the name (reproducible).
    pub fn from_resolved(r: &Resolved, disk_guid: Guid) -> Result<Gpt, GptError> {
        let ss = r.sector_size;
        let size = r
            .size
            .ok_or_else(|| GptError::Build(format!("size of the {} device is unknown", r.kind)))?;
        let sectors = size / ss;
        let mut entries = Vec::new();
        for p in r.partitions.iter().filter(|p| !p.is_table) {
            let Some(number) = p.number else { continue };
            if number == 0 || number > NUM_ENTRIES {
                return Err(GptError::Build(format!(
                    "{} has entry number {number}, outside 1..={NUM_ENTRIES}",
                    p.name
                )));
            }
            let len = p.size.unwrap_or(0);
            if len == 0 {
                continue;
            }
            let guid_of = |s: &Option<String>| s.as_deref().and_then(|g| g.parse::<Guid>().ok());
            let unique_guid = guid_of(&p.unique_guid).unwrap_or_else(|| {
                let mut seed = disk_guid.0.to_vec();
                seed.extend_from_slice(p.name.as_bytes());
                Guid::from_digest(&crate::bytes::sha256(&seed))
            });
            entries.push(GptEntry {
                number,
                name: p.name.clone(),
                type_guid: guid_of(&p.partition_type_guid).unwrap_or(BASIC_DATA_TYPE),
                unique_guid,
                first_lba: p.start / ss,
                last_lba: (p.start + len) / ss - 1,
                attributes: 0,
            });
        }
        entries.sort_by_key(|e| e.number);
        let tail = 1 + entries_sectors(ss);
        let has_primary = r.partitions.iter().any(|p| p.kind == "primary_gpt");
        let first_usable = if has_primary {
            r.partitions
                .iter()
                .filter(|p| p.kind == "primary_gpt")
                .filter_map(|p| p.end())
                .max()
                .unwrap_or(0)
                .div_ceil(ss)
                .max(2 + entries_sectors(ss))
        } else {
            entries.iter().map(|e| e.first_lba).min().unwrap_or(0)
        };
        Ok(Gpt {
            disk_guid,
            sector_size: ss,
            first_usable,
            last_usable: sectors.saturating_sub(tail + 1),
            entries,
            source: Source::Primary,
        })
    }

    /// Finds an entry by name.
    pub fn find(&self, name: &str) -> Option<&GptEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    fn entry_array(&self) -> Vec<u8> {
        let mut a = vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize];
        for e in &self.entries {
            let o = ((e.number - 1) * ENTRY_SIZE) as usize;
            let s = &mut a[o..o + ENTRY_SIZE as usize];
            s[0..16].copy_from_slice(&e.type_guid.to_mixed_endian());
            s[16..32].copy_from_slice(&e.unique_guid.to_mixed_endian());
            s[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
            s[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
            s[48..56].copy_from_slice(&e.attributes.to_le_bytes());
            s[56..128].copy_from_slice(&name_utf16(&e.name));
        }
        a
    }

    fn header(&self, my_lba: u64, alt_lba: u64, entries_lba: u64, entries_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; self.sector_size as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_mixed_endian());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&NUM_ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The writes (byte offset, bytes) that put this table on a disk of `disk_bytes`.
    pub fn encode(&self, disk_bytes: u64, style: Style) -> Vec<(u64, Vec<u8>)> {
        let ss = self.sector_size;
        let last = disk_bytes / ss - 1;
        let array = self.entry_array();
        let crc = crc32fast::hash(&array);
        let es = entries_sectors(ss);
        let mut w = Vec::new();
        if style == Style::Full {
            let mut mbr = vec![0u8; ss as usize];
            let e = &mut mbr[446..462];
            e[0] = 0x00;
            e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
            e[4] = 0xee;
            e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
            e[8..12].copy_from_slice(&1u32.to_le_bytes());
            let n = u32::try_from(last).unwrap_or(u32::MAX);
            e[12..16].copy_from_slice(&n.to_le_bytes());
            mbr[510] = 0x55;
            mbr[511] = 0xaa;
            w.push((0, mbr));
            w.push((ss, self.header(1, last, 2, crc)));
            w.push((2 * ss, array.clone()));
        }
        w.push(((last - es) * ss, array));
        w.push((last * ss, self.header(last, 1, last - es, crc)));
        w
    }

    /// Reads the table of a disk of `disk_bytes` (primary, else backup).
    pub fn read<R: Read + Seek>(
        r: &mut R,
        disk_bytes: u64,
        sector_size: u64,
    ) -> Result<Gpt, GptError> {
        let ss = sector_size;
        let sectors = disk_bytes / ss;
        let primary = match read_at(r, ss, ss) {
            Ok(h) => parse_header(r, &h, 1, sectors, ss).map(|g| (g, Source::Primary)),
            Err(e) => Err(e.to_string()),
        };
        let (mut g, src) = match primary {
            Ok(x) => x,
            Err(pe) => {
                if sectors < 2 {
                    return Err(GptError::NoTable {
                        primary: pe,
                        backup: "disk too small".into(),
                    });
                }
                let last = sectors - 1;
                match read_at(r, last * ss, ss)
                    .map_err(|e| e.to_string())
                    .and_then(|h| parse_header(r, &h, last, sectors, ss))
                {
                    Ok(g) => (g, Source::Backup),
                    Err(be) => {
                        return Err(GptError::NoTable {
                            primary: pe,
                            backup: be,
                        })
                    }
                }
            }
        };
        g.source = src;
        Ok(g)
    }
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: u64) -> io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(off))?;
    let mut b = vec![0u8; len as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn parse_header<R: Read + Seek>(
    r: &mut R,
    h: &[u8],
    my_lba: u64,
    sectors: u64,
    ss: u64,
) -> Result<Gpt, String> {
    if h.get(0..8) != Some(SIGNATURE.as_slice()) {
        return Err(format!("no \"EFI PART\" signature at LBA {my_lba}"));
    }
    let hsize = le_u32(h, 12).unwrap_or(0);
    if !(HEADER_SIZE..=ss as u32).contains(&hsize) {
        return Err(format!("header size {hsize} at LBA {my_lba} is invalid"));
    }
    let stored = le_u32(h, 16).unwrap_or(0);
    let mut hc = h[..hsize as usize].to_vec();
    hc[16..20].fill(0);
    let computed = crc32fast::hash(&hc);
    if stored != computed {
        return Err(format!(
            "header CRC at LBA {my_lba} is {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let lba = le_u64(h, 24).unwrap_or(0);
    if lba != my_lba {
        return Err(format!("header at LBA {my_lba} says it is at LBA {lba}"));
    }
    let first_usable = le_u64(h, 40).unwrap_or(0);
    let last_usable = le_u64(h, 48).unwrap_or(0);
    let mut dg = [0u8; 16];
    dg.copy_from_slice(&h[56..72]);
    let entries_lba = le_u64(h, 72).unwrap_or(0);
    let n = le_u32(h, 80).unwrap_or(0);
    let esize = le_u32(h, 84).unwrap_or(0);
    if !(128..=4096).contains(&esize) || !esize.is_multiple_of(8) || n == 0 || n > 4096 {
        return Err(format!(
            "entry array of {n} x {esize} bytes is not plausible"
        ));
    }
    let bytes = u64::from(n) * u64::from(esize);
    let end_lba = entries_lba
        .checked_mul(ss)
        .and_then(|b| b.checked_add(bytes))
        .ok_or("entry array offset overflows")?;
    if end_lba > sectors * ss {
        return Err(format!(
            "entry array at LBA {entries_lba} runs past the disk"
        ));
    }
    let array = read_at(r, entries_lba * ss, bytes).map_err(|e| e.to_string())?;
    let acrc = le_u32(h, 88).unwrap_or(0);
    if crc32fast::hash(&array) != acrc {
        return Err(format!("entry array CRC mismatch (header at LBA {my_lba})"));
    }
    let mut entries = Vec::new();
    for i in 0..n as usize {
        let e = &array[i * esize as usize..(i + 1) * esize as usize];
        let mut t = [0u8; 16];
        t.copy_from_slice(&e[0..16]);
        if t == [0u8; 16] {
            continue;
        }
        let mut u = [0u8; 16];
        u.copy_from_slice(&e[16..32]);
        let first_lba = le_u64(e, 32).unwrap_or(0);
        let last_lba = le_u64(e, 40).unwrap_or(0);
        if last_lba < first_lba || last_lba >= sectors {
            return Err(format!(
                "entry {} spans LBA {first_lba}..={last_lba}, outside the disk",
                i + 1
            ));
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        entries.push(GptEntry {
            number: i as u32 + 1,
            name: String::from_utf16_lossy(&units),
            type_guid: Guid::from_mixed_endian(&t),
            unique_guid: Guid::from_mixed_endian(&u),
            first_lba,
            last_lba,
            attributes: le_u64(e, 48).unwrap_or(0),
        });
    }
    Ok(Gpt {
        disk_guid: Guid::from_mixed_endian(&dg),
        sector_size: ss,
        first_usable,
        last_usable,
        entries,
        source: Source::Primary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{builtin, Layout};
    use std::collections::BTreeMap;
    use std::io::Cursor;

    fn disk(g: &Gpt, bytes: u64, style: Style) -> Vec<u8> {
        let mut d = vec![0u8; bytes as usize];
        for (off, b) in g.encode(bytes, style) {
            d[off as usize..off as usize + b.len()].copy_from_slice(&b);
        }
        d
    }

    /// A sparse disk image file (the NVMe layout needs 1.5 GB before APP).
    fn sparse_disk(g: &Gpt, bytes: u64, style: Style) -> std::fs::File {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(bytes).unwrap();
        for (off, b) in g.encode(bytes, style) {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&b).unwrap();
        }
        f
    }

    fn nvme_gpt(bytes: u64) -> Gpt {
        let vars: BTreeMap<String, String> = [
            ("APPSIZE", "8388608"),
            ("RECSIZE", "83886080"),
            ("RECNAME", "recovery"),
            ("RECDTB-NAME", "recovery-dtb"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let l = Layout::parse_with(builtin::T234_NVME_ROOTFS_AB, &vars).unwrap();
        let r = l.devices[0].resolve(Some(bytes)).unwrap();
        Gpt::from_resolved(&r, Guid::from_digest(b"disk-seed-0123456789abcdef")).unwrap()
    }

    #[test]
    fn full_table_round_trips_with_entry_numbers() {
        let bytes = 1536u64 << 20;
        let g = nvme_gpt(bytes);
        let app = g.find("APP").unwrap();
        assert_eq!(app.number, 1);
        assert_eq!(app.first_lba, 3050048);
        assert_eq!(g.find("APP_b").unwrap().number, 2);
        assert_eq!(g.find("A_kernel").unwrap().number, 3);
        assert_eq!(g.find("esp").unwrap().type_guid, ESP_TYPE);
        assert_eq!(g.first_usable, 40);
        let mut f = sparse_disk(&g, bytes, Style::Full);
        assert_eq!(read_at(&mut f, 510, 2).unwrap(), [0x55, 0xaa]);
        let back = Gpt::read(&mut f, bytes, 512).unwrap();
        assert_eq!(back.source, Source::Primary);
        assert_eq!(back.entries, g.entries);
        // corrupt the primary: the backup is used
        use std::io::Write;
        f.seek(SeekFrom::Start(512 + 40)).unwrap();
        f.write_all(&[0x5a]).unwrap();
        let back = Gpt::read(&mut f, bytes, 512).unwrap();
        assert_eq!(back.source, Source::Backup);
        assert_eq!(back.entries, g.entries);
    }

    #[test]
    fn qspi_gets_a_backup_only_table() {
        let l = Layout::parse(builtin::T234_QSPI).unwrap();
        let r = l.devices[0].resolve(None).unwrap();
        let g = Gpt::from_resolved(&r, Guid::from_digest(b"qspi")).unwrap();
        assert_eq!(g.find("BCT").unwrap().first_lba, 0);
        assert_eq!(g.entries.len(), 60);
        let d = disk(&g, 64 << 20, Style::BackupOnly);
        // LBA 0.. belongs to BCT: nothing written there
        assert!(d[..1024].iter().all(|&b| b == 0));
        let back = Gpt::read(&mut Cursor::new(&d), 64 << 20, 512).unwrap();
        assert_eq!(back.source, Source::Backup);
        assert_eq!(back.find("B_VER").unwrap().offset(512), 0x3FD0000);
        assert_eq!(back.find("A_cpu-bootloader").unwrap().size(512), 3670016);
        // the table lives inside the secondary_gpt partition (last 64 KiB)
        assert!(d[..0x3FF0000].iter().all(|&b| b == 0));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let d = vec![0xabu8; 64 * 1024];
        assert!(Gpt::read(&mut Cursor::new(&d), d.len() as u64, 512).is_err());
        assert!(Gpt::read(&mut Cursor::new(&d[..100]), 100, 512).is_err());
        assert!(Gpt::read(&mut Cursor::new(Vec::<u8>::new()), 0, 512).is_err());
    }
}
