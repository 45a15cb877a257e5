//! UEFI variables as Linux efivarfs shows them, and the L4T R35/R36 A/B variables.
//!
//! An efivarfs file `/sys/firmware/efi/efivars/<Name>-<guid>` holds a 4-byte little-endian
//! attribute word followed by the variable's data. NVIDIA keeps its A/B state under the
//! vendor GUID `781e084c-a330-417c-b678-38e696380cb9`; the capsule trigger `OsIndications`
//! is under the EFI global GUID.

use crate::bytes::{le_u32, le_u64};
pub use crate::guid::{Guid, EFI_GLOBAL_VARIABLE_GUID, NVIDIA_PUBLIC_VARIABLE_GUID};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Variable attribute bits (UEFI spec).
pub mod attr {
    /// Survives power cycles.
    pub const NON_VOLATILE: u32 = 0x1;
    /// Readable by boot services.
    pub const BOOTSERVICE_ACCESS: u32 = 0x2;
    /// Readable at runtime (from Linux).
    pub const RUNTIME_ACCESS: u32 = 0x4;
    /// Hardware error record.
    pub const HARDWARE_ERROR_RECORD: u32 = 0x8;
    /// Authenticated write (deprecated).
    pub const AUTHENTICATED_WRITE_ACCESS: u32 = 0x10;
    /// Time-based authenticated write.
    pub const TIME_BASED_AUTHENTICATED_WRITE_ACCESS: u32 = 0x20;
    /// Append on write.
    pub const APPEND_WRITE: u32 = 0x40;
    /// NV|BS|RT = 0x7, what the OS writes for L4T variables.
    pub const NV_BS_RT: u32 = NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS;
    /// BS|RT = 0x6, volatile variables set by firmware (e.g. BootChainFwCurrent).
    pub const BS_RT: u32 = BOOTSERVICE_ACCESS | RUNTIME_ACCESS;
}

/// A problem decoding a variable, naming which variable and which byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EfiVarError {
    /// The efivarfs file is shorter than the attribute word.
    #[error("efivar {var}: file has {len} bytes, needs at least 4 for the attributes")]
    NoAttributes {
        /// Variable.
        var: String,
        /// File length.
        len: usize,
    },
    /// The data has the wrong size for the variable's type.
    #[error("efivar {var}: data at offset 4 is {len} bytes, expected {expected}")]
    Size {
        /// Variable.
        var: String,
        /// Data length.
        len: usize,
        /// What was expected.
        expected: String,
    },
    /// The value is not one the firmware defines.
    #[error("efivar {var}: value {value:#x} at offset 4 is not valid: {reason}")]
    Value {
        /// Variable.
        var: String,
        /// The value.
        value: u64,
        /// Why.
        reason: String,
    },
    /// A file name that is not `<Name>-<guid>`.
    #[error("efivar name `{name}`: {reason}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// A variable's full name: its UCS-2 name and vendor GUID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VarName {
    /// e.g. `RootfsStatusSlotA`.
    pub name: String,
    /// Vendor GUID.
    pub guid: Guid,
}

impl VarName {
    /// A name under the NVIDIA public GUID.
    pub fn nvidia(name: &str) -> VarName {
        VarName {
            name: name.to_string(),
            guid: NVIDIA_PUBLIC_VARIABLE_GUID,
        }
    }

    /// A name under the EFI global GUID.
    pub fn global(name: &str) -> VarName {
        VarName {
            name: name.to_string(),
            guid: EFI_GLOBAL_VARIABLE_GUID,
        }
    }

    /// The efivarfs file name, `<Name>-<guid>`.
    pub fn file_name(&self) -> String {
        format!("{}-{}", self.name, self.guid)
    }

