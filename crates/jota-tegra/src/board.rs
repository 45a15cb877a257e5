//! Board identity: the TNSPEC / boardspec strings L4T uses to match firmware to hardware.
//!
//! A boardspec is `BOARDID-FAB-BOARDSKU-BOARDREV-FUSELEVEL-CHIPREV`. A TNSPEC adds the
//! target board (the flash config name); R35/R36 write it as
//! `${boardspec}-${target}-` (trailing dash, e.g. `TegraPlatformSpec`), R32 as
//! `${boardspec}-${machine}-${bootdev}` (e.g. `...-jetson-nano-qspi-sd-mmcblk0p1`).
//!
//! A running Jetson also names its module in the device tree: R35/R36 put space-separated
//! `BOARDID-SKU-FAB` ids in `/proc/device-tree/chosen/ids` (module and carrier) and the
//! full part number (`699-13767-0005-300 W.1`) in `chosen/nvidia,sku`; R32 lists the ids as
//! property names under `chosen/plugin-manager/ids/`. `compatible` is NUL-separated
//! (`nvidia,p3768-0000+p3767-0005`, `nvidia,p3767-0005`, `nvidia,tegra234`).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The six hardware fields of a TNSPEC. Any of them may be empty (a wildcard).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BoardSpec {
    /// Module board id, e.g. `3767` (Orin Nano/NX), `3701` (AGX Orin), `3448` (Nano).
    pub board_id: String,
    /// Fabrication revision, e.g. `300`, `TS4`.
    pub fab: String,
    /// Module SKU, e.g. `0005` (Orin Nano 8GB).
    pub board_sku: String,
    /// Board revision, e.g. `K.2`.
    pub board_rev: String,
    /// `1` when fused (fuselevel_production), `0` when not.
    pub fuse_level: String,
    /// Chip revision.
    pub chip_rev: String,
}

/// A string that is not a boardspec/TNSPEC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} `{input}`: {reason}")]
pub struct SpecError {
    /// What was being parsed.
    pub what: &'static str,
    /// The input.
    pub input: String,
    /// Why it was rejected.
    pub reason: String,
}

impl BoardSpec {
    /// Parses `BOARDID-FAB-BOARDSKU-BOARDREV-FUSELEVEL-CHIPREV` (exactly six fields).
    pub fn parse(s: &str) -> Result<BoardSpec, SpecError> {
        let f: Vec<&str> = s.trim().split('-').collect();
        if f.len() != 6 {
            return Err(SpecError {
                what: "boardspec",
                input: s.to_string(),
                reason: format!(
                    "has {} fields, expected 6 (BOARDID-FAB-BOARDSKU-BOARDREV-FUSELEVEL-CHIPREV)",
                    f.len()
                ),
            });
        }
        Ok(BoardSpec {
            board_id: f[0].into(),
            fab: f[1].into(),
            board_sku: f[2].into(),
            board_rev: f[3].into(),
            fuse_level: f[4].into(),
            chip_rev: f[5].into(),
        })
    }

    /// The compatible boardspec L4T generates for fleets of mixed FABs/revisions
    /// (meta-tegra `gen_compat_3767`/`gen_compat_3701`, jetpack-nixos `ota_helpers.sh`).
    /// `None` for boards that have no compat rule.
    pub fn compat(&self) -> Option<BoardSpec> {
        let mut c = self.clone();
        match self.board_id.as_str() {
            "3767" => {
                // SKUs 0000 (Orin NX 16GB) and 0002 keep a normalised FAB; every other SKU
                // (NX 8GB, the Orin Nanos) drops it.
                if self.board_sku == "0000" || self.board_sku == "0002" {
                    if !(self.fab.starts_with("TS") || self.fab.starts_with("EB")) {
                        c.fab = "000".into();
                    }
                } else {
                    c.fab.clear();
                }
            }
            "3701" => {
                if self.board_sku == "0000" {
                    let early = {
                        let b = self.fab.as_bytes();
                        (b.len() >= 3
                            && matches!(b[0], b'0'..=b'2')
                            && b[1].is_ascii_digit()
                            && b[2].is_ascii_digit())
                            || self.fab.starts_with("TS")
                            || self.fab.starts_with("EB")
                    };
                    c.fab = if early { "000" } else { "300" }.into();
                } else if matches!(self.board_sku.as_str(), "0004" | "0005" | "0008") {
                    c.fab.clear();
                }
            }
            _ => return None,
        }
        c.board_rev.clear();
        c.chip_rev.clear();
        Some(c)
    }

