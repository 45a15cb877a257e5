//! R32 slot metadata (SMD): the cboot A/B "bootloader scoreboard" on TX2/Xavier.
//!
//! Stored at the start of the `SMD` and `SMD_b` partitions of the boot device (both copies
//! are written). Layout, little-endian, packed:
//!
//! ```text
//! 0  magic[4] = "\0NBC"    4 version u8   5 flags u8   6 maxslots u16
//! 8  slot_info[2] x { priority u8, suffix[2], retry_count u8, successful u8 }
//! 18 crc32 = zlib crc32 of bytes 0..18 (checked from version 3)
//! 22 extension (version >= 4):
//!    crc32 u32 | len u32 | magic "ENBC" | version u32 |
//!    rootfs_ab { selection u8, status[2], update_mode[2], reserved[3] } |
//!    max_bl_retry_count u8 | log { version, begin, end, reserved u32, 16 x {event, time u32} }
//!    crc32 = crc32 of `len` bytes starting at the `len` field; len <= 165.
//! ```

use crate::bytes::{le_u16, le_u32};
use serde::{Deserialize, Serialize};

/// Magic of the main structure.
pub const SMD_MAGIC: [u8; 4] = *b"\0NBC";
/// Magic of the version-4 extension.
pub const EXT_MAGIC: [u8; 4] = *b"ENBC";
/// Length of the main structure.
pub const SMD_LEN: usize = 22;
/// Full length of the extension structure.
pub const EXT_FULL_LEN: usize = 169;
/// Largest `len` of the extension (everything after its crc32).
pub const EXT_MAX_COVERED: u32 = (EXT_FULL_LEN - 4) as u32;
/// Lowest and highest SMD versions in the field.
pub const SMD_VERSIONS: std::ops::RangeInclusive<u8> = 1..=5;

/// Redundancy flag: bootloader A/B.
pub const FLAG_RED_BL: u8 = 1 << 0;
/// Redundancy flag: user (rootfs/kernel) A/B.
pub const FLAG_RED_USER: u8 = 1 << 1;
/// Redundancy flag: rootfs A/B.
pub const FLAG_RED_ROOTFS: u8 = 1 << 2;
/// Redundancy flag (version 5, R32.6+): bootloader and rootfs switch together.
pub const FLAG_RED_UNIFIED: u8 = 1 << 5;

/// Highest slot priority (the active slot).
pub const MAX_PRIORITY: u8 = 15;
/// Retry count a slot gets when it is activated or marked successful.
pub const MAX_RETRY: u8 = 7;

/// A problem in an SMD copy, naming the field and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmdError {
    /// Not enough bytes.
    #[error("SMD truncated: {what} needs bytes {offset}..{end}, only {len} present")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Start offset.
        offset: usize,
        /// End offset.
        end: usize,
        /// Bytes present.
        len: usize,
    },
    /// A field has a bad value.
    #[error("SMD field `{field}` at offset {offset}: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// Byte offset.
        offset: usize,
        /// Why.
        reason: String,
    },
    /// A CRC does not match.
    #[error("SMD {what} CRC at offset {offset} is {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// `smd` or `extension`.
        what: &'static str,
        /// Offset of the stored CRC.
        offset: usize,
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
}

/// One boot slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// 0..=15, highest boots first.
    pub priority: u8,
    /// Two suffix bytes, normally `_a` / `_b`.
    pub suffix: [u8; 2],
    /// Boot attempts left, 0..=7.
    pub retry_count: u8,
    /// 1 once the slot booted and was marked successful.
    pub successful: u8,
}

impl SlotInfo {
    /// The suffix as text (lossy).
    pub fn suffix_str(&self) -> String {
        String::from_utf8_lossy(&self.suffix).into_owned()
    }
}

/// The rootfs A/B part of the extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsAb {
    /// Rootfs selection byte.
    pub selection: u8,
    /// Per-slot rootfs status.
    pub status: [u8; 2],
    /// Per-slot update mode.
    pub update_mode: [u8; 2],
    /// Reserved bytes (kept so that a copy round-trips exactly).
    pub reserved: [u8; 3],
}

