//! `jota keys` and `jota bundle` end to end, checked against real peers: openssl makes and
//! verifies keys and signatures, GNU cpio reads the `.swu`, Debian's swupdate installs it.

use predicates::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

mod common;
use common::{jota, jota_json, output_bounded, run, sim_releases, tool};

/// `jota bundle info --json FILE`.
fn info_json(bundle: &Path) -> Value {
    jota_json([
        Path::new("bundle"),
        Path::new("info"),
        Path::new("--json"),
        bundle,
    ])
}

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../jota-bundle/tests/fixtures/keys")
}

/// Two simulator releases.
fn releases() -> &'static Path {
    static F: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    sim_releases(
        &F,
        &[
            ("orin-nano-8gb", "r1", "1.0.0"),
            ("orin-nano-8gb", "r2", "2.0.0"),
        ],
    )
}

fn ring(dir: &Path, pubs: &[&str]) -> PathBuf {
    let r = dir.join("keyring");
    std::fs::create_dir_all(&r).unwrap();
    for p in pubs {
        std::fs::copy(
            keys().join(format!("{p}.pub.pem")),
            r.join(format!("{p}.pem")),
        )
        .unwrap();
    }
    r
}

/// `jota bundle create` from a release with the given key, returning the bundle path.
fn bundle(dir: &Path, rel: &str, version: &str, key: &str, extra: &[&str]) -> PathBuf {
    let r = releases().join(rel);
    let out = dir.join(format!("{version}.jota"));
    jota()
        .args(["bundle", "create", "-o"])
        .arg(&out)
        .args(["--version", version, "--hw-compat", "3767-0005", "--key"])
        .arg(keys().join(format!("{key}.key.pem")))
        .arg("--rootfs")
        .arg(r.join("rootfs.ext4"))
        .arg("--kernel")
        .arg(r.join("Image"))
        .arg("--dtb")
        .arg(r.join("kernel.dtb"))
        .arg("--capsule")
        .arg(r.join("TEGRA_BL.Cap"))
        .args(extra)
        .assert()
        .success();
    out
}

