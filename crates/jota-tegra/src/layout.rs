//! L4T flash-layout XML (`partition_layout`) and the partition offsets the flash tools
//! compute from it.
//!
//! ```xml
//! <partition_layout version="01.00.0000">
//!   <device type="spi" instance="0" sector_size="512" num_sectors="131072">
//!     <partition name="A_mb1" type="mb1_bootloader">
//!       <allocation_policy> sequential </allocation_policy>
//!       <size> 524288 </size>
//!       <allocation_attribute> 8 </allocation_attribute>
//!       <align_boundary> 262144 </align_boundary>
//!       ...
//! ```
//!
//! Values are whitespace-padded text, decimal or `0x` hex; some are placeholders (`APPSIZE`,
//! `RECNAME`, `EXT_NUM_SECTORS`) that the flash scripts substitute (`sed`) before the
//! closed-source `tegraparser` runs. The allocation rules implemented by [`Device::resolve`]
//! follow OE4T's open re-implementation (`nvflashxmlparse.py`) and NVIDIA's initrd flasher,
//! checked against real partition tables (see `docs/formats/flash-layout.md`):
//!
//! 1. Partitions are placed in XML order, each after the previous one (in sectors).
//! 2. `align_boundary` rounds the start up to a multiple of the boundary, counted from the
//!    start of the device; the skipped space stays unallocated.
//! 3. `start_location` places the partition at that absolute byte offset (a gap may open;
//!    a location before the end of the previous partition is an error).
//! 4. Sizes are rounded up to whole sectors.
//! 5. `allocation_attribute` bit 0x800 makes a partition fill the rest of the device up to
//!    the secondary GPT, its size 4 KiB-aligned (what L4T's initrd flasher does).
//! 6. `secondary_gpt` with size `0xFFFFFFFFFFFFFFFF`: on a disk with a primary GPT it is the
//!    last 33 sectors; on a boot device (QSPI) it takes the rest of the device.
//! 7. GPT entry numbers are the `id` attribute or the previous number + 1 (boot devices:
//!    purely sequential); MBR/GPT partitions get none.

use crate::efivar::Slot;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// The size value that means "the rest of the device".
pub const SIZE_REST: u64 = u64::MAX;
/// `allocation_attribute` bit: grow to fill the device.
pub const ATTR_FILL_TO_END: u64 = 0x800;

/// A numeric value that may still be a placeholder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Num(u64),
    /// A token such as `APPSIZE` the caller must supply.
    Placeholder(String),
}

impl Value {
    fn parse(s: &str) -> Value {
        let t = s.trim();
        match parse_num(t) {
            Some(n) => Value::Num(n),
            None => Value::Placeholder(t.to_string()),
        }
    }

    /// The number, if resolved.
    pub fn num(&self) -> Option<u64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Placeholder(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Placeholder(p) => f.write_str(p),
        }
    }
}

fn parse_num(t: &str) -> Option<u64> {
    let t = t.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) if !h.is_empty() => u64::from_str_radix(h, 16).ok(),
        Some(_) => None,
        None if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => t.parse().ok(),
        None => None,
    }
}

/// One `<partition>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// `name` attribute.
    pub name: String,
    /// `id` attribute (GPT entry number on user devices).
    pub id: Option<u32>,
    /// `type` attribute (`mb1_bootloader`, `data`, `secondary_gpt`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Other attributes (`oem_sign`, `compress`, ...).
    pub attributes: BTreeMap<String, String>,
    /// `<allocation_policy>`.
    pub allocation_policy: Option<String>,
    /// `<filesystem_type>`.
    pub filesystem_type: Option<String>,
    /// `<size>` in bytes.
    pub size: Option<Value>,
    /// `<file_system_attribute>`.
    pub file_system_attribute: Option<u64>,
    /// `<allocation_attribute>` (hex, as the flash tools read it).
    pub allocation_attribute: u64,
    /// `<percent_reserved>`.
    pub percent_reserved: Option<u64>,
    /// `<filename>`.
    pub filename: Option<String>,
    /// `<align_boundary>` in bytes.
    pub align_boundary: Option<u64>,
    /// `<start_location>` in bytes from the device start.
    pub start_location: Option<u64>,
    /// `<partition_attribute>`.
    pub partition_attribute: Option<u64>,
    /// `<unique_guid>`.
    pub unique_guid: Option<String>,
    /// `<partition_type_guid>`.
    pub partition_type_guid: Option<String>,
    /// `<description>`.
    pub description: Option<String>,
    /// Line of the `<partition>` tag.
    pub line: usize,
}