/// The boot log ring of the extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdLog {
    /// Log format version.
    pub version: u32,
    /// First valid index.
    pub begin_index: u32,
    /// One past the last valid index.
    pub end_index: u32,
    /// Reserved.
    pub reserved: u32,
    /// (event, time) pairs.
    pub entries: [(u32, u32); 16],
}

/// The version-4 extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdExtension {
    /// Bytes covered by the CRC, from the `len` field on.
    pub len: u32,
    /// Extension version.
    pub version: u32,
    /// Rootfs A/B state.
    pub rootfs_ab: RootfsAb,
    /// Bootloader retry limit.
    pub max_bl_retry_count: u8,
    /// Boot log.
    pub log: SmdLog,
}

/// Redundancy level, as tegra-boot-tools and nvbootctrl derive it from the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Redundancy {
    /// One slot.
    Off,
    /// Bootloader A/B only.
    BootloaderOnly,
    /// Bootloader and rootfs A/B.
    Full,
}

/// One copy of the slot metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Smd {
    /// Format version (1..=5).
    pub version: u8,
    /// Redundancy flags (nvbootctrl prints them as "features").
    pub flags: u8,
    /// Number of slots in use.
    pub max_slots: u16,
    /// Slot A and B.
    pub slots: [SlotInfo; 2],
    /// Present from version 4.
    pub ext: Option<SmdExtension>,
}

fn field(field: &'static str, offset: usize, reason: impl Into<String>) -> SmdError {
    SmdError::Field {
        field,
        offset,
        reason: reason.into(),
    }
}

impl Smd {
    /// Factory state for two slots: A active (priority 15), B 14, both successful, retry 7.
    pub fn new_ab(version: u8, flags: u8) -> Smd {
        let slot = |priority, s: &[u8; 2]| SlotInfo {
            priority,
            suffix: *s,
            retry_count: MAX_RETRY,
            successful: 1,
        };
        Smd {
            version,
            flags,
            max_slots: 2,
            slots: [slot(15, b"_a"), slot(14, b"_b")],
            ext: (version >= 4).then(|| SmdExtension {
                len: EXT_MAX_COVERED,
                version: 1,
                rootfs_ab: RootfsAb::default(),
                max_bl_retry_count: MAX_RETRY,
                log: SmdLog::default(),
            }),
        }
    }

    /// Parses one copy (e.g. the first bytes of the `SMD` partition).
    pub fn parse(b: &[u8]) -> Result<Smd, SmdError> {
        if b.len() < SMD_LEN {
            return Err(SmdError::Truncated {
                what: "slot metadata",
                offset: 0,
                end: SMD_LEN,
                len: b.len(),
            });
        }
        if b[..4] != SMD_MAGIC {
            return Err(field(
                "magic",
                0,
                format!("is {:02x?}, expected 00 4e 42 43 (\"\\0NBC\")", &b[..4]),
            ));
        }
        let version = b[4];
        if !SMD_VERSIONS.contains(&version) {
            return Err(field(
                "version",
                4,
                format!("{version} is not a known SMD version (1..=5)"),
            ));
        }
        let flags = b[5];
        let max_slots = le_u16(b, 6).unwrap_or(0);
        if max_slots > 2 {
            return Err(field(
                "maxslots",
                6,
                format!("{max_slots} slots; the structure holds 2"),
            ));
        }
        let slot = |i: usize| -> Result<SlotInfo, SmdError> {
            let o = 8 + i * 5;
            let s = SlotInfo {
                priority: b[o],
                suffix: [b[o + 1], b[o + 2]],
                retry_count: b[o + 3],
                successful: b[o + 4],
            };
            if s.priority > MAX_PRIORITY {
                return Err(field("priority", o, format!("{} > 15", s.priority)));
            }
            if s.retry_count > MAX_RETRY {
                return Err(field(
                    "retry_count",
                    o + 3,
                    format!("{} > 7", s.retry_count),
                ));
            }
            if s.successful > 1 {
                return Err(field(
                    "successful",
                    o + 4,
                    format!("{} is not 0 or 1", s.successful),
                ));
            }
            Ok(s)
        };
        let slots = [slot(0)?, slot(1)?];
        if version >= 3 {
            let stored = le_u32(b, 18).unwrap_or(0);
            let computed = crc32fast::hash(&b[..18]);
            if stored != computed {
                return Err(SmdError::Crc {
                    what: "slot metadata",
                    offset: 18,
                    stored,
                    computed,
                });
            }
        }
        let ext = if version >= 4 {
            Some(parse_ext(&b[SMD_LEN..])?)
        } else {
            None
        };
        Ok(Smd {
            version,
            flags,
            max_slots,
            slots,
            ext,
        })
    }

