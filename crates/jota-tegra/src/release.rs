//! L4T release identification: `/etc/nv_tegra_release` and L4T version numbers.
//!
//! ```text
//! # R36 (release), REVISION: 2.0, GCID: 34956989, BOARD: generic, EABI: aarch64, DATE: Thu Nov 30 18:58:15 UTC 2023
//! # KERNEL_VARIANT: oot
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An L4T version such as 36.4.3 (R36, revision 4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct L4tVersion {
    /// Release branch, e.g. 36.
    pub major: u32,
    /// Revision major, e.g. 4.
    pub minor: u32,
    /// Revision minor, e.g. 3.
    pub patch: u32,
}

/// A version string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad L4T version `{input}`: {reason}")]
pub struct VersionError {
    /// Input.
    pub input: String,
    /// Why.
    pub reason: String,
}

impl L4tVersion {
    /// Constructs a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        L4tVersion {
            major,
            minor,
            patch,
        }
    }

    /// The capsule/ESRT encoding: `major<<16 | minor<<8 | patch` (36.2.0 = 0x00240200).
    pub fn to_fw_version(self) -> u32 {
        (self.major << 16) | ((self.minor & 0xff) << 8) | (self.patch & 0xff)
    }

    /// Decodes the capsule/ESRT encoding.
    pub fn from_fw_version(v: u32) -> Self {
        L4tVersion::new(v >> 16, (v >> 8) & 0xff, v & 0xff)
    }

    /// The BUP entry version L4T writes: the digits as hex (R36.2.0 = 0x3620).
    pub fn to_bup_entry_version(self) -> u32 {
        u32::from_str_radix(&format!("{}{}{}", self.major, self.minor, self.patch), 16).unwrap_or(0)
    }
}

impl fmt::Display for L4tVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for L4tVersion {
    type Err = VersionError;
    /// Parses `36.4.3`, `36.4` (patch 0), or with an `R` prefix (`R36.4.3`).
    fn from_str(s: &str) -> Result<Self, VersionError> {
        let t = s.trim().trim_start_matches(['R', 'r']);
        let parts: Vec<&str> = t.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(VersionError {
                input: s.into(),
                reason: "expected MAJOR.MINOR[.PATCH]".into(),
            });
        }
        let num = |p: &str, what: &str| {
            p.parse::<u32>().map_err(|_| VersionError {
                input: s.into(),
                reason: format!("{what} `{p}` is not a number"),
            })
        };
        Ok(L4tVersion {
            major: num(parts[0], "major")?,
            minor: num(parts[1], "minor")?,
            patch: match parts.get(2) {
                Some(p) => num(p, "patch")?,
                None => 0,
            },
        })
    }
}

/// The parsed `/etc/nv_tegra_release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvTegraRelease {
    /// Version, e.g. 36.2.0.
    pub version: L4tVersion,
    /// Kind in parentheses, normally `release`.
    pub kind: String,
    /// Build GCID.
    pub gcid: Option<String>,
    /// `t186ref`, `t210ref`, `generic`.
    pub board: Option<String>,
    /// `aarch64`.
    pub eabi: Option<String>,
    /// Build date text.
    pub date: Option<String>,
    /// `oot` on R36 (out-of-tree kernel modules).
    pub kernel_variant: Option<String>,
}

