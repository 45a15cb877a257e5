//! L4T R35/R36 simulated devices: A/B switching, retry countdown and fallback, capsules,
//! torn and mismatched slots, power cuts.

mod common;

use common::*;
use jota_bootctl::faults::FaultPlan;
use jota_bootctl::Target;
use jota_sim::firmware::{self, Outcome};
use jota_tegra::efivar::{
    FwStatus, RootfsStatus, Slot, OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED,
};
use jota_tegra::nvbootctrl::{CapsuleStatus, SlotsInfo};
use jota_tegra::release::L4tVersion;

const M: &str = "orin-nano-8gb";

fn r1() -> std::path::PathBuf {
    release(M, "v1", "1.0.0", None, false)
}
fn r2() -> std::path::PathBuf {
    release(M, "v2", "2.0.0", None, false)
}

#[test]
fn a_to_b_and_back_to_a_moving_both_chains() {
    let (_t, dev) = device(M, &r1());
    assert_eq!(booted(&boot(&dev)), (Slot::A, Slot::A, "1.0.0".into()));
    let mut bc = bootctl(&dev);
    assert_eq!(bc.name(), "l4t-uefi");

    // A -> B
    dev.flash(&r2(), &[Slot::B], ALL).unwrap();
    bc.switch_both(Slot::B).unwrap();
    assert_eq!(bc.active_slot(Target::Bootloader).unwrap(), Slot::B);
    assert_eq!(bc.active_slot(Target::Rootfs).unwrap(), Slot::B);
    assert_eq!(booted(&boot(&dev)), (Slot::B, Slot::B, "2.0.0".into()));
    assert_eq!(bc.current_slot(Target::Bootloader).unwrap(), Slot::B);
    assert_eq!(bc.current_slot(Target::Rootfs).unwrap(), Slot::B);
    assert_eq!(
        std::fs::read_to_string(dev.dir.join("etc/jota-version")).unwrap(),
        "2.0.0\n"
    );
    bc.mark_successful(Target::Rootfs).unwrap();
    bc.mark_successful(Target::Bootloader).unwrap();
    // the successful switch left BootChainFwStatus=0; marking the bootloader good cleared it
    assert_eq!(dev.vars().fw_status().unwrap(), None);

    // B -> A
    bc.switch_both(Slot::A).unwrap();
    assert_eq!(booted(&boot(&dev)), (Slot::A, Slot::A, "1.0.0".into()));
}

#[test]
fn validated_slot_keeps_booting() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    dev.flash(&r2(), &[Slot::B], ALL).unwrap();
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::B).unwrap();
    for _ in 0..8 {
        assert_eq!(booted(&boot(&dev)).1, Slot::B);
        bc.mark_successful(Target::Rootfs).unwrap();
        let st = bc.status(Target::Rootfs).unwrap();
        assert_eq!(st.slot(Slot::B).unwrap().retry_count, Some(3));
    }
}

#[test]
fn never_validated_slot_counts_down_and_falls_back() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    dev.flash(&r2(), &[Slot::B], ALL).unwrap();
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::B).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (_, slot, _) = booted(&boot(&dev));
        let left = bc
            .status(Target::Rootfs)
            .unwrap()
            .slot(Slot::B)
            .unwrap()
            .retry_count;
        seen.push((slot, left));
    }
    // three tries on B (3 -> 2, 1, 0), then the launcher gives up on B and switches back
    assert_eq!(
        seen,
        vec![
            (Slot::B, Some(2)),
            (Slot::B, Some(1)),
            (Slot::B, Some(0)),
            (Slot::A, Some(0))
        ]
    );
    assert_eq!(
        dev.vars().rootfs_status(Slot::B).unwrap(),
        RootfsStatus::Unbootable
    );
    assert_eq!(bc.current_slot(Target::Bootloader).unwrap(), Slot::A);
    let dump = bc.dump_slots_info(Target::Rootfs).unwrap().to_string();
    assert!(
        dump.contains("slot: 1,             retry_count: 0,             status: unbootable"),
        "{dump}"
    );
    // a reinstalled slot can be activated again
    bc.switch_both(Slot::B).unwrap();
    assert_eq!(
        dev.vars().rootfs_status(Slot::B).unwrap(),
        RootfsStatus::Normal
    );
    assert_eq!(booted(&boot(&dev)).1, Slot::B);
}

