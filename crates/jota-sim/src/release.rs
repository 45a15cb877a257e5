//! Releases the simulator recognises: a real ext4 rootfs, a kernel and DTB that belong to it,
//! and the bootloader payload (BUP; on R35/R36 also as a signed UEFI capsule).

use crate::identity::{seal, Identity};
use crate::model::{FirmwareKind, Model};
use crate::{io, sha256_hex, Result, SimError};
use jota_tegra::board::BoardSpec;
use jota_tegra::bup::{Bup, BupFormat, EntryMeta, OpMode};
use jota_tegra::capsule::{self, Auth, Capsule};
use jota_tegra::release::L4tVersion;
use jota_tegra::ver::Ver;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The public jota-sim capsule test key (like edk2's TestCert that stock L4T capsules use).
pub const CAPSULE_TEST_KEY: &str = include_str!("../keys/capsule-test.key.pem");
/// Its certificate: what simulated firmware trusts by default.
pub const CAPSULE_TEST_CERT: &str = include_str!("../keys/capsule-test.crt.pem");

/// Bootloader partitions of a simulated T234 boot chain (BUP names, no `A_` prefix).
pub const T234_BOOTLOADER: &[&str] = &[
    "mb1",
    "MB1_BCT",
    "mb2",
    "cpu-bootloader",
    "secure-os",
    "bpmp-fw",
    "bpmp-fw-dtb",
    "VER",
];
/// Bootloader partitions of a simulated R32 cboot chain.
pub const R32_BOOTLOADER: &[&str] = &["mb1", "cpu-bootloader", "bpmp-fw", "VER"];
/// SKUs of board 3767 a T234 release carries per-SKU images for.
const T234_SKUS: &[&str] = &["0000", "0001", "0003", "0004", "0005"];

/// What to build.
#[derive(Clone, Debug)]
pub struct ReleaseOptions {
    /// Release version (`/etc/jota-version`).
    pub version: String,
    /// Which family of devices (the model's firmware and board decide the payloads).
    pub model: &'static Model,
    /// L4T version (default: the model's).
    pub l4t: Option<L4tVersion>,
    /// Booted, the release fails its health checks.
    pub fails_health_check: bool,
    /// Size of the rootfs image.
    pub rootfs_size: u64,
    /// Capsule signing key and certificate (PEM); default: the public test key.
    pub capsule_key: Option<(PathBuf, PathBuf)>,
}

/// A file of the release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// File name in the release directory.
    pub name: String,
    /// Size.
    pub size: u64,
    /// sha256.
    pub sha256: String,
}

/// `release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// Format version.
    pub format: u32,
    /// Release version.
    pub version: String,
    /// Release id shared by its images.
    pub release_id: String,
    /// L4T version.
    pub l4t: L4tVersion,
    /// Model family the payloads are for.
    pub model: String,
    /// Boot firmware.
    pub firmware: FirmwareKind,
    /// Health checks fail.
    pub fails_health_check: bool,
    /// Root filesystem image.
    pub rootfs: FileInfo,
    /// Kernel.
    pub kernel: FileInfo,
    /// Kernel DTB.
    pub dtb: FileInfo,
    /// Bootloader update payload (BUP), if the model has a bootloader chain.
    #[serde(default)]
    pub bup: Option<FileInfo>,
    /// UEFI capsule of the BUP (R35/R36).
    #[serde(default)]
    pub capsule: Option<FileInfo>,
}

/// Deterministic bytes: sha256 in counter mode.
pub fn det_bytes(seed: &str, len: usize) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(len + 32);
    let mut i: u64 = 0;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update(seed.as_bytes());
        h.update(i.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}

fn file_info(dir: &Path, name: &str) -> Result<FileInfo> {
    let p = dir.join(name);
    let data = std::fs::read(&p).map_err(io(&p))?;
    Ok(FileInfo {
        name: name.into(),
        size: data.len() as u64,
        sha256: sha256_hex(&data),
    })
}