    /// Serialises this copy with fresh CRCs (22 bytes, plus `4 + ext.len` from version 4).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(SMD_LEN + EXT_FULL_LEN);
        b.extend_from_slice(&SMD_MAGIC);
        b.push(self.version);
        b.push(self.flags);
        b.extend_from_slice(&self.max_slots.to_le_bytes());
        for s in &self.slots {
            b.extend_from_slice(&[
                s.priority,
                s.suffix[0],
                s.suffix[1],
                s.retry_count,
                s.successful,
            ]);
        }
        let crc = if self.version >= 3 {
            crc32fast::hash(&b)
        } else {
            0
        };
        b.extend_from_slice(&crc.to_le_bytes());
        if let (true, Some(e)) = (self.version >= 4, &self.ext) {
            let mut x = Vec::with_capacity(EXT_FULL_LEN - 4);
            x.extend_from_slice(&e.len.to_le_bytes());
            x.extend_from_slice(&EXT_MAGIC);
            x.extend_from_slice(&e.version.to_le_bytes());
            let r = &e.rootfs_ab;
            x.push(r.selection);
            x.extend_from_slice(&r.status);
            x.extend_from_slice(&r.update_mode);
            x.extend_from_slice(&r.reserved);
            x.push(e.max_bl_retry_count);
            for v in [
                e.log.version,
                e.log.begin_index,
                e.log.end_index,
                e.log.reserved,
            ] {
                x.extend_from_slice(&v.to_le_bytes());
            }
            for (ev, t) in e.log.entries {
                x.extend_from_slice(&ev.to_le_bytes());
                x.extend_from_slice(&t.to_le_bytes());
            }
            x.truncate(e.len.min(EXT_MAX_COVERED) as usize);
            b.extend_from_slice(&crc32fast::hash(&x).to_le_bytes());
            b.extend_from_slice(&x);
        }
        b
    }

    /// Redundancy level (tegra-boot-tools `smd_redundancy_level`, plus the v5 unified flag).
    pub fn redundancy(&self) -> Redundancy {
        if self.max_slots < 2 {
            return Redundancy::Off;
        }
        if self.flags & FLAG_RED_UNIFIED != 0 || self.flags & 3 == 3 {
            Redundancy::Full
        } else if self.flags & 3 == FLAG_RED_BL {
            Redundancy::BootloaderOnly
        } else {
            Redundancy::Off
        }
    }

    /// The slot cboot will try first: highest priority with retries left and (when the
    /// other has no retries) the only bootable one. `None` if neither can boot.
    pub fn boot_slot(&self) -> Option<usize> {
        let bootable = |i: usize| {
            let s = &self.slots[i];
            s.priority > 0 && (s.retry_count > 0 || s.successful == 1)
        };
        let n = usize::from(self.max_slots.clamp(1, 2));
        (0..n)
            .filter(|&i| bootable(i))
            .max_by_key(|&i| (self.slots[i].priority, std::cmp::Reverse(i)))
    }

    /// `nvbootctrl set-active-boot-slot`: priority 15 for `slot`, 14 for the other; the new
    /// slot gets 7 retries and must prove itself (successful = 0).
    pub fn mark_active(&mut self, slot: usize) {
        let o = 1 - slot.min(1);
        let s = slot.min(1);
        self.slots[s].priority = MAX_PRIORITY;
        self.slots[o].priority = MAX_PRIORITY - 1;
        self.slots[s].retry_count = MAX_RETRY;
        self.slots[s].successful = 0;
    }

    /// `nvbootctrl mark-boot-successful` for `slot`; when it is the current slot it also
    /// becomes the highest priority.
    pub fn mark_successful(&mut self, slot: usize, current: usize) {
        let s = slot.min(1);
        let o = 1 - s;
        self.slots[s].successful = 1;
        self.slots[s].retry_count = MAX_RETRY;
        if current == s {
            self.slots[s].priority = MAX_PRIORITY;
            if self.slots[o].priority >= MAX_PRIORITY {
                self.slots[o].priority = MAX_PRIORITY - 1;
            }
        }
    }
}

