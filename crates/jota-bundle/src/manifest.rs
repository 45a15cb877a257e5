//! The bundle manifest: what a bundle contains and where every byte of it is.
//!
//! The manifest is JSON (schema below, documented in `docs/formats/bundle.md`). It is the
//! one thing that is signed: it records the sha256 of the block index and of every chunk,
//! so a valid signature over the manifest vouches for every byte of the bundle.

use crate::hwcompat::Rule;
use crate::version;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The manifest schema this code writes and reads.
pub const FORMAT: u32 = 1;
/// Image block size: the unit of deduplication and of seeding a delta install. ext4 images
/// are 4 KiB-block aligned, so equal file data sits in equal blocks.
pub const BLOCK_SIZE: u32 = 4096;
/// Largest chunk (uncompressed) a reader accepts: bounds memory per chunk.
pub const MAX_CHUNK_LEN: u64 = 64 << 20;
/// Largest component a reader accepts (16 TiB).
pub const MAX_COMPONENT_SIZE: u64 = 1 << 44;

/// A sha256 digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// sha256 of `data`.
    pub fn of(data: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest(sha2::Sha256::digest(data).into())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Digest, String> {
        let mut d = [0u8; 32];
        // Lower case only: one spelling per value, so no byte of a bundle can change
        // without changing what it means.
        if s.len() != 64
            || s.bytes().any(|b| b.is_ascii_uppercase())
            || hex::decode_to_slice(s, &mut d).is_err()
        {
            return Err(format!("`{s}` is not a sha256 (64 lower-case hex digits)"));
        }
        Ok(Digest(d))
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a component is and so how a device installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    /// A partition image written to the inactive slot's partition (rootfs, kernel, DTB).
    RawImage,
    /// A Tegra bootloader update payload (BUP, `NVIDIA__BLOB__V2`/`V3`).
    TegraBup,
    /// A UEFI capsule (`TEGRA_BL.Cap`) for R35/R36 firmware updates.
    UefiCapsule,
    /// A file placed at a path.
    File,
    /// A script run at a phase of the install.
    Script,
    /// A container image archive (OCI/docker tar).
    Container,
    /// A model file (e.g. ONNX/TensorRT engine) placed at a path.
    Model,
}

impl ComponentType {
    /// All types, for help texts.
    pub const ALL: [ComponentType; 7] = [
        ComponentType::RawImage,
        ComponentType::TegraBup,
        ComponentType::UefiCapsule,
        ComponentType::File,
        ComponentType::Script,
        ComponentType::Container,
        ComponentType::Model,
    ];

    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentType::RawImage => "raw-image",
            ComponentType::TegraBup => "tegra-bup",
            ComponentType::UefiCapsule => "uefi-capsule",
            ComponentType::File => "file",
            ComponentType::Script => "script",
            ComponentType::Container => "container",
            ComponentType::Model => "model",
        }
    }
}

impl fmt::Display for ComponentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ComponentType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ComponentType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = ComponentType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown component type `{s}` (one of {})", all.join(", "))
            })
    }
}

/// When a script runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before anything is written.
    PreInstall,
    /// After every component is written and verified, before the switch.
    PostInstall,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::PreInstall => "pre-install",
            Phase::PostInstall => "post-install",
        })
    }
}

/// How chunks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Each chunk is one zstd frame.
    Zstd,
}

/// Pre-flight conditions the device checks before writing anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreChecks {
    /// Minimum battery charge in percent (devices without a battery skip this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_battery_pct: Option<u8>,
    /// Minimum free space on the data partition, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_free_space_mb: Option<u64>,
    /// systemd units that must be active.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_services: Vec<String>,
}

impl PreChecks {
    /// True when nothing is required.
    pub fn is_empty(&self) -> bool {
        *self == PreChecks::default()
    }
}

/// The base a bundle's chunks were grouped against (delta hint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Version of the base release.
    pub version: String,
    /// sha256 of the base bundle's manifest.
    pub manifest_sha256: Digest,
}

/// Where the block index is and what it hashes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRef {
    /// Stored (zstd-compressed) length in bytes.
    pub length: u64,
    /// Length once decompressed.
    pub uncompressed_length: u64,
    /// sha256 of the stored bytes.
    pub sha256: Digest,
}

/// The payload area.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayloadRef {
    /// Total length of all chunks.
    pub length: u64,
    /// sha256 of the whole payload area. Chunk hashes cover what chunks decompress to;
    /// this also covers the compressed bytes themselves (a zstd frame has bits a decoder
    /// ignores), so `jota bundle verify` catches every changed byte.
    pub sha256: Digest,
}

/// One chunk: a zstd frame holding `blocks` distinct blocks of one component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunk {
    /// Offset in the payload area.
    pub offset: u64,
    /// Compressed length.
    pub size: u64,
    /// Uncompressed length (`blocks` × block size).
    pub length: u64,
    /// How many blocks it holds.
    pub blocks: u32,
    /// sha256 of the uncompressed bytes.
    pub sha256: Digest,
    /// True when every block of the chunk is in the base release (delta devices holding
    /// the base never fetch it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_base: bool,
}

