//! cpio archives in the SVR4 `newc` (`070701`) and `crc` (`070702`) formats, as SWUpdate
//! reads them: 110-byte ASCII-hex headers, names and data padded to 4 bytes, a
//! `TRAILER!!!` entry; the `crc` form's `check` field is the 32-bit sum of the data bytes.
//! Sizes are 8 hex digits, so an entry is at most 4 GiB - 1.

use std::io::{Read, Write};

/// The `crc` magic.
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// The plain `newc` magic.
pub const MAGIC_NEWC: &[u8; 6] = b"070701";
const HEADER: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// A cpio problem, naming the entry and offset.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A malformed archive.
    #[error("cpio at byte {offset}: {reason}")]
    Format {
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry that cannot be written.
    #[error("cpio entry `{name}`: {reason}")]
    Entry {
        /// Entry name.
        name: String,
        /// Why.
        reason: String,
    },
    /// I/O.
    #[error("cpio: {0}")]
    Io(#[from] std::io::Error),
}

/// Sum of bytes, the `crc` format's checksum.
pub fn checksum(data: &[u8], acc: u32) -> u32 {
    data.iter().fold(acc, |a, &b| a.wrapping_add(b as u32))
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

/// Writes a `crc`-format archive.
pub struct Writer<W: Write> {
    out: W,
    offset: u64,
    ino: u32,
}

impl<W: Write> Writer<W> {
    /// Starts an archive.
    pub fn new(out: W) -> Writer<W> {
        Writer {
            out,
            offset: 0,
            ino: 0,
        }
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, check: u32) -> Result<(), CpioError> {
        let nlink = 1;
        let h = format!(
            "070702{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name.len() + 1,
            check
        );
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        let n = (HEADER + name.len() + 1) as u64;
        self.out.write_all(&[0u8; 4][..pad4(n)])?;
        self.offset += n + pad4(n) as u64;
        self.ino += 1;
        Ok(())
    }

    /// Appends a regular file of `size` bytes with checksum `check` read from `data`.
    pub fn append(
        &mut self,
        name: &str,
        size: u64,
        check: u32,
        data: &mut dyn Read,
    ) -> Result<(), CpioError> {
        check_name(name).map_err(|reason| CpioError::Entry {
            name: name.into(),
            reason,
        })?;
        if size > u32::MAX as u64 {
            return Err(CpioError::Entry {
                name: name.into(),
                reason: format!("{size} bytes is over the 4 GiB cpio limit"),
            });
        }
        self.header(name, 0o100644, size, check)?;
        let copied = std::io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(CpioError::Entry {
                name: name.into(),
                reason: format!("source ended after {copied} of {size} bytes"),
            });
        }
        self.out.write_all(&[0u8; 4][..pad4(size)])?;
        self.offset += size + pad4(size) as u64;
        Ok(())
    }

    /// Appends a file held in memory.
    pub fn append_bytes(&mut self, name: &str, data: &[u8]) -> Result<(), CpioError> {
        self.append(name, data.len() as u64, checksum(data, 0), &mut &data[..])
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.header(TRAILER, 0, 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Entry names jota writes: flat, no path tricks (SWUpdate wants flat names too).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 255 {
        return Err("name must be 1 to 255 bytes".into());
    }
    if name == TRAILER || name.contains('/') || name == "." || name == ".." {
        return Err("name must be a plain file name (no `/`, not `.`/`..`)".into());
    }
    if name.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("name holds control characters".into());
    }
    Ok(())
}

/// One entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// Mode bits.
    pub mode: u32,
    /// Data length.
    pub size: u64,
    /// Checksum field.
    pub check: u32,
    /// Offset of the data in the archive.
    pub data_offset: u64,
}

/// Reads an archive, checking every header, every `crc` checksum, names (flat, unique),
/// and that it ends with the trailer. Calls `data` with each entry's bytes in pieces.
pub fn read(
    r: &mut dyn Read,
    data: &mut dyn FnMut(&Entry, &[u8]),
) -> Result<Vec<Entry>, CpioError> {
    let mut off = 0u64;
    let mut entries: Vec<Entry> = Vec::new();
    let fmt = |offset: u64, reason: String| CpioError::Format { offset, reason };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let mut h = [0u8; HEADER];
        read_exact(r, &mut h).map_err(|e| match e {
            Some(e) => CpioError::Io(e),
            None => fmt(off, "archive ends before the TRAILER!!! entry".into()),
        })?;
        let crc = match &h[..6] {
            m if m == MAGIC_CRC => true,
            m if m == MAGIC_NEWC => false,
            m => {
                return Err(fmt(
                    off,
                    format!(
                        "magic {:?} is not 070701/070702",
                        String::from_utf8_lossy(m)
                    ),
                ))
            }
        };
        let field = |i: usize| -> Result<u32, CpioError> {
            let s = &h[6 + i * 8..14 + i * 8];
            std::str::from_utf8(s)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    fmt(
                        off + 6 + i as u64 * 8,
                        format!(
                            "field {i} {:?} is not 8 hex digits",
                            String::from_utf8_lossy(s)
                        ),
                    )
                })
        };
        let mode = field(1)?;
        let size = field(6)? as u64;
        let namesize = field(11)? as usize;
        let check = field(12)?;
        if namesize == 0 || namesize > 4096 {
            return Err(fmt(
                off + 94,
                format!("name size {namesize} is outside 1..=4096"),
            ));
        }
        let mut name = vec![0u8; namesize + pad4((HEADER + namesize) as u64)];
        read_exact(r, &mut name).map_err(|e| {
            e.map_or_else(
                || fmt(off, "archive ends inside a name".into()),
                CpioError::Io,
            )
        })?;
        if name[namesize - 1] != 0 || name[..namesize - 1].contains(&0) {
            return Err(fmt(
                off + HEADER as u64,
                "name is not NUL-terminated".into(),
            ));
        }
        let name = String::from_utf8(name[..namesize - 1].to_vec())
            .map_err(|_| fmt(off + HEADER as u64, "name is not UTF-8".into()))?;
        let data_offset =
            off + (HEADER + namesize) as u64 + pad4((HEADER + namesize) as u64) as u64;
        if name == TRAILER {
            return Ok(entries);
        }
        check_name(&name)
            .map_err(|reason| fmt(off + HEADER as u64, format!("`{name}`: {reason}")))?;
        if entries.iter().any(|e| e.name == name) {
            return Err(fmt(off, format!("`{name}` appears twice")));
        }
        let e = Entry {
            name,
            mode,
            size,
            check,
            data_offset,
        };
        let mut left = size;
        let mut sum = 0u32;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            read_exact(r, &mut buf[..k]).map_err(|x| {
                x.map_or_else(
                    || fmt(data_offset, format!("archive ends inside `{}`", e.name)),
                    CpioError::Io,
                )
            })?;
            sum = checksum(&buf[..k], sum);
            data(&e, &buf[..k]);
            left -= k as u64;
        }
        if crc && sum != check {
            return Err(fmt(
                data_offset,
                format!(
                    "`{}` checksum is {sum:#x}, its header says {check:#x}",
                    e.name
                ),
            ));
        }
        let mut pad = [0u8; 4];
        let p = pad4(size);
        read_exact(r, &mut pad[..p]).map_err(|x| {
            x.map_or_else(
                || fmt(data_offset + size, "archive ends in padding".into()),
                CpioError::Io,
            )
        })?;
        off = data_offset + size + p as u64;
        entries.push(e);
    }
}