    /// Whether the fuse level field says production-fused.
    pub fn production_fused(&self) -> bool {
        self.fuse_level != "0"
    }
}

impl fmt::Display for BoardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}-{}",
            self.board_id, self.fab, self.board_sku, self.board_rev, self.fuse_level, self.chip_rev
        )
    }
}

/// A full TNSPEC: boardspec plus target board.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TnSpec {
    /// The six hardware fields.
    pub board: BoardSpec,
    /// Target board / machine, e.g. `jetson-orin-nano-devkit` (may contain `-`).
    pub target: String,
    /// R32 only: boot device after the last `-` (e.g. `mmcblk0p1`, `internal`).
    /// `None` for the R35/R36 form, which ends with `-`.
    pub boot_dev: Option<String>,
}

impl TnSpec {
    /// Parses either form; `to_string()` gives the input back exactly.
    pub fn parse(s: &str) -> Result<TnSpec, SpecError> {
        let s = s.trim();
        let err = |reason: &str| SpecError {
            what: "TNSPEC",
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let mut it = s.splitn(7, '-');
        let fields: Vec<&str> = it.by_ref().take(6).collect();
        let rest = it.next().ok_or_else(|| {
            err("expected BOARDID-FAB-BOARDSKU-BOARDREV-FUSELEVEL-CHIPREV-TARGET...")
        })?;
        if fields.len() != 6 {
            return Err(err("fewer than 6 hardware fields"));
        }
        let board = BoardSpec::parse(&fields.join("-"))?;
        let (target, boot_dev) = if let Some(t) = rest.strip_suffix('-') {
            (t.to_string(), None)
        } else {
            match rest.rsplit_once('-') {
                Some((m, d)) => (m.to_string(), Some(d.to_string())),
                None => (String::new(), Some(rest.to_string())),
            }
        };
        Ok(TnSpec {
            board,
            target,
            boot_dev,
        })
    }

    /// The compat spec: compat boardspec + `-target-` (R35/R36 form), for boards that have
    /// a compat rule.
    pub fn compat_spec(&self) -> Option<String> {
        let c = self.board.compat()?;
        Some(match &self.boot_dev {
            None => format!("{c}-{}-", self.target),
            Some(d) => format!("{c}-{}-{d}", self.target),
        })
    }
}

impl fmt::Display for TnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.boot_dev {
            None => write!(f, "{}-{}-", self.board, self.target),
            Some(d) if self.target.is_empty() => write!(f, "{}-{d}", self.board),
            Some(d) => write!(f, "{}-{}-{d}", self.board, self.target),
        }
    }
}

/// A board id as the device tree gives it: `BOARDID-SKU-FAB` (e.g. `3767-0005-300`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BoardId {
    /// Board id, e.g. `3767`.
    pub board_id: String,
    /// SKU, e.g. `0005`.
    pub sku: String,
    /// FAB, e.g. `300`.
    pub fab: String,
}

impl BoardId {
    /// Parses `BOARDID-SKU-FAB` (FAB may be missing).
    pub fn parse(s: &str) -> Result<BoardId, SpecError> {
        let err = |reason: &str| SpecError {
            what: "board id",
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let mut f = s.trim().split('-');
        let board_id = f.next().unwrap_or_default();
        let sku = f.next().ok_or_else(|| err("expected BOARDID-SKU[-FAB]"))?;
        let fab = f.next().unwrap_or_default();
        if f.next().is_some() {
            return Err(err("more than three fields"));
        }
        if board_id.len() != 4 || !board_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("board id must be 4 digits"));
        }
        if sku.len() != 4 || !sku.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("SKU must be 4 characters"));
        }
        if !fab.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(err("FAB must be alphanumeric"));
        }
        Ok(BoardId {
            board_id: board_id.into(),
            sku: sku.into(),
            fab: fab.into(),
        })
    }

    /// The module this id names, if jota knows it.
    pub fn module(&self) -> Option<&'static Module> {
        Module::lookup(&self.board_id, &self.sku)
    }
}

impl fmt::Display for BoardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.board_id, self.sku, self.fab)
    }
}

/// Parses R35/R36 `/proc/device-tree/chosen/ids`: ids separated by spaces (or NULs), module
/// and carrier in no fixed order.
pub fn parse_chosen_ids(raw: &[u8]) -> Result<Vec<BoardId>, SpecError> {
    String::from_utf8_lossy(raw)
        .split(|c: char| c.is_whitespace() || c == '\0')
        .filter(|t| !t.is_empty())
        .map(BoardId::parse)
        .collect()
}