fn parse_ext(b: &[u8]) -> Result<SmdExtension, SmdError> {
    // Offsets in errors are from the start of the SMD copy.
    const BASE: usize = SMD_LEN;
    if b.len() < 16 {
        return Err(SmdError::Truncated {
            what: "extension header",
            offset: BASE,
            end: BASE + 16,
            len: BASE + b.len(),
        });
    }
    let stored = le_u32(b, 0).unwrap_or(0);
    let len = le_u32(b, 4).unwrap_or(0);
    if !(12..=EXT_MAX_COVERED).contains(&len) {
        return Err(field(
            "ext.len",
            BASE + 4,
            format!("{len} is outside 12..={EXT_MAX_COVERED}"),
        ));
    }
    let covered_end = 4 + len as usize;
    if b.len() < covered_end {
        return Err(SmdError::Truncated {
            what: "extension",
            offset: BASE,
            end: BASE + covered_end,
            len: BASE + b.len(),
        });
    }
    let computed = crc32fast::hash(&b[4..covered_end]);
    if stored != computed {
        return Err(SmdError::Crc {
            what: "extension",
            offset: BASE,
            stored,
            computed,
        });
    }
    if b[8..12] != EXT_MAGIC {
        return Err(field(
            "ext.magic",
            BASE + 8,
            format!("is {:02x?}, expected \"ENBC\"", &b[8..12]),
        ));
    }
    // Bytes not covered by `len` were never written: read them as zero.
    let mut full = [0u8; EXT_FULL_LEN];
    full[..covered_end].copy_from_slice(&b[..covered_end]);
    let u = |o: usize| le_u32(&full, o).unwrap_or(0);
    let mut entries = [(0u32, 0u32); 16];
    for (i, e) in entries.iter_mut().enumerate() {
        *e = (u(41 + i * 8), u(45 + i * 8));
    }
    Ok(SmdExtension {
        len,
        version: u(12),
        rootfs_ab: RootfsAb {
            selection: full[16],
            status: [full[17], full[18]],
            update_mode: [full[19], full[20]],
            reserved: [full[21], full[22], full[23]],
        },
        max_bl_retry_count: full[24],
        log: SmdLog {
            version: u(25),
            begin_index: u(29),
            end_index: u(33),
            reserved: u(37),
            entries,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn factory_v3_matches_nvbootctrl_sample() {
        // nvbootctrl dump-slots-info on an R32 Xavier NX: version 3, features 3,
        // slot 0 prio 15 _a retry 7 ok, slot 1 prio 14 _b retry 7 ok
        let smd = Smd::new_ab(3, 3);
        let b = smd.to_bytes();
        assert_eq!(b.len(), 22);
        assert_eq!(&b[..8], b"\0NBC\x03\x03\x02\x00");
        assert_eq!(&b[8..18], b"\x0f_a\x07\x01\x0e_b\x07\x01");
        assert_eq!(
            u32::from_le_bytes(b[18..22].try_into().unwrap()),
            crc32fast::hash(&b[..18])
        );
        assert_eq!(Smd::parse(&b).unwrap(), smd);
        assert_eq!(smd.redundancy(), Redundancy::Full);
        assert_eq!(smd.boot_slot(), Some(0));
    }

    #[test]
    fn v4_extension_round_trips_and_is_crc_checked() {
        let mut smd = Smd::new_ab(4, 3);
        if let Some(e) = smd.ext.as_mut() {
            e.rootfs_ab.status = [0, 0xff];
            e.log.entries[3] = (7, 12345);
        }
        let b = smd.to_bytes();
        assert_eq!(b.len(), 22 + 169);
        assert_eq!(&b[30..34], b"ENBC");
        let back = Smd::parse(&b).unwrap();
        assert_eq!(back, smd);
        assert_eq!(back.to_bytes(), b);
        // the extension CRC is over `len` bytes starting at the len field
        assert_eq!(
            u32::from_le_bytes(b[22..26].try_into().unwrap()),
            crc32fast::hash(&b[26..26 + 165])
        );
        let mut bad = b.clone();
        bad[100] ^= 1;
        assert!(matches!(
            Smd::parse(&bad),
            Err(SmdError::Crc {
                what: "extension",
                ..
            })
        ));
    }

    #[test]
    fn short_extension_len_round_trips() {
        let mut smd = Smd::new_ab(4, 3);
        if let Some(e) = smd.ext.as_mut() {
            e.len = 21; // up to and including max_bl_retry_count
        }
        let b = smd.to_bytes();
        assert_eq!(b.len(), 22 + 4 + 21);
        let back = Smd::parse(&b).unwrap();
        assert_eq!(back.to_bytes(), b);
        assert_eq!(back.ext.unwrap().max_bl_retry_count, 7);
    }

    #[test]
    fn errors_name_field_and_offset() {
        let good = Smd::new_ab(3, 3).to_bytes();
        let mut b = good.clone();
        b[1] = b'X';
        assert!(Smd::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`magic` at offset 0"));
        let mut b = good.clone();
        b[4] = 9;
        assert!(Smd::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`version` at offset 4"));
        let mut b = good.clone();
        b[13] = 16;
        assert!(Smd::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("`priority` at offset 13"));
        let mut b = good.clone();
        b[11] = 8;
        let e = Smd::parse(&b).unwrap_err().to_string();
        assert!(e.contains("`retry_count` at offset 11"), "{e}");
        let mut b = good.clone();
        b[16] = 2; // retry of slot 1, still valid, but the CRC no longer matches
        assert!(Smd::parse(&b)
            .unwrap_err()
            .to_string()
            .contains("CRC at offset 18"));
        assert!(Smd::parse(&good[..21])
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        // version 2 has no CRC check
        let mut v2 = Smd::new_ab(2, 1).to_bytes();
        v2[20] = 0x55;
        assert_eq!(Smd::parse(&v2).unwrap().version, 2);
    }

    #[test]
    fn slot_operations_follow_cboot() {
        let mut smd = Smd::new_ab(3, 3);
        smd.mark_active(1);
        assert_eq!((smd.slots[1].priority, smd.slots[0].priority), (15, 14));
        assert_eq!(smd.slots[1].successful, 0);
        assert_eq!(smd.boot_slot(), Some(1));
        // slot 1 burns its retries without being marked: cboot falls back to slot 0
        smd.slots[1].retry_count = 0;
        assert_eq!(smd.boot_slot(), Some(0));
        smd.slots[1].retry_count = 3;
        smd.mark_successful(1, 1);
        assert_eq!(
            smd.slots[1],
            SlotInfo {
                priority: 15,
                suffix: *b"_b",
                retry_count: 7,
                successful: 1
            }
        );
        assert_eq!(smd.slots[0].priority, 14);
    }

    #[test]
    fn redundancy_levels() {
        let r = |flags, slots| {
            let mut s = Smd::new_ab(5, flags);
            s.max_slots = slots;
            s.redundancy()
        };
        assert_eq!(r(0, 2), Redundancy::Off);
        assert_eq!(r(2, 2), Redundancy::Off);
        assert_eq!(r(1, 2), Redundancy::BootloaderOnly);
        assert_eq!(r(3, 2), Redundancy::Full);
        assert_eq!(r(FLAG_RED_UNIFIED | 1, 2), Redundancy::Full);
        assert_eq!(r(3, 1), Redundancy::Off);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Smd::parse(&data);
        }

        #[test]
        fn mutated_never_panics(i in 0usize..191, v in any::<u8>(), fix_crc in any::<bool>()) {
            let mut b = Smd::new_ab(4, 3).to_bytes();
            b[i] = v;
            if fix_crc {
                let c = crc32fast::hash(&b[..18]);
                b[18..22].copy_from_slice(&c.to_le_bytes());
            }
            if let Ok(s) = Smd::parse(&b) {
                let _ = s.boot_slot();
                let _ = s.to_bytes();
            }
        }
    }
}
