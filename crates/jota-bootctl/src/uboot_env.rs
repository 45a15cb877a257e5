//! The U-Boot environment on storage, read and written the way libubootenv (`fw_printenv`,
//! `fw_setenv`, SWUpdate, RAUC) does it.
//!
//! Each copy is `crc32 | [flags] | "name=value\0"... "\0" | padding` of `env_size` bytes; the
//! zlib CRC covers everything after the header. With two copies (redundant environment) the
//! flags byte is a counter: the valid copy with the higher flags is current (255→0 wraps,
//! equal flags pick copy 0) and a save writes the *other* copy with flags + 1, so the old
//! state survives a torn write. Variables are stored sorted by name, padding is zero-filled
//! (as U-Boot's `saveenv` does). `/etc/fw_env.config` lines are
//! `device offset size [sector-size [sectors]]`; offset is decimal/0x/octal, the sizes are
//! always hex (libubootenv's `sscanf("%lli %zx %zx %lx")`).

use crate::faults::{Faults, WriteVerdict};
use crate::root::DeviceRoot;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One copy's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvLocation {
    /// Device or file as written in the config.
    pub device: String,
    /// Byte offset (negative: from the end of the device).
    pub offset: i64,
    /// Environment size.
    pub size: u64,
    /// Erase sector size (0 if not given).
    pub sector_size: u64,
}

/// A problem with the configuration or the stored environment.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// The config file is wrong.
    #[error("{file} line {line}: {reason}")]
    Config {
        /// File.
        file: String,
        /// 1-based line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// No copy has a valid CRC.
    #[error("no valid U-Boot environment: {0}")]
    Invalid(String),
    /// A variable cannot be stored.
    #[error("cannot store {name}: {reason}")]
    Store {
        /// Variable.
        name: String,
        /// Why.
        reason: String,
    },
    /// Device I/O failed.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EnvError + '_ {
    move |source| EnvError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Parses `fw_env.config` text (one line: single copy, two: redundant).
pub fn parse_config(text: &str, file: &str) -> Result<Vec<EnvLocation>, EnvError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            // libubootenv silently skips lines with fewer than three fields.
            continue;
        }
        let bad = |reason: String| EnvError::Config {
            file: file.to_string(),
            line: i + 1,
            reason,
        };
        let offset =
            parse_c_int(f[1]).ok_or_else(|| bad(format!("offset `{}` is not a number", f[1])))?;
        let hex = |s: &str, what: &str| {
            let t = s
                .strip_prefix("0x")
                .or_else(|| s.strip_prefix("0X"))
                .unwrap_or(s);
            u64::from_str_radix(t, 16).map_err(|_| {
                bad(format!(
                    "{what} `{s}` is not hex (this column is always hex)"
                ))
            })
        };
        let size = hex(f[2], "env size")?;
        if size < 6 {
            return Err(bad(format!("env size {size:#x} is too small")));
        }
        let sector_size = match f.get(3) {
            Some(s) => hex(s, "sector size")?,
            None => 0,
        };
        out.push(EnvLocation {
            device: f[0].to_string(),
            offset,
            size,
            sector_size,
        });
        if out.len() == 2 {
            break;
        }
    }
    if out.is_empty() {
        return Err(EnvError::Config {
            file: file.to_string(),
            line: 1,
            reason: "no environment location".into(),
        });
    }
    if out.len() == 2 && out[0].size != out[1].size {
        return Err(EnvError::Config {
            file: file.to_string(),
            line: 2,
            reason: "both copies must have the same size".into(),
        });
    }
    Ok(out)
}