/// Splits a NUL-separated device-tree string list (`compatible`, `nvidia,dtbbuildtime`).
pub fn dt_strings(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A device-tree string property without its trailing NUL.
pub fn dt_string(raw: &[u8]) -> String {
    dt_strings(raw).into_iter().next().unwrap_or_default()
}

/// A module part number: `699-<class><BOARDID>-<SKU>-<FAB> <REV>`, as in
/// `chosen/nvidia,sku` and the module EEPROM (bytes 20..42).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartNumber {
    /// Board id, e.g. `3767`.
    pub board_id: String,
    /// SKU, e.g. `0005`.
    pub sku: String,
    /// FAB, e.g. `300`.
    pub fab: String,
    /// Board revision, e.g. `W.1`.
    pub rev: Option<String>,
}

impl PartNumber {
    /// Parses `699-13767-0005-300 W.1` (padding NUL/0xFF/space trimmed).
    pub fn parse(raw: &[u8]) -> Result<PartNumber, SpecError> {
        let text: String = raw
            .iter()
            .take_while(|&&b| b != 0 && b != 0xff)
            .map(|&b| b as char)
            .collect();
        let t = text.trim();
        let err = |reason: &str| SpecError {
            what: "part number",
            input: t.to_string(),
            reason: reason.to_string(),
        };
        let (pn, rev) = match t.split_once(' ') {
            Some((p, r)) => (p, Some(r.trim().to_string()).filter(|r| !r.is_empty())),
            None => (t, None),
        };
        let f: Vec<&str> = pn.split('-').collect();
        if f.len() != 4 || f[0] != "699" {
            return Err(err("expected 699-CBBBB-SSSS-FFF [REV]"));
        }
        if f[1].len() != 5 || !f[1].bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "board field must be a class digit and a 4-digit board id",
            ));
        }
        Ok(PartNumber {
            board_id: f[1][1..].to_string(),
            sku: f[2].to_string(),
            fab: f[3].to_string(),
            rev,
        })
    }

    /// The boardspec with the given fuse level and chip revision.
    pub fn boardspec(&self, fuse_level: &str, chip_rev: &str) -> BoardSpec {
        BoardSpec {
            board_id: self.board_id.clone(),
            fab: self.fab.clone(),
            board_sku: self.sku.clone(),
            board_rev: self.rev.clone().unwrap_or_default(),
            fuse_level: fuse_level.into(),
            chip_rev: chip_rev.into(),
        }
    }
}

/// Tegra SoC generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Soc {
    /// TX1, Nano (chip id 0x21).
    T210,
    /// TX2 (0x18).
    T186,
    /// Xavier (0x19).
    T194,
    /// Orin (0x23).
    T234,
}

impl Soc {
    /// `TEGRA_CHIPID` value.
    pub fn chip_id(self) -> u32 {
        match self {
            Soc::T210 => 0x21,
            Soc::T186 => 0x18,
            Soc::T194 => 0x19,
            Soc::T234 => 0x23,
        }
    }

    /// From the `compatible` list (`nvidia,tegra234`, ...).
    pub fn from_compatible(compatible: &[String]) -> Option<Soc> {
        compatible.iter().find_map(|c| match c.as_str() {
            "nvidia,tegra210" => Some(Soc::T210),
            "nvidia,tegra186" => Some(Soc::T186),
            "nvidia,tegra194" => Some(Soc::T194),
            "nvidia,tegra234" => Some(Soc::T234),
            _ => None,
        })
    }
}

/// A Jetson module jota knows by board id and SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Module {
    /// Board id.
    pub board_id: &'static str,
    /// SKU.
    pub sku: &'static str,
    /// Product name.
    pub name: &'static str,
    /// SoC.
    pub soc: Soc,
}