/// Block statistics of a component and where its block map sits in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocks {
    /// Blocks in the image (the last may be partial).
    pub total: u64,
    /// All-zero blocks (not stored).
    pub zero: u64,
    /// Distinct non-zero blocks stored in chunks.
    pub stored: u64,
    /// Offset of the component's section in the uncompressed index.
    pub index_offset: u64,
    /// Length of that section.
    pub index_length: u64,
}

/// What the build checked about a Tegra component (informational).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TegraInfo {
    /// BUP generation (`V2`/`V3`) or capsule firmware class GUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Number of BUP entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u32>,
    /// Distinct TNSPECs the BUP carries entries for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specs: Vec<String>,
    /// Capsule firmware version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_version: Option<u32>,
}

/// One thing the bundle installs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Unique name (`rootfs`, `kernel`, ...): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: ComponentType,
    /// Target partition label without slot (`APP`, `kernel`, `kernel-dtb`); the device
    /// picks the inactive slot's label (`APP_b`, `B_kernel`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Target path on the device (files, models, capsules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// File mode for `path` targets (octal digits, e.g. `0644`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// When a script runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The component's own version (informational; used by install-if-different).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the whole component.
    pub sha256: Digest,
    /// Chunk compression.
    pub compression: Compression,
    /// Block statistics and the block map's place in the index.
    pub blocks: Blocks,
    /// The chunks, in payload order.
    pub chunks: Vec<Chunk>,
    /// What the build learnt from a BUP or capsule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tegra: Option<TegraInfo>,
}

/// The manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Schema version ([`FORMAT`]).
    pub format: u32,
    /// Release version (ordered like dpkg versions).
    pub version: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Build time, RFC 3339 UTC (from `SOURCE_DATE_EPOCH` when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Hardware-compatibility rules ([`crate::hwcompat`]); empty means any device.
    pub hardware_compatibility: Vec<String>,
    /// Anti-rollback floor: once this release is committed, the device refuses bundles
    /// older than this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_version: Option<String>,
    /// The release the chunks were grouped against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    /// Pre-flight checks.
    #[serde(default, skip_serializing_if = "PreChecks::is_empty")]
    pub pre_checks: PreChecks,
    /// Block size of every block map ([`BLOCK_SIZE`]).
    pub block_size: u32,
    /// The block index.
    pub index: IndexRef,
    /// The payload.
    pub payload: PayloadRef,
    /// Components in install order.
    pub components: Vec<Component>,
}

/// What is wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("manifest: {0}")]
pub struct ManifestError(pub String);

/// Checks a component or file name: it becomes a file name in exports, so no path tricks.
pub fn check_name(what: &str, n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > 64 {
        return Err(format!("{what} `{n}` must be 1 to 64 characters"));
    }
    if n.starts_with('.') || n.starts_with('-') {
        return Err(format!("{what} `{n}` must not start with `.` or `-`"));
    }
    if !n
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "{what} `{n}` may hold only letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// Checks a container image tag (`inference:current`, `registry:5000/edge/app:prod`).
pub fn check_image_tag(t: &str) -> Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 255
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !t.starts_with(['-', '.', ':', '/']);
    if !ok {
        return Err(format!(
            "container tag `{t}` is not an image tag (letters, digits, `._-/:@`, at most 255)"
        ));
    }
    Ok(())
}

/// Checks a target path: absolute, normalised, no `..`, no NUL, no control characters.
pub fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.len() > 1024 {
        return Err(format!(
            "path `{p}` must be absolute and at most 1024 bytes"
        ));
    }
    if p.chars().any(|c| c.is_control()) {
        return Err(format!("path `{p:?}` holds control characters"));
    }
    for seg in p.split('/').skip(1) {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(format!(
                "path `{p}` must not hold empty, `.` or `..` segments (path traversal)"
            ));
        }
    }
    Ok(())
}

/// Checks a partition label (GPT labels are at most 36 UTF-16 units).
pub fn check_partition(l: &str) -> Result<(), String> {
    if l.is_empty()
        || l.len() > 36
        || !l
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(format!(
            "partition label `{l}` must be 1 to 36 letters, digits, `_`, `-` or `.`"
        ));
    }
    Ok(())
}

