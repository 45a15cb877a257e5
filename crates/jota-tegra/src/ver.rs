//! The `VER` partition: L4T's firmware version record of a boot chain.
//!
//! ```text
//! NV4                          NV3 (R32)
//! # R36 , REVISION: 4.3        # R32 , REVISION: 7.4
//! BOARDID=3767 BOARDSKU=0005 FAB=300
//! 20250108015137               20230608212504
//! 0x00240403                   BYTES:97 CRC32:2516438185
//! BYTES:107 CRC32:4EFF24B8
//! ```
//!
//! The last line covers every byte before it. NV4 (R35+): zlib CRC-32 in uppercase hex, and
//! UEFI reads the version from line 5 (it becomes the ESRT `fw_version`); NV3 (R32): POSIX
//! `cksum` in decimal.

use crate::release::L4tVersion;
use serde::Serialize;

/// A parsed VER record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ver {
    /// `NV3` or `NV4`.
    pub revision: String,
    /// The BSP line, e.g. `# R36 , REVISION: 4.3`.
    pub bsp_line: String,
    /// Version from the BSP line.
    pub version: L4tVersion,
    /// `BOARDID=... BOARDSKU=... FAB=...` line.
    pub board_line: String,
    /// Build timestamp `YYYYMMDDHHMMSS`.
    pub timestamp: String,
    /// NV4: `major<<16 | minor<<8 | patch` from line 5.
    pub version32: Option<u32>,
}

/// A VER record that does not parse or whose checksum is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("VER line {line}: {reason}")]
pub struct VerError {
    /// 1-based line.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// POSIX `cksum` CRC (polynomial 0x04C11DB7, MSB first, length appended, inverted).
pub fn posix_cksum(data: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    let mut feed = |b: u8| {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    };
    for &b in data {
        feed(b);
    }
    let mut len = data.len() as u64;
    while len > 0 {
        feed((len & 0xff) as u8);
        len >>= 8;
    }
    !crc
}

impl Ver {
    /// Builds an NV4 record for `version` and board.
    pub fn nv4(
        version: L4tVersion,
        board_id: &str,
        board_sku: &str,
        fab: &str,
        timestamp: &str,
    ) -> Vec<u8> {
        let body = format!(
            "NV4\n# R{} , REVISION: {}.{}\nBOARDID={board_id} BOARDSKU={board_sku} FAB={fab}\n{timestamp}\n{:#x}\n",
            version.major,
            version.minor,
            version.patch,
            version.to_fw_version()
        );
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}BYTES:{} CRC32:{crc:X}\n", body.len()).into_bytes()
    }

    /// Builds an NV3 (R32) record.
    pub fn nv3(
        version: L4tVersion,
        board_id: &str,
        board_sku: &str,
        fab: &str,
        timestamp: &str,
    ) -> Vec<u8> {
        let body = format!(
            "NV3\n# R{} , REVISION: {}.{}\nBOARDID={board_id} BOARDSKU={board_sku} FAB={fab}\n{timestamp}\n",
            version.major, version.minor, version.patch
        );
        let crc = posix_cksum(body.as_bytes());
        format!("{body}BYTES:{} CRC32:{crc}\n", body.len()).into_bytes()
    }