#[test]
fn a_torn_rootfs_never_boots() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    // power fails while v2 streams into slot B (write #5 of the rootfs is torn)
    dev.faults()
        .unwrap()
        .update(|p| {
            p.power_cut_after_writes = Some(6);
            Ok(())
        })
        .unwrap();
    let e = dev.flash(&r2(), &[Slot::B], OS).unwrap_err();
    assert!(e.to_string().contains("simulated power cut"), "{e}");
    // power comes back: the active slot is untouched
    assert_eq!(booted(&firmware::boot(&dev, true).unwrap()).1, Slot::A);
    // an updater that switches anyway (seed §21.1): the torn slot still never boots
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).1, Slot::A, "{:#?}", r.events);
    let failures = r
        .events
        .iter()
        .filter(|e| e.contains("rootfs slot B fails to boot"))
        .count();
    assert_eq!(failures, 3, "{:#?}", r.events);
    assert!(r
        .events
        .iter()
        .any(|e| e.contains("torn or from another release")));
    assert_eq!(
        dev.vars().rootfs_status(Slot::B).unwrap(),
        RootfsStatus::Unbootable
    );
}

#[test]
fn a_slot_mixing_releases_does_not_boot() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    // new kernel and DTB, old rootfs: modules would not match the kernel
    dev.flash(
        &r2(),
        &[Slot::B],
        &[
            jota_sim::device::Component::Kernel,
            jota_sim::device::Component::Dtb,
        ],
    )
    .unwrap();
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).1, Slot::A);
    assert!(
        r.events
            .iter()
            .any(|e| e.contains("not the one kernel 2.0.0 was built with")),
        "{:#?}",
        r.events
    );
    // new kernel, old DTB
    dev.flash(&r2(), &[Slot::B], &[jota_sim::device::Component::Rootfs])
        .unwrap();
    dev.flash(&r1(), &[Slot::B], &[jota_sim::device::Component::Dtb])
        .unwrap();
    bc.switch_both(Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).1, Slot::A);
    assert!(
        r.events
            .iter()
            .any(|e| e.contains("from different releases")),
        "{:#?}",
        r.events
    );
}

#[test]
fn kernel_for_newer_bootloader_needs_the_capsule() {
    let r36_5 = release(M, "l4t-36.5", "3.0.0", Some("36.5.0"), false);
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    // rootfs + kernel of an L4T 36.5 release, but the QSPI still runs 36.4: no boot
    dev.flash(&r36_5, &[Slot::B], OS).unwrap();
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).1, Slot::A);
    assert!(
        r.events
            .iter()
            .any(|e| e.contains("firmware/kernel mismatch")),
        "{:#?}",
        r.events
    );
}