    /// Parses an efivarfs file name (the GUID is the last 36 characters; names may
    /// themselves contain `-`).
    pub fn from_file_name(f: &str) -> Result<VarName, EfiVarError> {
        let bad = |reason: &str| EfiVarError::Name {
            name: f.to_string(),
            reason: reason.to_string(),
        };
        if f.len() < 38 || !f.is_char_boundary(f.len() - 37) {
            return Err(bad("too short for <Name>-<guid>"));
        }
        let (name, rest) = f.split_at(f.len() - 37);
        let guid = rest
            .strip_prefix('-')
            .ok_or_else(|| bad("no `-` before the GUID"))?
            .parse()
            .map_err(|e: crate::guid::GuidError| bad(&e.to_string()))?;
        if name.is_empty() {
            return Err(bad("empty variable name"));
        }
        Ok(VarName {
            name: name.to_string(),
            guid,
        })
    }
}

impl fmt::Display for VarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// A variable's content: attributes and data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EfiVariable {
    /// Attribute bits.
    pub attributes: u32,
    /// Data bytes.
    pub data: Vec<u8>,
}

impl EfiVariable {
    /// A NV|BS|RT variable with these bytes.
    pub fn new(data: Vec<u8>) -> EfiVariable {
        EfiVariable {
            attributes: attr::NV_BS_RT,
            data,
        }
    }

    /// A NV|BS|RT UINT32 variable.
    pub fn u32(v: u32) -> EfiVariable {
        EfiVariable::new(v.to_le_bytes().to_vec())
    }

    /// Decodes the content of an efivarfs file.
    pub fn from_efivarfs(var: &VarName, file: &[u8]) -> Result<EfiVariable, EfiVarError> {
        let attributes = le_u32(file, 0).ok_or_else(|| EfiVarError::NoAttributes {
            var: var.name.clone(),
            len: file.len(),
        })?;
        Ok(EfiVariable {
            attributes,
            data: file[4..].to_vec(),
        })
    }

    /// The efivarfs file content: attributes then data.
    pub fn to_efivarfs(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.extend_from_slice(&self.attributes.to_le_bytes());
        v.extend_from_slice(&self.data);
        v
    }

    /// The data as a UINT32.
    pub fn as_u32(&self, var: &str) -> Result<u32, EfiVarError> {
        if self.data.len() != 4 {
            return Err(EfiVarError::Size {
                var: var.to_string(),
                len: self.data.len(),
                expected: "4 (UINT32)".into(),
            });
        }
        Ok(le_u32(&self.data, 0).unwrap_or(0))
    }

    /// The data as a UINT64.
    pub fn as_u64(&self, var: &str) -> Result<u64, EfiVarError> {
        if self.data.len() != 8 {
            return Err(EfiVarError::Size {
                var: var.to_string(),
                len: self.data.len(),
                expected: "8 (UINT64)".into(),
            });
        }
        Ok(le_u64(&self.data, 0).unwrap_or(0))
    }

    /// The data as ASCII text (NUL terminator, if any, removed).
    pub fn as_ascii(&self, var: &str) -> Result<String, EfiVarError> {
        let d = self.data.strip_suffix(&[0]).unwrap_or(&self.data);
        if let Some(i) = d.iter().position(|c| !(0x20..=0x7e).contains(c)) {
            return Err(EfiVarError::Value {
                var: var.to_string(),
                value: u64::from(d[i]),
                reason: format!("byte {i} of the text is not printable ASCII"),
            });
        }
        Ok(d.iter().map(|&c| c as char).collect())
    }
}

/// An A/B slot / boot chain: A = 0, B = 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Slot {
    /// Slot/chain A (0).
    A,
    /// Slot/chain B (1).
    B,
}

