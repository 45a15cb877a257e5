//! Static patches (`jota bundle delta`) on a simulated Orin: applied on the exact base the
//! slot ends up byte-equal to v2; on another base the bundle next to the patch is named
//! instead; a damaged frame falls back to the new bundle chunk by chunk (or fails before
//! the switch when there is none); a forged or foreign patch is rejected before any write.

mod common;
use common::*;
use jota_agent::install::install;
use jota_agent::patch::{install_patch, PatchOutcome};
use jota_bundle::sign::Signer;
use jota_bundle::{Bundle, SecretKey, Trust};
use jota_delta::patch::{build, used_ranges, BuildOptions, Patch, PatchFile};
use jota_tegra::efivar::Slot;
use std::path::{Path, PathBuf};

const ORIN: &str = "orin-nano-8gb";

struct Setup {
    d: tempfile::TempDir,
    dev: jota_sim::SimDevice,
    v2: PathBuf,
    patch: PathBuf,
    rel2: PathBuf,
}

fn make_patch(v1: &Path, v2: &Path, out: &Path, key: &str) {
    let o = Bundle::open(v1, Trust::Unchecked).unwrap();
    let n = Bundle::open(v2, Trust::Unchecked).unwrap();
    let k = SecretKey::load(&keys_dir().join(key)).unwrap();
    let size = std::fs::metadata(v2).unwrap().len();
    let name = v2.file_name().unwrap().to_str().unwrap();
    let opts = BuildOptions {
        level: 9,
        ..BuildOptions::default()
    };
    let r = build(&o, &n, name, size, &[&k as &dyn Signer], &opts, out).unwrap();
    assert!(r.copied_blocks > 0 && r.data_blocks > 0, "{r:?}");
    assert!(r.patch_bytes < size, "{r:?}");
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let rel1 = release(ORIN, "1.0.0", false);
    let rel2 = release(ORIN, "2.0.0", false);
    let dev = device(&d.path().join("jetson"), ORIN, &rel1);
    let v1 = bundle_of(&rel1, &d.path().join("v1.jota"), "1.0.0", &[], None);
    let v2 = bundle_with_base(&rel2, &v1, &d.path().join("v2.jota"), "2.0.0");
    let patch = d.path().join("v2.jotapatch");
    make_patch(&v1, &v2, &patch, "ed25519.key.pem");
    Setup {
        d,
        dev,
        v2,
        patch,
        rel2,
    }
}

fn slot_b_is_v2(s: &Setup) {
    common::slot_b_is_v2(&s.dev, &s.rel2);
}

fn slot_b_untouched(s: &Setup) {
    let a = agent(&s.dev, &config());
    // Nothing switched: both chains still point at slot A.
    for t in [
        jota_bootctl::Target::Rootfs,
        jota_bootctl::Target::Bootloader,
    ] {
        assert_eq!(a.boot.active_slot(t).unwrap(), Slot::A);
    }
}