fn stage_capsule(dev: &jota_sim::SimDevice, rel: &std::path::Path) {
    std::fs::copy(
        rel.join("TEGRA_BL.Cap"),
        dev.dir.join("esp/EFI/UpdateCapsule/TEGRA_BL.Cap"),
    )
    .unwrap();
    let mut v = dev.vars();
    let osi = v.os_indications().unwrap();
    v.set_os_indications(osi | OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
        .unwrap();
}

fn chain_bytes(dev: &jota_sim::SimDevice, slot: Slot) -> Vec<u8> {
    let st = dev.storage();
    let mut all = Vec::new();
    for p in jota_sim::release::T234_BOOTLOADER {
        let part = st
            .find(&jota_sim::device::part_name(
                jota_sim::FirmwareKind::Uefi,
                p,
                slot,
            ))
            .unwrap();
        let mut b = vec![0u8; part.size as usize];
        st.open(&part, false).unwrap().read_at(0, &mut b).unwrap();
        all.extend_from_slice(&b);
    }
    all
}

#[test]
fn capsule_updates_only_the_inactive_chain_and_rootfs_follows() {
    let r3 = release(M, "l4t-36.4.4", "3.0.0", Some("36.4.4"), false);
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    let chain_a = chain_bytes(&dev, Slot::A);
    let chain_b = chain_bytes(&dev, Slot::B);
    dev.flash(&r3, &[Slot::B], OS).unwrap();
    stage_capsule(&dev, &r3);
    let mut bc = bootctl(&dev);
    // with a capsule staged the switch must not set BootChainFwNext (it would cancel it)
    bc.switch_both(Slot::B).unwrap();
    assert_eq!(dev.vars().fw_next().unwrap(), None);
    let r = boot(&dev);
    assert_eq!(
        booted(&r),
        (Slot::B, Slot::B, "3.0.0".into()),
        "{:#?}",
        r.events
    );
    assert_eq!(r.capsules.len(), 1);
    assert_eq!(r.capsules[0].last_attempt_status, 0);
    assert_eq!(r.capsules[0].applied_to, Some(Slot::B));
    // chain A untouched, chain B rewritten
    assert_eq!(chain_bytes(&dev, Slot::A), chain_a);
    assert_ne!(chain_bytes(&dev, Slot::B), chain_b);
    // the capsule file is consumed and the request cleared
    assert!(!dev.dir.join("esp/EFI/UpdateCapsule/TEGRA_BL.Cap").exists());
    assert_eq!(dev.vars().os_indications().unwrap() & 4, 0);
    // nvbootctrl's view: new firmware version, capsule update succeeded
    match bc.dump_slots_info(Target::Bootloader).unwrap() {
        SlotsInfo::Bootloader(b) => {
            assert_eq!(b.current_version, Some(L4tVersion::new(36, 4, 4)));
            assert_eq!(b.capsule_update_status, Some(CapsuleStatus::Success));
            assert_eq!((b.current, b.active), (Slot::B, Slot::B));
        }
        o => panic!("{o:?}"),
    }
    // a downgrade capsule is now refused (the lowest supported version ratcheted up)
    bc.mark_successful(Target::Rootfs).unwrap();
    stage_capsule(&dev, &r1());
    let r = boot(&dev);
    assert_eq!(r.capsules[0].last_attempt_status, 3, "{:#?}", r.events);
    assert_eq!(booted(&r).0, Slot::B);
}

#[test]
fn capsule_is_cancelled_by_a_pending_chain_switch() {
    let r3 = release(M, "l4t-36.4.4", "3.0.0", Some("36.4.4"), false);
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    let chain_b = chain_bytes(&dev, Slot::B);
    stage_capsule(&dev, &r3);
    // what a naive script does: nvbootctrl set-active-boot-slot after staging the capsule
    let mut bc = bootctl(&dev);
    bc.set_active(Target::Bootloader, Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(r.capsules[0].last_attempt_status, 0x1813, "{:#?}", r.events);
    assert_eq!(
        r.capsules[0].status_name,
        "LAS_ERROR_BOOT_CHAIN_UPDATE_CANCELED"
    );
    assert_eq!(
        dev.vars().fw_status().unwrap(),
        Some(FwStatus::CanceledForFmpConflict)
    );
    assert_eq!(chain_bytes(&dev, Slot::B), chain_b);
    assert_eq!(booted(&r).0, Slot::A);
}

#[test]
fn capsule_signed_by_an_untrusted_key_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (k, c) = (d.path().join("k.pem"), d.path().join("c.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rogue",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .unwrap();
    assert!(st.status.success());
    let bup = std::fs::read(r1().join("bl_only_payload")).unwrap();
    let cap =
        jota_sim::release::build_capsule(&bup, L4tVersion::new(36, 4, 4), Some(&(k, c))).unwrap();
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    let chain_b = chain_bytes(&dev, Slot::B);
    std::fs::write(dev.dir.join("esp/EFI/UpdateCapsule/TEGRA_BL.Cap"), cap).unwrap();
    dev.vars().set_os_indications(4).unwrap();
    let r = boot(&dev);
    assert_eq!(r.capsules[0].last_attempt_status, 5, "{:#?}", r.events);
    assert_eq!(chain_bytes(&dev, Slot::B), chain_b);
}

#[test]
fn power_cut_during_capsule_leaves_the_running_chain() {
    let r3 = release(M, "l4t-36.4.4", "3.0.0", Some("36.4.4"), false);
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    stage_capsule(&dev, &r3);
    dev.faults()
        .unwrap()
        .update(|p| {
            // the OsIndications update and the capsule removal come first
            p.power_cut_after_writes = Some(5);
            Ok(())
        })
        .unwrap();
    let r = boot(&dev);
    assert!(matches!(r.outcome, Outcome::PowerLost { .. }), "{:#?}", r);
    let r = boot(&dev);
    assert!(r.cold);
    assert_eq!(booted(&r).0, Slot::A, "{:#?}", r.events);
    assert!(r.capsules.is_empty());
}

#[test]
fn stale_chain_status_makes_a_switch_request_a_no_op() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    dev.flash(&r2(), &[Slot::B], ALL).unwrap();
    // left over from an earlier switch, never deleted by the firmware
    let mut v = dev.vars();
    v.set_fw_status(FwStatus::Success).unwrap();
    v.set_fw_next(Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).0, Slot::A);
    assert!(
        r.events.iter().any(|e| e.contains("ignored")),
        "{:#?}",
        r.events
    );
    // jota's switch clears the stale status first
    bootctl(&dev).switch_both(Slot::B).unwrap();
    assert_eq!(booted(&boot(&dev)).0, Slot::B);
}

#[test]
fn watchdog_shorter_than_boot_time_rolls_back() {
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    dev.flash(&r2(), &[Slot::B], ALL).unwrap();
    bootctl(&dev).switch_both(Slot::B).unwrap();
    dev.faults()
        .unwrap()
        .update(|p| {
            *p = FaultPlan {
                watchdog_timeout_s: Some(60),
                boot_time_s: Some(95),
                ..Default::default()
            };
            Ok(())
        })
        .unwrap();
    let r = boot(&dev);
    // every attempt dies in the watchdog, on B and then on A too: recovery
    assert!(
        r.events.iter().any(|e| e.contains("watchdog")),
        "{:#?}",
        r.events
    );
    assert!(
        matches!(r.outcome, Outcome::Recovery { .. }),
        "{:?}",
        r.outcome
    );
    // a longer watchdog timeout (seed §21.2's fix) and the device comes back
    dev.faults()
        .unwrap()
        .update(|p| {
            p.watchdog_timeout_s = Some(180);
            Ok(())
        })
        .unwrap();
    let mut bc = bootctl(&dev);
    bc.switch_both(Slot::A).unwrap();
    bc.set_active(Target::Rootfs, Slot::A).unwrap();
    let mut v = dev.vars();
    v.set_rootfs_status(Slot::B, RootfsStatus::Normal).unwrap();
    assert!(matches!(
        firmware::boot(&dev, true).unwrap().outcome,
        Outcome::Booted { .. }
    ));
}

#[test]
fn health_follows_the_release_and_injected_faults() {
    let bad = release(M, "bad", "2.1.0", None, true);
    let (_t, dev) = device(M, &r1());
    boot(&dev);
    assert!(firmware::health(&dev).unwrap().is_ok());
    dev.flash(&bad, &[Slot::B], ALL).unwrap();
    bootctl(&dev).switch_both(Slot::B).unwrap();
    assert_eq!(booted(&boot(&dev)).2, "2.1.0");
    assert!(firmware::health(&dev)
        .unwrap()
        .unwrap_err()
        .contains("2.1.0"));
    dev.faults()
        .unwrap()
        .update(|p| {
            p.health_ok = Some(true);
            Ok(())
        })
        .unwrap();
    assert!(firmware::health(&dev).unwrap().is_ok());
    dev.faults()
        .unwrap()
        .update(|p| {
            p.health_ok = Some(false);
            Ok(())
        })
        .unwrap();
    assert!(firmware::health(&dev).unwrap().is_err());
}

#[test]
fn every_model_creates_and_boots() {
    for m in jota_sim::MODELS {
        let rel = release(m.name, "base", "1.0.0", None, false);
        let (_t, dev) = device(m.name, &rel);
        let r = boot(&dev);
        assert_eq!(booted(&r).1, Slot::A, "{}", m.name);
        let bc = bootctl(&dev);
        let dump = bc.dump_slots_info(Target::Rootfs).unwrap();
        // what jota prints parses back with the nvbootctrl parser
        assert_eq!(
            SlotsInfo::parse(&dump.to_string()).unwrap(),
            dump,
            "{}",
            m.name
        );
    }
}
