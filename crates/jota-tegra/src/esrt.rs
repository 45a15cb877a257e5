//! UEFI capsule results as Linux shows them: the ESRT (`/sys/firmware/efi/esrt/entries/*`)
//! and jetpack-nixos' `ota-check-firmware` report.

use crate::efivar::{Guid, Slot};
use crate::release::L4tVersion;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// ESRT `fw_class` of T234 (Orin) system firmware.
pub const T234_FW_CLASS: &str = "bf0d4599-20d4-414e-b2c5-3595b1cda402";
/// ESRT `fw_class` of T194 (Xavier) system firmware.
pub const T194_FW_CLASS: &str = "be3f5d68-7654-4ed2-838c-2a2faf901a78";

/// First vendor code TegraFmp uses (`LAST_ATTEMPT_STATUS_DEVICE_LIBRARY_MIN_ERROR_CODE_VALUE`).
pub const TEGRA_LAS_BASE: u32 = 0x1800;

/// TegraFmp's own last-attempt error names, from `TEGRA_LAS_BASE` up (edk2-nvidia TegraFmp.c).
pub const TEGRA_LAS_NAMES: [&str; 20] = [
    "BAD_IMAGE_POINTER",
    "INVALID_PACKAGE_HEADER",
    "UNSUPPORTED_PACKAGE_TYPE",
    "INVALID_PACKAGE_IMAGE_INFO_ARRAY",
    "IMAGE_TOO_BIG",
    "PACKAGE_SIZE_ERROR",
    "NOT_UPDATABLE",
    "IMAGE_NOT_IN_PACKAGE",
    "MB1_INVALIDATE_ERROR",
    "SINGLE_IMAGE_NOT_SUPPORTED",
    "IMAGE_INDEX_MISSING",
    "NO_PROTOCOL_FOR_IMAGE",
    "IMAGE_ATTRIBUTES_ERROR",
    "BCT_UPDATE_FAILED",
    "WRITE_IMAGES_FAILED",
    "MB1_WRITE_ERROR",
    "VERIFY_IMAGES_FAILED",
    "SET_SINGLE_IMAGE_FAILED",
    "FMP_LIB_UNINITIALIZED",
    "BOOT_CHAIN_UPDATE_CANCELED",
];

/// Human name of a `last_attempt_status` (UEFI spec codes, then TegraFmp's vendor codes).
pub fn last_attempt_status_name(v: u32) -> String {
    const STD: [&str; 9] = [
        "SUCCESS",
        "ERROR_UNSUCCESSFUL",
        "ERROR_INSUFFICIENT_RESOURCES",
        "ERROR_INCORRECT_VERSION",
        "ERROR_INVALID_FORMAT",
        "ERROR_AUTH_ERROR",
        "ERROR_PWR_EVT_AC",
        "ERROR_PWR_EVT_BATT",
        "ERROR_UNSATISFIED_DEPENDENCIES",
    ];
    if let Some(n) = STD.get(v as usize) {
        return (*n).to_string();
    }
    match v
        .checked_sub(TEGRA_LAS_BASE)
        .and_then(|i| TEGRA_LAS_NAMES.get(i as usize))
    {
        Some(n) => format!("LAS_ERROR_{n}"),
        None => format!("{v:#x}"),
    }
}

/// One ESRT entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsrtEntry {
    /// Firmware class GUID.
    pub fw_class: Guid,
    /// 1 = system firmware.
    pub fw_type: u32,
    /// Running firmware version (L4T: `major<<16|minor<<8|patch`).
    pub fw_version: u32,
    /// Lowest version a capsule may carry.
    pub lowest_supported_fw_version: u32,
    /// Capsule flags.
    pub capsule_flags: u32,
    /// Version of the last capsule attempted.
    pub last_attempt_version: u32,
    /// Result of the last attempt (0 = success).
    pub last_attempt_status: u32,
}

/// A malformed ESRT file or report line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: field `{field}`: {reason}")]
pub struct EsrtError {
    /// File or report.
    pub source_name: String,
    /// Field.
    pub field: String,
    /// Why.
    pub reason: String,
}

fn sysfs_num(field: &str, s: &str) -> Result<u32, EsrtError> {
    let t = s.trim();
    let r = match t.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => t.parse(),
    };
    r.map_err(|_| EsrtError {
        source_name: "esrt".into(),
        field: field.into(),
        reason: format!("`{t}` is not a number"),
    })
}

impl EsrtEntry {
    /// Reads an entry from its sysfs files; `read(name)` returns a file's text.
    pub fn from_sysfs(read: impl Fn(&str) -> Option<String>) -> Result<EsrtEntry, EsrtError> {
        let get = |f: &str| {
            read(f).ok_or_else(|| EsrtError {
                source_name: "esrt".into(),
                field: f.into(),
                reason: "file missing".into(),
            })
        };
        let fw_class = get("fw_class")?.trim().parse().map_err(|_| EsrtError {
            source_name: "esrt".into(),
            field: "fw_class".into(),
            reason: "not a GUID".into(),
        })?;
        Ok(EsrtEntry {
            fw_class,
            fw_type: sysfs_num("fw_type", &get("fw_type")?)?,
            fw_version: sysfs_num("fw_version", &get("fw_version")?)?,
            lowest_supported_fw_version: sysfs_num(
                "lowest_supported_fw_version",
                &get("lowest_supported_fw_version")?,
            )?,
            capsule_flags: sysfs_num("capsule_flags", &get("capsule_flags")?)?,
            last_attempt_version: sysfs_num("last_attempt_version", &get("last_attempt_version")?)?,
            last_attempt_status: sysfs_num("last_attempt_status", &get("last_attempt_status")?)?,
        })
    }

