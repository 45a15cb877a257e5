//! Choosing the BUP entry for a board: TNSPEC matching as the consumers do it.
//!
//! * R35/R36 (UEFI, `FwPackageLib`/`TegraFmp`): entry specs and the system spec are split
//!   on `-`; the token counts must be equal; an empty token on either side is a wildcard;
//!   other tokens compare exactly. An entry matching the full `TegraPlatformSpec` wins at
//!   once; otherwise the first entry matching `TegraPlatformCompatSpec` (or with an empty,
//!   common spec) is used. `op_mode` must be common or agree with the production fusing.
//! * R32 (`nv_update_engine`, tegra-boot-tools): the same field rule, plus `internal` in
//!   the system spec matches `mmcblk0p<n>` in an entry; non-production (op_mode 1) entries
//!   are always skipped.

use super::{Bup, BupEntry, BupFormat, OpMode};
use crate::board::TnSpec;
use serde::Serialize;

/// EDK2 `FwPackageCheckTnSpec`: does the system spec match the entry spec?
pub fn edk2_spec_matches(system: &str, entry: &str) -> bool {
    let s: Vec<&str> = system.split('-').collect();
    let e: Vec<&str> = entry.split('-').collect();
    s.len() == e.len()
        && s.iter()
            .zip(&e)
            .all(|(a, b)| a.is_empty() || b.is_empty() || a == b)
}

/// tegra-boot-tools `specs_match` (R32): does the system spec match the entry spec?
pub fn r32_spec_matches(system: &str, entry: &str) -> bool {
    if entry.is_empty() {
        return true;
    }
    let s: Vec<&str> = if system.is_empty() {
        Vec::new()
    } else {
        system.split('-').collect()
    };
    let e: Vec<&str> = entry.split('-').collect();
    s.len() == e.len()
        && s.iter().zip(&e).all(|(a, b)| {
            a.is_empty()
                || b.is_empty()
                || a == b
                || (*a == "internal" && b.len() > 8 && b.starts_with("mmcblk0p"))
        })
}

/// Production fusing as `TegraFmp` derives it from `TegraPlatformSpec`: the field after
/// the 4th `-` must be exactly `0` for a non-production device; a missing spec counts as
/// production-fused.
pub fn is_production_fused(platform_spec: Option<&str>) -> bool {
    match platform_spec {
        None => true,
        Some(s) => {
            let mut rest = s;
            for _ in 0..4 {
                rest = match rest.find('-') {
                    Some(i) => &rest[i + 1..],
                    None => "",
                };
            }
            !rest.starts_with("0-")
        }
    }
}

/// Which consumer's rules to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectionRule {
    /// R35/R36 UEFI capsule update (V3 payloads).
    Uefi,
    /// R32 `nv_update_engine` / tegra-boot-tools (V2 payloads).
    R32,
}

impl SelectionRule {
    /// The rule the consumer of this payload generation applies.
    pub fn for_format(f: BupFormat) -> SelectionRule {
        match f {
            BupFormat::V2 => SelectionRule::R32,
            BupFormat::V3 => SelectionRule::Uefi,
        }
    }
}

/// The board an update is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Full spec (`TegraPlatformSpec`, or `TNSPEC` of nv_boot_control.conf).
    pub spec: Option<String>,
    /// Compatible spec (`TegraPlatformCompatSpec` / `COMPATIBLE_SPEC`).
    pub compat_spec: Option<String>,
    /// Whether the SoC is production-fused.
    pub production_fused: bool,
}

/// Compat spec the UEFI firmware uses when the variable is missing.
pub const DEFAULT_COMPAT_SPEC: &str = "-------";

impl Target {
    /// Target for a full TNSPEC: the compat spec is generated as L4T/meta-tegra do (boards
    /// 3767 and 3701) and the fusing read from the spec.
    pub fn from_spec(spec: &str) -> Target {
        let compat_spec = TnSpec::parse(spec).ok().and_then(|t| t.compat_spec());
        Target {
            production_fused: is_production_fused(Some(spec)),
            spec: Some(spec.to_string()),
            compat_spec,
        }
    }

    fn compat(&self) -> &str {
        self.compat_spec.as_deref().unwrap_or(DEFAULT_COMPAT_SPEC)
    }
}

/// How an entry was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    /// Matched the full spec.
    FullSpec,
    /// Matched the compat spec.
    CompatSpec,
    /// The entry has no spec: it is for every board.
    Common,
}

