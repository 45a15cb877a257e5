//! `jota bup`: inspect, extract and create bootloader update payloads.

use crate::util::{print_json, thousands, write_atomic};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use jota_tegra::bup::{
    tnspec::MatchKind, Bup, BupEntry, BupFormat, EntryMeta, OpMode, Selection, Target,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Arguments of `jota bup`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which board an entry must be chosen for.
#[derive(Parser, Debug, Clone)]
struct TargetArgs {
    /// Full TNSPEC of the board (TegraPlatformSpec / TNSPEC of nv_boot_control.conf), e.g.
    /// 3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-
    #[arg(long)]
    spec: Option<String>,
    /// Compat spec (TegraPlatformCompatSpec). Default: generated from --spec as L4T does
    /// for boards 3767 and 3701.
    #[arg(long, requires = "spec")]
    compat_spec: Option<String>,
    /// Treat the SoC as production-fused or not (default: from field 5 of --spec).
    #[arg(long, requires = "spec")]
    production_fused: Option<bool>,
}

impl TargetArgs {
    fn target(&self) -> Option<Target> {
        let spec = self.spec.as_deref()?;
        let mut t = Target::from_spec(spec);
        if let Some(c) = &self.compat_spec {
            t.compat_spec = Some(c.clone());
        }
        if let Some(p) = self.production_fused {
            t.production_fused = p;
        }
        Some(t)
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show header and entry table; with --spec, which entry each partition gets.
    Inspect {
        /// The payload (e.g. bl_only_payload, bl_update_payload).
        file: PathBuf,
        /// Machine-readable output (includes each entry's sha256).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Write one partition's image out of the payload.
    Extract {
        /// The payload.
        file: PathBuf,
        /// Partition name as in the entry table (e.g. cpu-bootloader).
        partition: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Build a payload from images.
    ///
    /// Each ENTRY is a tuple in NVIDIA BUP_generator.py syntax, "FILE PARTITION VERSION
    /// OP_MODE SPEC" (VERSION in hex, OP_MODE 0|1|2, SPEC `common` for all boards); several
    /// may be joined with `;`. Alternatively --entries reads a TOML or JSON list:
    /// `[[entry]] file = "mb1.bin", partition = "mb1", version = "0x3643", op_mode = "common",
    /// spec = "common"` (paths relative to the list file).
    Create {
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Payload generation: v3 (R35/R36 UEFI capsule) or v2 (R32).
        #[arg(long, value_parser = ["v2", "v3"])]
        format: Option<String>,
        /// Header version word (default: what NVIDIA's generator writes for the format).
        #[arg(long, value_parser = crate::util::parse_u64)]
        bup_version: Option<u64>,
        /// Header accessory file (V3: the 8-byte rollback/RatchetInfo; default 8 zero bytes).
        #[arg(long)]
        accessory: Option<PathBuf>,
        /// Entry list file (.toml or .json).
        #[arg(long)]
        entries: Option<PathBuf>,
        /// Entries in BUP_generator.py tuple syntax.
        entry: Vec<String>,
        /// Print the resulting entry table as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `jota bup`.
pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Inspect { file, json, target } => inspect(&file, json, target.target()),
        Cmd::Extract {
            file,
            partition,
            output,
            target,
        } => extract(&file, &partition, &output, target.target()),
        Cmd::Create {
            output,
            format,
            bup_version,
            accessory,
            entries,
            entry,
            json,
        } => create(
            &output,
            format,
            bup_version,
            accessory,
            entries,
            &entry,
            json,
        ),
    }
}

fn open(file: &Path) -> Result<(BufReader<File>, Bup)> {
    let f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let mut r = BufReader::new(f);
    let bup =
        Bup::read_from(&mut r).with_context(|| format!("{} is not a valid BUP", file.display()))?;
    Ok((r, bup))
}

fn entry_sha256<R: Read + Seek>(r: &mut R, e: &BupEntry) -> Result<String> {
    r.seek(SeekFrom::Start(u64::from(e.offset)))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut r.take(u64::from(e.length)), &mut h)?;
    if n != u64::from(e.length) {
        bail!("entry {} ({}) is cut short", e.index, e.partition);
    }
    Ok(hex::encode(h.finalize()))
}

#[derive(Serialize)]
struct JsonEntry<'a> {
    #[serde(flatten)]
    entry: &'a BupEntry,
    sha256: String,
}

#[derive(Serialize)]
struct JsonInspect<'a> {
    file: String,
    header: &'a jota_tegra::bup::BupHeader,
    version_text: String,
    entries: Vec<JsonEntry<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Target>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selection: Option<Vec<Selection>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<Vec<String>>,
}

fn spec_text(s: &str) -> &str {
    if s.is_empty() {
        "(common)"
    } else {
        s
    }
}

fn inspect(file: &Path, json: bool, target: Option<Target>) -> Result<()> {
    let (mut r, bup) = open(file)?;
    let selection = target.as_ref().map(|t| bup.select_all(t));
    let missing: Option<Vec<String>> = selection.as_ref().map(|s| {
        s.iter()
            .filter(|x| x.entry.is_none())
            .map(|x| x.partition.clone())
            .collect()
    });
    let h = &bup.header;
    if json {
        let entries = bup
            .entries
            .iter()
            .map(|e| {
                Ok(JsonEntry {
                    entry: e,
                    sha256: entry_sha256(&mut r, e)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        return print_json(&JsonInspect {
            file: file.display().to_string(),
            header: h,
            version_text: h.version.to_string(),
            entries,
            target,
            selection,
            missing,
        });
    }
    outln!("{}", file.display());
    outln!(
        "  format     {} (NVIDIA__BLOB__{}), version {} ({:#010x})",
        h.format,
        h.format,
        h.version,
        h.version.0
    );
    outln!(
        "  size       {} bytes, header {} bytes, {} entries",
        thousands(h.blob_size.into()),
        h.header_size,
        h.entry_count
    );
    if !h.accessory.is_empty() {
        let hexs: String = h.accessory.iter().map(|b| format!("{b:02x}")).collect();
        outln!("  accessory  {hexs}");
    }
    let chosen: Vec<Option<MatchKind>> = bup
        .entries
        .iter()
        .map(|e| {
            selection.as_ref().and_then(|s| {
                s.iter()
                    .find(|x| x.entry == Some(e.index))
                    .and_then(|x| x.matched_by)
            })
        })
        .collect();
    let w = bup
        .entries
        .iter()
        .map(|e| e.partition.len())
        .max()
        .unwrap_or(9)
        .max(9);
    outln!();
    outln!(
        "  {:>3}  {:<w$}  {:>10}  {:>10}  {:>7}  {:<7}  spec",
        "#",
        "partition",
        "offset",
        "length",
        "version",
        "op_mode"
    );
    for (e, c) in bup.entries.iter().zip(&chosen) {
        let mark = match c {
            Some(MatchKind::FullSpec) => "  <- selected (full spec)",
            Some(MatchKind::CompatSpec) => "  <- selected (compat spec)",
            Some(MatchKind::Common) => "  <- selected (common)",
            None => "",
        };
        outln!(
            "  {:>3}  {:<w$}  {:>10}  {:>10}  {:>#7x}  {:<7}  {}{}",
            e.index,
            e.partition,
            e.offset,
            e.length,
            e.version,
            e.op_mode.to_string(),
            spec_text(&e.spec),
            mark
        );
    }
    if let (Some(t), Some(sel)) = (&target, &selection) {
        outln!();
        outln!("  target spec       {}", t.spec.as_deref().unwrap_or("-"));
        outln!(
            "  compat spec       {}",
            t.compat_spec
                .as_deref()
                .unwrap_or("(none: firmware default -------)")
        );
        outln!(
            "  production fused  {}",
            if t.production_fused { "yes" } else { "no" }
        );
        let ambiguous: Vec<&Selection> =
            sel.iter().filter(|s| !s.also_matched.is_empty()).collect();
        for s in ambiguous {
            outln!(
                "  note: {} also matches entries {:?}; the firmware uses the first",
                s.partition,
                s.also_matched
            );
        }
        if let Some(m) = missing.filter(|m| !m.is_empty()) {
            outln!("  NO ENTRY for this board: {}", m.join(", "));
        }
    }
    Ok(())
}

fn extract(file: &Path, partition: &str, out: &Path, target: Option<Target>) -> Result<()> {
    let (mut r, bup) = open(file)?;
    let candidates: Vec<&BupEntry> = bup.entries_for(partition).collect();
    if candidates.is_empty() {
        bail!(
            "{} has no entry for partition `{partition}` (it has: {})",
            file.display(),
            bup.partitions().join(", ")
        );
    }
    let entry = match &target {
        Some(t) => {
            let sel = bup.select(
                partition,
                t,
                jota_tegra::bup::SelectionRule::for_format(bup.header.format),
            );
            let i = sel.entry.with_context(|| {
                format!(
                    "no `{partition}` entry matches spec {} (entry specs: {})",
                    t.spec.as_deref().unwrap_or("-"),
                    candidates
                        .iter()
                        .map(|e| spec_text(&e.spec))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            &bup.entries[i]
        }
        None if candidates.len() == 1 => candidates[0],
        None => bail!(
            "`{partition}` has {} entries (specs: {}); choose one with --spec",
            candidates.len(),
            candidates
                .iter()
                .map(|e| format!("{} [{}]", spec_text(&e.spec), e.op_mode))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    r.seek(SeekFrom::Start(u64::from(entry.offset)))?;
    write_atomic(out, |f| {
        let n = std::io::copy(&mut (&mut r).take(u64::from(entry.length)), f)?;
        if n != u64::from(entry.length) {
            bail!("entry data is cut short: {n} of {} bytes", entry.length);
        }
        Ok(())
    })?;
    eprintln!(
        "wrote {} ({} bytes, entry {} spec {})",
        out.display(),
        entry.length,
        entry.index,
        spec_text(&entry.spec)
    );
    Ok(())
}

/// A version given as a number or a hex string (BUP_generator reads versions as hex).
#[derive(Deserialize, Debug)]
#[serde(untagged)]
enum Num {
    Int(u64),
    Text(String),
}

impl Num {
    fn hex(&self, what: &str) -> Result<u32> {
        let v = match self {
            Num::Int(i) => *i,
            Num::Text(s) => {
                let t = s.trim().trim_start_matches("0x").trim_start_matches("0X");
                u64::from_str_radix(t, 16).with_context(|| format!("{what} `{s}` is not hex"))?
            }
        };
        u32::try_from(v).with_context(|| format!("{what} {v:#x} does not fit 32 bits"))
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct ListEntry {
    file: PathBuf,
    partition: String,
    #[serde(default)]
    version: Option<Num>,
    #[serde(default)]
    op_mode: Option<toml::Value>,
    #[serde(default)]
    spec: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct EntryList {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    version: Option<Num>,
    #[serde(default)]
    accessory: Option<String>,
    #[serde(default, rename = "entry")]
    entries: Vec<ListEntry>,
}

fn op_mode_of(v: &Option<toml::Value>) -> Result<OpMode> {
    let s = match v {
        None => return Ok(OpMode::Common),
        Some(toml::Value::Integer(i)) => i.to_string(),
        Some(toml::Value::String(s)) => s.clone(),
        Some(o) => bail!("op_mode {o} is not a number or name"),
    };
    s.parse().map_err(anyhow::Error::msg)
}

fn load_list(path: &Path) -> Result<EntryList> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    if is_json {
        // JSON numbers/strings map onto the same TOML-shaped structure.
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let t: toml::Value = serde_json::from_value(v)
            .with_context(|| format!("{}: unsupported JSON value", path.display()))?;
        t.try_into()
            .with_context(|| format!("{}: bad entry list", path.display()))
    } else {
        toml::from_str(&text).with_context(|| format!("{}: bad entry list", path.display()))
    }
}

struct Planned {
    meta: EntryMeta,
    file: PathBuf,
}

fn parse_tuple(t: &str) -> Result<Planned> {
    let f: Vec<&str> = t.split_whitespace().collect();
    if f.len() != 5 {
        bail!("entry `{t}` must have 5 fields: FILE PARTITION VERSION OP_MODE SPEC");
    }
    Ok(Planned {
        file: PathBuf::from(f[0]),
        meta: EntryMeta {
            partition: f[1].to_string(),
            version: Num::Text(f[2].to_string()).hex("version")?,
            op_mode: f[3].parse().map_err(anyhow::Error::msg)?,
            spec: if f[4] == "common" {
                String::new()
            } else {
                f[4].to_string()
            },
            length: 0,
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn create(
    out: &Path,
    format: Option<String>,
    bup_version: Option<u64>,
    accessory: Option<PathBuf>,
    entries: Option<PathBuf>,
    tuples: &[String],
    json: bool,
) -> Result<()> {
    let mut planned = Vec::new();
    let mut list_format = None;
    let mut list_version = None;
    let mut list_accessory = None;
    if let Some(path) = &entries {
        let list = load_list(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        list_format = list.format;
        list_version = list.version.map(|v| v.hex("version")).transpose()?;
        list_accessory = list.accessory;
        for (i, e) in list.entries.into_iter().enumerate() {
            let spec = e.spec.unwrap_or_default();
            planned.push(Planned {
                file: base.join(&e.file),
                meta: EntryMeta {
                    partition: e.partition,
                    version: e
                        .version
                        .map(|v| v.hex(&format!("entry {i} version")))
                        .transpose()?
                        .unwrap_or(0),
                    op_mode: op_mode_of(&e.op_mode).with_context(|| format!("entry {i}"))?,
                    spec: if spec == "common" {
                        String::new()
                    } else {
                        spec
                    },
                    length: 0,
                },
            });
        }
    }
    for t in tuples {
        for part in t.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            planned.push(parse_tuple(part)?);
        }
    }
    if planned.is_empty() {
        bail!("no entries: give ENTRY tuples or --entries FILE");
    }
    let format = match format.or(list_format).as_deref() {
        None | Some("v3") | Some("V3") => BupFormat::V3,
        Some("v2") | Some("V2") => BupFormat::V2,
        Some(o) => bail!("format `{o}` is not v2 or v3"),
    };
    let version = match bup_version {
        Some(v) => u32::try_from(v).context("--bup-version does not fit 32 bits")?,
        None => list_version.unwrap_or(format.default_version()),
    };
    let accessory = match (accessory, list_accessory) {
        (Some(p), _) => std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        (None, Some(h)) => hex::decode(h.trim()).context("accessory must be hex")?,
        (None, None) if format == BupFormat::V3 => vec![0; jota_tegra::bup::V3_ACCESSORY_LEN],
        (None, None) => Vec::new(),
    };
    for p in &mut planned {
        let md = std::fs::metadata(&p.file)
            .with_context(|| format!("entry {}: {}", p.meta.partition, p.file.display()))?;
        if !md.is_file() {
            bail!(
                "entry {}: {} is not a file",
                p.meta.partition,
                p.file.display()
            );
        }
        p.meta.length = u32::try_from(md.len())
            .with_context(|| format!("{} is larger than 4 GiB", p.file.display()))?;
    }
    let metas: Vec<EntryMeta> = planned.iter().map(|p| p.meta.clone()).collect();
    let bup = Bup::layout(format, version, accessory, &metas)?;
    write_atomic(out, |f| {
        let mut w = std::io::BufWriter::new(f);
        bup.write_with(&mut w, |e| File::open(&planned[e.index].file))?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    })?;
    // Prove what was written parses back to what was planned.
    let (_, back) = open(out)?;
    if back != bup {
        bail!(
            "internal error: {} does not parse back to the planned payload",
            out.display()
        );
    }
    if json {
        print_json(&back)?;
    } else {
        eprintln!(
            "wrote {} ({} {} entries, {} bytes)",
            out.display(),
            back.header.format,
            back.entries.len(),
            thousands(back.header.blob_size.into())
        );
    }
    Ok(())
}