#[test]
fn keys_interoperate_with_openssl() {
    let d = tempfile::tempdir().unwrap();
    let openssl = tool("openssl");
    for algo in ["ed25519", "ecdsa-p256", "rsa4096"] {
        let out = jota()
            .args([
                "keys", "generate", "--algo", algo, "--name", algo, "--json", "-o",
            ])
            .arg(d.path())
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let key = d.path().join(format!("{algo}.key.pem"));
        let public = d.path().join(format!("{algo}.pub.pem"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // openssl reads both, and its key id (sha256 of the SPKI DER) is jota's.
        run(std::process::Command::new(&openssl)
            .args(["pkey", "-noout", "-in"])
            .arg(&key));
        let der = run(std::process::Command::new(&openssl)
            .args(["pkey", "-pubin", "-outform", "DER", "-in"])
            .arg(&public))
        .stdout;
        use sha2::Digest;
        assert_eq!(v["id"], hex::encode(sha2::Sha256::digest(&der)));
        // Refuses to overwrite.
        jota()
            .args(["keys", "generate", "--algo", algo, "--name", algo, "-o"])
            .arg(d.path())
            .assert()
            .failure()
            .stderr(predicate::str::contains("refusing to overwrite"));
    }
    // Keys made by openssl (seed 001 §7.2 commands) are read, private and public.
    for (f, want) in [
        ("rsa4096.key.pem", "rsa-pss-sha256 private"),
        ("rsa2048-pkcs1.key.pem", "rsa-pss-sha256 private"),
        ("p256.key.pem", "ecdsa-p256 private"),
        ("ed25519.key.pem", "ed25519 private"),
        ("p256.pub.pem", "ecdsa-p256 public"),
    ] {
        jota()
            .args(["keys", "show"])
            .arg(keys().join(f))
            .assert()
            .success()
            .stdout(predicate::str::contains(want));
    }
    jota()
        .args(["keys", "show"])
        .arg(keys().join("rsa4096.cert.pem"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("no `PUBLIC KEY` block"));
}

/// Signatures made by jota verify with openssl, and a signature made by openssl (as an HSM
/// would, over `jota bundle manifest`) is added with `jota bundle sign` and verifies.
#[test]
fn signatures_interoperate_with_openssl() {
    let d = tempfile::tempdir().unwrap();
    let openssl = tool("openssl");
    let b = bundle(d.path(), "r1", "1.0.0", "p256", &[]);
    let m = d.path().join("manifest.json");
    let out = jota()
        .args(["bundle", "manifest"])
        .arg(&b)
        .output()
        .unwrap();
    std::fs::write(&m, &out.stdout).unwrap();
    let info: Value = info_json(&b);
    let sig = hex::decode(info["signatures"][0]["signature"].as_str().unwrap()).unwrap();
    let sigf = d.path().join("p256.sig");
    std::fs::write(&sigf, sig).unwrap();
    run(std::process::Command::new(&openssl)
        .args(["dgst", "-sha256", "-verify"])
        .arg(keys().join("p256.pub.pem"))
        .arg("-signature")
        .arg(&sigf)
        .arg(&m));

    // RSA-PSS by openssl (its default salt length) and ed25519 by openssl, added externally.
    let rsa_sig = d.path().join("rsa.sig");
    run(std::process::Command::new(&openssl)
        .args([
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sign",
        ])
        .arg(keys().join("rsa4096.key.pem"))
        .arg("-out")
        .arg(&rsa_sig)
        .arg(&m));
    let ed_sig = d.path().join("ed.sig");
    run(std::process::Command::new(&openssl)
        .args(["pkeyutl", "-sign", "-rawin", "-inkey"])
        .arg(keys().join("ed25519.key.pem"))
        .arg("-in")
        .arg(&m)
        .arg("-out")
        .arg(&ed_sig));
    for (sig, public) in [(&rsa_sig, "rsa4096"), (&ed_sig, "ed25519")] {
        jota()
            .args(["bundle", "sign"])
            .arg(&b)
            .arg("--signature")
            .arg(sig)
            .arg("--public-key")
            .arg(keys().join(format!("{public}.pub.pem")))
            .assert()
            .success();
    }
    // A signature over something else is refused before it is added.
    jota()
        .args(["bundle", "sign"])
        .arg(&b)
        .arg("--signature")
        .arg(&sigf)
        .arg("--public-key")
        .arg(keys().join("ed25519.pub.pem"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("does not match the manifest"));
    // Each key alone verifies the bundle; jota's own RSA signature verifies with openssl.
    for k in ["p256", "rsa4096", "ed25519"] {
        let rd = d.path().join(format!("ring-{k}"));
        std::fs::create_dir_all(&rd).unwrap();
        std::fs::copy(keys().join(format!("{k}.pub.pem")), rd.join("k.pem")).unwrap();
        jota()
            .args(["bundle", "verify"])
            .arg(&b)
            .arg("--keyring")
            .arg(&rd)
            .assert()
            .success()
            .stdout(predicate::str::contains("is valid"));
    }
    let b2 = bundle(d.path(), "r1", "1.0.1", "rsa4096", &[]);
    let info: Value = info_json(&b2);
    std::fs::write(
        &sigf,
        hex::decode(info["signatures"][0]["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &m,
        jota()
            .args(["bundle", "manifest"])
            .arg(&b2)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    run(std::process::Command::new(&openssl)
        .args([
            "dgst",
            "-sha256",
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:digest",
            "-verify",
        ])
        .arg(keys().join("rsa4096.pub.pem"))
        .arg("-signature")
        .arg(&sigf)
        .arg(&m));
}

#[test]
fn create_info_verify_extract() {
    let d = tempfile::tempdir().unwrap();
    let rel = releases().join("r2");
    let script = d.path().join("post-update.sh");
    std::fs::write(&script, "#!/bin/sh\necho updated\n").unwrap();
    let b = bundle(
        d.path(),
        "r2",
        "2.0.0",
        "ed25519",
        &[
            "--min-version",
            "1.5",
            "--min-battery",
            "40",
            "--script",
            script.to_str().unwrap(),
            "--bup",
            rel.join("bl_only_payload").to_str().unwrap(),
        ],
    );
    let v: Value = info_json(&b);
    let m = &v["manifest"];
    assert_eq!(m["version"], "2.0.0");
    assert_eq!(m["minimum_version"], "1.5");
    assert_eq!(m["pre_checks"]["min_battery_pct"], 40);
    let names: Vec<&str> = m["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "rootfs",
            "kernel",
            "kernel-dtb",
            "bootloader",
            "capsule",
            "post-update.sh"
        ]
    );
    let bup = &m["components"][3];
    assert_eq!(bup["type"], "tegra-bup");
    assert!(bup["tegra"]["entries"].as_u64().unwrap() > 3, "{bup}");
    assert_eq!(
        m["components"][4]["path"],
        "/boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap"
    );
    let kr = ring(d.path(), &["ed25519"]);
    jota()
        .args(["bundle", "verify", "--json", "--keyring"])
        .arg(&kr)
        .arg(&b)
        .assert()
        .success()
        .stdout(predicate::str::contains("\"ok\": true"));
    let out = d.path().join("rootfs.out");
    jota()
        .args(["bundle", "extract"])
        .arg(&b)
        .args(["rootfs", "-o"])
        .arg(&out)
        .arg("--keyring")
        .arg(&kr)
        .assert()
        .success();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(rel.join("rootfs.ext4")).unwrap()
    );

    // One flipped byte in the rootfs payload: verify names the chunk, extract leaves nothing.
    let mut bytes = std::fs::read(&b).unwrap();
    let pay = v["sections"]["payload"][0].as_u64().unwrap() as usize;
    let ch = &m["components"][0]["chunks"][0];
    let at =
        pay + ch["offset"].as_u64().unwrap() as usize + ch["size"].as_u64().unwrap() as usize / 2;
    bytes[at] ^= 0x40;
    let bad = d.path().join("bad.jota");
    std::fs::write(&bad, &bytes).unwrap();
    jota()
        .args(["bundle", "verify", "--keyring"])
        .arg(&kr)
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicate::str::contains("component `rootfs` chunk 0"));
    let out2 = d.path().join("rootfs.bad");
    jota()
        .args(["bundle", "extract"])
        .arg(&bad)
        .args(["rootfs", "-o"])
        .arg(&out2)
        .assert()
        .failure();
    assert!(!out2.exists());
    assert_eq!(
        std::fs::read_dir(d.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("jota-tmp"))
            .count(),
        0
    );
}

#[test]
fn bad_inputs_are_named() {
    let d = tempfile::tempdir().unwrap();
    let rel = releases().join("r1");
    let k = keys().join("ed25519.key.pem");
    let out = d.path().join("x.jota");
    let junk = d.path().join("junk");
    std::fs::write(&junk, vec![7u8; 10000]).unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--rootfs".into(),
                rel.join("rootfs.ext4").display().to_string(),
            ],
            "no version",
        ),
        (
            vec![
                "--version".into(),
                "1 0".into(),
                "--rootfs".into(),
                rel.join("rootfs.ext4").display().to_string(),
            ],
            "bad version",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--rootfs".into(),
                junk.display().to_string(),
            ],
            "not an ext4 image",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--bup".into(),
                junk.display().to_string(),
            ],
            "not a valid BUP",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--capsule".into(),
                rel.join("bl_only_payload").display().to_string(),
            ],
            "not a valid UEFI capsule",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--script".into(),
                junk.display().to_string(),
            ],
            "must start with `#!`",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--hw-compat".into(),
                "orin".into(),
                "--kernel".into(),
                junk.display().to_string(),
            ],
            "hardware-compatibility rule",
        ),
        (vec!["--version".into(), "1".into()], "no components"),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--kernel".into(),
                "/nonexistent".into(),
            ],
            "/nonexistent",
        ),
        (
            vec![
                "--version".into(),
                "1".into(),
                "--file".into(),
                format!("{}:etc/x", junk.display()),
            ],
            "must be absolute",
        ),
    ];
    for (args, want) in cases {
        jota()
            .args(["bundle", "create", "-o"])
            .arg(&out)
            .arg("--key")
            .arg(&k)
            .args(&args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(want));
        assert!(!out.exists(), "{args:?} left a bundle");
    }
    jota()
        .args(["bundle", "verify", "--keyring"])
        .arg(d.path())
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicate::str::contains("keyring holds no public keys"));
    let kr = ring(d.path(), &["ed25519"]);
    jota()
        .args(["bundle", "verify", "--keyring"])
        .arg(&kr)
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not a jota bundle"));
}

