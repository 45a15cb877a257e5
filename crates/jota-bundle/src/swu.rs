//! SWUpdate `.swu` export.
//!
//! The `.swu` is what Debian's `swupdate` (2022.12, built with CMS signature checking)
//! installs: a `crc` cpio archive of `sw-description` (libconfig), `sw-description.sig` (a
//! detached DER CMS signature by an X.509 certificate) and the images, each with the sha256
//! of its bytes as stored. Dual-copy collections select the slot: run
//! `swupdate -e stable,copy2` to install into slot B (`copy1` = slot A).
//!
//! | jota component | sw-description entry |
//! |---|---|
//! | `raw-image` | `type = "raw"`, zstd, `installed-directly`, `device = /dev/disk/by-partlabel/<slot label>` |
//! | `tegra-bup` | `rawfile` at `/opt/ota_package/bl_update_payload` + `jota-bup.sh` running `nv_update_engine --install no-reboot` (R32) |
//! | `uefi-capsule` | `rawfile` at its path (ESP `EFI/UpdateCapsule/TEGRA_BL.Cap`) + `jota-capsule.sh` setting the OsIndications capsule bit |
//! | `file`, `model`, `container` | `rawfile` at its path, zstd |
//! | `script` | `preinstall` / `postinstall` by phase |
//! | (switch) | `jota-activate-A.sh` / `-B.sh`: `jota bootctl swupdate set X` where jota is installed, else `nvbootctrl` on both chains |
//!
//! SWUpdate writes `installed-directly` images while it streams them and checks the sha256
//! only at the end, so the targets are always the inactive slot's partitions.

use crate::cpio;
use crate::manifest::{ComponentType, Digest, Phase};
use crate::read::{Bundle, ReadError};
use crate::sign::SecretKey;
use sha2::Digest as _;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Export failed.
#[derive(Debug, thiserror::Error)]
pub enum SwuError {
    /// Reading the bundle.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// cpio.
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    /// Certificate or key.
    #[error("signing sw-description: {0}")]
    Sign(String),
    /// An option that does not fit the bundle.
    #[error("{0}")]
    Invalid(String),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

type Result<T, E = SwuError> = std::result::Result<T, E>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SwuError + '_ {
    move |source| SwuError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How slot partitions are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// R35/R36 (T234/T194 UEFI): `APP`/`APP_b`, `A_kernel`/`B_kernel`.
    L4tUefi,
    /// R32 (cboot/U-Boot): `APP`/`APP_b`, `kernel`/`kernel_b`.
    L4tR32,
}

impl Naming {
    /// The label of `base` in slot `b` (false = A, true = B).
    pub fn label(self, base: &str, b: bool) -> String {
        match (self, base, b) {
            (_, "APP", false) => "APP".into(),
            (_, "APP", true) => "APP_b".into(),
            (Naming::L4tUefi, x, false) => format!("A_{x}"),
            (Naming::L4tUefi, x, true) => format!("B_{x}"),
            (Naming::L4tR32, x, false) => x.into(),
            (Naming::L4tR32, x, true) => format!("{x}_b"),
        }
    }
}

/// Export options.
pub struct Options<'a> {
    /// Signer certificate (PEM).
    pub cert_pem: String,
    /// Signer key (RSA or ECDSA P-256), matching the certificate.
    pub key: &'a SecretKey,
    /// Target overrides: (component, copy: None = both / Some(false) = A / Some(true) = B, target).
    pub map: Vec<(String, Option<bool>, String)>,
    /// Partition naming.
    pub naming: Naming,
    /// Add the slot switch scripts.
    pub switch: bool,
    /// `hardware-compatibility` entries; `None` derives them from the bundle's rules.
    pub hw_revisions: Option<Vec<String>>,
    /// zstd level of the images.
    pub level: i32,
    /// Compression threads (0 = one per CPU).
    pub threads: u32,
}

/// One file of the archive.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SwuFile {
    /// Name in the archive.
    pub name: String,
    /// Bytes stored.
    pub size: u64,
    /// sha256 of the stored bytes.
    pub sha256: Digest,
}