impl Slot {
    /// 0 or 1.
    pub fn index(self) -> u32 {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
    /// From 0 or 1.
    pub fn from_index(i: u32) -> Option<Slot> {
        match i {
            0 => Some(Slot::A),
            1 => Some(Slot::B),
            _ => None,
        }
    }
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// `A` or `B`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'A',
            Slot::B => 'B',
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

impl FromStr for Slot {
    type Err = String;
    /// Accepts `A`/`B`, `a`/`b`, `0`/`1`, `_a`/`_b`.
    fn from_str(s: &str) -> Result<Slot, String> {
        match s
            .trim()
            .trim_start_matches('_')
            .to_ascii_uppercase()
            .as_str()
        {
            "A" | "0" => Ok(Slot::A),
            "B" | "1" => Ok(Slot::B),
            other => Err(format!("slot `{other}` is not A/B or 0/1")),
        }
    }
}

/// `RootfsStatusSlotA/B`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootfsStatus {
    /// 0x00: bootable.
    Normal,
    /// 0xFF: the launcher gave up on this slot.
    Unbootable,
}

impl RootfsStatus {
    /// Raw value.
    pub fn code(self) -> u32 {
        match self {
            RootfsStatus::Normal => 0,
            RootfsStatus::Unbootable => 0xff,
        }
    }
}

/// `RootfsRedundancyLevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedundancyLevel {
    /// 0: only the bootloader is A/B.
    BootOnly,
    /// 1: bootloader and rootfs A/B (flashed with ROOTFS_AB=1).
    BootRootfs,
}

/// `BootChainFwStatus`: result of the last boot-chain switch / capsule update
/// (edk2-nvidia BootChainDxePrivate.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u32)]
#[allow(missing_docs)]
pub enum FwStatus {
    Success = 0,
    InProgress = 1,
    NoOperationRequired = 2,
    CanceledForFmpConflict = 3,
    ReadingStatus = 4,
    MaxResetCount = 5,
    SettingResetCount = 6,
    SettingInProgress = 7,
    InProgressFailed = 8,
    BadBootChainNext = 9,
    ReadingNext = 10,
    UpdatingFwChain = 11,
    BootChainFailed = 12,
    ReadingResetCount = 13,
    BootNextExists = 14,
    ReadingScratch = 15,
    SettingScratch = 16,
    UpdateBrBctFlagSet = 17,
    SettingPrevious = 18,
}

impl FwStatus {
    const ALL: [FwStatus; 19] = [
        FwStatus::Success,
        FwStatus::InProgress,
        FwStatus::NoOperationRequired,
        FwStatus::CanceledForFmpConflict,
        FwStatus::ReadingStatus,
        FwStatus::MaxResetCount,
        FwStatus::SettingResetCount,
        FwStatus::SettingInProgress,
        FwStatus::InProgressFailed,
        FwStatus::BadBootChainNext,
        FwStatus::ReadingNext,
        FwStatus::UpdatingFwChain,
        FwStatus::BootChainFailed,
        FwStatus::ReadingResetCount,
        FwStatus::BootNextExists,
        FwStatus::ReadingScratch,
        FwStatus::SettingScratch,
        FwStatus::UpdateBrBctFlagSet,
        FwStatus::SettingPrevious,
    ];

    /// Decodes the raw value.
    pub fn from_code(v: u32) -> Option<FwStatus> {
        FwStatus::ALL.get(v as usize).copied()
    }

    /// Raw value.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Whether this records a failure (anything but success / in progress / nothing to do).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            FwStatus::Success | FwStatus::InProgress | FwStatus::NoOperationRequired
        )
    }
}

/// `OsIndications` bit 2: process capsules in `\EFI\UpdateCapsule` on the ESP at next boot.
pub const OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED: u64 = 0x4;

/// The L4T variables jota reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum L4tVar {
    BootChainFwCurrent,
    BootChainFwNext,
    BootChainFwStatus,
    BootChainOsCurrent,
    RootfsStatusSlotA,
    RootfsStatusSlotB,
    RootfsRedundancyLevel,
    RootfsRetryCountMax,
    TegraPlatformSpec,
    TegraPlatformCompatSpec,
    OsIndications,
}

impl L4tVar {
    /// Every variable, in a stable order.
    pub const ALL: [L4tVar; 11] = [
        L4tVar::BootChainFwCurrent,
        L4tVar::BootChainFwNext,
        L4tVar::BootChainFwStatus,
        L4tVar::BootChainOsCurrent,
        L4tVar::RootfsStatusSlotA,
        L4tVar::RootfsStatusSlotB,
        L4tVar::RootfsRedundancyLevel,
        L4tVar::RootfsRetryCountMax,
        L4tVar::TegraPlatformSpec,
        L4tVar::TegraPlatformCompatSpec,
        L4tVar::OsIndications,
    ];