impl Partition {
    /// Whether this entry is the MBR or a GPT itself rather than a partition.
    pub fn is_table(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "GP1" | "GPT" | "protective_master_boot_record" | "primary_gpt" | "secondary_gpt"
        )
    }

    /// Whether `allocation_attribute` asks to fill the device.
    pub fn fills_to_end(&self) -> bool {
        self.allocation_attribute & ATTR_FILL_TO_END != 0
    }
}

/// One `<device>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Device {
    /// `type`: `spi`, `sdmmc_boot`, `sdmmc_user`, `external`, `nvme`, `sdcard`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `instance`.
    pub instance: u32,
    /// `sector_size` (512 if absent).
    pub sector_size: u64,
    /// `num_sectors` (may be the placeholder `EXT_NUM_SECTORS`).
    pub num_sectors: Option<Value>,
    /// Partitions in XML order.
    pub partitions: Vec<Partition>,
    /// Line of the `<device>` tag.
    pub line: usize,
}

/// A whole layout file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// `version` attribute of `<partition_layout>`.
    pub version: Option<String>,
    /// Devices in file order.
    pub devices: Vec<Device>,
}

/// A problem in a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Not well-formed XML.
    #[error("layout XML line {line}: {reason}")]
    Xml {
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A value is wrong.
    #[error("layout line {line}{}: `{field}` {reason}", .partition.as_ref().map(|p| format!(", partition {p}")).unwrap_or_default())]
    Field {
        /// 1-based line.
        line: usize,
        /// Partition, if inside one.
        partition: Option<String>,
        /// Element or attribute.
        field: String,
        /// Why.
        reason: String,
    },
    /// Placeholders the caller has to supply.
    #[error("layout device {device}: unresolved placeholders {}; give their values (e.g. --set NAME=VALUE)", .missing.iter().map(|(k, w)| format!("{k} ({})", w.join(", "))).collect::<Vec<_>>().join(", "))]
    Placeholders {
        /// Device type.
        device: String,
        /// Placeholder and where it is used.
        missing: Vec<(String, Vec<String>)>,
    },
    /// Partitions that cannot be placed.
    #[error("layout device {device}, partition {partition} (line {line}): {reason}")]
    Placement {
        /// Device type.
        device: String,
        /// Partition name.
        partition: String,
        /// Line of the partition.
        line: usize,
        /// Why.
        reason: String,
    },
}

fn line_of(text: &str, pos: usize) -> usize {
    LineCounter::default().line(text, pos)
}

/// Line numbers for increasing byte positions without rescanning from the start.
#[derive(Default)]
struct LineCounter {
    pos: usize,
    line: usize,
}

impl LineCounter {
    fn line(&mut self, text: &str, pos: usize) -> usize {
        let pos = pos.min(text.len());
        if pos < self.pos {
            *self = LineCounter::default();
        }
        self.line += text.as_bytes()[self.pos..pos]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = pos;
        self.line + 1
    }
}

/// Replaces placeholders the way the flash scripts' `sed` does (substrings, longest first).
fn substitute(s: &str, vars: &[(&str, &str)]) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        if !k.is_empty() && out.contains(k) {
            out = out.replace(k, v);
        }
    }
    out
}

struct Ctx<'a> {
    text: &'a str,
    vars: Vec<(&'a str, &'a str)>,
}

impl Ctx<'_> {
    fn attrs(
        &self,
        e: &BytesStart<'_>,
        line: usize,
    ) -> Result<BTreeMap<String, String>, LayoutError> {
        let mut m = BTreeMap::new();
        for a in e.attributes() {
            let a = a.map_err(|err| LayoutError::Xml {
                line,
                reason: format!("bad attribute: {err}"),
            })?;
            let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let v = a.unescape_value().map_err(|err| LayoutError::Xml {
                line,
                reason: format!("attribute {k}: {err}"),
            })?;
            m.insert(k, substitute(v.trim(), &self.vars));
        }
        Ok(m)
    }
}