/// C `%lli`: decimal, 0x hex, leading-0 octal, optional sign.
fn parse_c_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// Decodes one copy: CRC check, then variables. `redundant` says whether a flags byte follows
/// the CRC. Returns (flags, variables).
pub fn decode_copy(buf: &[u8], redundant: bool) -> Result<(u8, BTreeMap<String, String>), String> {
    let hdr = if redundant { 5 } else { 4 };
    if buf.len() <= hdr + 1 {
        return Err(format!("copy of {} bytes is too small", buf.len()));
    }
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let data = &buf[hdr..];
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(format!(
            "CRC {stored:#010x} does not match {computed:#010x}"
        ));
    }
    let flags = if redundant { buf[4] } else { 0 };
    let mut vars = BTreeMap::new();
    let mut i = 0;
    while i < data.len() && data[i] != 0 {
        let end = data[i..]
            .iter()
            .position(|&c| c == 0)
            .map(|p| i + p)
            .unwrap_or(data.len());
        let entry = String::from_utf8_lossy(&data[i..end]);
        if let Some((k, v)) = entry.split_once('=') {
            // `.flags` holds variable attributes, not a variable.
            if k != ".flags" {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        i = end + 1;
    }
    Ok((flags, vars))
}

/// Encodes one copy (variables sorted by name, zero padding).
pub fn encode_copy(
    vars: &BTreeMap<String, String>,
    size: usize,
    redundant: bool,
    flags: u8,
) -> Result<Vec<u8>, EnvError> {
    let hdr = if redundant { 5 } else { 4 };
    let mut data = Vec::with_capacity(size);
    for (k, v) in vars {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(EnvError::Store {
                name: k.clone(),
                reason: "names must be non-empty without `=`; no NUL bytes".into(),
            });
        }
        data.extend_from_slice(k.as_bytes());
        data.push(b'=');
        data.extend_from_slice(v.as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() + hdr > size {
        return Err(EnvError::Store {
            name: vars.keys().last().cloned().unwrap_or_default(),
            reason: format!(
                "environment needs {} bytes, it has {}",
                data.len() + hdr,
                size
            ),
        });
    }
    data.resize(size - hdr, 0);
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if redundant {
        out.push(flags);
    }
    out.extend_from_slice(&data);
    Ok(out)
}

/// Which copy libubootenv/U-Boot treat as current when both are valid.
pub fn pick_current(flags0: u8, flags1: u8) -> usize {
    match (flags0, flags1) {
        (0xff, 0) => 1,
        (0, 0xff) => 0,
        (a, b) if b > a => 1,
        _ => 0,
    }
}

/// An opened environment.
#[derive(Debug)]
pub struct UbootEnv {
    root: DeviceRoot,
    locations: Vec<EnvLocation>,
    current: usize,
    flags: u8,
    vars: BTreeMap<String, String>,
    faults: Option<Faults>,
}

impl UbootEnv {
    /// Opens the environment described by `config` (a device path like `/etc/fw_env.config`,
    /// taken inside `root`).
    pub fn open(root: &DeviceRoot, config: &str) -> Result<UbootEnv, EnvError> {
        let cfg_path = root.path(config);
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let locations = parse_config(&text, config)?;
        let mut env = UbootEnv {
            root: root.clone(),
            locations,
            current: 0,
            flags: 0,
            vars: BTreeMap::new(),
            faults: Faults::for_root(root.dir()),
        };
        env.load()?;
        Ok(env)
    }

    fn redundant(&self) -> bool {
        self.locations.len() == 2
    }

    fn device_path(&self, loc: &EnvLocation) -> PathBuf {
        self.root.path(&loc.device)
    }

    fn abs_offset(&self, f: &File, loc: &EnvLocation) -> io::Result<u64> {
        if loc.offset >= 0 {
            return Ok(loc.offset as u64);
        }
        let len = f.metadata()?.len();
        len.checked_sub(loc.offset.unsigned_abs()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "negative offset before the start of the device",
            )
        })
    }

    fn read_copy(&self, loc: &EnvLocation) -> Result<Vec<u8>, EnvError> {
        let p = self.device_path(loc);
        let f = File::open(&p).map_err(io_err(&p))?;
        let off = self.abs_offset(&f, loc).map_err(io_err(&p))?;
        let mut buf = vec![0u8; loc.size as usize];
        f.read_exact_at(&mut buf, off).map_err(io_err(&p))?;
        Ok(buf)
    }

    /// Re-reads the environment from storage.
    pub fn load(&mut self) -> Result<(), EnvError> {
        let red = self.redundant();
        let mut copies = Vec::new();
        let mut errs = Vec::new();
        for (i, loc) in self.locations.iter().enumerate() {
            match self.read_copy(loc).map(|b| decode_copy(&b, red)) {
                Ok(Ok(c)) => copies.push((i, c)),
                Ok(Err(e)) => errs.push(format!("copy {i} ({}): {e}", loc.device)),
                Err(e) => errs.push(format!("copy {i}: {e}")),
            }
        }
        let chosen = match copies.len() {
            0 => return Err(EnvError::Invalid(errs.join("; "))),
            1 => copies.remove(0),
            _ => {
                let cur = pick_current(copies[0].1 .0, copies[1].1 .0);
                copies.remove(cur)
            }
        };
        self.current = chosen.0;
        self.flags = chosen.1 .0;
        self.vars = chosen.1 .1;
        Ok(())
    }

    /// All variables.
    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    /// One variable.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The copy in use and its flags.
    pub fn current(&self) -> (usize, u8) {
        (self.current, self.flags)
    }

    /// Sets and deletes (`None`) several variables in one save; nothing is written when
    /// nothing changes (as libubootenv).
    pub fn apply(&mut self, changes: &[(&str, Option<&str>)]) -> Result<(), EnvError> {
        let mut next = self.vars.clone();
        for (k, v) in changes {
            match v {
                Some(v) => {
                    next.insert(k.to_string(), v.to_string());
                }
                None => {
                    next.remove(*k);
                }
            }
        }
        if next == self.vars {
            return Ok(());
        }
        let red = self.redundant();
        let (target, flags) = if red {
            (1 - self.current, self.flags.wrapping_add(1))
        } else {
            (0, 0)
        };
        let loc = self.locations[target].clone();
        let image = encode_copy(&next, loc.size as usize, red, flags)?;
        self.write_copy(&loc, &image)?;
        self.vars = next;
        self.current = target;
        self.flags = flags;
        Ok(())
    }

    fn write_copy(&self, loc: &EnvLocation, image: &[u8]) -> Result<(), EnvError> {
        let p = self.device_path(loc);
        // Serialise with fw_setenv, SWUpdate and RAUC, which lock the same file.
        let lock_path = self.root.path("/var/lock/fw_printenv.lock");
        let _lock = match lock_path.parent().map(std::fs::create_dir_all) {
            Some(Ok(())) => OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .and_then(|f| f.lock().map(|_| f))
                .ok(),
            _ => None,
        };
        let f = OpenOptions::new()
            .write(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let off = self.abs_offset(&f, loc).map_err(io_err(&p))?;
        let mut n = image.len();
        let mut torn = false;
        if let Some(fl) = &self.faults {
            if let WriteVerdict::Tear(k) = fl.before_write(image.len()).map_err(io_err(&p))? {
                n = k;
                torn = true;
            }
        }
        f.write_all_at(&image[..n], off).map_err(io_err(&p))?;
        if torn {
            let e = self
                .faults
                .as_ref()
                .map(|x| x.cut_error())
                .unwrap_or_else(|| io::Error::other("torn"));
            return Err(io_err(&p)(e));
        }
        f.sync_data().map_err(io_err(&p))?;
        Ok(())
    }

    /// Writes a fresh environment to every copy (provisioning).
    pub fn create(
        root: &DeviceRoot,
        config: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<UbootEnv, EnvError> {
        let cfg_path = root.path(config);
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let locations = parse_config(&text, config)?;
        let red = locations.len() == 2;
        for loc in &locations {
            let p = root.path(&loc.device);
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(io_err(&p))?;
            let image = encode_copy(vars, loc.size as usize, red, 1)?;
            let off = if loc.offset >= 0 {
                loc.offset as u64
            } else {
                let len = f.metadata().map_err(io_err(&p))?.len();
                len.saturating_sub(loc.offset.unsigned_abs())
            };
            f.write_all_at(&image, off).map_err(io_err(&p))?;
            f.sync_data().map_err(io_err(&p))?;
        }
        UbootEnv::open(root, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matches_mkenvimage_vectors() {
        // mkenvimage -p 0 -s 0x100 of BOOT_A_LEFT=3, BOOT_B_LEFT=3, BOOT_ORDER=A B
        let v = vars(&[
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ]);
        let single = encode_copy(&v, 0x100, false, 0).unwrap();
        assert_eq!(&single[..5], &[0x29, 0x9e, 0x88, 0x0d, b'B']);
        let red = encode_copy(&v, 0x100, true, 1).unwrap();
        assert_eq!(&red[..6], &[0xac, 0x67, 0x9e, 0xea, 0x01, b'B']);
        assert_eq!(decode_copy(&red, true).unwrap(), (1, v.clone()));
        assert_eq!(decode_copy(&single, false).unwrap(), (0, v));
    }

    #[test]
    fn copy_selection_follows_libubootenv() {
        for (f0, f1, want) in [
            (1, 1, 0),
            (2, 1, 0),
            (1, 2, 1),
            (255, 0, 1),
            (0, 255, 0),
            (0, 1, 1),
            (5, 5, 0),
            (255, 254, 0),
            (1, 0, 0),
            (0, 2, 1),
        ] {
            assert_eq!(pick_current(f0, f1), want, "{f0}/{f1}");
        }
    }

    #[test]
    fn config_columns() {
        let c = parse_config(
            "# comment\n/dev/mmcblk0 0x3d0000 0x10000\n/dev/mmcblk0 4096 10000 200\n",
            "x",
        )
        .unwrap();
        assert_eq!(c[0].offset, 0x3d0000);
        assert_eq!(c[0].size, 0x10000);
        // size columns are hex even without 0x
        assert_eq!(c[1].size, 0x10000);
        assert_eq!(c[1].offset, 4096);
        assert_eq!(c[1].sector_size, 0x200);
        assert_eq!(parse_c_int("010"), Some(8));
        assert_eq!(parse_c_int("-0x1000"), Some(-4096));
        assert!(parse_config("/dev/x zz 0x100\n", "x").is_err());
        assert!(parse_config("", "x").is_err());
    }

    #[test]
    fn redundant_writes_alternate_and_survive_a_bad_copy() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/fw_env.config"),
            "/env.bin 0x0 0x1000\n/env.bin 0x1000 0x1000\n",
        )
        .unwrap();
        std::fs::write(d.path().join("env.bin"), vec![0u8; 0x2000]).unwrap();
        let root = DeviceRoot::at(d.path());
        let mut env =
            UbootEnv::create(&root, "/etc/fw_env.config", &vars(&[("BOOT_ORDER", "A B")])).unwrap();
        assert_eq!(env.current(), (0, 1));
        env.apply(&[("BOOT_ORDER", Some("B A")), ("BOOT_B_LEFT", Some("3"))])
            .unwrap();
        assert_eq!(env.current(), (1, 2));
        env.apply(&[("BOOT_ORDER", Some("B A"))]).unwrap(); // no change, no write
        assert_eq!(env.current(), (1, 2));
        env.apply(&[("BOOT_B_LEFT", None)]).unwrap();
        assert_eq!(env.current(), (0, 3));
        let again = UbootEnv::open(&root, "/etc/fw_env.config").unwrap();
        assert_eq!(again.vars(), &vars(&[("BOOT_ORDER", "B A")]));
        // corrupt the current copy: the older one is used
        let mut b = std::fs::read(d.path().join("env.bin")).unwrap();
        b[100] ^= 0xff;
        std::fs::write(d.path().join("env.bin"), &b).unwrap();
        let old = UbootEnv::open(&root, "/etc/fw_env.config").unwrap();
        assert_eq!(old.current(), (1, 2));
        assert_eq!(old.get("BOOT_B_LEFT"), Some("3"));
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200), red in any::<bool>()) {
            let _ = decode_copy(&b, red);
        }

        #[test]
        fn encode_decode_round_trip(kv in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_]{0,10}", "[ -~]{0,20}", 0..10), red in any::<bool>(), flags in any::<u8>()) {
            let kv: BTreeMap<String, String> = kv.into_iter().filter(|(k, _)| !k.contains('=')).collect();
            let img = encode_copy(&kv, 1024, red, flags).unwrap();
            let (f, back) = decode_copy(&img, red).unwrap();
            prop_assert_eq!(back, kv);
            prop_assert_eq!(f, if red { flags } else { 0 });
        }
    }
}