/// `read_exact` that tells a clean end (`None`) from an I/O error.
fn read_exact(r: &mut dyn Read, buf: &mut [u8]) -> Result<(), Option<std::io::Error>> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => return Err(None),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Some(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut w = Writer::new(Vec::new());
        w.append_bytes("sw-description", b"software = {};").unwrap();
        w.append_bytes("a.img.zst", &[1, 2, 3, 4, 5]).unwrap();
        w.append_bytes("empty", b"").unwrap();
        let b = w.finish().unwrap();
        assert_eq!(b.len() % 4, 0);
        let mut got = Vec::new();
        let e = read(&mut &b[..], &mut |e, d| {
            got.push((e.name.clone(), d.to_vec()))
        })
        .unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].size, 5);
        assert_eq!(got[1], ("a.img.zst".to_string(), vec![1, 2, 3, 4, 5]));
        // A flipped data byte breaks the checksum; a truncation is named.
        let mut c = b.clone();
        let at = e[1].data_offset as usize;
        c[at] ^= 1;
        let err = read(&mut &c[..], &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let err = read(&mut &b[..b.len() - 120], &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("ends"), "{err}");
    }

    #[test]
    fn names_must_be_flat() {
        let mut w = Writer::new(Vec::new());
        for n in ["../x", "a/b", "", "TRAILER!!!", "x\ny"] {
            assert!(w.append_bytes(n, b"x").is_err(), "{n:?}");
        }
    }
}
