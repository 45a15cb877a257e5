//! `/etc/nv_boot_control.conf`: `KEY VALUE` lines written at flash time.
//!
//! ```text
//! TNSPEC 3701-500-0005-A.0-1-0-cti-orin-agx-agx201-00-
//! COMPATIBLE_SPEC 3701--0005--1--cti-orin-agx-agx201-00-
//! TEGRA_CHIPID 0x23
//! TEGRA_OTA_BOOT_DEVICE /dev/mtdblock0
//! TEGRA_OTA_GPT_DEVICE /dev/mtdblock0
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parsed file: the keys jota uses, and every key as read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvBootControlConf {
    /// Full TNSPEC.
    pub tnspec: Option<String>,
    /// Compatible spec (R35+).
    pub compatible_spec: Option<String>,
    /// Chip id: 0x18 TX2, 0x19 Xavier, 0x21 TX1/Nano, 0x23 Orin.
    pub chip_id: Option<u32>,
    /// Boot storage, e.g. `qspi`, `emmc`.
    pub boot_storage: Option<String>,
    /// Device holding the boot partitions.
    pub ota_boot_device: Option<String>,
    /// Device holding the boot-partition GPT.
    pub ota_gpt_device: Option<String>,
    /// All keys, in file order of last assignment.
    pub all: BTreeMap<String, String>,
}

/// A malformed line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nv_boot_control.conf line {line}: {reason}")]
pub struct BootConfError {
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

impl NvBootControlConf {
    /// Parses the text (tegra-boot-tools rules: `VAR<space|tab>VALUE`, whitespace trimmed).
    pub fn parse(text: &str) -> Result<NvBootControlConf, BootConfError> {
        let mut c = NvBootControlConf::default();
        for (i, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (k, v) = l
                .split_once([' ', '\t'])
                .map(|(k, v)| (k, v.trim()))
                .unwrap_or((l, ""));
            if !k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                return Err(BootConfError {
                    line: i + 1,
                    reason: format!("`{k}` is not a variable name"),
                });
            }
            match k {
                "TNSPEC" => c.tnspec = Some(v.into()),
                "COMPATIBLE_SPEC" => c.compatible_spec = Some(v.into()),
                "TEGRA_CHIPID" => {
                    let n = v
                        .strip_prefix("0x")
                        .or_else(|| v.strip_prefix("0X"))
                        .map(|h| u32::from_str_radix(h, 16))
                        .unwrap_or_else(|| v.parse());
                    c.chip_id = Some(n.map_err(|_| BootConfError {
                        line: i + 1,
                        reason: format!("TEGRA_CHIPID `{v}` is not a number"),
                    })?);
                }
                "TEGRA_BOOT_STORAGE" => c.boot_storage = Some(v.into()),
                "TEGRA_OTA_BOOT_DEVICE" => c.ota_boot_device = Some(v.into()),
                "TEGRA_OTA_GPT_DEVICE" => c.ota_gpt_device = Some(v.into()),
                _ => {}
            }
            c.all.insert(k.to_string(), v.to_string());
        }
        Ok(c)
    }

    /// Writes the file back in NVIDIA's format.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push_str(&format!("{k} {v}\n"));
            }
        };
        put("TNSPEC", &self.tnspec);
        put("COMPATIBLE_SPEC", &self.compatible_spec);
        put("TEGRA_BOOT_STORAGE", &self.boot_storage);
        put("TEGRA_CHIPID", &self.chip_id.map(|c| format!("{c:#x}")));
        put("TEGRA_OTA_BOOT_DEVICE", &self.ota_boot_device);
        put("TEGRA_OTA_GPT_DEVICE", &self.ota_gpt_device);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_writes() {
        let c = NvBootControlConf::parse(
            "TNSPEC 2888-400-0004-M.0-1-2-jetson-xavier-rqx580-\nTEGRA_CHIPID 0x19\n\tTEGRA_OTA_BOOT_DEVICE\t/dev/mmcblk0boot0  \nTEGRA_OTA_GPT_DEVICE /dev/mmcblk0boot1\n",
        )
        .unwrap();
        assert_eq!(
            c.tnspec.as_deref(),
            Some("2888-400-0004-M.0-1-2-jetson-xavier-rqx580-")
        );
        assert_eq!(c.chip_id, Some(0x19));
        assert_eq!(c.ota_boot_device.as_deref(), Some("/dev/mmcblk0boot0"));
        let again = NvBootControlConf::parse(&c.to_text()).unwrap();
        assert_eq!(again.tnspec, c.tnspec);
        assert_eq!(again.chip_id, c.chip_id);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = NvBootControlConf::parse("TNSPEC x\nTEGRA_CHIPID zz\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = NvBootControlConf::parse("TNS=PEC x\n").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