    /// UEFI name.
    pub fn name(self) -> &'static str {
        match self {
            L4tVar::BootChainFwCurrent => "BootChainFwCurrent",
            L4tVar::BootChainFwNext => "BootChainFwNext",
            L4tVar::BootChainFwStatus => "BootChainFwStatus",
            L4tVar::BootChainOsCurrent => "BootChainOsCurrent",
            L4tVar::RootfsStatusSlotA => "RootfsStatusSlotA",
            L4tVar::RootfsStatusSlotB => "RootfsStatusSlotB",
            L4tVar::RootfsRedundancyLevel => "RootfsRedundancyLevel",
            L4tVar::RootfsRetryCountMax => "RootfsRetryCountMax",
            L4tVar::TegraPlatformSpec => "TegraPlatformSpec",
            L4tVar::TegraPlatformCompatSpec => "TegraPlatformCompatSpec",
            L4tVar::OsIndications => "OsIndications",
        }
    }

    /// Full name with GUID.
    pub fn var_name(self) -> VarName {
        match self {
            L4tVar::OsIndications => VarName::global(self.name()),
            _ => VarName::nvidia(self.name()),
        }
    }

    /// The status variable of a rootfs slot.
    pub fn rootfs_status(slot: Slot) -> L4tVar {
        match slot {
            Slot::A => L4tVar::RootfsStatusSlotA,
            Slot::B => L4tVar::RootfsStatusSlotB,
        }
    }

    /// Attributes the firmware gives the variable (volatile ones are BS|RT).
    pub fn attributes(self) -> u32 {
        match self {
            L4tVar::BootChainFwCurrent | L4tVar::BootChainOsCurrent => attr::BS_RT,
            _ => attr::NV_BS_RT,
        }
    }
}

/// Where variables live: efivarfs on a device, a directory in the simulator, memory in tests.
pub trait VarStore {
    /// Error of the backing store.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Reads a variable; `None` if it does not exist.
    fn get(&self, name: &VarName) -> Result<Option<EfiVariable>, Self::Error>;
    /// Creates or replaces a variable.
    fn set(&mut self, name: &VarName, value: &EfiVariable) -> Result<(), Self::Error>;
    /// Deletes a variable (no error if absent).
    fn delete(&mut self, name: &VarName) -> Result<(), Self::Error>;
}

/// Error of typed access: the store failed or the content is invalid.
#[derive(Debug, thiserror::Error)]
pub enum L4tVarError<E: std::error::Error + 'static> {
    /// The store failed.
    #[error(transparent)]
    Store(E),
    /// The content is invalid.
    #[error(transparent)]
    Decode(#[from] EfiVarError),
}

/// Typed access to the L4T A/B variables over any [`VarStore`].
pub struct L4tVars<S> {
    store: S,
}

type R<T, S> = Result<T, L4tVarError<<S as VarStore>::Error>>;

