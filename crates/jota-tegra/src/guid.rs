//! GUIDs as UEFI and GPT use them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A string that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct GuidError(pub String);

/// A UEFI GUID in its canonical text order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

/// `gNVIDIAPublicVariableGuid`.
pub const NVIDIA_PUBLIC_VARIABLE_GUID: Guid = Guid([
    0x78, 0x1e, 0x08, 0x4c, 0xa3, 0x30, 0x41, 0x7c, 0xb6, 0x78, 0x38, 0xe6, 0x96, 0x38, 0x0c, 0xb9,
]);
/// `EFI_GLOBAL_VARIABLE` (OsIndications, BootOrder, ...).
pub const EFI_GLOBAL_VARIABLE_GUID: Guid = Guid([
    0x8b, 0xe4, 0xdf, 0x61, 0x93, 0xca, 0x11, 0xd2, 0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c,
]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl FromStr for Guid {
    type Err = GuidError;
    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    fn from_str(s: &str) -> Result<Guid, GuidError> {
        let bad = || GuidError(s.to_string());
        let groups: Vec<&str> = s.split('-').collect();
        if groups.len() != 5
            || groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12]
        {
            return Err(bad());
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
        }
        Ok(Guid(out))
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Guid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Guid, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Guid {
    /// The on-disk form of GPT and UEFI structures: the first three fields little-endian.
    pub fn to_mixed_endian(&self) -> [u8; 16] {
        let b = &self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// Reads the on-disk (mixed-endian) form.
    pub fn from_mixed_endian(m: &[u8; 16]) -> Guid {
        Guid([
            m[3], m[2], m[1], m[0], m[5], m[4], m[7], m[6], m[8], m[9], m[10], m[11], m[12], m[13],
            m[14], m[15],
        ])
    }

    /// A version-4-shaped GUID derived from a digest (deterministic "random" GUIDs).
    pub fn from_digest(d: &[u8]) -> Guid {
        let mut b = [0u8; 16];
        for (i, x) in d.iter().take(16).enumerate() {
            b[i] = *x;
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// The all-zero GUID (an unused GPT entry).
    pub const NIL: Guid = Guid([0; 16]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_endian_round_trip() {
        // ESP type GUID as it appears on disk
        let esp: Guid = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".parse().unwrap();
        assert_eq!(
            esp.to_mixed_endian(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
                0xc9, 0x3b
            ]
        );
        assert_eq!(Guid::from_mixed_endian(&esp.to_mixed_endian()), esp);
        let g = Guid::from_digest(&[0xff; 32]);
        assert_eq!(g.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    }
}