fn write(p: &Path, data: &[u8]) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(p, data).map_err(io(p))
}

/// Runs a tool, turning a failure into a [`SimError::Tool`].
pub(crate) fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|e| SimError::Tool {
        tool: name.clone(),
        message: format!("cannot run it: {e} (is it installed?)"),
    })?;
    if !out.status.success() {
        return Err(SimError::Tool {
            tool: name,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// The rootfs tree of a release.
fn rootfs_tree(tree: &Path, o: &ReleaseOptions, l4t: L4tVersion, release_id: &str) -> Result<()> {
    let etc = tree.join("etc");
    write(
        &etc.join("jota-version"),
        format!("{}\n", o.version).as_bytes(),
    )?;
    let rel = serde_json::json!({
        "version": o.version,
        "release": release_id,
        "l4t": l4t.to_string(),
        "fails_health_check": o.fails_health_check,
    });
    write(
        &etc.join("jota-release.json"),
        format!("{rel:#}\n").as_bytes(),
    )?;
    write(
        &etc.join("os-release"),
        format!("NAME=\"jota simulated OS\"\nID=jota-sim\nVERSION_ID={}\nPRETTY_NAME=\"jota simulated OS {}\"\n", o.version, o.version).as_bytes(),
    )?;
    let board = if l4t.major >= 36 {
        "generic"
    } else {
        "t186ref"
    };
    write(
        &etc.join("nv_tegra_release"),
        format!(
            "# R{} (release), REVISION: {}.{}, GCID: 00000000, BOARD: {board}, EABI: aarch64, DATE: Thu Jan  1 00:00:00 UTC 2026\n{}",
            l4t.major,
            l4t.minor,
            l4t.patch,
            if l4t.major >= 36 { "# KERNEL_VARIANT: oot\n" } else { "" }
        )
        .as_bytes(),
    )?;
    write(
        &tree.join("boot/extlinux/extlinux.conf"),
        b"TIMEOUT 30\nDEFAULT primary\n\nLABEL primary\n      MENU LABEL primary kernel\n      LINUX /boot/Image\n      FDT /boot/dtb/kernel_tegra.dtb\n      APPEND ${cbootargs} rootfstype=ext4 rw\n",
    )?;
    // Application content: mostly the same across releases, a few files per version change,
    // like a real image's packages.
    let files = ((o.rootfs_size / 4) / (128 * 1024)).max(1) as usize;
    let vseed = sha256_hex(o.version.as_bytes());
    let changed = (u64::from_str_radix(&vseed[..8], 16).unwrap_or(0) % 6) as usize;
    for i in 0..files {
        let seed = if i % 6 == changed {
            format!("jota-sim-app-{i}-{}", o.version)
        } else {
            format!("jota-sim-app-{i}")
        };
        write(
            &tree.join(format!("usr/lib/jota-sim/app-{i:03}.bin")),
            &det_bytes(&seed, 128 * 1024),
        )?;
    }
    // Fixed timestamps keep images reproducible.
    fn settime(p: &Path) -> std::io::Result<()> {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600);
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                settime(&e?.path())?;
            }
        }
        std::fs::File::options().read(true).open(p)?.set_modified(t)
    }
    settime(tree).map_err(io(tree))?;
    Ok(())
}

fn bootloader_blob(
    release_id: &str,
    version: &str,
    l4t: L4tVersion,
    part: &str,
    spec: &str,
) -> Vec<u8> {
    seal(
        &Identity {
            kind: format!("bootloader:{part}"),
            release: release_id.into(),
            version: version.into(),
            l4t: l4t.to_string(),
            content_len: 0,
            content_sha256: String::new(),
            rootfs_len: None,
            rootfs_sha256: None,
            dtb_sha256: None,
            requires_bootloader: None,
            fails_health_check: false,
        },
        &det_bytes(&format!("bl-{release_id}-{part}-{spec}"), 16 * 1024),
    )
}