/// What was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The sw-description text.
    pub sw_description: String,
    /// Archive files after sw-description and its signature.
    pub files: Vec<SwuFile>,
    /// Archive size.
    pub size: u64,
}

struct Staged {
    file: SwuFile,
    path: PathBuf,
    check: u32,
}

/// A writer that hashes and sums what passes through.
struct Tee<W: Write> {
    inner: W,
    sha: sha2::Sha256,
    sum: u32,
    n: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(b)?;
        self.sha.update(&b[..k]);
        self.sum = cpio::checksum(&b[..k], self.sum);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Translates a jota hardware rule into SWUpdate `#RE:` regexes over the hwrevision
/// revision, which jota defines as the module's `BOARDID-SKU-FAB` (`/etc/hwrevision`:
/// `jetson 3767-0005-300`).
pub fn hw_revision_regex(rule: &str) -> Result<String> {
    if rule.contains('+') {
        return Err(SwuError::Invalid(format!(
            "hardware rule `{rule}` names a carrier too, but SWUpdate's hwrevision holds one id; pass explicit revisions (--hw-revision)"
        )));
    }
    crate::hwcompat::Rule::parse(rule).map_err(|e| SwuError::Invalid(e.to_string()))?;
    let mut f = crate::hwcompat::split_fields(rule);
    if f.len() == 2 || f.get(2) == Some(&"") {
        f.truncate(2);
        f.push("*");
    }
    let re = |g: &str| {
        let mut s = String::new();
        for c in g.chars() {
            match c {
                '*' => s.push_str("[A-Za-z0-9.]*"),
                '?' => s.push_str("[A-Za-z0-9.]"),
                '[' | ']' => s.push(c),
                '!' => s.push('^'),
                '.' => s.push_str("\\."),
                c => s.push(c),
            }
        }
        s
    };
    Ok(format!("#RE:^{}-{}-{}$", re(f[0]), re(f[1]), re(f[2])))
}

fn q(s: &str) -> String {
    // libconfig strings: escape backslash and quote.
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Writes `.swu` for `bundle` to `out`. Returns what was written.
pub fn export(
    bundle: &Bundle,
    out: &Path,
    opts: &Options<'_>,
    progress: &dyn Fn(u64),
) -> Result<Report> {
    let m = bundle.manifest();
    // The certificate must belong to the key, or every device would reject the archive.
    let cert = {
        use der::DecodePem;
        x509_cert::Certificate::from_pem(opts.cert_pem.as_bytes())
            .map_err(|e| SwuError::Sign(format!("certificate: {e}")))?
    };
    {
        use der::Encode;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| SwuError::Sign(format!("certificate key: {e}")))?;
        if Digest::of(&spki) != opts.key.public().id() {
            return Err(SwuError::Sign(
                "the certificate is not for this key (their public keys differ)".into(),
            ));
        }
    }
    if opts.key.rsa().is_none() && opts.key.p256().is_none() {
        return Err(SwuError::Sign(
            "SWUpdate CMS signing needs an RSA or ECDSA P-256 key".into(),
        ));
    }
    let mut map: HashMap<(String, bool), String> = HashMap::new();
    for (c, copy, t) in &opts.map {
        if m.component(c).is_none() {
            return Err(SwuError::Invalid(format!("--map names no component `{c}`")));
        }
        match copy {
            None => {
                map.insert((c.clone(), false), t.clone());
                map.insert((c.clone(), true), t.clone());
            }
            Some(b) => {
                map.insert((c.clone(), *b), t.clone());
            }
        }
    }
    let hw: Vec<String> = match &opts.hw_revisions {
        Some(v) => v.clone(),
        None if m.hardware_compatibility.is_empty() => vec!["#RE:.*".into()],
        None => m
            .hardware_compatibility
            .iter()
            .map(|r| hw_revision_regex(r))
            .collect::<Result<_>>()?,
    };

    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stage = tempfile::Builder::new()
        .prefix(".jota-swu-")
        .tempdir_in(&dir)
        .map_err(io(&dir))?;
    let mut staged: Vec<Staged> = Vec::new();
    let stage_file =
        |name: &str, write: &mut dyn FnMut(&mut dyn Write) -> Result<()>| -> Result<Staged> {
            let path = stage.path().join(name);
            let f = File::create(&path).map_err(io(&path))?;
            let mut tee = Tee {
                inner: BufWriter::new(f),
                sha: sha2::Sha256::new(),
                sum: 0,
                n: 0,
            };
            write(&mut tee)?;
            tee.flush().map_err(io(&path))?;
            Ok(Staged {
                file: SwuFile {
                    name: name.to_string(),
                    size: tee.n,
                    sha256: Digest(tee.sha.finalize().into()),
                },
                path,
                check: tee.sum,
            })
        };

    // Stage every component (compressed unless a script) and the helper scripts.
    let mut entries_a = String::new();
    let mut entries_b = String::new();
    let mut scripts = String::new();
    let mut helper: Vec<(String, String)> = Vec::new();
    for (i, c) in m.components.iter().enumerate() {
        let script = c.kind == ComponentType::Script;
        let name = if script {
            c.name.clone()
        } else {
            format!("{}.zst", c.name)
        };
        let s = stage_file(&name, &mut |w| {
            if script {
                bundle.extract(i, w, 0, progress)?;
            } else {
                let mut enc = zstd::stream::Encoder::new(w, opts.level)
                    .map_err(|e| SwuError::Invalid(format!("zstd: {e}")))?;
                let threads = if opts.threads == 0 {
                    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
                } else {
                    opts.threads
                };
                enc.multithread(threads)
                    .map_err(|e| SwuError::Invalid(format!("zstd: {e}")))?;
                // Keep the window within what SWUpdate's decoder accepts (2^27).
                enc.window_log(23)
                    .map_err(|e| SwuError::Invalid(format!("zstd: {e}")))?;
                bundle.extract(i, &mut enc, 0, progress)?;
                enc.finish()
                    .map_err(|e| SwuError::Invalid(format!("zstd: {e}")))?;
            }
            Ok(())
        })?;
        let sha = s.file.sha256;
        for (b, entries) in [(false, &mut entries_a), (true, &mut entries_b)] {
            let target = map.get(&(c.name.clone(), b)).cloned();
            let e = match c.kind {
                ComponentType::RawImage => {
                    let part = c.partition.as_deref().unwrap_or_default();
                    let dev = target.unwrap_or_else(|| {
                        format!("/dev/disk/by-partlabel/{}", opts.naming.label(part, b))
                    });
                    format!(
                        "{{ filename = {}; type = \"raw\"; device = {}; compressed = \"zstd\"; installed-directly = true; sha256 = \"{sha}\"; }}",
                        q(&name),
                        q(&dev)
                    )
                }
                ComponentType::Script => continue,
                _ => {
                    let path = target
                        .or_else(|| c.path.clone())
                        .or_else(|| {
                            (c.kind == ComponentType::TegraBup)
                                .then(|| "/opt/ota_package/bl_update_payload".to_string())
                        })
                        .ok_or_else(|| {
                            SwuError::Invalid(format!(
                                "component `{}` ({}) has no path on the device; pass --map {}=PATH",
                                c.name, c.kind, c.name
                            ))
                        })?;
                    format!(
                        "{{ filename = {}; type = \"rawfile\"; path = {}; compressed = \"zstd\"; sha256 = \"{sha}\"; }}",
                        q(&name),
                        q(&path)
                    )
                }
            };
            if !entries.is_empty() {
                entries.push_str(",\n\t\t\t\t");
            }
            entries.push_str(&e);
        }
        if script {
            let kind = match c.phase {
                Some(Phase::PreInstall) => "preinstall",
                _ => "postinstall",
            };
            let _ = write!(
                scripts,
                "{}{{ filename = {}; type = \"{kind}\"; sha256 = \"{sha}\"; }}",
                if scripts.is_empty() {
                    ""
                } else {
                    ",\n\t\t\t\t"
                },
                q(&name)
            );
        }
        match c.kind {
            ComponentType::TegraBup => helper.push((
                "jota-bup.sh".into(),
                "#!/bin/sh\n# Written by jota: apply the BUP staged at /opt/ota_package (R32, nv_update_engine).\nset -e\nif command -v nv_update_engine >/dev/null 2>&1; then\n\tnv_update_engine --install no-reboot\nelse\n\techo \"nv_update_engine not found: cannot apply the bootloader update\" >&2\n\texit 1\nfi\n".into(),
            )),
            ComponentType::UefiCapsule => helper.push((
                "jota-capsule.sh".into(),
                "#!/bin/sh\n# Written by jota: ask UEFI to process the capsule on the ESP at the next boot\n# (OsIndications bit 2, EFI_OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED).\n# JOTA_ROOT points at a simulated device (as for every jota command).\nset -e\nV=${JOTA_ROOT:-}/sys/firmware/efi/efivars/OsIndications-8be4df61-93ca-11d2-aa0d-00e098032b8c\n[ -e \"$V\" ] && chattr -i \"$V\" 2>/dev/null || true\nprintf '\\007\\000\\000\\000\\004\\000\\000\\000\\000\\000\\000\\000' > \"$V\"\n".into(),
            )),
            _ => {}
        }
    }
    let mut helper_names = Vec::new();
    for (name, text) in &helper {
        let s = stage_file(name, &mut |w| {
            w.write_all(text.as_bytes()).map_err(io(Path::new(name)))
        })?;
        let _ = write!(
            scripts,
            "{}{{ filename = {}; type = \"postinstall\"; sha256 = \"{}\"; }}",
            if scripts.is_empty() {
                ""
            } else {
                ",\n\t\t\t\t"
            },
            q(name),
            s.file.sha256
        );
        helper_names.push(s.file.name.clone());
        staged.push(s);
    }
    let mut copy_scripts = [scripts.clone(), scripts];
    if opts.switch {
        for (i, slot) in ["A", "B"].iter().enumerate() {
            let n = i; // nvbootctrl slot number
            let name = format!("jota-activate-{slot}.sh");
            let text = format!(
                "#!/bin/sh\n# Written by jota: boot slot {slot} next, bootloader and rootfs chains together.\nset -e\nif command -v jota >/dev/null 2>&1; then\n\tjota bootctl swupdate set {slot}\nelif command -v nvbootctrl >/dev/null 2>&1; then\n\tnvbootctrl set-active-boot-slot {n}\n\tnvbootctrl -t rootfs set-active-boot-slot {n} 2>/dev/null || true\nelse\n\techo \"neither jota nor nvbootctrl found: cannot switch to slot {slot}\" >&2\n\texit 1\nfi\n"
            );
            let s = stage_file(&name, &mut |w| {
                w.write_all(text.as_bytes()).map_err(io(Path::new(&name)))
            })?;
            let sc = &mut copy_scripts[i];
            let _ = write!(
                sc,
                "{}{{ filename = {}; type = \"postinstall\"; sha256 = \"{}\"; }}",
                if sc.is_empty() { "" } else { ",\n\t\t\t\t" },
                q(&name),
                s.file.sha256
            );
            staged.push(s);
        }
    }
    // Component files first, in manifest order, then helper scripts.
    let mut comps = Vec::new();
    for c in &m.components {
        let name = if c.kind == ComponentType::Script {
            c.name.clone()
        } else {
            format!("{}.zst", c.name)
        };
        let path = stage.path().join(&name);
        let f = File::open(&path).map_err(io(&path))?;
        let size = f.metadata().map_err(io(&path))?.len();
        let (sha, check) = hash_file(&path)?;
        comps.push(Staged {
            file: SwuFile {
                name,
                size,
                sha256: sha,
            },
            path,
            check,
        });
    }
    comps.append(&mut staged);
    let staged = comps;

    let hwlist = hw.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ");
    let mut desc = String::new();
    let _ = writeln!(desc, "software =\n{{");
    let _ = writeln!(desc, "\tversion = {};", q(&m.version));
    let _ = writeln!(
        desc,
        "\tdescription = {};",
        q(m.description.as_deref().unwrap_or("jota bundle"))
    );
    let _ = writeln!(desc, "\thardware-compatibility = [ {hwlist} ];");
    let _ = writeln!(desc, "\tstable = {{");
    for (i, (copy, entries)) in [("copy1", &entries_a), ("copy2", &entries_b)]
        .iter()
        .enumerate()
    {
        let _ = writeln!(desc, "\t\t{copy} = {{");
        if !entries.is_empty() {
            let _ = writeln!(desc, "\t\t\timages: (\n\t\t\t\t{entries}\n\t\t\t);");
        }
        if !copy_scripts[i].is_empty() {
            let _ = writeln!(
                desc,
                "\t\t\tscripts: (\n\t\t\t\t{}\n\t\t\t);",
                copy_scripts[i]
            );
        }
        let _ = writeln!(desc, "\t\t}};");
    }
    let _ = writeln!(desc, "\t}};\n}}");
    let sig = cms_sign(&cert, opts.key, desc.as_bytes())?;

    // The archive, written to a temp name and renamed into place.
    let name = out
        .file_name()
        .ok_or_else(|| SwuError::Invalid(format!("{} has no file name", out.display())))?;
    let tmp = dir.join(format!(".{}.jota-tmp", name.to_string_lossy()));
    let res = (|| -> Result<u64> {
        let f = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = cpio::Writer::new(BufWriter::new(f));
        w.append_bytes("sw-description", desc.as_bytes())?;
        w.append_bytes("sw-description.sig", &sig)?;
        for s in &staged {
            let mut f = BufReader::new(File::open(&s.path).map_err(io(&s.path))?);
            w.append(&s.file.name, s.file.size, s.check, &mut f)?;
        }
        let mut f = w.finish()?.into_inner().map_err(|e| SwuError::Io {
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io(&tmp))?;
        let size = f.seek(SeekFrom::End(0)).map_err(io(&tmp))?;
        // Read it back as SWUpdate will: order, checksums, hashes.
        self_check(
            &tmp,
            &desc,
            &staged.iter().map(|s| s.file.clone()).collect::<Vec<_>>(),
        )?;
        std::fs::rename(&tmp, out).map_err(io(out))?;
        Ok(size)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let size = res?;
    Ok(Report {
        sw_description: desc,
        files: staged.into_iter().map(|s| s.file).collect(),
        size,
    })
}

fn hash_file(path: &Path) -> Result<(Digest, u32)> {
    let mut f = File::open(path).map_err(io(path))?;
    let mut tee = Tee {
        inner: std::io::sink(),
        sha: sha2::Sha256::new(),
        sum: 0,
        n: 0,
    };
    std::io::copy(&mut f, &mut tee).map_err(io(path))?;
    Ok((Digest(tee.sha.finalize().into()), tee.sum))
}

/// What the fleet server learns from a `.swu` it is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwuInfo {
    /// `version` of sw-description's `software` block.
    pub version: String,
    /// Files in the archive, in order.
    pub files: Vec<String>,
}

/// Checks an update archive as SWUpdate will read it: a valid cpio (every header, every
/// `crc` checksum, the trailer), sw-description first and signed (its `.sig` second), a
/// `version`, and every sha256 that sw-description names matching a file of the archive.
/// The signature itself is SWUpdate's to verify against the device's key.
pub fn inspect(r: &mut dyn std::io::Read) -> Result<SwuInfo> {
    let mut desc = Vec::new();
    let mut hashes: HashMap<String, sha2::Sha256> = HashMap::new();
    let entries = cpio::read(r, &mut |e, d| {
        if e.name == "sw-description" && desc.len() < (1 << 20) {
            desc.extend_from_slice(d);
        }
        hashes.entry(e.name.clone()).or_default().update(d);
    })?;
    let files: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
    if files.first().map(String::as_str) != Some("sw-description") {
        return Err(SwuError::Invalid(
            "sw-description is not the archive's first file".into(),
        ));
    }
    if files.get(1).map(String::as_str) != Some("sw-description.sig") {
        return Err(SwuError::Invalid(
            "sw-description.sig is not the archive's second file (unsigned update)".into(),
        ));
    }
    let desc = String::from_utf8(desc)
        .map_err(|_| SwuError::Invalid("sw-description is not UTF-8".into()))?;
    let version = setting(&desc, "version")
        .ok_or_else(|| SwuError::Invalid("sw-description has no `version`".into()))?;
    let have: Vec<String> = hashes
        .into_values()
        .map(|h| hex::encode(h.finalize()))
        .collect();
    let mut rest = desc.as_str();
    while let Some(i) = rest.find("sha256") {
        rest = &rest[i + 6..];
        if let Some(v) = setting(rest, "").filter(|v| v.len() == 64) {
            if !have.iter().any(|h| h.eq_ignore_ascii_case(&v)) {
                return Err(SwuError::Invalid(format!(
                    "sw-description names sha256 {v}, which no file of the archive has"
                )));
            }
        }
    }
    Ok(SwuInfo { version, files })
}

/// The string value of libconfig setting `key` (`key = "value";` or `key: "value"`); with
/// an empty key, the value right at the start of `s` (after `=`/`:`).
fn setting(s: &str, key: &str) -> Option<String> {
    let mut rest = s;
    loop {
        let at = if key.is_empty() { 0 } else { rest.find(key)? };
        let before_ok = key.is_empty()
            || rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != '-');
        let after = rest[at + key.len()..].trim_start();
        let value = after
            .strip_prefix('=')
            .or_else(|| after.strip_prefix(':'))
            .map(str::trim_start)
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.split_once('"'))
            .map(|(v, _)| v.to_string());
        if before_ok && value.is_some() {
            return value;
        }
        if key.is_empty() {
            return None;
        }
        rest = &rest[at + key.len()..];
    }
}

/// Reads an exported archive back: sw-description first and equal to what was signed,
/// its signature second, then every file with the size and sha256 sw-description names.
pub fn self_check(path: &Path, desc: &str, files: &[SwuFile]) -> Result<()> {
    let f = File::open(path).map_err(io(path))?;
    let mut hashes: HashMap<String, sha2::Sha256> = HashMap::new();
    let mut first = Vec::new();
    let entries = cpio::read(&mut BufReader::new(f), &mut |e, d| {
        if e.name == "sw-description" {
            first.extend_from_slice(d);
        }
        hashes.entry(e.name.clone()).or_default().update(d);
    })?;
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if names.first() != Some(&"sw-description") || names.get(1) != Some(&"sw-description.sig") {
        return Err(SwuError::Invalid(format!(
            "archive order is {names:?}: sw-description and its signature must come first"
        )));
    }
    if first != desc.as_bytes() {
        return Err(SwuError::Invalid(
            "sw-description in the archive differs".into(),
        ));
    }
    for f in files {
        let h = hashes.remove(&f.name).ok_or_else(|| {
            SwuError::Invalid(format!("`{}` is missing from the archive", f.name))
        })?;
        if Digest(h.finalize().into()) != f.sha256 {
            return Err(SwuError::Invalid(format!(
                "`{}` does not hash to its sha256",
                f.name
            )));
        }
    }
    Ok(())
}

/// A detached DER CMS SignedData over `content` (what
/// `openssl cms -sign -binary -nosmimecap -outform DER` makes).
fn cms_sign(cert: &x509_cert::Certificate, key: &SecretKey, content: &[u8]) -> Result<Vec<u8>> {
    use cms::builder::{create_signing_time_attribute, SignedDataBuilder, SignerInfoBuilder};
    use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
    use cms::signed_data::{EncapsulatedContentInfo, SignerIdentifier};
    use der::Encode;
    use spki::AlgorithmIdentifierOwned;
    let e = |x: &dyn std::fmt::Debug| SwuError::Sign(format!("{x:?}"));
    let digest = sha2::Sha256::digest(content);
    let dalg = AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::ID_SHA_256,
        parameters: None,
    };
    let eci = EncapsulatedContentInfo {
        econtent_type: const_oid::db::rfc5911::ID_DATA,
        econtent: None,
    };
    let sid = SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    });
    let mut b = SignedDataBuilder::new(&eci);
    b.add_digest_algorithm(dalg.clone()).map_err(|x| e(&x))?;
    b.add_certificate(CertificateChoices::Certificate(cert.clone()))
        .map_err(|x| e(&x))?;
    if let Some(k) = key.rsa() {
        let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k.clone());
        let mut sib =
            SignerInfoBuilder::new(&signer, sid, dalg, &eci, Some(&digest)).map_err(|x| e(&x))?;
        sib.add_signed_attribute(create_signing_time_attribute().map_err(|x| e(&x))?)
            .map_err(|x| e(&x))?;
        b.add_signer_info::<_, rsa::pkcs1v15::Signature>(sib)
            .map_err(|x| e(&x))?;
    } else if let Some(k) = key.p256() {
        let mut sib =
            SignerInfoBuilder::new(k, sid, dalg, &eci, Some(&digest)).map_err(|x| e(&x))?;
        sib.add_signed_attribute(create_signing_time_attribute().map_err(|x| e(&x))?)
            .map_err(|x| e(&x))?;
        b.add_signer_info::<_, p256::ecdsa::DerSignature>(sib)
            .map_err(|x| e(&x))?;
    }
    b.build().map_err(|x| e(&x))?.to_der().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::{hw_revision_regex, inspect, setting};

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = crate::cpio::Writer::new(Vec::new());
        for (n, d) in files {
            w.append_bytes(n, d).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn uploaded_swu_is_checked() {
        use sha2::Digest;
        let img = b"rootfs bytes";
        let sum = hex::encode(sha2::Sha256::digest(img));
        let desc = format!(
            "software = {{\n  version = \"2.1.0\";\n  hardware-compatibility: [ \"1.0\" ];\n  images: ( {{ filename = \"rootfs\"; sha256 = \"{sum}\"; }} );\n}};\n"
        );
        let good = archive(&[
            ("sw-description", desc.as_bytes()),
            ("sw-description.sig", b"sig"),
            ("rootfs", img),
        ]);
        let i = inspect(&mut &good[..]).unwrap();
        assert_eq!(i.version, "2.1.0");
        assert_eq!(i.files, ["sw-description", "sw-description.sig", "rootfs"]);

        let bad = archive(&[
            ("sw-description", desc.as_bytes()),
            ("sw-description.sig", b"sig"),
            ("rootfs", b"other bytes"),
        ]);
        let e = inspect(&mut &bad[..]).unwrap_err().to_string();
        assert!(e.contains(&sum) && e.contains("no file"), "{e}");
        let unsigned = archive(&[("sw-description", desc.as_bytes()), ("rootfs", img)]);
        let e = inspect(&mut &unsigned[..]).unwrap_err().to_string();
        assert!(e.contains("unsigned"), "{e}");
        let nover = archive(&[
            ("sw-description", b"software = { };"),
            ("sw-description.sig", b"s"),
        ]);
        assert!(inspect(&mut &nover[..])
            .unwrap_err()
            .to_string()
            .contains("no `version`"));
        assert!(inspect(&mut &b"jota bundle"[..]).is_err());
        // `versions` or `myversion` are not `version`.
        assert_eq!(
            setting("myversion = \"1\"; version: \"2\"", "version").as_deref(),
            Some("2")
        );
    }

    #[test]
    fn hardware_rules_become_hwrevision_regexes() {
        assert_eq!(
            hw_revision_regex("3767-0005").unwrap(),
            "#RE:^3767-0005-[A-Za-z0-9.]*$"
        );
        assert_eq!(
            hw_revision_regex("3767-000[0-5]-3??").unwrap(),
            "#RE:^3767-000[0-5]-3[A-Za-z0-9.][A-Za-z0-9.]$"
        );
        assert_eq!(
            hw_revision_regex("3701-000[!4]-").unwrap(),
            "#RE:^3701-000[^4]-[A-Za-z0-9.]*$"
        );
        assert!(hw_revision_regex("3767-0005+3768-0000")
            .unwrap_err()
            .to_string()
            .contains("--hw-revision"));
    }
}
