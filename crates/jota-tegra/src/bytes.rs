//! Little helpers for bounds-checked little-endian reads of packed C structures.

/// Reads a little-endian `u32` at `off`; `None` when out of bounds.
pub(crate) fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a little-endian `u16` at `off`; `None` when out of bounds.
pub(crate) fn le_u16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Reads a little-endian `u64` at `off`; `None` when out of bounds.
pub(crate) fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// How a fixed-size C string field ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CStrError {
    /// A byte that is not printable ASCII, at this index within the field.
    BadByte(usize, u8),
    /// Non-padding bytes after the terminator, at this index within the field.
    Trailing(usize),
}

/// Decodes a NUL/space/tab-padded ASCII field the way NVIDIA's tools write it
/// (`struct.pack('40s', ...)`): text up to the first pad byte, then only pad bytes.
pub(crate) fn padded_ascii(field: &[u8]) -> Result<String, CStrError> {
    let is_pad = |c: u8| c == 0 || c == b' ' || c == b'\t';
    let end = field.iter().position(|&c| is_pad(c)).unwrap_or(field.len());
    for (i, &c) in field[..end].iter().enumerate() {
        if !(0x21..=0x7e).contains(&c) {
            return Err(CStrError::BadByte(i, c));
        }
    }
    if let Some(i) = field[end..].iter().position(|&c| !is_pad(c)) {
        return Err(CStrError::Trailing(end + i));
    }
    // Only printable ASCII was accepted above, so this cannot fail.
    Ok(field[..end].iter().map(|&c| c as char).collect())
}

/// Writes `s` NUL-padded into a field of `len` bytes (caller checked the length).
pub(crate) fn put_padded(out: &mut Vec<u8>, s: &str, len: usize) {
    let b = s.as_bytes();
    out.extend_from_slice(&b[..b.len().min(len)]);
    out.extend(std::iter::repeat_n(0u8, len.saturating_sub(b.len())));
}

/// SHA-256 of `data` (for deterministic identifiers; not a security boundary here).
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ascii_accepts_nul_space_tab_padding() {
        assert_eq!(padded_ascii(b"mb1\0\0\0").unwrap(), "mb1");
        assert_eq!(padded_ascii(b"mb1  \t").unwrap(), "mb1");
        assert_eq!(padded_ascii(b"abcd").unwrap(), "abcd");
        assert_eq!(padded_ascii(b"\0\0").unwrap(), "");
    }

    #[test]
    fn padded_ascii_rejects_garbage() {
        assert_eq!(padded_ascii(b"mb1\0x\0"), Err(CStrError::Trailing(4)));
        assert_eq!(padded_ascii(b"m\x01b"), Err(CStrError::BadByte(1, 1)));
    }

    #[test]
    fn reads_are_bounds_checked() {
        assert_eq!(le_u32(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(le_u32(&[1, 0, 0], 0), None);
        assert_eq!(le_u32(&[1, 0, 0, 0], usize::MAX - 1), None);
        assert_eq!(le_u16(&[2, 1], 0), Some(0x0102));
        assert_eq!(le_u64(&[0; 7], 0), None);
    }
}