/// Builds a release into `out` (created; must not hold a release already).
pub fn make_release(o: &ReleaseOptions, out: &Path) -> Result<ReleaseManifest> {
    if out.join("release.json").exists() {
        return Err(SimError::Invalid(format!(
            "{} already holds a release",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let l4t = o.l4t.unwrap_or(o.model.l4t);
    let release_id = sha256_hex(
        format!(
            "{}|{}|{}|{}",
            o.version,
            l4t,
            o.model.family(),
            o.fails_health_check
        )
        .as_bytes(),
    )[..16]
        .to_string();

    // Rootfs: a real ext4 image made by mke2fs -d.
    let tree = tempfile::tempdir().map_err(io(out))?;
    rootfs_tree(tree.path(), o, l4t, &release_id)?;
    let rootfs = out.join("rootfs.ext4");
    let uuid = {
        let h = sha256_hex(release_id.as_bytes());
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    };
    let _ = std::fs::remove_file(&rootfs);
    run(Command::new("mke2fs")
        .env("E2FSPROGS_FAKE_TIME", "1767225600")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-L", "APP", "-U", &uuid,
        ])
        .arg("-E")
        .arg(format!("hash_seed={uuid},root_owner=0:0"))
        .arg("-d")
        .arg(tree.path())
        .arg(&rootfs)
        .arg(format!("{}k", o.rootfs_size / 1024)))?;
    let rootfs_bytes = std::fs::read(&rootfs).map_err(io(&rootfs))?;

    let base = |kind: &str| Identity {
        kind: kind.into(),
        release: release_id.clone(),
        version: o.version.clone(),
        l4t: l4t.to_string(),
        content_len: 0,
        content_sha256: String::new(),
        rootfs_len: None,
        rootfs_sha256: None,
        dtb_sha256: None,
        requires_bootloader: None,
        fails_health_check: o.fails_health_check,
    };
    let dtb_content = det_bytes(&format!("dtb-{release_id}"), 64 * 1024);
    let dtb = seal(&base("kernel-dtb"), &dtb_content);
    let kernel = seal(
        &Identity {
            rootfs_len: Some(rootfs_bytes.len() as u64),
            rootfs_sha256: Some(sha256_hex(&rootfs_bytes)),
            dtb_sha256: Some(sha256_hex(&dtb_content)),
            requires_bootloader: Some(format!("{}.{}", l4t.major, l4t.minor)),
            ..base("kernel")
        },
        &det_bytes(&format!("kernel-{release_id}"), 512 * 1024),
    );
    write(&out.join("Image"), &kernel)?;
    write(&out.join("kernel.dtb"), &dtb)?;

    // Bootloader payload.
    let (mut bup_info, mut cap_info) = (None, None);
    match o.model.firmware {
        FirmwareKind::Uefi => {
            let mut entries: Vec<(EntryMeta, Vec<u8>)> = Vec::new();
            let ver = l4t.to_bup_entry_version();
            let meta = |p: &str, spec: &str| EntryMeta {
                partition: p.into(),
                version: ver,
                op_mode: OpMode::Common,
                spec: spec.into(),
                length: 0,
            };
            for p in T234_BOOTLOADER {
                if *p == "MB1_BCT" || *p == "VER" {
                    // Per-SKU images, keyed by compat spec as L4T's multi-spec payloads are.
                    for sku in T234_SKUS {
                        let bs = BoardSpec {
                            board_id: "3767".into(),
                            fab: "300".into(),
                            board_sku: (*sku).into(),
                            board_rev: String::new(),
                            fuse_level: "1".into(),
                            chip_rev: String::new(),
                        };
                        let spec = format!(
                            "{}-{}-",
                            bs.compat().map(|c| c.to_string()).unwrap_or_default(),
                            o.model.target_board
                        );
                        let data = if *p == "VER" {
                            Ver::nv4(l4t, "3767", sku, "300", "20260101000000")
                        } else {
                            bootloader_blob(&release_id, &o.version, l4t, p, &spec)
                        };
                        entries.push((meta(p, &spec), data));
                    }
                } else {
                    entries.push((
                        meta(p, ""),
                        bootloader_blob(&release_id, &o.version, l4t, p, ""),
                    ));
                }
            }
            let refs: Vec<(EntryMeta, &[u8])> = entries
                .iter()
                .map(|(m, d)| (m.clone(), d.as_slice()))
                .collect();
            let bup = Bup::build(
                BupFormat::V3,
                BupFormat::V3.default_version(),
                vec![0; 8],
                &refs,
            )
            .map_err(|e| SimError::Invalid(e.to_string()))?;
            write(&out.join("bl_only_payload"), &bup)?;
            let cap = build_capsule(&bup, l4t, o.capsule_key.as_ref())?;
            write(&out.join("TEGRA_BL.Cap"), &cap)?;
            bup_info = Some(file_info(out, "bl_only_payload")?);
            cap_info = Some(file_info(out, "TEGRA_BL.Cap")?);
        }
        FirmwareKind::Cboot => {
            let spec = o.model.tnspec().to_string();
            let ver = l4t.to_bup_entry_version();
            let (b, m) = (o.model.module.0, o.model.module);
            let entries: Vec<(EntryMeta, Vec<u8>)> = R32_BOOTLOADER
                .iter()
                .map(|p| {
                    let data = if *p == "VER" {
                        Ver::nv3(l4t, b, m.1, m.2, "20260101000000")
                    } else {
                        bootloader_blob(&release_id, &o.version, l4t, p, &spec)
                    };
                    (
                        EntryMeta {
                            partition: (*p).into(),
                            version: ver,
                            op_mode: OpMode::Common,
                            spec: spec.clone(),
                            length: 0,
                        },
                        data,
                    )
                })
                .collect();
            let refs: Vec<(EntryMeta, &[u8])> = entries
                .iter()
                .map(|(m, d)| (m.clone(), d.as_slice()))
                .collect();
            let bup = Bup::build(
                BupFormat::V2,
                BupFormat::V2.default_version(),
                vec![],
                &refs,
            )
            .map_err(|e| SimError::Invalid(e.to_string()))?;
            write(&out.join("bl_update_payload"), &bup)?;
            bup_info = Some(file_info(out, "bl_update_payload")?);
        }
        FirmwareKind::Uboot => {}
    }

    let manifest = ReleaseManifest {
        format: 1,
        version: o.version.clone(),
        release_id,
        l4t,
        model: o.model.name.into(),
        firmware: o.model.firmware,
        fails_health_check: o.fails_health_check,
        rootfs: file_info(out, "rootfs.ext4")?,
        kernel: file_info(out, "Image")?,
        dtb: file_info(out, "kernel.dtb")?,
        bup: bup_info,
        capsule: cap_info,
    };
    let json =
        serde_json::to_vec_pretty(&manifest).map_err(|e| SimError::Invalid(e.to_string()))?;
    write(&out.join("release.json"), &json)?;
    Ok(manifest)
}

/// Signs a BUP into a capsule with `openssl smime` (as edk2's GenerateCapsule does).
pub fn build_capsule(
    bup: &[u8],
    l4t: L4tVersion,
    key: Option<&(PathBuf, PathBuf)>,
) -> Result<Vec<u8>> {
    let tmp = tempfile::tempdir().map_err(io(std::env::temp_dir()))?;
    let (keyp, certp) = match key {
        Some((k, c)) => (k.clone(), c.clone()),
        None => {
            let k = tmp.path().join("key.pem");
            let c = tmp.path().join("cert.pem");
            std::fs::write(&k, CAPSULE_TEST_KEY).map_err(io(&k))?;
            std::fs::write(&c, CAPSULE_TEST_CERT).map_err(io(&c))?;
            (k, c)
        }
    };
    let fw = l4t.to_fw_version();
    let tbs = tmp.path().join("tbs");
    std::fs::write(&tbs, capsule::to_be_signed(fw, fw, bup, 1)).map_err(io(&tbs))?;
    let sig = tmp.path().join("sig.der");
    run(Command::new("openssl")
        .args([
            "smime", "-sign", "-binary", "-noattr", "-outform", "DER", "-md", "sha256", "-signer",
        ])
        .arg(&certp)
        .arg("-inkey")
        .arg(&keyp)
        .arg("-in")
        .arg(&tbs)
        .arg("-out")
        .arg(&sig))?;
    let der = std::fs::read(&sig).map_err(io(&sig))?;
    Ok(Capsule::build(
        capsule::T234_IMAGE_TYPE,
        fw,
        fw,
        bup,
        Some(&Auth {
            monotonic_count: 1,
            cert_type: capsule::PKCS7_CERT_TYPE,
            cert_data: der,
        }),
    ))
}

/// Verifies a capsule's PKCS#7 signature against trusted certificates (PEM), as FmpDxe does.
pub fn verify_capsule_signature(file: &[u8], c: &Capsule, trusted_pem: &Path) -> Result<bool> {
    let Some(content) = c.signed_content(file) else {
        return Ok(false);
    };
    let Some(auth) = &c.auth else {
        return Ok(false);
    };
    if auth.cert_type != capsule::PKCS7_CERT_TYPE {
        return Ok(false);
    }
    let tmp = tempfile::tempdir().map_err(io(std::env::temp_dir()))?;
    let (sig, data) = (tmp.path().join("sig.der"), tmp.path().join("data"));
    std::fs::write(&sig, &auth.cert_data).map_err(io(&sig))?;
    std::fs::write(&data, &content).map_err(io(&data))?;
    let st = Command::new("openssl")
        .args([
            "smime", "-verify", "-binary", "-inform", "DER", "-purpose", "any", "-in",
        ])
        .arg(&sig)
        .arg("-content")
        .arg(&data)
        .arg("-CAfile")
        .arg(trusted_pem)
        .args(["-out", "/dev/null"])
        .output()
        .map_err(|e| SimError::Tool {
            tool: "openssl".into(),
            message: format!("cannot run it: {e}"),
        })?;
    Ok(st.status.success())
}

/// Loads a release and checks its files against `release.json`.
pub fn load(dir: &Path) -> Result<ReleaseManifest> {
    let p = dir.join("release.json");
    let b = std::fs::read(&p).map_err(io(&p))?;
    let m: ReleaseManifest = serde_json::from_slice(&b)
        .map_err(|e| SimError::Invalid(format!("{}: {e}", p.display())))?;
    let mut files = vec![&m.rootfs, &m.kernel, &m.dtb];
    files.extend(m.bup.iter());
    files.extend(m.capsule.iter());
    for f in files {
        let got = file_info(dir, &f.name)?;
        if &got != f {
            return Err(SimError::Invalid(format!(
                "release {}: {} does not match release.json (size {} sha256 {})",
                dir.display(),
                f.name,
                got.size,
                got.sha256
            )));
        }
    }
    Ok(m)
}

/// Bootloader partitions of a firmware kind.
pub fn bootloader_parts(fw: FirmwareKind) -> &'static [&'static str] {
    match fw {
        FirmwareKind::Uefi => T234_BOOTLOADER,
        FirmwareKind::Cboot => R32_BOOTLOADER,
        FirmwareKind::Uboot => &[],
    }
}

/// All release files by name (for tools that list them).
pub fn files(m: &ReleaseManifest) -> BTreeMap<&str, &FileInfo> {
    let mut v = BTreeMap::new();
    v.insert("rootfs", &m.rootfs);
    v.insert("kernel", &m.kernel);
    v.insert("dtb", &m.dtb);
    if let Some(b) = &m.bup {
        v.insert("bup", b);
    }
    if let Some(c) = &m.capsule {
        v.insert("capsule", c);
    }
    v
}
