//! The text `nvbootctrl dump-slots-info` prints, parsed and written.
//!
//! Three shapes exist (fields separated by a comma and 13 spaces):
//!
//! ```text
//! R35/R36 bootloader (default target)   R35/R36 `-t rootfs`
//! Current version: 35.4.1               Current rootfs slot: B
//! Capsule update status: 1              Active rootfs slot: B
//! Current bootloader slot: A            num_slots: 2
//! Active bootloader slot: A             slot: 0,             retry_count: 0,             status: unbootable
//! num_slots: 2                          slot: 1,             retry_count: 3,             status: normal
//! slot: 0,             status: normal
//! slot: 1,             status: normal
//!
//! R32 (cboot SMD)
//! magic:0x43424e00,             version: 3             features: 3             num_slots: 2
//! slot: 0,             priority: 15,             suffix: _a,             retry_count: 7,             boot_successful: 1
//! ```
//!
//! `Current version: 0.0.0` without a capsule line means an incomplete flash.

use crate::efivar::Slot;
use crate::release::L4tVersion;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The separator nvbootctrl prints between fields.
pub const SEP: &str = ",             ";

/// `Capsule update status` (0 none, 1 success, 2 installed but failed to boot, 3 failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapsuleStatus {
    /// 0: no capsule update recorded.
    None,
    /// 1: the last capsule update succeeded.
    Success,
    /// 2: installed, but the new firmware failed to boot.
    FailedToBoot,
    /// 3: the install failed.
    InstallFailed,
}

impl CapsuleStatus {
    /// Raw value.
    pub fn code(self) -> u32 {
        match self {
            CapsuleStatus::None => 0,
            CapsuleStatus::Success => 1,
            CapsuleStatus::FailedToBoot => 2,
            CapsuleStatus::InstallFailed => 3,
        }
    }
    /// From the raw value.
    pub fn from_code(v: u32) -> Option<Self> {
        match v {
            0 => Some(CapsuleStatus::None),
            1 => Some(CapsuleStatus::Success),
            2 => Some(CapsuleStatus::FailedToBoot),
            3 => Some(CapsuleStatus::InstallFailed),
            _ => None,
        }
    }
}

/// A slot's `status:` word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotStatus {
    /// `normal`
    Normal,
    /// `unbootable`
    Unbootable,
    /// Any other word (kept verbatim).
    Other(String),
}

impl SlotStatus {
    fn parse(s: &str) -> SlotStatus {
        match s {
            "normal" => SlotStatus::Normal,
            "unbootable" => SlotStatus::Unbootable,
            o => SlotStatus::Other(o.to_string()),
        }
    }
    fn as_str(&self) -> &str {
        match self {
            SlotStatus::Normal => "normal",
            SlotStatus::Unbootable => "unbootable",
            SlotStatus::Other(s) => s,
        }
    }
}

/// One slot of the bootloader dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootloaderSlot {
    /// 0 or 1.
    pub slot: u32,
    /// Status.
    pub status: SlotStatus,
}

/// R35/R36 bootloader dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootloaderSlots {
    /// Firmware version (0.0.0 on an incomplete flash).
    pub current_version: Option<L4tVersion>,
    /// Result of the last capsule update.
    pub capsule_update_status: Option<CapsuleStatus>,
    /// Chain that booted.
    pub current: Slot,
    /// Chain for the next boot.
    pub active: Slot,
    /// Slots.
    pub slots: Vec<BootloaderSlot>,
}

/// One slot of the rootfs dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsSlot {
    /// 0 or 1.
    pub slot: u32,
    /// Boot attempts left.
    pub retry_count: u32,
    /// Status.
    pub status: SlotStatus,
}

/// R35/R36 `-t rootfs` dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsSlots {
    /// Rootfs that booted.
    pub current: Slot,
    /// Rootfs for the next boot.
    pub active: Slot,
    /// Slots.
    pub slots: Vec<RootfsSlot>,
}

/// One slot of the R32 SMD dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdSlot {
    /// 0 or 1.
    pub slot: u32,
    /// 0..=15.
    pub priority: u32,
    /// `_a` / `_b`.
    pub suffix: String,
    /// 0..=7.
    pub retry_count: u32,
    /// 0 or 1.
    pub boot_successful: u32,
}