fn src(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn a_patch_on_its_base_installs_v2() {
    let s = setup();
    let mut a = agent(&s.dev, &config());
    let out = install_patch(
        &mut a,
        &s.patch,
        &src(&s.patch),
        &install_opts(&src(&s.patch)),
        &|_, _, _| {},
    )
    .unwrap();
    let PatchOutcome::Installed(rep, p) = out else {
        panic!("{out:?}")
    };
    assert!(rep.switched);
    assert_eq!(p.base_version, "1.0.0");
    assert!(p.rebuilt_chunks > 0);
    assert_eq!(p.fallback_chunks, 0);
    // The patch is smaller than what the chunked delta would fetch.
    let patch = Patch::parse(Box::new(PatchFile::open(&s.patch).unwrap())).unwrap();
    assert!(p.patch_bytes < patch.manifest.target.chunked_bytes, "{p:?}");
    slot_b_is_v2(&s);
}

#[test]
fn a_patch_on_another_base_names_the_bundle_instead() {
    let s = setup();
    let mut a = agent(&s.dev, &config());
    // The running slot is not exactly 1.0.0 any more: a block of its rootfs that the patch
    // copies has changed.
    let p = Patch::parse(Box::new(PatchFile::open(&s.patch).unwrap())).unwrap();
    let used = used_ranges(&p.ops[0], &p.manifest.prefix, 0);
    let app = a.label("APP", Slot::A).unwrap();
    let io = a.storage.open(&app, true).unwrap();
    io.write_at(used[0].0 * 4096, &[0x5A; 4096]).unwrap();
    io.sync().unwrap();
    let out = install_patch(
        &mut a,
        &s.patch,
        &src(&s.patch),
        &install_opts(&src(&s.patch)),
        &|_, _, _| {},
    )
    .unwrap();
    let PatchOutcome::NotBase { reason, bundle } = out else {
        panic!("{out:?}")
    };
    assert!(
        reason.contains("APP") && reason.contains("1.0.0"),
        "{reason}"
    );
    assert_eq!(Path::new(&bundle), s.v2.as_path());
    // Nothing was written; the named bundle installs.
    slot_b_untouched(&s);
    let mut opts = install_opts(&bundle);
    opts.bundle = PathBuf::from(&bundle);
    let rep = install(&mut a, &opts, &|_, _, _| {}).unwrap();
    assert!(rep.switched);
    slot_b_is_v2(&s);
}

/// Flips a byte inside the first data frame (its sha256 is in the signed manifest).
fn damage_frame(patch: &Path) {
    let p = Patch::parse(Box::new(PatchFile::open(patch).unwrap())).unwrap();
    let f = &p.manifest.frames[0].blob;
    let mut b = std::fs::read(patch).unwrap();
    let payload = b.len() as u64 - p.manifest.payload_length;
    let at = (payload + f.offset + f.size / 2) as usize;
    b[at] ^= 0xff;
    std::fs::write(patch, b).unwrap();
}

#[test]
fn a_damaged_frame_falls_back_to_the_bundle_by_delta() {
    let s = setup();
    damage_frame(&s.patch);
    let (url, served) = serve(std::fs::read(&s.v2).unwrap(), Serve::Ranges);
    // Published side by side: the patch's URL names the bundle next to it.
    let patch_url = url.replace("bundle.jota", "v2.jotapatch");
    let mut a = agent(&s.dev, &config());
    let out = install_patch(
        &mut a,
        &s.patch,
        &patch_url,
        &install_opts(&patch_url),
        &|_, _, _| {},
    )
    .unwrap();
    let PatchOutcome::Installed(rep, p) = out else {
        panic!("{out:?}")
    };
    assert!(rep.switched);
    assert!(p.fallback_chunks > 0, "{p:?}");
    assert!(served.requests.load(std::sync::atomic::Ordering::SeqCst) > 0);
    slot_b_is_v2(&s);
}

#[test]
fn a_damaged_frame_without_a_bundle_fails_before_the_switch() {
    let s = setup();
    damage_frame(&s.patch);
    std::fs::remove_file(&s.v2).unwrap();
    let mut a = agent(&s.dev, &config());
    let e = install_patch(
        &mut a,
        &s.patch,
        &src(&s.patch),
        &install_opts(&src(&s.patch)),
        &|_, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("sha256"), "{e}");
    slot_b_untouched(&s);
}

#[test]
fn a_forged_or_foreign_patch_is_rejected_before_any_write() {
    let s = setup();
    // Signed by a key the device does not trust.
    let foreign = s.d.path().join("foreign.jotapatch");
    let v1 = s.d.path().join("v1.jota");
    make_patch(&v1, &s.v2, &foreign, "p256.key.pem");
    let mut a = agent(&s.dev, &config());
    let e = install_patch(
        &mut a,
        &foreign,
        &src(&foreign),
        &install_opts(&src(&foreign)),
        &|_, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("rejected:"), "{e}");
    // A changed manifest byte breaks its signature.
    let mut b = std::fs::read(&s.patch).unwrap();
    let i = b.windows(7).position(|w| w == b"\"1.0.0\"").unwrap();
    b[i + 1] = b'0';
    let forged = s.d.path().join("forged.jotapatch");
    std::fs::write(&forged, b).unwrap();
    let e = install_patch(
        &mut a,
        &forged,
        &src(&forged),
        &install_opts(&src(&forged)),
        &|_, _, _| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("signature"), "{e}");
    slot_b_untouched(&s);
}