/// A recipe file and `--base`: the v2 bundle marks which chunks a v1 device already has.
#[test]
fn recipe_and_base() {
    let d = tempfile::tempdir().unwrap();
    let b1 = bundle(d.path(), "r1", "1.0.0", "ed25519", &[]);
    let r2 = releases().join("r2");
    let recipe = d.path().join("release.toml");
    std::fs::write(
        &recipe,
        format!(
            r#"version = "2.0.0"
description = "second release"
hardware_compatibility = ["3767-000[345]"]
keys = ["{key}"]
[pre_checks]
min_free_space_mb = 100
required_services = ["ssh.service"]
[[component]]
name = "rootfs"
type = "raw-image"
source = "{src}/rootfs.ext4"
partition = "APP"
[[component]]
name = "kernel"
type = "raw-image"
source = "{src}/Image"
partition = "kernel"
"#,
            key = keys().join("ed25519.key.pem").display(),
            src = r2.display()
        ),
    )
    .unwrap();
    let b2 = d.path().join("v2.jota");
    jota()
        .args(["bundle", "create", "--recipe"])
        .arg(&recipe)
        .arg("-o")
        .arg(&b2)
        .arg("--base")
        .arg(&b1)
        .assert()
        .success();
    let v: Value = info_json(&b2);
    let m = &v["manifest"];
    assert_eq!(m["description"], "second release");
    assert_eq!(m["base"]["version"], "1.0.0");
    assert_eq!(m["pre_checks"]["required_services"][0], "ssh.service");
    let chunks = m["components"][0]["chunks"].as_array().unwrap();
    let (old, new): (Vec<&Value>, Vec<&Value>) = chunks.iter().partition(|c| c["in_base"] == true);
    assert!(!old.is_empty() && !new.is_empty(), "{chunks:?}");
    let size = |v: &[&Value]| v.iter().map(|c| c["size"].as_u64().unwrap()).sum::<u64>();
    println!(
        "rootfs v1→v2: {} bytes in chunks v1 holds, {} new",
        size(&old),
        size(&new)
    );
    jota()
        .args(["bundle", "verify", "--keyring"])
        .arg(ring(d.path(), &["ed25519"]))
        .arg(&b2)
        .assert()
        .success();
}

