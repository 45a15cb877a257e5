//! The power-cut sweep: cut power after the k-th write, for hundreds of k spread over a whole
//! update (install, capsule staging, switch, first boot with the capsule, validation), then
//! power on and let the agent recover. The device must always boot a complete, verified old
//! or new version and end on the new one. Zero bricks.

mod common;
use common::*;
use jota_agent::validate::Verdict;
use jota_bootctl::faults::{FaultPlan, Faults};
use jota_sim::firmware::{boot, Outcome};
use jota_sim::SimDevice;
use std::path::Path;

/// Runs an update to the end from whatever state the device is in; returns the boots seen
/// (slot, version). Panics on anything but a clean boot of v1 or v2.
fn drive(dev: &SimDevice, c: &jota_agent::Config, bundle: &Path, k: u64) -> Vec<String> {
    let mut seen = Vec::new();
    let _ = try_install(dev, c, bundle);
    for _ in 0..16 {
        let r = boot(dev, false).unwrap();
        let (slot, version) = match r.outcome {
            Outcome::Booted { slot, version, .. } => (slot, version),
            Outcome::PowerLost { .. } => continue,
            o => panic!(
                "cut at write {k}: the device does not boot: {o:?}\n{:#?}",
                r.events
            ),
        };
        assert!(
            version == "1.0.0" || version == "2.0.0",
            "cut at write {k}: booted {version}"
        );
        seen.push(format!("{slot}:{version}"));
        let rep = match try_validate(dev, c) {
            Ok(r) => r,
            // Power went during validation: the next boot validates again.
            Err(_) if jota_agent::install::power_lost(&dev.storage()) => continue,
            Err(e) => panic!("cut at write {k}: validate: {e}"),
        };
        match rep.verdict {
            Verdict::Committed { .. } => return seen,
            Verdict::NothingPending { .. } if version == "2.0.0" => return seen,
            Verdict::Failed { .. } => {}
            _ => {
                // Interrupted, rolled back, or never started: install again (resuming).
                if let Err(e) = try_install(dev, c, bundle) {
                    assert!(
                        jota_agent::install::power_lost(&dev.storage()),
                        "cut at write {k}: reinstall: {e}"
                    );
                }
            }
        }
    }
    panic!("cut at write {k}: no stable state after 16 boots: {seen:?}");
}

fn arm(dev: &SimDevice, at: u64) {
    Faults::create(
        &dev.dir,
        &FaultPlan {
            power_cut_after_writes: Some(at),
            ..FaultPlan::default()
        },
    )
    .unwrap();
}

fn sweep(model: &str, min_points: usize) {
    let d = tempfile::tempdir().unwrap();
    let template = device(
        &d.path().join("template"),
        model,
        &release(model, "1.0.0", false),
    );
    let bundle = bundle_of(
        &release(model, "2.0.0", false),
        &d.path().join("v2.jota"),
        "2.0.0",
        &[],
        None,
    );
    let mut c = config();
    c.write_block_kib = 8;

    // Count the writes of a whole update, first boot and validation included.
    let probe = clone_device(&template.dir, &d.path().join("probe"));
    arm(&probe, u64::MAX);
    let boots = drive(&probe, &c, &bundle, 0);
    assert_eq!(boots.last().map(String::as_str), Some("B:2.0.0"));
    let total = probe.faults().unwrap().load().unwrap().writes_seen;
    assert!(
        total as usize >= min_points,
        "{model}: only {total} writes in an update"
    );

    let step = (total as f64 / min_points as f64).max(1.0);
    let mut ks: Vec<u64> = (0..min_points)
        .map(|i| 1 + (i as f64 * step) as u64)
        .collect();
    ks.push(total);
    ks.dedup();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..2 {
            let (ks, next, outcomes, template, bundle, c, dir) =
                (&ks, &next, &outcomes, &template, &bundle, &c, d.path());
            s.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&k) = ks.get(i) else { break };
                let at = dir.join(format!("w{w}-{k}"));
                let dev = clone_device(&template.dir, &at);
                arm(&dev, k);
                let boots = drive(&dev, c, bundle, k);
                assert_eq!(
                    boots.last().map(String::as_str),
                    Some("B:2.0.0"),
                    "cut at write {k}"
                );
                outcomes.lock().unwrap().push((k, boots));
                std::fs::remove_dir_all(&at).unwrap();
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    let via_old = outcomes
        .iter()
        .filter(|(_, b)| b.iter().any(|s| s.ends_with("1.0.0")))
        .count();
    println!(
        "power-cut sweep ({model}): {} cut points over {total} writes, 0 bricks; {via_old} recovered through a boot of 1.0.0, every one ended committed on 2.0.0",
        outcomes.len()
    );
    assert!(outcomes.len() >= min_points);
}

#[test]
fn power_cut_sweep_orin_uefi_capsule() {
    sweep("orin-nano-8gb", 500);
}

#[test]
fn power_cut_sweep_xavier_cboot_bup() {
    sweep("xavier-r32", 120);
}
