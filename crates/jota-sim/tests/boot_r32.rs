//! L4T R32 simulated devices: cboot with slot metadata (TX2/Xavier) and U-Boot with RAUC's
//! BOOT_ORDER scheme (Nano).

mod common;

use common::*;
use jota_bootctl::Target;
use jota_tegra::efivar::Slot;
use jota_tegra::nvbootctrl::SlotsInfo;

#[test]
fn cboot_smd_switch_validate_and_fallback() {
    let m = "xavier-r32";
    let (r1, r2) = (
        release(m, "v1", "1.0.0", None, false),
        release(m, "v2", "2.0.0", None, false),
    );
    let (_t, dev) = device(m, &r1);
    assert_eq!(booted(&boot(&dev)).1, Slot::A);
    let mut bc = bootctl(&dev);
    assert_eq!(bc.name(), "r32-smd");
    // factory state prints like the nvbootctrl sample of an R32 Xavier
    let dump = bc.dump_slots_info(Target::Bootloader).unwrap().to_string();
    assert!(dump.starts_with("magic:0x43424e00,             version: 3             features: 3             num_slots: 2\n"), "{dump}");
    assert_eq!(
        SlotsInfo::parse(&dump).unwrap(),
        bc.dump_slots_info(Target::Bootloader).unwrap()
    );

    dev.flash(&r2, &[Slot::B], ALL).unwrap();
    bc.set_active(Target::Bootloader, Slot::B).unwrap();
    let st = bc.status(Target::Bootloader).unwrap();
    assert_eq!(
        (st.active, st.slot(Slot::B).unwrap().successful),
        (Slot::B, Some(false))
    );
    assert_eq!(booted(&boot(&dev)), (Slot::B, Slot::B, "2.0.0".into()));
    assert_eq!(bc.current_slot(Target::Rootfs).unwrap(), Slot::B);
    assert!(std::fs::read_to_string(dev.dir.join("proc/cmdline"))
        .unwrap()
        .contains("boot.slot_suffix=_b"));
    bc.mark_successful(Target::Bootloader).unwrap();
    let st = bc.status(Target::Bootloader).unwrap();
    assert_eq!(st.slot(Slot::B).unwrap().successful, Some(true));
    assert_eq!(st.slot(Slot::B).unwrap().retry_count, Some(7));

    // back to A without marking it: 7 attempts, then cboot falls back to B
    bc.set_active(Target::Bootloader, Slot::A).unwrap();
    let mut slots = Vec::new();
    for _ in 0..8 {
        slots.push(booted(&boot(&dev)).1);
    }
    assert_eq!(slots, [[Slot::A; 7].as_slice(), &[Slot::B]].concat());
}

#[test]
fn cboot_torn_bootloader_chain_falls_back() {
    let m = "tx2-r32";
    let (r1, r2) = (
        release(m, "v1", "1.0.0", None, false),
        release(m, "v2", "2.0.0", None, false),
    );
    let (_t, dev) = device(m, &r1);
    boot(&dev);
    dev.faults()
        .unwrap()
        .update(|p| {
            p.power_cut_after_writes = Some(2);
            Ok(())
        })
        .unwrap();
    assert!(dev.flash(&r2, &[Slot::B], ALL).is_err());
    assert_eq!(
        booted(&jota_sim::firmware::boot(&dev, true).unwrap()).1,
        Slot::A
    );
    let mut bc = bootctl(&dev);
    bc.set_active(Target::Bootloader, Slot::B).unwrap();
    let r = boot(&dev);
    assert_eq!(booted(&r).1, Slot::A, "{:#?}", r.events);
    assert!(r.events.iter().any(|e| e.contains("slot B fails to boot")));
}

#[test]
fn uboot_rauc_scheme_switch_and_fallback() {
    let m = "nano-r32";
    let (r1, r2) = (
        release(m, "v1", "1.0.0", None, false),
        release(m, "v2", "2.0.0", None, false),
    );
    let (_t, dev) = device(m, &r1);
    assert_eq!(booted(&boot(&dev)).1, Slot::A);
    let mut bc = bootctl(&dev);
    assert_eq!(bc.name(), "uboot-env");
    assert!(std::fs::read_to_string(dev.dir.join("proc/cmdline"))
        .unwrap()
        .contains("rauc.slot=A"));
    // U-Boot's script took one attempt off A
    assert_eq!(
        bc.status(Target::Rootfs)
            .unwrap()
            .slot(Slot::A)
            .unwrap()
            .retry_count,
        Some(2)
    );
    bc.mark_successful(Target::Rootfs).unwrap();
    assert_eq!(
        bc.status(Target::Rootfs)
            .unwrap()
            .slot(Slot::A)
            .unwrap()
            .retry_count,
        Some(3)
    );

    dev.flash(&r2, &[Slot::B], OS).unwrap();
    bc.switch_both(Slot::B).unwrap();
    assert_eq!(bc.active_slot(Target::Rootfs).unwrap(), Slot::B);
    assert_eq!(booted(&boot(&dev)), (Slot::B, Slot::B, "2.0.0".into()));
    // not validated: B's three attempts run out, A (still in BOOT_ORDER) takes over
    let slots: Vec<Slot> = (0..3).map(|_| booted(&boot(&dev)).1).collect();
    assert_eq!(slots, [Slot::B, Slot::B, Slot::A]);
    assert!(
        !bc.status(Target::Rootfs)
            .unwrap()
            .slot(Slot::B)
            .unwrap()
            .bootable
    );
}