/// Export to `.swu` and let Debian's swupdate install it: images land byte-exact in the
/// slot-B targets, slot A is untouched, the capsule lands on a simulated Orin's ESP with
/// OsIndications set, and the switch script makes jota (as SWUpdate's bootloader backend)
/// boot chain and rootfs B.
#[test]
fn swupdate_installs_the_exported_swu() {
    let swupdate = tool("swupdate");
    let cpio = tool("cpio");
    let d = tempfile::tempdir().unwrap();
    let dp = d.path();
    let rel = releases().join("r2");
    let b = bundle(dp, "r2", "2.0.0", "ed25519", &[]);
    let t = dp.join("targets");
    std::fs::create_dir_all(&t).unwrap();
    // A simulated Orin to switch; jota on PATH is what the activate script calls.
    let sim = dp.join("jetson");
    jota()
        .args([
            "sim",
            "create",
            "--model",
            "orin-nano-8gb",
            "--rootfs-size",
            "12M",
            "--release",
        ])
        .arg(releases().join("r1"))
        .arg(&sim)
        .assert()
        .success();
    jota().args(["sim", "boot"]).arg(&sim).assert().success();
    let capsule = sim.join("boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap");
    let mut maps = Vec::new();
    for (c, n) in [
        ("rootfs", "APP"),
        ("kernel", "kernel"),
        ("kernel-dtb", "dtb"),
    ] {
        for s in ["A", "B"] {
            let f = t.join(format!("{n}_{s}"));
            std::fs::write(&f, b"old").unwrap();
            maps.push(format!("--map={c}@{s}={}", f.display()));
        }
    }
    maps.push(format!("--map=capsule={}", capsule.display()));
    let swu = dp.join("update.swu");
    jota()
        .args(["bundle", "export-swu"])
        .arg(&b)
        .arg("-o")
        .arg(&swu)
        .arg("--cert")
        .arg(keys().join("rsa4096.cert.pem"))
        .arg("--key")
        .arg(keys().join("rsa4096.key.pem"))
        .arg("--keyring")
        .arg(ring(dp, &["ed25519"]))
        .args(&maps)
        .assert()
        .success();
    // GNU cpio reads the archive: sw-description first, then its signature.
    let listing = run(std::process::Command::new(&cpio)
        .arg("-t")
        .stdin(std::fs::File::open(&swu).unwrap()))
    .stdout;
    let names: Vec<String> = String::from_utf8(listing)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(&names[..2], ["sw-description", "sw-description.sig"]);
    assert!(
        names.contains(&"rootfs.zst".to_string())
            && names.contains(&"jota-activate-B.sh".to_string())
    );

    let bin = assert_cmd::cargo::cargo_bin("jota");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let tmp = dp.join("swtmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let swu_run = |extra: &[&str], hw: &str| {
        let mut cmd = std::process::Command::new(&swupdate);
        cmd.args(["-i"])
            .arg(&swu)
            .arg("-k")
            .arg(keys().join("rsa4096.cert.pem"))
            .args(["-H", hw, "-m", "-M", "-v"])
            .args(extra)
            .env("TMPDIR", &tmp)
            .env("PATH", &path)
            .env("JOTA_ROOT", &sim);
        output_bounded(&mut cmd, std::time::Duration::from_secs(180))
    };
    // Wrong hardware: refused, nothing written.
    let o = swu_run(&["-e", "stable,copy2"], "jetson:3701-0005-500");
    assert!(!o.status.success());
    assert_eq!(std::fs::read(t.join("APP_B")).unwrap(), b"old");
    // Check-only mode accepts it.
    let o = swu_run(&["-c", "-e", "stable,copy2"], "jetson:3767-0005-300");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = swu_run(&["-e", "stable,copy2"], "jetson:3767-0005-300");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    for (n, src) in [
        ("APP_B", "rootfs.ext4"),
        ("kernel_B", "Image"),
        ("dtb_B", "kernel.dtb"),
    ] {
        assert!(
            std::fs::read(t.join(n)).unwrap() == std::fs::read(rel.join(src)).unwrap(),
            "{n}"
        );
    }
    for n in ["APP_A", "kernel_A", "dtb_A"] {
        assert_eq!(std::fs::read(t.join(n)).unwrap(), b"old", "{n}");
    }
    assert_eq!(
        std::fs::read(&capsule).unwrap(),
        std::fs::read(rel.join("TEGRA_BL.Cap")).unwrap()
    );
    // The capsule script asked UEFI for capsule processing (OsIndications bit 2) ...
    let osi = std::fs::read(
        sim.join("sys/firmware/efi/efivars/OsIndications-8be4df61-93ca-11d2-aa0d-00e098032b8c"),
    )
    .unwrap();
    assert_eq!(osi, [7, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    // ... and the switch script used jota. With a capsule staged the capsule moves the
    // firmware chain (L4T R36), so boot the simulated Orin: it applies the capsule to
    // chain B and boots rootfs B.
    let boot: Value = serde_json::from_slice(
        &jota()
            .args(["sim", "boot", "--json"])
            .arg(&sim)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(boot["outcome"]["chain"], "B", "{boot}");
    assert_eq!(boot["outcome"]["slot"], "B", "{boot}");
    assert_eq!(boot["capsules"][0]["status_name"], "SUCCESS", "{boot}");

    // A tampered archive is refused by swupdate.
    let mut bytes = std::fs::read(&swu).unwrap();
    let pos = bytes.windows(7).position(|w| w == b"version").unwrap();
    bytes[pos + 12] ^= 1;
    std::fs::write(&swu, &bytes).unwrap();
    let o = swu_run(&["-c", "-e", "stable,copy2"], "jetson:3767-0005-300");
    assert!(!o.status.success());
}