impl<S: VarStore> L4tVars<S> {
    /// Wraps a store.
    pub fn new(store: S) -> Self {
        L4tVars { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.store
    }

    fn raw(&self, v: L4tVar) -> R<Option<EfiVariable>, S> {
        self.store.get(&v.var_name()).map_err(L4tVarError::Store)
    }

    fn u32_of(&self, v: L4tVar) -> R<Option<u32>, S> {
        match self.raw(v)? {
            None => Ok(None),
            Some(x) => Ok(Some(x.as_u32(v.name())?)),
        }
    }

    fn put_u32(&mut self, v: L4tVar, x: u32) -> R<(), S> {
        let var = EfiVariable {
            attributes: v.attributes(),
            data: x.to_le_bytes().to_vec(),
        };
        self.store
            .set(&v.var_name(), &var)
            .map_err(L4tVarError::Store)
    }

    fn slot_of(&self, v: L4tVar) -> R<Option<Slot>, S> {
        match self.u32_of(v)? {
            None => Ok(None),
            Some(x) => Slot::from_index(x).map(Some).ok_or_else(|| {
                L4tVarError::Decode(EfiVarError::Value {
                    var: v.name().into(),
                    value: x.into(),
                    reason: "boot chain must be 0 (A) or 1 (B)".into(),
                })
            }),
        }
    }

    /// `BootChainFwCurrent`: the firmware chain that booted.
    pub fn fw_current(&self) -> R<Option<Slot>, S> {
        self.slot_of(L4tVar::BootChainFwCurrent)
    }

    /// Sets `BootChainFwCurrent` (only the firmware/simulator does this).
    pub fn set_fw_current(&mut self, s: Slot) -> R<(), S> {
        self.put_u32(L4tVar::BootChainFwCurrent, s.index())
    }

    /// `BootChainFwNext`: chain requested for the next boot; absent by default.
    pub fn fw_next(&self) -> R<Option<Slot>, S> {
        self.slot_of(L4tVar::BootChainFwNext)
    }

    /// Requests a chain for the next boot.
    pub fn set_fw_next(&mut self, s: Slot) -> R<(), S> {
        self.put_u32(L4tVar::BootChainFwNext, s.index())
    }

    /// Removes the next-boot request.
    pub fn clear_fw_next(&mut self) -> R<(), S> {
        self.store
            .delete(&L4tVar::BootChainFwNext.var_name())
            .map_err(L4tVarError::Store)
    }

    /// `BootChainOsCurrent`: the rootfs chain the launcher chose this boot.
    pub fn os_current(&self) -> R<Option<Slot>, S> {
        self.slot_of(L4tVar::BootChainOsCurrent)
    }

    /// Sets `BootChainOsCurrent` (only the launcher/simulator does this).
    pub fn set_os_current(&mut self, s: Slot) -> R<(), S> {
        self.put_u32(L4tVar::BootChainOsCurrent, s.index())
    }

    /// `BootChainFwStatus` of the last chain switch or capsule update; absent if none.
    pub fn fw_status(&self) -> R<Option<FwStatus>, S> {
        match self.u32_of(L4tVar::BootChainFwStatus)? {
            None => Ok(None),
            Some(x) => FwStatus::from_code(x).map(Some).ok_or_else(|| {
                L4tVarError::Decode(EfiVarError::Value {
                    var: "BootChainFwStatus".into(),
                    value: x.into(),
                    reason: "not a BootChainDxe status code (0..=18)".into(),
                })
            }),
        }
    }

    /// Records a status (firmware/simulator).
    pub fn set_fw_status(&mut self, s: FwStatus) -> R<(), S> {
        self.put_u32(L4tVar::BootChainFwStatus, s.code())
    }

    /// Deletes `BootChainFwStatus`; required after a failure before another capsule.
    pub fn clear_fw_status(&mut self) -> R<(), S> {
        self.store
            .delete(&L4tVar::BootChainFwStatus.var_name())
            .map_err(L4tVarError::Store)
    }

    /// `RootfsStatusSlotA/B`; absent counts as normal, as in the launcher.
    pub fn rootfs_status(&self, slot: Slot) -> R<RootfsStatus, S> {
        let v = L4tVar::rootfs_status(slot);
        match self.u32_of(v)? {
            None | Some(0) => Ok(RootfsStatus::Normal),
            Some(0xff) => Ok(RootfsStatus::Unbootable),
            Some(x) => Err(L4tVarError::Decode(EfiVarError::Value {
                var: v.name().into(),
                value: x.into(),
                reason: "rootfs status must be 0x00 (normal) or 0xFF (unbootable)".into(),
            })),
        }
    }

    /// Writes `RootfsStatusSlotA/B`.
    pub fn set_rootfs_status(&mut self, slot: Slot, st: RootfsStatus) -> R<(), S> {
        self.put_u32(L4tVar::rootfs_status(slot), st.code())
    }

    /// `RootfsRedundancyLevel`; absent = boot-only.
    pub fn redundancy(&self) -> R<RedundancyLevel, S> {
        match self.u32_of(L4tVar::RootfsRedundancyLevel)? {
            None | Some(0) => Ok(RedundancyLevel::BootOnly),
            Some(1) => Ok(RedundancyLevel::BootRootfs),
            Some(x) => Err(L4tVarError::Decode(EfiVarError::Value {
                var: "RootfsRedundancyLevel".into(),
                value: x.into(),
                reason: "must be 0 (boot only) or 1 (boot + rootfs)".into(),
            })),
        }
    }

    /// Writes `RootfsRedundancyLevel`.
    pub fn set_redundancy(&mut self, r: RedundancyLevel) -> R<(), S> {
        let v = match r {
            RedundancyLevel::BootOnly => 0,
            RedundancyLevel::BootRootfs => 1,
        };
        self.put_u32(L4tVar::RootfsRedundancyLevel, v)
    }

    /// `RootfsRetryCountMax`; absent = 3 (L4T default). At most 3 fit the scratch register.
    pub fn retry_count_max(&self) -> R<u32, S> {
        match self.u32_of(L4tVar::RootfsRetryCountMax)? {
            None => Ok(3),
            Some(x) if x <= 3 => Ok(x),
            Some(x) => Err(L4tVarError::Decode(EfiVarError::Value {
                var: "RootfsRetryCountMax".into(),
                value: x.into(),
                reason: "retry counts are 2-bit fields in the scratch register (max 3)".into(),
            })),
        }
    }

    /// Writes `RootfsRetryCountMax`.
    pub fn set_retry_count_max(&mut self, n: u32) -> R<(), S> {
        self.put_u32(L4tVar::RootfsRetryCountMax, n.min(3))
    }

    fn text_of(&self, v: L4tVar) -> R<Option<String>, S> {
        match self.raw(v)? {
            None => Ok(None),
            Some(x) => Ok(Some(x.as_ascii(v.name())?)),
        }
    }

    /// `TegraPlatformSpec` (the full TNSPEC; write-once on real firmware).
    pub fn platform_spec(&self) -> R<Option<String>, S> {
        self.text_of(L4tVar::TegraPlatformSpec)
    }

    /// `TegraPlatformCompatSpec`.
    pub fn platform_compat_spec(&self) -> R<Option<String>, S> {
        self.text_of(L4tVar::TegraPlatformCompatSpec)
    }

    /// Writes a spec variable as ASCII without NUL, as setup-nv-boot-control does.
    pub fn set_spec(&mut self, v: L4tVar, spec: &str) -> R<(), S> {
        let var = EfiVariable::new(spec.as_bytes().to_vec());
        self.store
            .set(&v.var_name(), &var)
            .map_err(L4tVarError::Store)
    }

    /// `OsIndications`; absent = 0.
    pub fn os_indications(&self) -> R<u64, S> {
        match self.raw(L4tVar::OsIndications)? {
            None => Ok(0),
            Some(x) => Ok(x.as_u64("OsIndications")?),
        }
    }

    /// Writes `OsIndications`.
    pub fn set_os_indications(&mut self, v: u64) -> R<(), S> {
        let var = EfiVariable::new(v.to_le_bytes().to_vec());
        self.store
            .set(&L4tVar::OsIndications.var_name(), &var)
            .map_err(L4tVarError::Store)
    }

    /// Whether a capsule-on-disk update is requested for the next boot.
    pub fn capsule_requested(&self) -> R<bool, S> {
        Ok(self.os_indications()? & OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED != 0)
    }
}

/// An in-memory [`VarStore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemVarStore {
    /// The variables.
    pub vars: std::collections::BTreeMap<VarName, EfiVariable>,
}