/// R32 SMD dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmdSlots {
    /// Magic word (0x43424e00).
    pub magic: u32,
    /// SMD version.
    pub version: u32,
    /// SMD flags.
    pub features: u32,
    /// Slots.
    pub slots: Vec<SmdSlot>,
}

/// Any `dump-slots-info` output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SlotsInfo {
    /// R35/R36 bootloader chain.
    Bootloader(BootloaderSlots),
    /// R35/R36 rootfs.
    Rootfs(RootfsSlots),
    /// R32 slot metadata.
    Smd(SmdSlots),
}

/// A line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nvbootctrl output line {line}, field `{field}`: {reason}")]
pub struct SlotsError {
    /// 1-based line number.
    pub line: usize,
    /// Field.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// Splits `a: 1,   b: 2   c:3` into key/value pairs (keys may not contain spaces).
fn pairs(s: &str) -> Vec<(String, String)> {
    let toks: Vec<&str> = s
        .split([',', ' ', '\t'])
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i];
        if let Some(k) = t.strip_suffix(':') {
            let v = toks.get(i + 1).copied().unwrap_or("");
            out.push((k.to_string(), v.to_string()));
            i += 2;
        } else if let Some((k, v)) = t.split_once(':') {
            out.push((k.to_string(), v.to_string()));
            i += 1;
        } else {
            out.push((String::new(), t.to_string()));
            i += 1;
        }
    }
    out
}

struct Lines<'a> {
    it: std::iter::Peekable<std::vec::IntoIter<(usize, &'a str)>>,
    last: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let v: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end()))
            .filter(|(_, l)| !l.trim().is_empty())
            .collect();
        Lines {
            it: v.into_iter().peekable(),
            last: 0,
        }
    }

    fn err(&self, line: usize, field: &str, reason: impl Into<String>) -> SlotsError {
        SlotsError {
            line,
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Next line, which must be `<title>: <value>`; returns (line, value).
    fn titled(&mut self, title: &str) -> Result<(usize, &'a str), SlotsError> {
        let Some((n, l)) = self.it.next() else {
            return Err(self.err(self.last + 1, title, "missing line"));
        };
        self.last = n;
        let v = l
            .trim()
            .strip_prefix(title)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(|| self.err(n, title, format!("expected `{title}: ...`, found `{l}`")))?;
        Ok((n, v.trim()))
    }

    fn peek_starts(&mut self, title: &str) -> bool {
        self.it
            .peek()
            .is_some_and(|(_, l)| l.trim().starts_with(title))
    }

    /// Next line as key/value pairs with the given keys in order.
    fn fields(&mut self, keys: &[&str]) -> Result<(usize, Vec<String>), SlotsError> {
        let Some((n, l)) = self.it.next() else {
            return Err(self.err(self.last + 1, keys[0], "missing line"));
        };
        self.last = n;
        let p = pairs(l);
        if p.len() != keys.len() {
            return Err(self.err(
                n,
                keys[0],
                format!("expected fields {keys:?}, found `{}`", l.trim()),
            ));
        }
        let mut vals = Vec::new();
        for ((k, v), want) in p.into_iter().zip(keys) {
            if k != *want {
                return Err(self.err(n, want, format!("expected `{want}:`, found `{k}:`")));
            }
            if v.is_empty() {
                return Err(self.err(n, want, "value missing"));
            }
            vals.push(v);
        }
        Ok((n, vals))
    }

    fn done(&mut self) -> Result<(), SlotsError> {
        match self.it.next() {
            None => Ok(()),
            Some((n, l)) => Err(self.err(n, "end", format!("unexpected line `{}`", l.trim()))),
        }
    }
}

fn num(line: usize, field: &str, v: &str) -> Result<u32, SlotsError> {
    let r = match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| SlotsError {
        line,
        field: field.into(),
        reason: format!("`{v}` is not a number"),
    })
}