/// The entry chosen for one partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Partition name.
    pub partition: String,
    /// Index of the chosen entry, if any matched.
    pub entry: Option<usize>,
    /// How it matched.
    pub matched_by: Option<MatchKind>,
    /// Other entries that also matched (the consumer ignores them; worth a warning).
    pub also_matched: Vec<usize>,
}

fn op_mode_ok(rule: SelectionRule, e: &BupEntry, production_fused: bool) -> bool {
    match (rule, e.op_mode) {
        (_, OpMode::Common) => true,
        (SelectionRule::R32, OpMode::NonProduction) => false,
        (SelectionRule::R32, OpMode::Production) => true,
        (SelectionRule::Uefi, OpMode::NonProduction) => !production_fused,
        (SelectionRule::Uefi, OpMode::Production) => production_fused,
    }
}

impl Bup {
    /// Chooses the entry of `partition` for `target` under `rule`.
    pub fn select(&self, partition: &str, target: &Target, rule: SelectionRule) -> Selection {
        let matches = |sys: &str, entry: &str| match rule {
            SelectionRule::Uefi => edk2_spec_matches(sys, entry),
            SelectionRule::R32 => r32_spec_matches(sys, entry),
        };
        let mut full: Option<usize> = None;
        let mut other: Vec<(usize, MatchKind)> = Vec::new();
        for e in self.entries_for(partition) {
            if !op_mode_ok(rule, e, target.production_fused) {
                continue;
            }
            if e.spec.is_empty() {
                other.push((e.index, MatchKind::Common));
            } else if target.spec.as_deref().is_some_and(|s| matches(s, &e.spec)) {
                if full.is_none() {
                    full = Some(e.index);
                } else {
                    other.push((e.index, MatchKind::FullSpec));
                }
            } else if matches(target.compat(), &e.spec) {
                other.push((e.index, MatchKind::CompatSpec));
            }
        }
        let (entry, matched_by) = match full {
            Some(i) => (Some(i), Some(MatchKind::FullSpec)),
            None => match other.first() {
                Some(&(i, k)) => (Some(i), Some(k)),
                None => (None, None),
            },
        };
        let also_matched = other
            .iter()
            .map(|&(i, _)| i)
            .filter(|&i| Some(i) != entry)
            .collect();
        Selection {
            partition: partition.to_string(),
            entry,
            matched_by,
            also_matched,
        }
    }

    /// Chooses an entry for every partition in the payload, with this payload's rule.
    pub fn select_all(&self, target: &Target) -> Vec<Selection> {
        let rule = SelectionRule::for_format(self.header.format);
        self.partitions()
            .into_iter()
            .map(|p| self.select(p, target, rule))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edk2_matching_needs_equal_token_counts() {
        let sys = "3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-";
        assert!(edk2_spec_matches(sys, sys));
        assert!(edk2_spec_matches(
            sys,
            "3767--0005--1--jetson-orin-nano-devkit-"
        ));
        assert!(!edk2_spec_matches(
            sys,
            "3767--0004--1--jetson-orin-nano-devkit-"
        ));
        // one token fewer: never matches, even though every present token agrees
        assert!(!edk2_spec_matches(sys, "3767--0005--1--jetson-orin-nano-"));
        // empty token on the system side is a wildcard too
        assert!(edk2_spec_matches("-------", "3767--0005--1---"));
        assert!(!edk2_spec_matches(
            "-------",
            "3767--0005--1--jetson-orin-nano-devkit-"
        ));
    }

    #[test]
    fn r32_matching_knows_internal_bootdev() {
        let sys = "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-internal";
        assert!(r32_spec_matches(
            sys,
            "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1"
        ));
        assert!(!r32_spec_matches(
            sys,
            "3448-400-0001-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1"
        ));
        assert!(r32_spec_matches(sys, ""));
        // the entry side saying `internal` is not a wildcard
        assert!(!r32_spec_matches(
            "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1",
            "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-internal"
        ));
    }

    #[test]
    fn production_fusing_comes_from_the_fifth_field() {
        assert!(is_production_fused(Some("3767-300-0005-K.2-1-1-x-")));
        assert!(!is_production_fused(Some("3767-300-0005-K.2-0-1-x-")));
        // "0" must be the whole field
        assert!(is_production_fused(Some("3767-300-0005-K.2-01-1-x-")));
        assert!(is_production_fused(None));
        assert!(is_production_fused(Some("short")));
    }
}