impl Layout {
    /// Parses a layout with no placeholder values.
    pub fn parse(text: &str) -> Result<Layout, LayoutError> {
        Layout::parse_with(text, &BTreeMap::new())
    }

    /// Parses a layout, substituting placeholder values (e.g. `APPSIZE` → bytes,
    /// `RECNAME` → `recovery`) in attribute values and element text.
    pub fn parse_with(text: &str, vars: &BTreeMap<String, String>) -> Result<Layout, LayoutError> {
        let mut vars: Vec<(&str, &str)> =
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        let ctx = Ctx { text, vars };
        let mut r = Reader::from_str(text);
        r.config_mut().trim_text(true);
        let mut layout: Option<Layout> = None;
        let mut device: Option<Device> = None;
        let mut part: Option<Partition> = None;
        let mut elem: Option<(String, usize)> = None;
        let mut elem_text = String::new();
        let mut lines = LineCounter::default();
        loop {
            let ev = r.read_event().map_err(|e| LayoutError::Xml {
                line: line_of(ctx.text, r.error_position() as usize),
                reason: e.to_string(),
            })?;
            // Position just after the event: the line where the tag ends.
            let line = lines.line(ctx.text, r.buffer_position() as usize);
            match ev {
                Event::Start(ref e) | Event::Empty(ref e) => {
                    let empty = matches!(ev, Event::Empty(_));
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    let attrs = ctx.attrs(e, line)?;
                    match (
                        name.as_str(),
                        layout.is_some(),
                        device.is_some(),
                        part.is_some(),
                    ) {
                        ("partition_layout", false, _, _) => {
                            layout = Some(Layout {
                                version: attrs.get("version").cloned(),
                                devices: Vec::new(),
                            });
                            if empty {
                                break;
                            }
                        }
                        ("device", true, false, _) => {
                            let d = new_device(&attrs, line)?;
                            if empty {
                                if let Some(l) = layout.as_mut() {
                                    l.devices.push(d);
                                }
                            } else {
                                device = Some(d);
                            }
                        }
                        ("partition", true, true, false) => {
                            let p = new_partition(attrs, line)?;
                            if empty {
                                if let Some(d) = device.as_mut() {
                                    d.partitions.push(p);
                                }
                            } else {
                                part = Some(p);
                            }
                        }
                        (_, true, true, true) if elem.is_none() => {
                            if !empty {
                                elem = Some((name, line));
                                elem_text.clear();
                            }
                        }
                        (other, ..) => {
                            return Err(LayoutError::Xml {
                                line,
                                reason: format!("unexpected <{other}> here"),
                            })
                        }
                    }
                }
                Event::Text(t) => {
                    let s = t.unescape().map_err(|e| LayoutError::Xml {
                        line,
                        reason: e.to_string(),
                    })?;
                    if elem.is_some() {
                        elem_text.push_str(&s);
                    } else if !s.trim().is_empty() {
                        return Err(LayoutError::Xml {
                            line,
                            reason: format!("unexpected text `{}`", s.trim()),
                        });
                    }
                }
                Event::CData(t) => {
                    if elem.is_some() {
                        elem_text.push_str(&String::from_utf8_lossy(&t));
                    }
                }
                Event::End(e) => {
                    let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                    if let Some((el, el_line)) = elem.take() {
                        if let Some(p) = part.as_mut() {
                            let v = substitute(elem_text.trim(), &ctx.vars);
                            set_property(p, &el, &v, el_line)?;
                        }
                        continue;
                    }
                    match name.as_str() {
                        "partition" => {
                            if let (Some(p), Some(d)) = (part.take(), device.as_mut()) {
                                d.partitions.push(p);
                            }
                        }
                        "device" => {
                            if let (Some(d), Some(l)) = (device.take(), layout.as_mut()) {
                                l.devices.push(d);
                            }
                        }
                        "partition_layout" => break,
                        _ => {}
                    }
                }
                Event::Eof => {
                    return Err(LayoutError::Xml {
                        line,
                        reason: if layout.is_none() {
                            "no <partition_layout> element".into()
                        } else {
                            "file ends inside <partition_layout>".into()
                        },
                    })
                }
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        layout.ok_or(LayoutError::Xml {
            line: 1,
            reason: "no <partition_layout> element".into(),
        })
    }

    /// The devices whose type matches `kind` (aliases: `nvme` = `external`/`nvme`,
    /// `qspi` = `spi`, `emmc` = `sdmmc_user`, `sd` = `sdcard`).
    pub fn devices_of<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Device> {
        self.devices
            .iter()
            .filter(move |d| device_matches(&d.kind, kind))
    }
}

fn device_matches(actual: &str, wanted: &str) -> bool {
    let w = wanted.to_ascii_lowercase();
    let names: &[&str] = match w.as_str() {
        "nvme" | "external" => &["external", "nvme"],
        "qspi" | "spi" => &["spi"],
        "emmc" | "sdmmc_user" | "sdmmc" => &["sdmmc_user", "sdmmc"],
        "boot" | "sdmmc_boot" => &["sdmmc_boot"],
        "sd" | "sdcard" => &["sdcard"],
        _ => return actual.eq_ignore_ascii_case(&w),
    };
    names.iter().any(|n| n.eq_ignore_ascii_case(actual))
}

fn field_err(
    line: usize,
    partition: Option<&str>,
    field: &str,
    reason: impl Into<String>,
) -> LayoutError {
    LayoutError::Field {
        line,
        partition: partition.map(String::from),
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn new_device(a: &BTreeMap<String, String>, line: usize) -> Result<Device, LayoutError> {
    let kind = a
        .get("type")
        .cloned()
        .ok_or_else(|| field_err(line, None, "type", "missing on <device>"))?;
    let num = |k: &str| -> Result<Option<u64>, LayoutError> {
        match a.get(k) {
            None => Ok(None),
            Some(v) => parse_num(v)
                .map(Some)
                .ok_or_else(|| field_err(line, None, k, format!("`{v}` is not a number"))),
        }
    };
    let instance = num("instance")?.unwrap_or(0);
    let sector_size = num("sector_size")?.unwrap_or(512);
    if !(sector_size.is_power_of_two() && (512..=65536).contains(&sector_size)) {
        return Err(field_err(
            line,
            None,
            "sector_size",
            format!("{sector_size} is not a power of two in 512..=65536"),
        ));
    }
    Ok(Device {
        kind,
        instance: u32::try_from(instance)
            .map_err(|_| field_err(line, None, "instance", "too large"))?,
        sector_size,
        num_sectors: a.get("num_sectors").map(|v| Value::parse(v)),
        partitions: Vec::new(),
        line,
    })
}

fn new_partition(mut a: BTreeMap<String, String>, line: usize) -> Result<Partition, LayoutError> {
    let name = a
        .remove("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| field_err(line, None, "name", "missing on <partition>"))?;
    let kind = a.remove("type").unwrap_or_default();
    let id = match a.remove("id") {
        None => None,
        Some(v) => Some(
            parse_num(&v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    field_err(
                        line,
                        Some(&name),
                        "id",
                        format!("`{v}` is not a partition number"),
                    )
                })?,
        ),
    };
    Ok(Partition {
        name,
        id,
        kind,
        attributes: a,
        allocation_policy: None,
        filesystem_type: None,
        size: None,
        file_system_attribute: None,
        allocation_attribute: 0,
        percent_reserved: None,
        filename: None,
        align_boundary: None,
        start_location: None,
        partition_attribute: None,
        unique_guid: None,
        partition_type_guid: None,
        description: None,
        line,
    })
}

fn set_property(p: &mut Partition, el: &str, v: &str, line: usize) -> Result<(), LayoutError> {
    let num = |v: &str| {
        parse_num(v)
            .ok_or_else(|| field_err(line, Some(&p.name), el, format!("`{v}` is not a number")))
    };
    let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
    match el {
        "allocation_policy" => p.allocation_policy = opt(v),
        "filesystem_type" => p.filesystem_type = opt(v),
        "size" => p.size = Some(Value::parse(v)),
        "file_system_attribute" => p.file_system_attribute = Some(num(v)?),
        // nvflashxmlparse reads allocation_attribute as hex with or without 0x ("8" = 0x8).
        "allocation_attribute" => {
            let h = v.trim_start_matches("0x").trim_start_matches("0X");
            p.allocation_attribute = u64::from_str_radix(h, 16).map_err(|_| {
                field_err(
                    line,
                    Some(&p.name),
                    el,
                    format!("`{v}` is not a hex number"),
                )
            })?;
        }
        "percent_reserved" => p.percent_reserved = Some(num(v)?),
        "filename" => p.filename = opt(v),
        "align_boundary" => {
            let n = num(v)?;
            if n == 0 {
                return Err(field_err(line, Some(&p.name), el, "must not be 0"));
            }
            p.align_boundary = Some(n);
        }
        "start_location" => p.start_location = Some(num(v)?),
        "partition_attribute" => p.partition_attribute = Some(num(v)?),
        "unique_guid" => p.unique_guid = opt(v),
        "partition_type_guid" => p.partition_type_guid = opt(v),
        "description" => p.description = opt(v),
        // Unknown properties are kept, not fatal: layouts grow new elements across releases.
        other => {
            p.attributes.insert(format!("<{other}>"), v.to_string());
        }
    }
    Ok(())
}

/// A partition with its computed place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placed {
    /// Name.
    pub name: String,
    /// GPT entry number (none for MBR/GPT entries).
    pub number: Option<u32>,
    /// `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset from the device start.
    pub start: u64,
    /// Size in bytes; `None` = to the end of a device whose size is not known.
    pub size: Option<u64>,
    /// Whether it grew to fill the device.
    pub fill_to_end: bool,
    /// Whether it is the MBR or a GPT.
    pub is_table: bool,
    /// `<filename>`.
    pub filename: Option<String>,
    /// `<unique_guid>`.
    pub unique_guid: Option<String>,
    /// `<partition_type_guid>`.
    pub partition_type_guid: Option<String>,
    /// A/B slot and base name, if this is one side of an A/B pair.
    pub ab: Option<(Slot, String)>,
    /// Line in the XML.
    pub line: usize,
}

impl Placed {
    /// One past the last byte, if known.
    pub fn end(&self) -> Option<u64> {
        self.size.map(|s| self.start + s)
    }
}

/// A device with every partition placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Resolved {
    /// Device type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Instance.
    pub instance: u32,
    /// Sector size.
    pub sector_size: u64,
    /// Device size in bytes, if known.
    pub size: Option<u64>,
    /// Placed partitions in XML order.
    pub partitions: Vec<Placed>,
    /// A/B pairs found.
    pub ab_pairs: Vec<AbPair>,
}

impl Resolved {
    /// Finds a partition by name.
    pub fn get(&self, name: &str) -> Option<&Placed> {
        self.partitions.iter().find(|p| p.name == name)
    }
}

/// Two partitions that are the A and B copy of the same thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AbPair {
    /// Base name (`mb1`, `kernel`, `APP`).
    pub base: String,
    /// Slot A partition name.
    pub a: String,
    /// Slot B partition name.
    pub b: String,
}

/// Which slot a partition name belongs to and its base name: `A_x`/`B_x` (R35+ naming),
/// `x`/`x_b` (legacy suffix naming, also `APP`/`APP_b`), `x_a`/`x_b`.
pub fn ab_role(name: &str, all: &[&str]) -> Option<(Slot, String)> {
    if let Some(b) = name.strip_prefix("A_") {
        return all
            .contains(&format!("B_{b}").as_str())
            .then(|| (Slot::A, b.to_string()));
    }
    if let Some(b) = name.strip_prefix("B_") {
        return all
            .contains(&format!("A_{b}").as_str())
            .then(|| (Slot::B, b.to_string()));
    }
    if let Some(b) = name.strip_suffix("_b") {
        let has_a = all.contains(&b) || all.contains(&format!("{b}_a").as_str());
        return has_a.then(|| (Slot::B, b.to_string()));
    }
    if let Some(b) = name.strip_suffix("_a") {
        return all
            .contains(&format!("{b}_b").as_str())
            .then(|| (Slot::A, b.to_string()));
    }
    all.contains(&format!("{name}_b").as_str())
        .then(|| (Slot::A, name.to_string()))
}

/// Number of sectors of a backup GPT (header + 128 entries of 128 bytes).
fn gpt_tail_sectors(ss: u64) -> u64 {
    1 + 16384u64.div_ceil(ss)
}

impl Device {
    /// Whether this is a boot device (QSPI, eMMC boot partitions) rather than a GPT disk.
    pub fn is_boot_device(&self) -> bool {
        matches!(self.kind.as_str(), "spi" | "sdmmc_boot")
    }