fn slot_letter(line: usize, field: &str, v: &str) -> Result<Slot, SlotsError> {
    match v {
        "A" => Ok(Slot::A),
        "B" => Ok(Slot::B),
        _ => Err(SlotsError {
            line,
            field: field.into(),
            reason: format!("`{v}` is not A or B"),
        }),
    }
}

fn check_count(line: usize, declared: u32, found: usize) -> Result<(), SlotsError> {
    if declared as usize != found {
        return Err(SlotsError {
            line,
            field: "num_slots".into(),
            reason: format!("declares {declared} slots, {found} slot lines follow"),
        });
    }
    Ok(())
}

fn slot_index(line: usize, v: &str, expected: usize) -> Result<u32, SlotsError> {
    let i = num(line, "slot", v)?;
    if i as usize != expected {
        return Err(SlotsError {
            line,
            field: "slot".into(),
            reason: format!("slot {i} where slot {expected} was expected"),
        });
    }
    Ok(i)
}

impl SlotsInfo {
    /// Parses one dump (no shell prompts; see [`parse_transcript`] for captured sessions).
    pub fn parse(text: &str) -> Result<SlotsInfo, SlotsError> {
        let mut l = Lines::new(text);
        if l.peek_starts("magic:") {
            return parse_smd(&mut l);
        }
        if l.peek_starts("Current rootfs slot") {
            let (n, v) = l.titled("Current rootfs slot")?;
            let current = slot_letter(n, "Current rootfs slot", v)?;
            let (n, v) = l.titled("Active rootfs slot")?;
            let active = slot_letter(n, "Active rootfs slot", v)?;
            let (cn, v) = l.titled("num_slots")?;
            let count = num(cn, "num_slots", v)?;
            let mut slots = Vec::new();
            while l.peek_starts("slot:") {
                let (n, f) = l.fields(&["slot", "retry_count", "status"])?;
                slots.push(RootfsSlot {
                    slot: slot_index(n, &f[0], slots.len())?,
                    retry_count: num(n, "retry_count", &f[1])?,
                    status: SlotStatus::parse(&f[2]),
                });
            }
            check_count(cn, count, slots.len())?;
            l.done()?;
            return Ok(SlotsInfo::Rootfs(RootfsSlots {
                current,
                active,
                slots,
            }));
        }
        let mut current_version = None;
        let mut capsule_update_status = None;
        if l.peek_starts("Current version") {
            let (n, v) = l.titled("Current version")?;
            current_version = Some(v.parse::<L4tVersion>().map_err(|e| SlotsError {
                line: n,
                field: "Current version".into(),
                reason: e.reason,
            })?);
        }
        if l.peek_starts("Capsule update status") {
            let (n, v) = l.titled("Capsule update status")?;
            let c = num(n, "Capsule update status", v)?;
            capsule_update_status =
                Some(CapsuleStatus::from_code(c).ok_or_else(|| SlotsError {
                    line: n,
                    field: "Capsule update status".into(),
                    reason: format!("{c} is not 0..=3"),
                })?);
        }
        let (n, v) = l.titled("Current bootloader slot")?;
        let current = slot_letter(n, "Current bootloader slot", v)?;
        let (n, v) = l.titled("Active bootloader slot")?;
        let active = slot_letter(n, "Active bootloader slot", v)?;
        let (cn, v) = l.titled("num_slots")?;
        let count = num(cn, "num_slots", v)?;
        let mut slots = Vec::new();
        while l.peek_starts("slot:") {
            let (n, f) = l.fields(&["slot", "status"])?;
            slots.push(BootloaderSlot {
                slot: slot_index(n, &f[0], slots.len())?,
                status: SlotStatus::parse(&f[1]),
            });
        }
        check_count(cn, count, slots.len())?;
        l.done()?;
        Ok(SlotsInfo::Bootloader(BootloaderSlots {
            current_version,
            capsule_update_status,
            current,
            active,
            slots,
        }))
    }
}

