//! Every sample of real tool output in `tests/fixtures/samples/` parses to the right
//! typed result. Provenance of each file: `tests/fixtures/SOURCES.md`.

use jota_tegra::bootconf::NvBootControlConf;
use jota_tegra::efivar::{
    attr, EfiVariable, L4tVar, L4tVars, MemVarStore, RootfsStatus, Slot, VarName,
    OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED,
};
use jota_tegra::esrt::FirmwareReport;
use jota_tegra::nvbootctrl::{parse_transcript, CapsuleStatus, SlotStatus, SlotsInfo};
use jota_tegra::release::{L4tVersion, NvTegraRelease};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/samples")
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

/// Files covered by a test below; a new sample must be added here with its test.
const COVERED: &[&str] = &[
    "efivar_raw_bytes.txt",
    "nv_boot_control.conf_orin_agx_r35.txt",
    "nv_boot_control.conf_xavier_r35.txt",
    "nv_tegra_release_lines.txt",
    "nv_tegra_release_r36.2.0.txt",
    "nvbootctrl_dump-slots-info_r32_smd.txt",
    "nvbootctrl_dump-slots-info_r32_smd_slot1_active.txt",
    "nvbootctrl_dump-slots-info_r35.4.1_bootloader.txt",
    "nvbootctrl_dump-slots-info_r35.4.1_xavier_bootloader_and_rootfs.txt",
    "nvbootctrl_dump-slots-info_r36.3.0_bootloader.txt",
    "nvbootctrl_dump-slots-info_r36.3_orin_rootfs_unbootable.txt",
    "ota-check-firmware_r35.6.2_orin_agx.txt",
];

#[test]
fn every_sample_is_covered() {
    let mut found: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, COVERED);
}

fn single(name: &str) -> SlotsInfo {
    let v = parse_transcript(&sample(name)).unwrap();
    assert_eq!(v.len(), 1, "{name}");
    v.into_iter().next().unwrap().info
}

#[test]
fn r32_smd_dumps() {
    for (name, active) in [
        ("nvbootctrl_dump-slots-info_r32_smd.txt", 0),
        ("nvbootctrl_dump-slots-info_r32_smd_slot1_active.txt", 1),
    ] {
        let text = sample(name);
        let SlotsInfo::Smd(s) = SlotsInfo::parse(&text).unwrap() else {
            panic!("{name} is not an SMD dump")
        };
        assert_eq!((s.magic, s.version, s.features), (0x4342_4e00, 3, 3));
        assert_eq!(s.slots.len(), 2);
        assert_eq!(s.slots[active].priority, 15);
        assert_eq!(s.slots[1 - active].priority, 14);
        assert_eq!(s.slots[0].suffix, "_a");
        assert_eq!(s.slots[1].suffix, "_b");
        assert!(s
            .slots
            .iter()
            .all(|x| x.retry_count == 7 && x.boot_successful == 1));
        // and jota prints it the same way nvbootctrl did
        assert_eq!(SlotsInfo::Smd(s).to_string(), text);
    }
}

#[test]
fn r35_and_r36_bootloader_dumps() {
    for (name, ver, cap) in [
        (
            "nvbootctrl_dump-slots-info_r35.4.1_bootloader.txt",
            L4tVersion::new(35, 4, 1),
            CapsuleStatus::Success,
        ),
        (
            "nvbootctrl_dump-slots-info_r36.3.0_bootloader.txt",
            L4tVersion::new(36, 3, 0),
            CapsuleStatus::None,
        ),
    ] {
        let text = sample(name);
        let info = single(name);
        let SlotsInfo::Bootloader(b) = &info else {
            panic!("{name}")
        };
        assert_eq!(b.current_version, Some(ver));
        assert_eq!(b.capsule_update_status, Some(cap));
        assert_eq!((b.current, b.active), (Slot::A, Slot::A));
        assert_eq!(b.slots.len(), 2);
        assert!(b.slots.iter().all(|s| s.status == SlotStatus::Normal));
        assert_eq!(info.to_string(), text);
    }
}