    /// The running version as an L4T version.
    pub fn l4t_version(&self) -> L4tVersion {
        L4tVersion::from_fw_version(self.fw_version)
    }
}

/// jetpack-nixos `ota-check-firmware` output.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareReport {
    /// `Current firmware version is`.
    pub current_firmware: Option<String>,
    /// `Expected firmware version is`.
    pub expected_firmware: Option<String>,
    /// `TegraPlatformCompatSpec`.
    pub compat_spec: Option<String>,
    /// `TegraPlatformSpec`.
    pub platform_spec: Option<String>,
    /// `BootChainFwCurrent`.
    pub fw_current: Option<Slot>,
    /// `BootChainFwNext` (None when the variable does not exist).
    pub fw_next: Option<Slot>,
    /// `BootChainFwStatus` text, if the variable exists.
    pub fw_status: Option<String>,
    /// `Capsule Update Pending`.
    pub capsule_pending: Option<bool>,
    /// `ESRT fw_version`.
    pub esrt_fw_version: Option<L4tVersion>,
    /// `ESRT last_attempt_status`.
    pub esrt_last_attempt_status: Option<String>,
    /// Every `key : value` line.
    pub all: BTreeMap<String, String>,
}

impl FirmwareReport {
    /// Parses the report text.
    pub fn parse(text: &str) -> Result<FirmwareReport, EsrtError> {
        let mut r = FirmwareReport::default();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('=') {
                continue;
            }
            let Some((k, v)) = l.split_once(" : ").or_else(|| l.split_once(": ")) else {
                return Err(EsrtError {
                    source_name: format!("ota-check-firmware line {}", i + 1),
                    field: l.into(),
                    reason: "not `key : value`".into(),
                });
            };
            let (k, v) = (k.trim(), v.trim());
            let err = |reason: String| EsrtError {
                source_name: format!("ota-check-firmware line {}", i + 1),
                field: k.into(),
                reason,
            };
            let missing = v == "Variable Doesn't Exist";
            let slot = || -> Result<Option<Slot>, EsrtError> {
                if missing {
                    Ok(None)
                } else {
                    v.parse().map(Some).map_err(err)
                }
            };
            match k {
                "Current firmware version is" => r.current_firmware = Some(v.into()),
                "Expected firmware version is" => r.expected_firmware = Some(v.into()),
                "TegraPlatformCompatSpec" => r.compat_spec = (!missing).then(|| v.into()),
                "TegraPlatformSpec" => r.platform_spec = (!missing).then(|| v.into()),
                "BootChainFwCurrent" => r.fw_current = slot()?,
                "BootChainFwNext" => r.fw_next = slot()?,
                "BootChainFwStatus" => r.fw_status = (!missing).then(|| v.into()),
                "Capsule Update Pending" => {
                    r.capsule_pending = Some(match v {
                        "yes" => true,
                        "no" => false,
                        o => return Err(err(format!("`{o}` is not yes/no"))),
                    })
                }
                "ESRT fw_version" => {
                    r.esrt_fw_version = Some(
                        v.parse()
                            .map_err(|e: crate::release::VersionError| err(e.reason))?,
                    )
                }
                "ESRT last_attempt_status" => r.esrt_last_attempt_status = Some(v.into()),
                _ => {}
            }
            r.all.insert(k.to_string(), v.to_string());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names() {
        assert_eq!(last_attempt_status_name(0), "SUCCESS");
        assert_eq!(
            last_attempt_status_name(0x1800),
            "LAS_ERROR_BAD_IMAGE_POINTER"
        );
        assert_eq!(
            last_attempt_status_name(0x1810),
            "LAS_ERROR_VERIFY_IMAGES_FAILED"
        );
        assert_eq!(last_attempt_status_name(0x2000), "0x2000");
    }

    #[test]
    fn esrt_from_sysfs() {
        let files = |f: &str| {
            Some(
                match f {
                    "fw_class" => T234_FW_CLASS,
                    "fw_type" => "1",
                    "fw_version" => "2360323",
                    "lowest_supported_fw_version" => "0",
                    "capsule_flags" => "0x0",
                    "last_attempt_version" => "2360323",
                    "last_attempt_status" => "0",
                    _ => return None,
                }
                .to_string(),
            )
        };
        let e = EsrtEntry::from_sysfs(files).unwrap();
        assert_eq!(e.l4t_version(), L4tVersion::new(36, 4, 3));
        let e =
            EsrtEntry::from_sysfs(|f| if f == "fw_type" { None } else { files(f) }).unwrap_err();
        assert_eq!(e.field, "fw_type");
    }
}