impl Manifest {
    /// Parses and validates manifest JSON.
    pub fn parse(json: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(json)
            .map_err(|e| ManifestError(format!("not valid manifest JSON: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// The canonical bytes that get signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The component named `name`.
    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Parsed hardware rules.
    pub fn hw_rules(&self) -> Result<Vec<Rule>, ManifestError> {
        self.hardware_compatibility
            .iter()
            .map(|r| Rule::parse(r).map_err(|e| ManifestError(e.to_string())))
            .collect()
    }

    /// Checks every structural rule: known format, valid versions and rules, safe names and
    /// paths, chunks that tile the payload exactly and add up to each component's blocks.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let e = |s: String| Err(ManifestError(s));
        if self.format != FORMAT {
            return e(format!(
                "format {} is not supported (this jota reads format {FORMAT})",
                self.format
            ));
        }
        version::validate(&self.version).map_err(|x| ManifestError(x.to_string()))?;
        if let Some(m) = &self.minimum_version {
            version::validate(m).map_err(|x| ManifestError(format!("minimum_version: {x}")))?;
            if version::compare(&self.version, m).is_lt() {
                return e(format!(
                    "version {} is below its own minimum_version {m}",
                    self.version
                ));
            }
        }
        if let Some(b) = &self.base {
            version::validate(&b.version).map_err(|x| ManifestError(format!("base: {x}")))?;
        }
        self.hw_rules()?;
        if self.block_size != BLOCK_SIZE {
            return e(format!(
                "block_size {} is not supported (only {BLOCK_SIZE})",
                self.block_size
            ));
        }
        if self.pre_checks.min_battery_pct.is_some_and(|p| p > 100) {
            return e("pre_checks.min_battery_pct is above 100".into());
        }
        if self.components.is_empty() {
            return e("no components".into());
        }
        let bs = self.block_size as u64;
        let mut names = std::collections::HashSet::new();
        let mut payload_end = 0u64;
        let mut index_end = 0u64;
        for c in &self.components {
            check_name("component name", &c.name).map_err(ManifestError)?;
            if !names.insert(c.name.as_str()) {
                return e(format!("component `{}` appears twice", c.name));
            }
            let ce = |s: String| ManifestError(format!("component `{}`: {s}", c.name));
            if let Some(p) = &c.partition {
                check_partition(p).map_err(ce)?;
            }
            if let Some(p) = &c.path {
                // A container's path is a file (an archive placed by an A/B install) or,
                // in an application bundle, the image tag the application runs.
                if c.kind == ComponentType::Container && !p.starts_with('/') {
                    check_image_tag(p).map_err(ce)?;
                } else {
                    check_path(p).map_err(ce)?;
                }
            }
            if let Some(v) = &c.version {
                version::validate(v).map_err(|x| ce(x.to_string()))?;
            }
            if let Some(m) = &c.mode {
                if m.is_empty() || m.len() > 4 || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(ce(format!("mode `{m}` is not octal like 0644")));
                }
            }
            match c.kind {
                ComponentType::RawImage if c.partition.is_none() => {
                    return Err(ce("a raw-image needs a partition".into()))
                }
                ComponentType::File | ComponentType::Model if c.path.is_none() => {
                    return Err(ce(format!("a {} needs a path", c.kind)))
                }
                ComponentType::Script if c.phase.is_none() => {
                    return Err(ce("a script needs a phase".into()))
                }
                _ => {}
            }
            if c.size > MAX_COMPONENT_SIZE {
                return Err(ce(format!("size {} is over 16 TiB", c.size)));
            }
            let b = &c.blocks;
            if b.total != c.size.div_ceil(bs) {
                return Err(ce(format!(
                    "{} blocks cannot hold {} bytes",
                    b.total, c.size
                )));
            }
            if b.zero.checked_add(b.stored).is_none_or(|n| n > b.total) {
                return Err(ce(format!(
                    "{} zero + {} stored blocks exceed {} blocks",
                    b.zero, b.stored, b.total
                )));
            }
            if b.index_offset != index_end {
                return Err(ce(format!(
                    "index section at {} should follow the previous one at {index_end}",
                    b.index_offset
                )));
            }
            index_end = b
                .index_offset
                .checked_add(b.index_length)
                .ok_or_else(|| ce("index section overflows".into()))?;
            let mut stored = 0u64;
            for (i, ch) in c.chunks.iter().enumerate() {
                let che = |s: String| ce(format!("chunk {i}: {s}"));
                if ch.offset != payload_end {
                    return Err(che(format!(
                        "offset {} should be {payload_end} (chunks tile the payload)",
                        ch.offset
                    )));
                }
                if ch.blocks == 0 || ch.length != ch.blocks as u64 * bs {
                    return Err(che(format!(
                        "length {} does not match {} blocks",
                        ch.length, ch.blocks
                    )));
                }
                if ch.length > MAX_CHUNK_LEN {
                    return Err(che(format!(
                        "length {} is over the {MAX_CHUNK_LEN}-byte limit",
                        ch.length
                    )));
                }
                // zstd never expands by more than a small bound; anything bigger is bogus.
                if ch.size == 0 || ch.size > ch.length + ch.length / 128 + 1024 {
                    return Err(che(format!(
                        "compressed size {} is impossible for {} bytes",
                        ch.size, ch.length
                    )));
                }
                payload_end += ch.size;
                stored += ch.blocks as u64;
            }
            if stored != b.stored {
                return Err(ce(format!(
                    "chunks hold {stored} blocks but {} are stored",
                    b.stored
                )));
            }
        }
        if payload_end != self.payload.length {
            return e(format!(
                "chunks end at {payload_end} but the payload is {} bytes",
                self.payload.length
            ));
        }
        if index_end != self.index.uncompressed_length {
            return e(format!(
                "index sections end at {index_end} but the index is {} bytes",
                self.index.uncompressed_length
            ));
        }
        Ok(())
    }
}
