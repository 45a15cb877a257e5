//! Delta installs on a simulated Orin from a plain HTTP server with Range support: the slot
//! ends up byte-equal to v2 while fetching a fraction of the bundle; a damaged seed block is
//! fetched instead; a server without ranges is detected (the caller then downloads whole);
//! an interrupted delta resumes without fetching verified chunks again.

mod common;
use common::*;
use jota_agent::delta::{install_url, open_remote, seeds};
use jota_agent::install::install_from;
use jota_delta::remote::FetchOptions;
use jota_tegra::efivar::Slot;
use std::sync::atomic::Ordering;

const ORIN: &str = "orin-nano-8gb";

struct Setup {
    _d: tempfile::TempDir,
    dev: jota_sim::SimDevice,
    v2: std::path::PathBuf,
    rel2: std::path::PathBuf,
}

fn setup() -> Setup {
    let d = tempfile::tempdir().unwrap();
    let rel1 = release(ORIN, "1.0.0", false);
    let rel2 = release(ORIN, "2.0.0", false);
    let dev = device(&d.path().join("jetson"), ORIN, &rel1);
    let v1 = bundle_of(&rel1, &d.path().join("v1.jota"), "1.0.0", &[], None);
    let v2 = bundle_with_base(&rel2, &v1, &d.path().join("v2.jota"), "2.0.0");
    Setup {
        _d: d,
        dev,
        v2,
        rel2,
    }
}

fn slot_b_is_v2(s: &Setup) {
    common::slot_b_is_v2(&s.dev, &s.rel2);
}

#[test]
fn delta_install_writes_v2_and_fetches_a_fraction() {
    let s = setup();
    let size = std::fs::metadata(&s.v2).unwrap().len();
    let (url, served) = serve(std::fs::read(&s.v2).unwrap(), Serve::Ranges);
    let c = config();
    let mut a = agent(&s.dev, &c);
    let (rep, d) = install_url(
        &mut a,
        &url,
        &install_opts(&url),
        &FetchOptions::default(),
        &|_, _, _| {},
    )
    .unwrap()
    .expect("the server serves ranges");
    assert!(rep.switched);
    let sent = served.bytes.load(Ordering::SeqCst);
    println!(
        "delta v1→v2: {} of {size} bundle bytes served in {} requests; {} chunks seeded; plan {:?}",
        sent,
        served.requests.load(Ordering::SeqCst),
        d.seeded_chunks,
        d.plan
            .components
            .iter()
            .map(|c| (&c.name, c.fetch_bytes, c.seeded_bytes))
            .collect::<Vec<_>>()
    );
    assert!(d.seeded_chunks > 0);
    assert_eq!(d.seed_mismatches, 0);
    // The rootfs is mostly shared with v1 (kernel, DTB and capsule are new in every
    // release): less than half of its stored bytes cross the wire.
    let m = jota_bundle::Bundle::open(&s.v2, jota_bundle::Trust::Unchecked).unwrap();
    let rootfs_stored: u64 = m.manifest().components[0]
        .chunks
        .iter()
        .map(|c| c.size)
        .sum();
    let rootfs = &d.plan.components[0];
    assert!(
        rootfs.fetch_bytes * 2 < rootfs_stored,
        "{rootfs:?} of {rootfs_stored}"
    );
    assert!(sent < size, "{sent} of {size}");
    // What was sent is the plan plus the front (coalescing gaps are 64 KiB at most each).
    assert!(sent <= d.plan.front_bytes + d.plan.fetch_bytes + 64 * 1024 * d.fetch.requests as u64);
    assert!(
        d.downloaded_bytes >= sent,
        "the agent counts what it downloads"
    );
    slot_b_is_v2(&s);
}

#[test]
fn a_damaged_seed_block_is_fetched_instead() {
    let s = setup();
    let (url, _) = serve(std::fs::read(&s.v2).unwrap(), Serve::Ranges);
    let c = config();
    let mut a = agent(&s.dev, &c);
    let opts = install_opts(&url);
    let src = open_remote(&a, &url, &opts).unwrap().unwrap();
    let seeds_found = seeds(&a, &src, Slot::A).unwrap();
    // Damage a block the plan will take from slot A, after the scan found it.
    let off = *seeds_found[0]
        .as_ref()
        .unwrap()
        .seed
        .found
        .values()
        .next()
        .unwrap();
    src.seed_and_fetch(seeds_found, &FetchOptions::default(), &|_| {})
        .unwrap();
    let app = a.label("APP", Slot::A).unwrap();
    let io = a.storage.open(&app, true).unwrap();
    io.write_at(off, &[0xA5; 4096]).unwrap();
    io.sync().unwrap();
    install_from(&mut a, &src, &opts, &mut |_, _| Ok(()), &|_, _, _| {}).unwrap();
    assert!(src.stats.seed_mismatch.load(Ordering::SeqCst) >= 1);
    assert!(src.stats.fetched_late.load(Ordering::SeqCst) >= 1);
    // Slot A is damaged now, but B is exactly v2.
    slot_b_is_v2(&s);
}

#[test]
fn a_server_without_ranges_is_detected() {
    let s = setup();
    let (url, served) = serve(std::fs::read(&s.v2).unwrap(), Serve::NoRanges);
    let mut a = agent(&s.dev, &config());
    let r = install_url(
        &mut a,
        &url,
        &install_opts(&url),
        &FetchOptions::default(),
        &|_, _, _| {},
    )
    .unwrap();
    assert!(r.is_none());
    assert_eq!(
        served.requests.load(Ordering::SeqCst),
        1,
        "it stops at the first answer"
    );
}

#[test]
fn an_interrupted_delta_resumes_without_refetching() {
    let s = setup();
    let data = std::fs::read(&s.v2).unwrap();
    // Small requests, one connection: the server fails after the front and a few chunks.
    let fo = FetchOptions {
        connections: 1,
        max_request: 64 << 10,
        max_gap: 0,
    };
    let (url, _) = serve(data.clone(), Serve::FailAfter(5));
    let mut a = agent(&s.dev, &config());
    let e = install_url(&mut a, &url, &install_opts(&url), &fo, &|_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("500"), "{e}");
    // Nothing was written to the slots; the cache holds the chunks fetched so far.
    let (url2, served2) = serve(data, Serve::Ranges);
    let (_, d) = install_url(&mut a, &url2, &install_opts(&url2), &fo, &|_, _, _| {})
        .unwrap()
        .unwrap();
    assert!(d.fetch.resumed >= 3, "{:?}", d.fetch);
    let planned: usize = d.plan.components.iter().map(|c| c.fetch_chunks).sum();
    assert_eq!(d.fetch.chunks + d.fetch.resumed, planned);
    assert!(served2.requests.load(Ordering::SeqCst) < planned + 2);
    slot_b_is_v2(&s);
}