fn parse_smd(l: &mut Lines<'_>) -> Result<SlotsInfo, SlotsError> {
    let (n, f) = l.fields(&["magic", "version", "features", "num_slots"])?;
    let magic = num(n, "magic", &f[0])?;
    if magic != 0x4342_4e00 {
        return Err(SlotsError {
            line: n,
            field: "magic".into(),
            reason: format!("{magic:#x} is not the SMD magic 0x43424e00"),
        });
    }
    let version = num(n, "version", &f[1])?;
    let features = num(n, "features", &f[2])?;
    let count = num(n, "num_slots", &f[3])?;
    let cn = n;
    let mut slots = Vec::new();
    while l.peek_starts("slot:") {
        let (n, f) = l.fields(&[
            "slot",
            "priority",
            "suffix",
            "retry_count",
            "boot_successful",
        ])?;
        slots.push(SmdSlot {
            slot: slot_index(n, &f[0], slots.len())?,
            priority: num(n, "priority", &f[1])?,
            suffix: f[2].clone(),
            retry_count: num(n, "retry_count", &f[3])?,
            boot_successful: num(n, "boot_successful", &f[4])?,
        });
    }
    check_count(cn, count, slots.len())?;
    l.done()?;
    Ok(SlotsInfo::Smd(SmdSlots {
        magic,
        version,
        features,
        slots,
    }))
}