/// Known modules (NVIDIA's flash configs, jetson_stats, jetpack-nixos).
pub const MODULES: &[Module] = &[
    Module {
        board_id: "3767",
        sku: "0000",
        name: "Jetson Orin NX 16GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3767",
        sku: "0001",
        name: "Jetson Orin NX 8GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3767",
        sku: "0003",
        name: "Jetson Orin Nano 8GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3767",
        sku: "0004",
        name: "Jetson Orin Nano 4GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3767",
        sku: "0005",
        name: "Jetson Orin Nano 8GB (developer kit module)",
        soc: Soc::T234,
    },
    Module {
        board_id: "3701",
        sku: "0000",
        name: "Jetson AGX Orin (developer kit module)",
        soc: Soc::T234,
    },
    Module {
        board_id: "3701",
        sku: "0002",
        name: "Jetson IGX Orin (developer kit)",
        soc: Soc::T234,
    },
    Module {
        board_id: "3701",
        sku: "0004",
        name: "Jetson AGX Orin 32GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3701",
        sku: "0005",
        name: "Jetson AGX Orin 64GB",
        soc: Soc::T234,
    },
    Module {
        board_id: "3701",
        sku: "0008",
        name: "Jetson AGX Orin Industrial",
        soc: Soc::T234,
    },
    Module {
        board_id: "3668",
        sku: "0000",
        name: "Jetson Xavier NX (developer kit)",
        soc: Soc::T194,
    },
    Module {
        board_id: "3668",
        sku: "0001",
        name: "Jetson Xavier NX",
        soc: Soc::T194,
    },
    Module {
        board_id: "3668",
        sku: "0003",
        name: "Jetson Xavier NX 16GB",
        soc: Soc::T194,
    },
    Module {
        board_id: "2888",
        sku: "0001",
        name: "Jetson AGX Xavier 16GB",
        soc: Soc::T194,
    },
    Module {
        board_id: "2888",
        sku: "0004",
        name: "Jetson AGX Xavier 32GB",
        soc: Soc::T194,
    },
    Module {
        board_id: "2888",
        sku: "0005",
        name: "Jetson AGX Xavier 64GB",
        soc: Soc::T194,
    },
    Module {
        board_id: "2888",
        sku: "0008",
        name: "Jetson AGX Xavier Industrial",
        soc: Soc::T194,
    },
    Module {
        board_id: "3310",
        sku: "1000",
        name: "Jetson TX2",
        soc: Soc::T186,
    },
    Module {
        board_id: "3489",
        sku: "0000",
        name: "Jetson TX2i",
        soc: Soc::T186,
    },
    Module {
        board_id: "3489",
        sku: "0888",
        name: "Jetson TX2 4GB",
        soc: Soc::T186,
    },
    Module {
        board_id: "3636",
        sku: "0001",
        name: "Jetson TX2 NX",
        soc: Soc::T186,
    },
    Module {
        board_id: "3448",
        sku: "0000",
        name: "Jetson Nano (developer kit module)",
        soc: Soc::T210,
    },
    Module {
        board_id: "3448",
        sku: "0002",
        name: "Jetson Nano 16GB eMMC",
        soc: Soc::T210,
    },
    Module {
        board_id: "3448",
        sku: "0003",
        name: "Jetson Nano 2GB",
        soc: Soc::T210,
    },
    Module {
        board_id: "2180",
        sku: "1000",
        name: "Jetson TX1",
        soc: Soc::T210,
    },
];

impl Module {
    /// Finds a module by board id and SKU.
    pub fn lookup(board_id: &str, sku: &str) -> Option<&'static Module> {
        MODULES
            .iter()
            .find(|m| m.board_id == board_id && m.sku == sku)
    }

    /// Whether a board id is a module (as opposed to a carrier board).
    pub fn is_module_board(board_id: &str) -> bool {
        MODULES.iter().any(|m| m.board_id == board_id)
    }
}

/// What the device tree of a running Jetson says about its hardware.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtIdentity {
    /// `model`.
    pub model: Option<String>,
    /// `compatible` entries.
    pub compatible: Vec<String>,
    /// `serial-number`.
    pub serial_number: Option<String>,
    /// The module's id (from `chosen/ids` or `plugin-manager/ids`).
    pub module: Option<BoardId>,
    /// The carrier board's id.
    pub carrier: Option<BoardId>,
    /// `chosen/nvidia,sku` part number (R35/R36), which also carries the board revision.
    pub part_number: Option<PartNumber>,
}

/// Raw device-tree properties (bytes as read from `/proc/device-tree/...`); any may be
/// missing.
#[derive(Clone, Debug, Default)]
pub struct DtProps {
    /// `model`
    pub model: Option<Vec<u8>>,
    /// `compatible`
    pub compatible: Option<Vec<u8>>,
    /// `serial-number`
    pub serial_number: Option<Vec<u8>>,
    /// `chosen/ids` (R35/R36)
    pub chosen_ids: Option<Vec<u8>>,
    /// `chosen/nvidia,sku` (R35/R36)
    pub chosen_sku: Option<Vec<u8>>,
    /// Property names under `chosen/plugin-manager/ids/` (R32)
    pub plugin_manager_ids: Vec<String>,
}