/// A release file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nv_tegra_release line {line}, field `{field}`: {reason}")]
pub struct ReleaseError {
    /// 1-based line.
    pub line: usize,
    /// Field.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl NvTegraRelease {
    /// Parses the file text.
    pub fn parse(text: &str) -> Result<NvTegraRelease, ReleaseError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (i, first) = lines.next().ok_or(ReleaseError {
            line: 1,
            field: "header",
            reason: "file is empty".into(),
        })?;
        let line = i + 1;
        let err = |field: &'static str, reason: String| ReleaseError {
            line,
            field,
            reason,
        };
        let body = first
            .trim()
            .strip_prefix('#')
            .ok_or_else(|| err("header", "must start with `# R<major>`".into()))?
            .trim();
        let mut parts = body.split(',').map(str::trim);
        let head = parts.next().unwrap_or_default();
        // "R36 (release)"
        let (rel, kind) = head
            .split_once(' ')
            .ok_or_else(|| err("release", format!("`{head}` is not `R<major> (<kind>)`")))?;
        let major: u32 = rel
            .strip_prefix('R')
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| err("release", format!("`{rel}` is not R<number>")))?;
        let kind = kind
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .to_string();
        let mut rel = NvTegraRelease {
            version: L4tVersion::new(major, 0, 0),
            kind,
            gcid: None,
            board: None,
            eabi: None,
            date: None,
            kernel_variant: None,
        };
        let mut revision = None;
        for p in parts {
            let Some((k, v)) = p.split_once(':') else {
                return Err(err("field", format!("`{p}` is not KEY: VALUE")));
            };
            let v = v.trim().to_string();
            match k.trim() {
                "REVISION" => revision = Some(v),
                "GCID" => rel.gcid = Some(v),
                "BOARD" => rel.board = Some(v),
                "EABI" => rel.eabi = Some(v),
                // DATE contains colons: keep everything after the first one.
                "DATE" => rel.date = Some(v),
                _ => {}
            }
        }
        let revision = revision.ok_or_else(|| err("REVISION", "missing".into()))?;
        let rv: L4tVersion = format!("{major}.{revision}")
            .parse()
            .map_err(|e: VersionError| err("REVISION", e.reason))?;
        rel.version = rv;
        for (_, l) in lines {
            if let Some(v) = l
                .trim()
                .strip_prefix('#')
                .and_then(|r| r.trim().strip_prefix("KERNEL_VARIANT:"))
            {
                rel.kernel_variant = Some(v.trim().to_string());
            }
        }
        Ok(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn versions() {
        let v: L4tVersion = "36.4.3".parse().unwrap();
        assert_eq!(v, L4tVersion::new(36, 4, 3));
        assert_eq!(v.to_string(), "36.4.3");
        assert_eq!(
            "R35.4".parse::<L4tVersion>().unwrap(),
            L4tVersion::new(35, 4, 0)
        );
        assert_eq!(L4tVersion::new(36, 2, 0).to_fw_version(), 0x0024_0200);
        assert_eq!(
            L4tVersion::from_fw_version(0x0024_0403),
            L4tVersion::new(36, 4, 3)
        );
        assert_eq!(L4tVersion::new(36, 2, 0).to_bup_entry_version(), 0x3620);
        assert!(L4tVersion::new(35, 6, 2) < L4tVersion::new(36, 2, 0));
        assert!("36".parse::<L4tVersion>().is_err());
        assert!("36.x".parse::<L4tVersion>().is_err());
    }

    #[test]
    fn parses_r36_with_kernel_variant() {
        let r = NvTegraRelease::parse(
            "# R36 (release), REVISION: 2.0, GCID: 34956989, BOARD: generic, EABI: aarch64, DATE: Thu Nov 30 18:58:15 UTC 2023\n# KERNEL_VARIANT: oot\n",
        )
        .unwrap();
        assert_eq!(r.version, L4tVersion::new(36, 2, 0));
        assert_eq!(r.kind, "release");
        assert_eq!(r.gcid.as_deref(), Some("34956989"));
        assert_eq!(r.board.as_deref(), Some("generic"));
        assert_eq!(r.date.as_deref(), Some("Thu Nov 30 18:58:15 UTC 2023"));
        assert_eq!(r.kernel_variant.as_deref(), Some("oot"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = NvTegraRelease::parse("# R36 (release), GCID: 1\n").unwrap_err();
        assert_eq!(e.field, "REVISION");
        let e = NvTegraRelease::parse("R36").unwrap_err();
        assert_eq!((e.line, e.field), (1, "header"));
        let e = NvTegraRelease::parse("\n# Rx (release), REVISION: 1.0").unwrap_err();
        assert_eq!((e.line, e.field), (2, "release"));
        assert!(NvTegraRelease::parse("").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = NvTegraRelease::parse(&s);
            let _ = s.parse::<L4tVersion>();
        }
    }
}