impl VarStore for MemVarStore {
    type Error = std::convert::Infallible;
    fn get(&self, name: &VarName) -> Result<Option<EfiVariable>, Self::Error> {
        Ok(self.vars.get(name).cloned())
    }
    fn set(&mut self, name: &VarName, value: &EfiVariable) -> Result<(), Self::Error> {
        self.vars.insert(name.clone(), value.clone());
        Ok(())
    }
    fn delete(&mut self, name: &VarName) -> Result<(), Self::Error> {
        self.vars.remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Byte strings from fixtures/tegra/samples/efivar_raw_bytes.txt.
    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn guids_render_canonically() {
        assert_eq!(
            NVIDIA_PUBLIC_VARIABLE_GUID.to_string(),
            "781e084c-a330-417c-b678-38e696380cb9"
        );
        assert_eq!(
            EFI_GLOBAL_VARIABLE_GUID.to_string(),
            "8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        let g: Guid = "781E084C-A330-417C-B678-38E696380CB9".parse().unwrap();
        assert_eq!(g, NVIDIA_PUBLIC_VARIABLE_GUID);
        assert!("781e084c-a330-417c-b678".parse::<Guid>().is_err());
        assert!("781e084c-a330-417c-b678-38e696380cbz"
            .parse::<Guid>()
            .is_err());
    }

    #[test]
    fn file_names_round_trip() {
        let n = VarName::from_file_name("RootfsStatusSlotA-781e084c-a330-417c-b678-38e696380cb9")
            .unwrap();
        assert_eq!(n, VarName::nvidia("RootfsStatusSlotA"));
        assert_eq!(
            L4tVar::OsIndications.var_name().file_name(),
            "OsIndications-8be4df61-93ca-11d2-aa0d-00e098032b8c"
        );
        // names with dashes keep them
        let n = VarName::from_file_name("My-Var-781e084c-a330-417c-b678-38e696380cb9").unwrap();
        assert_eq!(n.name, "My-Var");
        assert!(VarName::from_file_name("x").is_err());
        assert!(VarName::from_file_name("-781e084c-a330-417c-b678-38e696380cb9").is_err());
    }

    #[test]
    fn sample_bytes_decode() {
        let cap = hex("07 00 00 00 04 00 00 00 00 00 00 00");
        let v = EfiVariable::from_efivarfs(&L4tVar::OsIndications.var_name(), &cap).unwrap();
        assert_eq!(v.attributes, attr::NV_BS_RT);
        assert_eq!(v.as_u64("OsIndications").unwrap(), 4);
        assert_eq!(v.to_efivarfs(), cap);

        let next_b = hex("07 00 00 00 01 00 00 00");
        let mut store = MemVarStore::default();
        store.vars.insert(
            L4tVar::BootChainFwNext.var_name(),
            EfiVariable::from_efivarfs(&L4tVar::BootChainFwNext.var_name(), &next_b).unwrap(),
        );
        store.vars.insert(
            L4tVar::RootfsStatusSlotA.var_name(),
            EfiVariable::from_efivarfs(
                &L4tVar::RootfsStatusSlotA.var_name(),
                &hex("07 00 00 00 ff 00 00 00"),
            )
            .unwrap(),
        );
        let mut spec = vec![7, 0, 0, 0];
        spec.extend_from_slice(b"3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-");
        store.vars.insert(
            L4tVar::TegraPlatformSpec.var_name(),
            EfiVariable::from_efivarfs(&L4tVar::TegraPlatformSpec.var_name(), &spec).unwrap(),
        );
        let vars = L4tVars::new(store);
        assert_eq!(vars.fw_next().unwrap(), Some(Slot::B));
        assert_eq!(vars.fw_current().unwrap(), None);
        assert_eq!(
            vars.rootfs_status(Slot::A).unwrap(),
            RootfsStatus::Unbootable
        );
        assert_eq!(vars.rootfs_status(Slot::B).unwrap(), RootfsStatus::Normal);
        assert_eq!(
            vars.platform_spec().unwrap().as_deref(),
            Some("3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-")
        );
        assert_eq!(vars.retry_count_max().unwrap(), 3);
        assert!(!vars.capsule_requested().unwrap());
    }

    #[test]
    fn typed_writes_use_firmware_encoding() {
        let mut vars = L4tVars::new(MemVarStore::default());
        vars.set_fw_next(Slot::B).unwrap();
        vars.set_rootfs_status(Slot::B, RootfsStatus::Unbootable)
            .unwrap();
        vars.set_os_indications(OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
            .unwrap();
        vars.set_fw_current(Slot::A).unwrap();
        let s = vars.store();
        let file = |v: L4tVar| s.vars[&v.var_name()].to_efivarfs();
        assert_eq!(
            file(L4tVar::BootChainFwNext),
            hex("07 00 00 00 01 00 00 00")
        );
        assert_eq!(
            file(L4tVar::RootfsStatusSlotB),
            hex("07 00 00 00 ff 00 00 00")
        );
        assert_eq!(
            file(L4tVar::OsIndications),
            hex("07 00 00 00 04 00 00 00 00 00 00 00")
        );
        // firmware-owned volatile variable: BS|RT
        assert_eq!(
            file(L4tVar::BootChainFwCurrent),
            hex("06 00 00 00 00 00 00 00")
        );
        assert!(vars.capsule_requested().unwrap());
        vars.clear_fw_next().unwrap();
        assert_eq!(vars.fw_next().unwrap(), None);
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let mut store = MemVarStore::default();
        store
            .vars
            .insert(L4tVar::BootChainFwNext.var_name(), EfiVariable::u32(7));
        store.vars.insert(
            L4tVar::RootfsStatusSlotA.var_name(),
            EfiVariable::new(vec![0xff]),
        );
        store
            .vars
            .insert(L4tVar::BootChainFwStatus.var_name(), EfiVariable::u32(99));
        let vars = L4tVars::new(store);
        let e = vars.fw_next().unwrap_err().to_string();
        assert!(e.contains("BootChainFwNext") && e.contains("0x7"), "{e}");
        let e = vars.rootfs_status(Slot::A).unwrap_err().to_string();
        assert!(
            e.contains("RootfsStatusSlotA") && e.contains("1 bytes"),
            "{e}"
        );
        let e = vars.fw_status().unwrap_err().to_string();
        assert!(e.contains("BootChainFwStatus"), "{e}");
        let e = EfiVariable::from_efivarfs(&VarName::nvidia("X"), &[7, 0]).unwrap_err();
        assert!(e.to_string().contains("2 bytes"));
    }

    #[test]
    fn fw_status_codes() {
        assert_eq!(FwStatus::from_code(12), Some(FwStatus::BootChainFailed));
        assert_eq!(FwStatus::from_code(19), None);
        assert!(FwStatus::InProgressFailed.is_error());
        assert!(!FwStatus::Success.is_error());
        for (i, s) in FwStatus::ALL.iter().enumerate() {
            assert_eq!(s.code() as usize, i);
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40), name in "\\PC{0,60}") {
            let _ = VarName::from_file_name(&name);
            let n = VarName::nvidia("X");
            if let Ok(v) = EfiVariable::from_efivarfs(&n, &data) {
                prop_assert_eq!(v.to_efivarfs(), data.clone());
                let _ = v.as_u32("X");
                let _ = v.as_u64("X");
                let _ = v.as_ascii("X");
            }
            let mut store = MemVarStore::default();
            for var in L4tVar::ALL {
                if let Ok(v) = EfiVariable::from_efivarfs(&var.var_name(), &data) {
                    store.vars.insert(var.var_name(), v);
                }
            }
            let vars = L4tVars::new(store);
            let _ = vars.fw_current();
            let _ = vars.fw_status();
            let _ = vars.rootfs_status(Slot::B);
            let _ = vars.redundancy();
            let _ = vars.retry_count_max();
            let _ = vars.platform_spec();
            let _ = vars.os_indications();
        }
    }
}