impl fmt::Display for SlotsInfo {
    /// Exactly what nvbootctrl prints (newline-terminated lines).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotsInfo::Bootloader(b) => {
                if let Some(v) = b.current_version {
                    writeln!(f, "Current version: {v}")?;
                }
                if let Some(c) = b.capsule_update_status {
                    writeln!(f, "Capsule update status: {}", c.code())?;
                }
                writeln!(f, "Current bootloader slot: {}", b.current)?;
                writeln!(f, "Active bootloader slot: {}", b.active)?;
                writeln!(f, "num_slots: {}", b.slots.len())?;
                for s in &b.slots {
                    writeln!(f, "slot: {}{SEP}status: {}", s.slot, s.status.as_str())?;
                }
            }
            SlotsInfo::Rootfs(r) => {
                writeln!(f, "Current rootfs slot: {}", r.current)?;
                writeln!(f, "Active rootfs slot: {}", r.active)?;
                writeln!(f, "num_slots: {}", r.slots.len())?;
                for s in &r.slots {
                    writeln!(
                        f,
                        "slot: {}{SEP}retry_count: {}{SEP}status: {}",
                        s.slot,
                        s.retry_count,
                        s.status.as_str()
                    )?;
                }
            }
            SlotsInfo::Smd(s) => {
                let gap = " ".repeat(13);
                writeln!(
                    f,
                    "magic:{:#x}{SEP}version: {}{gap}features: {}{gap}num_slots: {}",
                    s.magic,
                    s.version,
                    s.features,
                    s.slots.len()
                )?;
                for x in &s.slots {
                    writeln!(
                        f,
                        "slot: {}{SEP}priority: {}{SEP}suffix: {}{SEP}retry_count: {}{SEP}boot_successful: {}",
                        x.slot, x.priority, x.suffix, x.retry_count, x.boot_successful
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// One command and its output from a captured shell session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    /// The prompt line with the command, if the capture had one.
    pub command: Option<String>,
    /// The parsed output.
    pub info: SlotsInfo,
}

/// Parses a captured terminal session: prompt lines that run `nvbootctrl` separate the
/// dumps; each dump is parsed strictly. Line numbers in errors are of the whole text.
pub fn parse_transcript(text: &str) -> Result<Vec<TranscriptEntry>, SlotsError> {
    let mut out = Vec::new();
    let mut command: Option<String> = None;
    let mut block = String::new();
    let mut block_start = 0usize;
    let flush = |cmd: &mut Option<String>,
                 block: &mut String,
                 start: usize,
                 out: &mut Vec<TranscriptEntry>|
     -> Result<(), SlotsError> {
        if block.trim().is_empty() {
            block.clear();
            return Ok(());
        }
        let info = SlotsInfo::parse(block).map_err(|mut e| {
            e.line += start;
            e
        })?;
        out.push(TranscriptEntry {
            command: cmd.take(),
            info,
        });
        block.clear();
        Ok(())
    };
    for (i, line) in text.lines().enumerate() {
        // nvbootctrl never prints its own name, so such a line is the prompt running it.
        if line.contains("nvbootctrl") {
            flush(&mut command, &mut block, block_start, &mut out)?;
            command = Some(line.trim().to_string());
            block_start = i + 1;
        } else {
            if block.is_empty() {
                block_start = i;
            }
            block.push_str(line);
            block.push('\n');
        }
    }
    flush(&mut command, &mut block, block_start, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BL: &str = "Current version: 35.4.1\nCapsule update status: 1\nCurrent bootloader slot: A\nActive bootloader slot: A\nnum_slots: 2\nslot: 0,             status: normal\nslot: 1,             status: normal\n";
    const RF: &str = "Current rootfs slot: B\nActive rootfs slot: B\nnum_slots: 2\nslot: 0,             retry_count: 0,             status: unbootable\nslot: 1,             retry_count: 3,             status: normal\n";
    const SMD: &str = "magic:0x43424e00,             version: 3             features: 3             num_slots: 2\nslot: 0,             priority: 15,             suffix: _a,             retry_count: 7,             boot_successful: 1\nslot: 1,             priority: 14,             suffix: _b,             retry_count: 7,             boot_successful: 1\n";

    #[test]
    fn all_three_shapes_round_trip_exactly() {
        for t in [BL, RF, SMD] {
            let info = SlotsInfo::parse(t).unwrap();
            assert_eq!(info.to_string(), t);
        }
        match SlotsInfo::parse(RF).unwrap() {
            SlotsInfo::Rootfs(r) => {
                assert_eq!(r.current, Slot::B);
                assert_eq!(r.slots[0].status, SlotStatus::Unbootable);
                assert_eq!(r.slots[1].retry_count, 3);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn incomplete_flash_has_no_capsule_line() {
        let t = "Current version: 0.0.0\nCurrent bootloader slot: A\nActive bootloader slot: A\nnum_slots: 2\nslot: 0,             status: normal\nslot: 1,             status: normal\n";
        match SlotsInfo::parse(t).unwrap() {
            SlotsInfo::Bootloader(b) => {
                assert_eq!(b.current_version, Some(L4tVersion::new(0, 0, 0)));
                assert_eq!(b.capsule_update_status, None);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn errors_name_line_and_field() {
        let e =
            SlotsInfo::parse(&BL.replace("Active bootloader slot: A", "Active bootloader slot: C"))
                .unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (4, "Active bootloader slot"));
        let e = SlotsInfo::parse(&RF.replace("retry_count: 3", "retry_count: x")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (5, "retry_count"));
        let e = SlotsInfo::parse(&RF.replace("num_slots: 2", "num_slots: 3")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (3, "num_slots"));
        let e = SlotsInfo::parse(&SMD.replace("0x43424e00", "0x1")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "magic"));
        let e = SlotsInfo::parse(&format!("{BL}garbage\n")).unwrap_err();
        assert_eq!(e.line, 8);
        let e = SlotsInfo::parse(&BL.replace("slot: 1,", "slot: 0,")).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (7, "slot"));
    }

    #[test]
    fn transcript_with_prompts() {
        let t = format!("jetson:/# nvbootctrl dump-slots-info\n{BL}jetson:/# nvbootctrl dump-slots-info -t rootfs\n{RF}");
        let v = parse_transcript(&t).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(
            v[0].command.as_deref(),
            Some("jetson:/# nvbootctrl dump-slots-info")
        );
        assert!(matches!(v[1].info, SlotsInfo::Rootfs(_)));
        let bad = t.replace("retry_count: 3", "retry_count: q");
        let e = parse_transcript(&bad).unwrap_err();
        assert_eq!(e.line, 14);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = SlotsInfo::parse(&s);
            let _ = parse_transcript(&s);
        }

        #[test]
        fn mutated_never_panic(i in 0usize..400, c in any::<char>()) {
            for t in [BL, RF, SMD] {
                let mut s: Vec<char> = t.chars().collect();
                if i < s.len() { s[i] = c; }
                let s: String = s.into_iter().collect();
                if let Ok(info) = SlotsInfo::parse(&s) {
                    // what parses prints back into something that parses the same
                    prop_assert_eq!(SlotsInfo::parse(&info.to_string()).unwrap(), info);
                }
            }
        }
    }
}