    /// Parses a VER partition's content (trailing NUL/0xFF padding ignored) and checks its CRC.
    pub fn parse(raw: &[u8]) -> Result<Ver, VerError> {
        let end = raw
            .iter()
            .position(|&b| b == 0 || b == 0xff)
            .unwrap_or(raw.len());
        let text = std::str::from_utf8(&raw[..end]).map_err(|e| VerError {
            line: 1,
            reason: format!("not text: {e}"),
        })?;
        let lines: Vec<&str> = text.lines().collect();
        let err = |line: usize, reason: String| VerError { line, reason };
        let revision = lines.first().copied().unwrap_or_default();
        let nv4 = match revision {
            "NV4" => true,
            "NV3" | "NV2" => false,
            o => return Err(err(1, format!("`{o}` is not NV2/NV3/NV4"))),
        };
        let crc_line_no = if nv4 { 6 } else { 5 };
        let crc_line = lines
            .get(crc_line_no - 1)
            .ok_or_else(|| err(crc_line_no, "BYTES/CRC32 line missing".into()))?;
        let body_len: usize = lines[..crc_line_no - 1].iter().map(|l| l.len() + 1).sum();
        let body = &text.as_bytes()[..body_len.min(text.len())];
        let crc_text = crc_line
            .split("CRC32:")
            .nth(1)
            .ok_or_else(|| err(crc_line_no, format!("`{crc_line}` has no CRC32:")))?
            .trim();
        let (stored, computed) = if nv4 {
            (
                u32::from_str_radix(crc_text, 16).ok(),
                crc32fast::hash(body),
            )
        } else {
            (crc_text.parse::<u32>().ok(), posix_cksum(body))
        };
        let stored = stored
            .ok_or_else(|| err(crc_line_no, format!("CRC32 `{crc_text}` is not a number")))?;
        if stored != computed {
            return Err(err(
                crc_line_no,
                format!("CRC32 {stored:#x} does not match the content ({computed:#x})"),
            ));
        }
        let bsp_line = lines.get(1).copied().unwrap_or_default().to_string();
        let version = parse_bsp_line(&bsp_line)
            .ok_or_else(|| err(2, format!("`{bsp_line}` is not `# R<n> , REVISION: x.y`")))?;
        let version32 = if nv4 {
            let l = lines.get(4).copied().unwrap_or_default();
            Some(
                l.strip_prefix("0x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| err(5, format!("`{l}` is not a 0x version")))?,
            )
        } else {
            None
        };
        Ok(Ver {
            revision: revision.to_string(),
            bsp_line,
            version,
            board_line: lines.get(2).copied().unwrap_or_default().to_string(),
            timestamp: lines.get(3).copied().unwrap_or_default().to_string(),
            version32,
        })
    }

    /// The version UEFI reports: line 5 on NV4, else the BSP line.
    pub fn fw_version(&self) -> L4tVersion {
        match self.version32 {
            Some(v) => L4tVersion::from_fw_version(v),
            None => self.version,
        }
    }
}

fn parse_bsp_line(l: &str) -> Option<L4tVersion> {
    // "# R36 , REVISION: 4.3"
    let rest = l.trim().strip_prefix('#')?.trim().strip_prefix('R')?;
    let (major, rev) = rest.split_once(',')?;
    let rev = rev.trim().strip_prefix("REVISION:")?.trim();
    format!("{}.{rev}", major.trim()).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_example_crc_checks_out() {
        // edk2-nvidia VerPartitionLib's comment example: 107 bytes, zlib CRC 4EFF24B8
        let body = "NV4\n# RBRANCH_NUM , REVISION: MAJ_NUM.MIN_NUM\nBOARDID=2888 BOARDSKU=0001 FAB=400\n20210603224448\n0x00200601\n";
        assert_eq!(body.len(), 107);
        assert_eq!(crc32fast::hash(body.as_bytes()), 0x4EFF24B8);
        assert_ne!(posix_cksum(body.as_bytes()), 0x4EFF24B8);
    }

    #[test]
    fn posix_cksum_matches_the_tool() {
        // `printf 'hello\n' | cksum` = 3015617425 6
        assert_eq!(posix_cksum(b"hello\n"), 3015617425);
        assert_eq!(posix_cksum(b""), 4294967295);
    }

    #[test]
    fn nv4_round_trip() {
        let v = Ver::nv4(
            L4tVersion::new(36, 4, 3),
            "3767",
            "0005",
            "300",
            "20250108015137",
        );
        let text = String::from_utf8(v.clone()).unwrap();
        assert!(text.starts_with("NV4\n# R36 , REVISION: 4.3\n"));
        assert!(text.contains("\n0x240403\n"));
        let mut padded = v.clone();
        padded.extend_from_slice(&[0xff; 100]);
        let p = Ver::parse(&padded).unwrap();
        assert_eq!(p.fw_version(), L4tVersion::new(36, 4, 3));
        assert_eq!(p.timestamp, "20250108015137");
        // a flipped byte is caught
        let mut bad = v.clone();
        bad[10] = b'9';
        let e = Ver::parse(&bad).unwrap_err();
        assert_eq!(e.line, 6);
    }

    #[test]
    fn nv3_round_trip_and_garbage() {
        let v = Ver::nv3(
            L4tVersion::new(32, 7, 4),
            "3448",
            "0000",
            "300",
            "20230608212504",
        );
        assert_eq!(Ver::parse(&v).unwrap().version, L4tVersion::new(32, 7, 4));
        assert!(Ver::parse(b"").is_err());
        assert!(Ver::parse(&[0xff; 64]).is_err());
        assert!(Ver::parse(b"NV4\nx\n").is_err());
    }
}