#[test]
fn xavier_transcript_has_both_targets() {
    let v = parse_transcript(&sample(
        "nvbootctrl_dump-slots-info_r35.4.1_xavier_bootloader_and_rootfs.txt",
    ))
    .unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        v[0].command.as_deref(),
        Some("jetson-agx-xavier:/# nvbootctrl dump-slots-info")
    );
    let SlotsInfo::Bootloader(b) = &v[0].info else {
        panic!()
    };
    assert_eq!(b.capsule_update_status, Some(CapsuleStatus::None));
    assert_eq!(b.current_version, Some(L4tVersion::new(35, 4, 1)));
    let SlotsInfo::Rootfs(r) = &v[1].info else {
        panic!()
    };
    assert_eq!((r.current, r.active), (Slot::A, Slot::A));
    assert!(r
        .slots
        .iter()
        .all(|s| s.retry_count == 3 && s.status == SlotStatus::Normal));
}

#[test]
fn orin_rootfs_slot_a_unbootable() {
    let info = single("nvbootctrl_dump-slots-info_r36.3_orin_rootfs_unbootable.txt");
    let SlotsInfo::Rootfs(r) = info else { panic!() };
    assert_eq!((r.current, r.active), (Slot::B, Slot::B));
    assert_eq!(
        (r.slots[0].retry_count, &r.slots[0].status),
        (0, &SlotStatus::Unbootable)
    );
    assert_eq!(
        (r.slots[1].retry_count, &r.slots[1].status),
        (3, &SlotStatus::Normal)
    );
}

#[test]
fn nv_tegra_release_files() {
    let r = NvTegraRelease::parse(&sample("nv_tegra_release_r36.2.0.txt")).unwrap();
    assert_eq!(r.version, L4tVersion::new(36, 2, 0));
    assert_eq!(r.kernel_variant.as_deref(), Some("oot"));
    let want = [
        (L4tVersion::new(32, 6, 1), "t186ref", "27863751"),
        (L4tVersion::new(35, 4, 1), "t186ref", "33958178"),
        (L4tVersion::new(35, 5, 0), "t186ref", "35550185"),
        (L4tVersion::new(36, 4, 0), "generic", "37537400"),
    ];
    let lines: Vec<String> = sample("nv_tegra_release_lines.txt")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), want.len());
    for (l, (v, board, gcid)) in lines.iter().zip(want) {
        let r = NvTegraRelease::parse(l).unwrap();
        assert_eq!(r.version, v);
        assert_eq!(r.board.as_deref(), Some(board));
        assert_eq!(r.gcid.as_deref(), Some(gcid));
        assert_eq!(r.eabi.as_deref(), Some("aarch64"));
        assert_eq!(r.kind, "release");
    }
}

#[test]
fn nv_boot_control_conf_files() {
    let c = NvBootControlConf::parse(&sample("nv_boot_control.conf_orin_agx_r35.txt")).unwrap();
    assert_eq!(
        c.tnspec.as_deref(),
        Some("3701-500-0005-A.0-1-0-cti-orin-agx-agx201-00-")
    );
    assert_eq!(c.chip_id, Some(0x23));
    assert_eq!(c.ota_boot_device.as_deref(), Some("/dev/mtdblock0"));
    assert_eq!(c.ota_gpt_device.as_deref(), Some("/dev/mtdblock0"));
    let t = jota_tegra::board::TnSpec::parse(c.tnspec.as_deref().unwrap()).unwrap();
    assert_eq!(t.board.board_id, "3701");
    assert_eq!(t.target, "cti-orin-agx-agx201-00");
    assert_eq!(
        t.compat_spec().as_deref(),
        Some("3701--0005--1--cti-orin-agx-agx201-00-")
    );

    let c = NvBootControlConf::parse(&sample("nv_boot_control.conf_xavier_r35.txt")).unwrap();
    assert_eq!(c.chip_id, Some(0x19));
    assert_eq!(c.ota_boot_device.as_deref(), Some("/dev/mmcblk0boot0"));
    assert_eq!(c.ota_gpt_device.as_deref(), Some("/dev/mmcblk0boot1"));
}