impl DtIdentity {
    /// Works out the identity; malformed properties are errors naming the property.
    pub fn from_props(p: &DtProps) -> Result<DtIdentity, SpecError> {
        let mut ids = match &p.chosen_ids {
            Some(raw) => parse_chosen_ids(raw)?,
            None => Vec::new(),
        };
        for n in &p.plugin_manager_ids {
            ids.push(BoardId::parse(n)?);
        }
        let part_number = match &p.chosen_sku {
            Some(raw) => Some(PartNumber::parse(raw)?),
            None => None,
        };
        let compatible = p.compatible.as_deref().map(dt_strings).unwrap_or_default();
        // The module is the id that names a module board; prefer the one the part number names.
        let module = ids
            .iter()
            .find(|i| {
                part_number
                    .as_ref()
                    .is_some_and(|pn| pn.board_id == i.board_id)
            })
            .or_else(|| ids.iter().find(|i| Module::is_module_board(&i.board_id)))
            .cloned()
            .or_else(|| {
                part_number.as_ref().map(|pn| BoardId {
                    board_id: pn.board_id.clone(),
                    sku: pn.sku.clone(),
                    fab: pn.fab.clone(),
                })
            });
        let carrier = ids.iter().find(|i| Some(*i) != module.as_ref()).cloned();
        Ok(DtIdentity {
            model: p.model.as_deref().map(dt_string),
            compatible,
            serial_number: p.serial_number.as_deref().map(dt_string),
            module,
            carrier,
            part_number,
        })
    }

    /// SoC from `compatible`.
    pub fn soc(&self) -> Option<Soc> {
        Soc::from_compatible(&self.compatible)
    }

