//! UEFI FMP capsules (`TEGRA_BL.Cap`) as L4T builds them with edk2's `GenerateCapsule.py`:
//! the BUP wrapped in an FMP payload header, an authentication header and the capsule
//! headers. Sources: edk2 BaseTools Capsule scripts and `DxeCapsuleLibFmp`, `FmpDxe`;
//! NVIDIA `l4t_generate_soc_capsule.sh`.
//!
//! ```text
//! 0x00 EFI_CAPSULE_HEADER  guid 6DCBD5ED-…, HeaderSize 0x20, Flags, CapsuleImageSize (+ 4 reserved)
//! 0x20 FMP capsule header  Version 1, EmbeddedDriverCount 0, PayloadItemCount 1, ItemOffsetList[1] = 0x10
//! 0x30 image header        Version (1..=3), UpdateImageTypeId (= ESRT fw_class), UpdateImageIndex 1,
//!                          UpdateImageSize, UpdateVendorCodeSize, UpdateHardwareInstance [, ImageCapsuleSupport]
//!      authentication      MonotonicCount u64, WIN_CERTIFICATE_UEFI_GUID {dwLength, 0x0200, 0x0EF1, PKCS7 GUID}, DER
//!      FMP payload header  'MSS1', 16, FwVersion, LowestSupportedVersion
//!      payload             the BUP (NVIDIA__BLOB__V3)
//! ```
//! The firmware verifies the PKCS#7 signature over `payload header ‖ payload ‖ u64 MonotonicCount`.

use crate::bytes::{le_u16, le_u32, le_u64};
use crate::guid::Guid;
use serde::Serialize;

/// `EFI_FIRMWARE_MANAGEMENT_CAPSULE_ID_GUID`.
pub const FMP_CAPSULE_GUID: Guid = Guid([
    0x6d, 0xcb, 0xd5, 0xed, 0xe8, 0x2d, 0x4c, 0x44, 0xbd, 0xa1, 0x71, 0x94, 0x19, 0x9a, 0xd9, 0x2a,
]);
/// `EFI_CERT_TYPE_PKCS7_GUID`.
pub const PKCS7_CERT_TYPE: Guid = Guid([
    0x4a, 0xaf, 0xd2, 0x9d, 0x68, 0xdf, 0x49, 0xee, 0x8a, 0xa9, 0x34, 0x7d, 0x37, 0x56, 0x65, 0xa7,
]);
/// T234 (Orin) system firmware image type (ESRT `fw_class`).
pub const T234_IMAGE_TYPE: Guid = Guid([
    0xbf, 0x0d, 0x45, 0x99, 0x20, 0xd4, 0x41, 0x4e, 0xb2, 0xc5, 0x35, 0x95, 0xb1, 0xcd, 0xa4, 0x02,
]);
/// T194 (Xavier) system firmware image type.
pub const T194_IMAGE_TYPE: Guid = Guid([
    0xbe, 0x3f, 0x5d, 0x68, 0x76, 0x54, 0x4e, 0xd2, 0x83, 0x8c, 0x2a, 0x2f, 0xaf, 0x90, 0x1a, 0x78,
]);

const CAPSULE_HEADER_SIZE: u32 = 0x20;
const MSS1: u32 = u32::from_le_bytes(*b"MSS1");
const WIN_CERT_TYPE_EFI_GUID: u16 = 0x0EF1;
/// `CAPSULE_SUPPORT_AUTHENTICATION`.
pub const CAPSULE_SUPPORT_AUTHENTICATION: u64 = 1;

/// The authentication block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Auth {
    /// Monotonic count (signed together with the payload).
    pub monotonic_count: u64,
    /// Certificate type (PKCS7 for Jetson).
    pub cert_type: Guid,
    /// DER PKCS#7 detached signature.
    #[serde(skip)]
    pub cert_data: Vec<u8>,
}

/// A parsed capsule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Capsule {
    /// Capsule flags.
    pub flags: u32,
    /// Image header version (1..=3).
    pub image_header_version: u32,
    /// Image type; must be the device's ESRT `fw_class`.
    pub image_type: Guid,
    /// Update image index (the firmware accepts only 1).
    pub image_index: u8,
    /// Hardware instance (0 = any).
    pub hardware_instance: u64,
    /// `ImageCapsuleSupport` of a version-3 header.
    pub capsule_support: Option<u64>,
    /// Authentication, if present.
    pub auth: Option<Auth>,
    /// `FwVersion` of the payload header.
    pub fw_version: u32,
    /// `LowestSupportedVersion` of the payload header.
    pub lowest_supported_version: u32,
    /// Byte range of the payload header + payload (what the signature covers, plus the count).
    pub signed_range: (usize, usize),
    /// Byte range of the payload (the BUP).
    pub payload_range: (usize, usize),
}