/// The derived reference lists `<file name> (<what>): <hex bytes or "quoted text">`.
#[test]
fn efivar_reference_bytes_decode() {
    let mut store = MemVarStore::default();
    let mut seen = 0;
    for line in sample("efivar_raw_bytes.txt").lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, rest) = line.split_once(": ").unwrap();
        let file_name = head.split_whitespace().next().unwrap();
        let what = head[file_name.len()..].trim().trim_start_matches('(');
        let name = VarName::from_file_name(file_name).unwrap();
        let mut bytes = Vec::new();
        for tok in rest.split_whitespace() {
            if tok.starts_with('"') {
                let q = rest.split('"').nth(1).unwrap();
                bytes.extend_from_slice(q.as_bytes());
                break;
            }
            match u8::from_str_radix(tok, 16) {
                Ok(b) if tok.len() == 2 => bytes.push(b),
                _ => break, // trailing comment
            }
        }
        let var = EfiVariable::from_efivarfs(&name, &bytes).unwrap();
        assert_eq!(var.to_efivarfs(), bytes);
        seen += 1;
        let vars = {
            let mut s = MemVarStore::default();
            s.vars.insert(name.clone(), var.clone());
            L4tVars::new(s)
        };
        match name.name.as_str() {
            "OsIndications" if what.starts_with("request") => {
                assert_eq!(
                    vars.os_indications().unwrap(),
                    OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED
                );
                assert!(vars.capsule_requested().unwrap());
            }
            "OsIndications" => assert_eq!(vars.os_indications().unwrap(), 0),
            "BootChainFwCurrent" => {
                assert_eq!(var.attributes, attr::BS_RT);
                assert_eq!(vars.fw_current().unwrap(), Some(Slot::A));
            }
            "BootChainFwNext" => assert_eq!(vars.fw_next().unwrap(), Some(Slot::B)),
            "RootfsStatusSlotA" if what.starts_with("unbootable") => {
                assert_eq!(
                    vars.rootfs_status(Slot::A).unwrap(),
                    RootfsStatus::Unbootable
                )
            }
            "RootfsStatusSlotA" => {
                assert_eq!(vars.rootfs_status(Slot::A).unwrap(), RootfsStatus::Normal)
            }
            "TegraPlatformSpec" => assert_eq!(
                vars.platform_spec().unwrap().as_deref(),
                Some("3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-")
            ),
            other => panic!("sample has a variable no test checks: {other}"),
        }
        store.vars.insert(name, var);
    }
    assert_eq!(seen, 7);
    assert_eq!(
        L4tVar::RootfsStatusSlotA.var_name().file_name(),
        "RootfsStatusSlotA-781e084c-a330-417c-b678-38e696380cb9"
    );
}

#[test]
fn ota_check_firmware_report() {
    let r = FirmwareReport::parse(&sample("ota-check-firmware_r35.6.2_orin_agx.txt")).unwrap();
    assert_eq!(r.current_firmware.as_deref(), Some("35.6.2-d38eb20c0441"));
    assert_eq!(
        r.platform_spec.as_deref(),
        Some("3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-")
    );
    assert_eq!(
        r.compat_spec.as_deref(),
        Some("3701-300-0000--1--jetson-agx-orin-devkit-")
    );
    assert_eq!(r.fw_current, Some(Slot::A));
    assert_eq!(r.fw_next, None);
    assert_eq!(r.fw_status, None);
    assert_eq!(r.capsule_pending, Some(false));
    assert_eq!(r.esrt_fw_version, Some(L4tVersion::new(35, 6, 2)));
    assert_eq!(r.esrt_last_attempt_status.as_deref(), Some("SUCCESS"));
    assert_eq!(r.all["ESRT fw_class"], jota_tegra::esrt::T234_FW_CLASS);
    // the compat spec the firmware holds is exactly what jota generates from the full spec
    let t = jota_tegra::board::TnSpec::parse(r.platform_spec.as_deref().unwrap()).unwrap();
    assert_eq!(t.compat_spec(), r.compat_spec);
}