    /// Module `pBBBB-SSSS` from `compatible` when no ids are present (`nvidia,p3767-0005`;
    /// the first entry may carry a `-super` suffix, so the plain module entry is used).
    pub fn compatible_module(&self) -> Option<(String, String)> {
        self.compatible.iter().find_map(|c| {
            let rest = c.strip_prefix("nvidia,p")?;
            if rest.contains('+') {
                return None;
            }
            let (b, s) = rest.split_once('-')?;
            (b.len() == 4 && s.len() == 4).then(|| (b.to_string(), s.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_tnspec_forms_and_round_trips() {
        for s in [
            "3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-",
            "3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-",
            "3701-500-0005-A.0-1-0-cti-orin-agx-agx201-00-",
            "2888-400-0004-M.0-1-2-jetson-xavier-rqx580-",
            "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1",
        ] {
            let t = TnSpec::parse(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
        let t = TnSpec::parse("3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1").unwrap();
        assert_eq!(t.target, "jetson-nano-qspi-sd");
        assert_eq!(t.boot_dev.as_deref(), Some("mmcblk0p1"));
        assert_eq!(t.board.board_sku, "0000");
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,80}", raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(t) = TnSpec::parse(&s) {
                let _ = t.compat_spec();
                proptest::prop_assert_eq!(TnSpec::parse(&t.to_string()).unwrap(), t);
            }
            let _ = BoardSpec::parse(&s);
            let _ = parse_chosen_ids(&raw);
            let _ = PartNumber::parse(&raw);
            let p = DtProps { compatible: Some(raw.clone()), chosen_ids: Some(raw.clone()), chosen_sku: Some(raw), ..Default::default() };
            if let Ok(id) = DtIdentity::from_props(&p) { let _ = id.compatible_module(); }
        }
    }

    #[test]
    fn rejects_short_specs() {
        assert!(TnSpec::parse("3767-300-0005").is_err());
        assert!(BoardSpec::parse("3767-300-0005-K.2-1").is_err());
    }

    #[test]
    fn compat_spec_matches_jetpack_nixos_sample() {
        // ota-check-firmware output, jetpack-nixos PR #369
        let t = TnSpec::parse("3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-").unwrap();
        assert_eq!(
            t.compat_spec().as_deref(),
            Some("3701-300-0000--1--jetson-agx-orin-devkit-")
        );
    }

    #[test]
    fn compat_rules_for_3767() {
        let c = |s: &str| BoardSpec::parse(s).unwrap().compat().unwrap().to_string();
        // Orin Nano SKUs drop FAB, board rev and chip rev
        assert_eq!(c("3767-300-0005-K.2-1-1"), "3767--0005--1-");
        assert_eq!(c("3767-300-0004-K.2-1-1"), "3767--0004--1-");
        assert_eq!(c("3767-300-0003-K.2-0-1"), "3767--0003--0-");
        // Orin NX 16GB normalises FAB to 000 unless it is an early TS/EB sample
        assert_eq!(c("3767-300-0000-K.2-1-1"), "3767-000-0000--1-");
        assert_eq!(c("3767-TS1-0000-A.0-1-1"), "3767-TS1-0000--1-");
        assert!(BoardSpec::parse("2888-400-0004-M.0-1-2")
            .unwrap()
            .compat()
            .is_none());
    }

    #[test]
    fn device_tree_identity_r36() {
        // Orin Nano Super devkit capture (R36.5): ids, part number and compatible
        let p = DtProps {
            model: Some(
                b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0".to_vec(),
            ),
            compatible: Some(
                b"nvidia,p3768-0000+p3767-0005-super\0nvidia,p3767-0005\0nvidia,tegra234\0"
                    .to_vec(),
            ),
            serial_number: Some(b"1421722061767\0".to_vec()),
            chosen_ids: Some(b"3768-0000-ES1 3767-0005-300\0".to_vec()),
            chosen_sku: Some(b"699-13767-0005-300 W.1\0".to_vec()),
            plugin_manager_ids: vec![],
        };
        let id = DtIdentity::from_props(&p).unwrap();
        assert_eq!(id.module.as_ref().unwrap().to_string(), "3767-0005-300");
        assert_eq!(id.carrier.as_ref().unwrap().to_string(), "3768-0000-ES1");
        assert_eq!(id.soc(), Some(Soc::T234));
        assert_eq!(id.serial_number.as_deref(), Some("1421722061767"));
        assert_eq!(id.compatible_module(), Some(("3767".into(), "0005".into())));
        let pn = id.part_number.clone().unwrap();
        assert_eq!(pn.rev.as_deref(), Some("W.1"));
        assert_eq!(pn.boardspec("1", "1").to_string(), "3767-300-0005-W.1-1-1");
        assert_eq!(
            id.module.unwrap().module().unwrap().name,
            "Jetson Orin Nano 8GB (developer kit module)"
        );
    }

    #[test]
    fn device_tree_identity_r32_plugin_manager() {
        let p = DtProps {
            compatible: Some(
                b"nvidia,p3449-0000-b00+p3448-0000-b00\0nvidia,jetson-nano\0nvidia,tegra210\0"
                    .to_vec(),
            ),
            plugin_manager_ids: vec!["3449-0000-400".into(), "3448-0000-400".into()],
            ..Default::default()
        };
        let id = DtIdentity::from_props(&p).unwrap();
        assert_eq!(id.soc(), Some(Soc::T210));
        assert_eq!(id.module.unwrap().to_string(), "3448-0000-400");
        assert_eq!(id.carrier.unwrap().board_id, "3449");
    }

    #[test]
    fn malformed_ids_are_errors() {
        assert!(parse_chosen_ids(b"3767-0005-300 x").is_err());
        assert!(BoardId::parse("37670-0005-300").is_err());
        assert!(PartNumber::parse(b"698-13767-0005-300 W.1").is_err());
        assert!(PartNumber::parse(b"699-1376-0005-300").is_err());
        let pn = PartNumber::parse(b"699-83448-0002-000 C.0\xff\xff").unwrap();
        assert_eq!(
            (pn.board_id.as_str(), pn.sku.as_str(), pn.fab.as_str()),
            ("3448", "0002", "000")
        );
    }

    #[test]
    fn compat_rules_for_3701() {
        let c = |s: &str| BoardSpec::parse(s).unwrap().compat().unwrap().to_string();
        assert_eq!(c("3701-100-0000-A.0-1-0"), "3701-000-0000--1-");
        assert_eq!(c("3701-TS3-0000-A.0-1-0"), "3701-000-0000--1-");
        assert_eq!(c("3701-500-0000-H.0-1-0"), "3701-300-0000--1-");
        assert_eq!(c("3701-500-0005-A.0-1-0"), "3701--0005--1-");
        assert_eq!(c("3701-500-0008-A.0-1-0"), "3701--0008--1-");
        // other SKUs keep their FAB
        assert_eq!(c("3701-500-0002-A.0-1-0"), "3701-500-0002--1-");
    }
}