/// A capsule that does not parse, naming the field and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("capsule field `{field}` at offset {offset}: {reason}")]
pub struct CapsuleError {
    /// Field.
    pub field: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Why.
    pub reason: String,
}

fn err(field: &'static str, offset: usize, reason: impl Into<String>) -> CapsuleError {
    CapsuleError {
        field,
        offset,
        reason: reason.into(),
    }
}

fn guid_at(b: &[u8], off: usize) -> Option<Guid> {
    let s = b.get(off..off + 16)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(s);
    Some(Guid::from_mixed_endian(&a))
}

/// The bytes a signer signs: payload header, payload, monotonic count.
pub fn to_be_signed(fw_version: u32, lsv: u32, payload: &[u8], monotonic_count: u64) -> Vec<u8> {
    let mut v = payload_header(fw_version, lsv);
    v.extend_from_slice(payload);
    v.extend_from_slice(&monotonic_count.to_le_bytes());
    v
}

fn payload_header(fw_version: u32, lsv: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    for x in [MSS1, 16, fw_version, lsv] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

impl Capsule {
    /// Builds a capsule with a version-2 image header (accepted by every Jetson UEFI).
    pub fn build(
        image_type: Guid,
        fw_version: u32,
        lsv: u32,
        payload: &[u8],
        auth: Option<&Auth>,
    ) -> Vec<u8> {
        let mut image = Vec::new();
        if let Some(a) = auth {
            image.extend_from_slice(&a.monotonic_count.to_le_bytes());
            let dw_length = 24 + a.cert_data.len() as u32;
            image.extend_from_slice(&dw_length.to_le_bytes());
            image.extend_from_slice(&0x0200u16.to_le_bytes());
            image.extend_from_slice(&WIN_CERT_TYPE_EFI_GUID.to_le_bytes());
            image.extend_from_slice(&a.cert_type.to_mixed_endian());
            image.extend_from_slice(&a.cert_data);
        }
        image.extend_from_slice(&payload_header(fw_version, lsv));
        image.extend_from_slice(payload);

        let mut fmp = Vec::new();
        fmp.extend_from_slice(&1u32.to_le_bytes()); // version
        fmp.extend_from_slice(&0u16.to_le_bytes()); // embedded drivers
        fmp.extend_from_slice(&1u16.to_le_bytes()); // payload items
        fmp.extend_from_slice(&0x10u64.to_le_bytes());
        fmp.extend_from_slice(&2u32.to_le_bytes()); // image header version
        fmp.extend_from_slice(&image_type.to_mixed_endian());
        fmp.extend_from_slice(&[1, 0, 0, 0]); // index 1 + reserved
        fmp.extend_from_slice(&(image.len() as u32).to_le_bytes());
        fmp.extend_from_slice(&0u32.to_le_bytes()); // vendor code
        fmp.extend_from_slice(&0u64.to_le_bytes()); // hardware instance
        fmp.extend_from_slice(&image);

        let total = CAPSULE_HEADER_SIZE as usize + fmp.len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&FMP_CAPSULE_GUID.to_mixed_endian());
        out.extend_from_slice(&CAPSULE_HEADER_SIZE.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // flags
        out.extend_from_slice(&(total as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes()); // GenerateCapsule's reserved word
        out.extend_from_slice(&fmp);
        out
    }

    /// Parses a capsule file and checks every size and offset.
    pub fn parse(b: &[u8]) -> Result<Capsule, CapsuleError> {
        let guid = guid_at(b, 0)
            .ok_or_else(|| err("CapsuleGuid", 0, "file shorter than a capsule header"))?;
        if guid != FMP_CAPSULE_GUID {
            return Err(err(
                "CapsuleGuid",
                0,
                format!("{guid} is not the FMP capsule GUID {FMP_CAPSULE_GUID}"),
            ));
        }
        let rd = |o: usize, f: &'static str| le_u32(b, o).ok_or_else(|| err(f, o, "truncated"));
        let header_size = rd(16, "HeaderSize")? as usize;
        let flags = rd(20, "Flags")?;
        let image_size = rd(24, "CapsuleImageSize")? as usize;
        if image_size != b.len() {
            return Err(err(
                "CapsuleImageSize",
                24,
                format!("{image_size} but the file has {} bytes", b.len()),
            ));
        }
        if !(28..=b.len()).contains(&header_size) {
            return Err(err(
                "HeaderSize",
                16,
                format!("{header_size} is not within the file"),
            ));
        }
        let fmp = header_size;
        let version = rd(fmp, "FmpCapsuleHeader.Version")?;
        if version != 1 {
            return Err(err(
                "FmpCapsuleHeader.Version",
                fmp,
                format!("{version}, expected 1"),
            ));
        }
        let drivers =
            le_u16(b, fmp + 4).ok_or_else(|| err("EmbeddedDriverCount", fmp + 4, "truncated"))?;
        let items =
            le_u16(b, fmp + 6).ok_or_else(|| err("PayloadItemCount", fmp + 6, "truncated"))?;
        if items != 1 || drivers != 0 {
            return Err(err(
                "PayloadItemCount",
                fmp + 6,
                format!("{drivers} drivers and {items} payloads; an L4T capsule has 0 and 1"),
            ));
        }
        let item_off =
            le_u64(b, fmp + 8).ok_or_else(|| err("ItemOffsetList", fmp + 8, "truncated"))? as usize;
        let ih = fmp
            .checked_add(item_off)
            .filter(|&o| o >= fmp + 16 && o < b.len())
            .ok_or_else(|| {
                err(
                    "ItemOffsetList",
                    fmp + 8,
                    format!("{item_off:#x} points outside the capsule"),
                )
            })?;
        let ih_version = rd(ih, "ImageHeader.Version")?;
        let ih_len = match ih_version {
            1 => 32,
            2 => 40,
            3 => 48,
            v => return Err(err("ImageHeader.Version", ih, format!("{v} is not 1..=3"))),
        };
        let image_type =
            guid_at(b, ih + 4).ok_or_else(|| err("UpdateImageTypeId", ih + 4, "truncated"))?;
        let image_index = *b
            .get(ih + 20)
            .ok_or_else(|| err("UpdateImageIndex", ih + 20, "truncated"))?;
        let upd_size = rd(ih + 24, "UpdateImageSize")? as usize;
        let vendor = rd(ih + 28, "UpdateVendorCodeSize")? as usize;
        let hardware_instance = if ih_version >= 2 {
            le_u64(b, ih + 32).ok_or_else(|| err("UpdateHardwareInstance", ih + 32, "truncated"))?
        } else {
            0
        };
        let capsule_support = (ih_version == 3)
            .then(|| {
                le_u64(b, ih + 40).ok_or_else(|| err("ImageCapsuleSupport", ih + 40, "truncated"))
            })
            .transpose()?;
        let start = ih + ih_len;
        let end = start
            .checked_add(upd_size)
            .and_then(|e| e.checked_add(vendor))
            .filter(|&e| e == b.len())
            .ok_or_else(|| {
                err(
                    "UpdateImageSize",
                    ih + 24,
                    format!("image of {upd_size}+{vendor} bytes from {start} does not end at the file end {}", b.len()),
                )
            })?;
        let image_end = end - vendor;
        let mut p = start;
        // Authentication present? (WIN_CERTIFICATE revision 0x0200, type EFI_GUID)
        let auth = if le_u16(b, p + 12) == Some(0x0200)
            && le_u16(b, p + 14) == Some(WIN_CERT_TYPE_EFI_GUID)
        {
            let mc = le_u64(b, p).ok_or_else(|| err("MonotonicCount", p, "truncated"))?;
            let dw = rd(p + 8, "AuthInfo.dwLength")? as usize;
            if dw < 24 || p + 8 + dw > image_end {
                return Err(err(
                    "AuthInfo.dwLength",
                    p + 8,
                    format!("{dw} runs past the image"),
                ));
            }
            let cert_type =
                guid_at(b, p + 16).ok_or_else(|| err("AuthInfo.CertType", p + 16, "truncated"))?;
            let cert_data = b[p + 32..p + 8 + dw].to_vec();
            p += 8 + dw;
            Some(Auth {
                monotonic_count: mc,
                cert_type,
                cert_data,
            })
        } else {
            None
        };
        let sig = rd(p, "FmpPayloadHeader.Signature")?;
        if sig != MSS1 {
            return Err(err(
                "FmpPayloadHeader.Signature",
                p,
                format!("{sig:#010x} is not 'MSS1'"),
            ));
        }
        let hsize = rd(p + 4, "FmpPayloadHeader.HeaderSize")? as usize;
        if hsize < 16 || p + hsize > image_end {
            return Err(err(
                "FmpPayloadHeader.HeaderSize",
                p + 4,
                format!("{hsize} is invalid"),
            ));
        }
        let fw_version = rd(p + 8, "FwVersion")?;
        let lowest_supported_version = rd(p + 12, "LowestSupportedVersion")?;
        Ok(Capsule {
            flags,
            image_header_version: ih_version,
            image_type,
            image_index,
            hardware_instance,
            capsule_support,
            auth,
            fw_version,
            lowest_supported_version,
            signed_range: (p, image_end),
            payload_range: (p + hsize, image_end),
        })
    }

    /// The payload (BUP) bytes.
    pub fn payload<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.payload_range.0..self.payload_range.1]
    }

    /// What the signature must verify: payload header, payload, monotonic count.
    pub fn signed_content(&self, file: &[u8]) -> Option<Vec<u8>> {
        let a = self.auth.as_ref()?;
        let mut v = file[self.signed_range.0..self.signed_range.1].to_vec();
        v.extend_from_slice(&a.monotonic_count.to_le_bytes());
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(auth: bool) -> Vec<u8> {
        let a = Auth {
            monotonic_count: 1,
            cert_type: PKCS7_CERT_TYPE,
            cert_data: vec![0x30; 1500],
        };
        Capsule::build(
            T234_IMAGE_TYPE,
            0x0024_0403,
            0x0024_0403,
            b"NVIDIA__BLOB__V3 payload",
            auth.then_some(&a),
        )
    }

    #[test]
    fn layout_matches_generate_capsule() {
        let c = sample(true);
        assert_eq!(
            &c[..16],
            &[
                0xed, 0xd5, 0xcb, 0x6d, 0x2d, 0xe8, 0x44, 0x4c, 0xbd, 0xa1, 0x71, 0x94, 0x19, 0x9a,
                0xd9, 0x2a
            ]
        );
        assert_eq!(u32::from_le_bytes(c[16..20].try_into().unwrap()), 0x20);
        assert_eq!(
            u32::from_le_bytes(c[24..28].try_into().unwrap()) as usize,
            c.len()
        );
        assert_eq!(u64::from_le_bytes(c[0x28..0x30].try_into().unwrap()), 0x10);
        assert_eq!(
            &c[0x34..0x44],
            &[
                0x99, 0x45, 0x0d, 0xbf, 0xd4, 0x20, 0x4e, 0x41, 0xb2, 0xc5, 0x35, 0x95, 0xb1, 0xcd,
                0xa4, 0x02
            ]
        );
        // auth header at 0x58, MSS1 after 8 + 24 + 1500 bytes
        assert_eq!(
            u32::from_le_bytes(c[0x60..0x64].try_into().unwrap()),
            24 + 1500
        );
        assert_eq!(&c[0x58 + 8 + 1524..0x58 + 8 + 1524 + 4], b"MSS1");
        let p = Capsule::parse(&c).unwrap();
        assert_eq!(p.image_type, T234_IMAGE_TYPE);
        assert_eq!(p.fw_version, 0x0024_0403);
        assert_eq!(p.payload(&c), b"NVIDIA__BLOB__V3 payload");
        let a = p.auth.as_ref().unwrap();
        assert_eq!(
            (a.monotonic_count, a.cert_type, a.cert_data.len()),
            (1, PKCS7_CERT_TYPE, 1500)
        );
        let signed = p.signed_content(&c).unwrap();
        assert_eq!(
            signed,
            to_be_signed(0x0024_0403, 0x0024_0403, b"NVIDIA__BLOB__V3 payload", 1)
        );
        let unsigned = Capsule::parse(&sample(false)).unwrap();
        assert!(unsigned.auth.is_none());
        assert_eq!(
            unsigned.payload(&sample(false)),
            b"NVIDIA__BLOB__V3 payload"
        );
    }

    #[test]
    fn errors_name_field_and_offset() {
        let c = sample(true);
        let mut b = c.clone();
        b[0] ^= 1;
        assert_eq!(Capsule::parse(&b).unwrap_err().field, "CapsuleGuid");
        let e = Capsule::parse(&c[..c.len() - 1]).unwrap_err();
        assert_eq!((e.field, e.offset), ("CapsuleImageSize", 24));
        let mut b = c.clone();
        b[0x30] = 9;
        assert_eq!(Capsule::parse(&b).unwrap_err().field, "ImageHeader.Version");
        let mut b = c.clone();
        let mss = 0x58 + 8 + 1524;
        b[mss] = b'X';
        let e = Capsule::parse(&b).unwrap_err();
        assert_eq!((e.field, e.offset), ("FmpPayloadHeader.Signature", mss));
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Capsule::parse(&data);
        }

        #[test]
        fn mutations_never_panic(i in 0usize..1700, v in any::<u8>()) {
            let mut c = sample(true);
            if i < c.len() { c[i] = v; }
            if let Ok(p) = Capsule::parse(&c) {
                let _ = p.payload(&c);
                let _ = p.signed_content(&c);
            }
        }
    }
}