    /// Places every partition. `device_size` (bytes) overrides `num_sectors`, as the real
    /// device size does when flashing.
    pub fn resolve(&self, device_size: Option<u64>) -> Result<Resolved, LayoutError> {
        let ss = self.sector_size;
        let size = match device_size {
            Some(s) => Some(s),
            None => match &self.num_sectors {
                Some(Value::Num(n)) => {
                    Some(n.checked_mul(ss).ok_or_else(|| LayoutError::Field {
                        line: self.line,
                        partition: None,
                        field: "num_sectors".into(),
                        reason: "too large".into(),
                    })?)
                }
                _ => None,
            },
        };
        // Placeholders that matter: sizes of ordinary partitions.
        let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in &self.partitions {
            if let Some(Value::Placeholder(t)) = &p.size {
                if !p.fills_to_end() {
                    missing.entry(t.clone()).or_default().push(p.name.clone());
                }
            }
        }
        if !missing.is_empty() {
            return Err(LayoutError::Placeholders {
                device: self.kind.clone(),
                missing: missing.into_iter().collect(),
            });
        }
        let has_primary_gpt = self
            .partitions
            .iter()
            .any(|p| matches!(p.kind.as_str(), "primary_gpt" | "GP1"));
        let names: Vec<&str> = self.partitions.iter().map(|p| p.name.as_str()).collect();
        let err = |p: &Partition, reason: String| LayoutError::Placement {
            device: self.kind.clone(),
            partition: p.name.clone(),
            line: p.line,
            reason,
        };
        let size_sectors = size.map(|s| s / ss);
        let tail = gpt_tail_sectors(ss);
        let mut cur: u64 = 0; // sectors
        let mut out: Vec<Placed> = Vec::with_capacity(self.partitions.len());
        let mut number: u32 = 0;
        let mut filled: Option<&str> = None;
        for p in &self.partitions {
            let is_secondary = p.kind == "secondary_gpt";
            if let Some(f) = filled {
                if !is_secondary {
                    return Err(err(
                        p,
                        format!("follows {f}, which fills the rest of the device"),
                    ));
                }
            }
            let raw_size = match &p.size {
                Some(Value::Num(n)) => *n,
                _ => 0,
            };
            let rest = raw_size == SIZE_REST;
            let mut start = cur;
            if let Some(al) = p.align_boundary {
                let bytes = cur
                    .checked_mul(ss)
                    .and_then(|b| b.checked_add(al - 1))
                    .ok_or_else(|| err(p, "offset overflow".into()))?;
                start = (bytes / al * al) / ss;
            }
            if let Some(sl) = p.start_location {
                let s = sl.div_ceil(ss);
                if s < cur {
                    return Err(err(
                        p,
                        format!(
                            "start_location {sl:#x} overlaps the previous partition, which ends at {:#x}",
                            cur * ss
                        ),
                    ));
                }
                start = s;
            }
            // Sizes and offsets come from the file: every byte position below must fit.
            if start.checked_mul(ss).is_none() {
                return Err(err(p, "offset overflow".into()));
            }
            let (start, len, fill): (u64, Option<u64>, bool) = if is_secondary && rest {
                if has_primary_gpt || filled.is_some() {
                    match size_sectors {
                        Some(n) if n >= tail => (n - tail, Some(tail), false),
                        Some(_) => return Err(err(p, "device too small for a GPT".into())),
                        None => (start, None, false),
                    }
                } else {
                    (start, size_sectors.map(|n| n.saturating_sub(start)), false)
                }
            } else if p.fills_to_end() || rest {
                filled = Some(&p.name);
                match size_sectors {
                    Some(n) => {
                        let limit = (n.saturating_sub(tail)) * ss;
                        let sb = start * ss;
                        if limit <= sb {
                            return Err(err(
                                p,
                                format!("starts at {sb:#x}, no space left before the backup GPT"),
                            ));
                        }
                        // L4T's initrd flasher keeps the grown partition 4 KiB aligned.
                        (start, Some((limit - sb) / 4096 * 4096 / ss), true)
                    }
                    None => (start, None, true),
                }
            } else {
                (start, Some(raw_size.div_ceil(ss)), false)
            };
            if start
                .checked_add(len.unwrap_or(0))
                .and_then(|e| e.checked_mul(ss))
                .is_none()
            {
                return Err(err(p, "offset overflow".into()));
            }
            if let (Some(n), Some(l)) = (size_sectors, len) {
                if start + l > n {
                    return Err(err(
                        p,
                        format!(
                            "ends at {:#x}, beyond the device ({:#x} bytes)",
                            (start + l) * ss,
                            n * ss
                        ),
                    ));
                }
            }
            if !is_secondary && !fill {
                cur = start + len.unwrap_or(0);
            }
            let is_table = p.is_table();
            let num = if is_table {
                None
            } else {
                number = match (self.is_boot_device(), p.id) {
                    (false, Some(id)) => id,
                    _ => number + 1,
                };
                Some(number)
            };
            out.push(Placed {
                name: p.name.clone(),
                number: num,
                kind: p.kind.clone(),
                start: start * ss,
                size: len.map(|l| l * ss),
                fill_to_end: fill,
                is_table,
                filename: p.filename.clone(),
                unique_guid: p.unique_guid.clone(),
                partition_type_guid: p.partition_type_guid.clone(),
                ab: ab_role(&p.name, &names),
                line: p.line,
            });
        }
        // Two partitions may not claim the same GPT entry.
        let mut seen = BTreeMap::new();
        for p in &out {
            if let Some(n) = p.number {
                if let Some(prev) = seen.insert(n, p.name.clone()) {
                    return Err(LayoutError::Placement {
                        device: self.kind.clone(),
                        partition: p.name.clone(),
                        line: p.line,
                        reason: format!("GPT entry {n} is already used by {prev}"),
                    });
                }
            }
        }
        let mut ab_pairs = Vec::new();
        for p in &out {
            if let Some((Slot::A, base)) = &p.ab {
                if let Some(b) = out
                    .iter()
                    .find(|q| matches!(&q.ab, Some((Slot::B, bb)) if bb == base))
                {
                    ab_pairs.push(AbPair {
                        base: base.clone(),
                        a: p.name.clone(),
                        b: b.name.clone(),
                    });
                }
            }
        }
        Ok(Resolved {
            kind: self.kind.clone(),
            instance: self.instance,
            sector_size: ss,
            size,
            partitions: out,
            ab_pairs,
        })
    }
}

/// Synthetic layouts shipped with jota (written from the schema, not NVIDIA's files): the
/// shapes of the T234 QSPI and NVMe layouts, for the simulator, tests and examples.
pub mod builtin {
    /// T234 (Orin) 64 MiB QSPI with A/B boot chains.
    pub const T234_QSPI: &str = include_str!("../layouts/t234_qspi.xml");
    /// T234 NVMe with rootfs A/B (APP, APP_b of APPSIZE).
    pub const T234_NVME_ROOTFS_AB: &str = include_str!("../layouts/t234_nvme_rootfs_ab.xml");
    /// T234 NVMe with one rootfs filling the disk.
    pub const T234_NVME: &str = include_str!("../layouts/t234_nvme.xml");

    /// All of them by name.
    pub const ALL: &[(&str, &str)] = &[
        ("t234-qspi", T234_QSPI),
        ("t234-nvme-rootfs-ab", T234_NVME_ROOTFS_AB),
        ("t234-nvme", T234_NVME),
    ];

    /// A built-in layout by name.
    pub fn get(name: &str) -> Option<&'static str> {
        ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

#[cfg(test)]
mod tests;
