use super::*;
use proptest::prelude::*;

fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn resolve(text: &str, kv: &[(&str, &str)]) -> Resolved {
    let l = Layout::parse_with(text, &vars(kv)).unwrap();
    assert_eq!(l.devices.len(), 1);
    l.devices[0].resolve(None).unwrap()
}

#[test]
fn t234_qspi_offsets_match_l4t() {
    let r = resolve(builtin::T234_QSPI, &[]);
    assert_eq!(r.kind, "spi");
    assert_eq!(r.size, Some(64 << 20));
    assert_eq!(r.partitions.len(), 61);
    // (name, start, size) — entries 49..60 are NVIDIA's own GPT dump of an R36 QSPI
    let want: &[(&str, u64, u64)] = &[
        ("BCT", 0x0000000, 1048576),
        ("A_mb1", 0x0100000, 524288),
        ("A_psc_bl1", 0x0180000, 262144),
        ("A_MB1_BCT", 0x01C0000, 131072),
        ("A_MEM_BCT", 0x01E0000, 262144),
        ("A_tsec-fw", 0x0220000, 1048576),
        ("A_nvdec", 0x0320000, 1048576),
        ("A_mb2", 0x0420000, 524288),
        ("A_xusb-fw", 0x04A0000, 262144),
        ("A_bpmp-fw", 0x04E0000, 1572864),
        ("A_bpmp-fw-dtb", 0x0660000, 4194304),
        ("A_psc-fw", 0x0A60000, 786432),
        ("A_mts-mce", 0x0B20000, 524288),
        ("A_sc7", 0x0BA0000, 196608),
        ("A_pscrf", 0x0BD0000, 196608),
        ("A_mb2rf", 0x0C00000, 131072),
        ("A_cpu-bootloader", 0x0C20000, 3670016),
        ("A_secure-os", 0x0FA0000, 4194304),
        ("A_smm-fw", 0x13A0000, 2097152),
        ("A_eks", 0x15A0000, 262144),
        ("A_dce-fw", 0x15E0000, 5242880),
        ("A_spe-fw", 0x1AE0000, 589824),
        ("A_rce-fw", 0x1B70000, 1048576),
        ("A_adsp-fw", 0x1C70000, 2097152),
        ("A_pva-fw", 0x1E70000, 262144),
        ("A_reserved_on_boot", 0x1EB0000, 1114112),
        ("B_mb1", 0x1FC0000, 524288),
        ("B_adsp-fw", 0x3B30000, 2097152),
        ("B_pva-fw", 0x3D30000, 262144),
        ("B_reserved_on_boot", 0x3D70000, 1114112),
        ("uefi_variables", 0x3E80000, 262144),
        ("uefi_ftw", 0x3EC0000, 524288),
        ("reserved", 0x3F40000, 196608),
        ("worm", 0x3F70000, 196608),
        ("BCT-boot-chain_backup", 0x3FA0000, 65536),
        ("reserved_partition", 0x3FB0000, 65536),
        ("secondary_gpt_backup", 0x3FC0000, 65536),
        ("B_VER", 0x3FD0000, 65536),
        ("A_VER", 0x3FE0000, 65536),
        ("secondary_gpt", 0x3FF0000, 65536),
    ];
    for (name, start, size) in want {
        let p = r.get(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!((p.start, p.size), (*start, Some(*size)), "{name}");
    }
    // each B partition is its A partition one boot chain (0x1EC0000) further
    for pair in &r.ab_pairs {
        let (a, b) = (r.get(&pair.a).unwrap(), r.get(&pair.b).unwrap());
        if pair.base != "VER" {
            assert_eq!(b.start - a.start, 0x1EC0000, "{}", pair.base);
        }
    }
    assert_eq!(r.ab_pairs.len(), 26);
    // boot device: numbered 1..=60 in order, the GPT itself unnumbered
    assert_eq!(r.get("BCT").unwrap().number, Some(1));
    assert_eq!(r.get("A_VER").unwrap().number, Some(60));
    assert_eq!(r.get("secondary_gpt").unwrap().number, None);
    assert_eq!(
        r.get("A_cpu-bootloader").unwrap().ab,
        Some((Slot::A, "cpu-bootloader".into()))
    );
    assert_eq!(r.get("BCT").unwrap().ab, None);
}

#[test]
fn t234_nvme_matches_a_real_orin_nx_disk() {
    // fdisk -l of a 1 TB NVMe flashed with the stock single-rootfs layout, RECSIZE 80 MiB
    let r = resolve(
        builtin::T234_NVME,
        &[
            ("EXT_NUM_SECTORS", "1953525168"),
            ("RECSIZE", "83886080"),
            ("RECDTB-NAME", "recovery-dtb"),
            ("RECNAME", "recovery"),
        ],
    );
    let lba = |n: &str| {
        let p = r.get(n).unwrap_or_else(|| panic!("{n}"));
        (p.number.unwrap(), p.start / 512, p.end().unwrap() / 512 - 1)
    };
    assert_eq!(lba("APP"), (1, 3050048, 1953525127));
    assert_eq!(lba("A_kernel"), (2, 40, 262183));
    assert_eq!(lba("A_kernel-dtb"), (3, 262184, 263719));
    assert_eq!(lba("A_reserved_on_user"), (4, 263720, 328487));
    assert_eq!(lba("B_kernel"), (5, 328488, 590631));
    assert_eq!(lba("B_kernel-dtb"), (6, 590632, 592167));
    assert_eq!(lba("B_reserved_on_user"), (7, 592168, 656935));
    assert_eq!(lba("recovery"), (8, 656936, 820775));
    assert_eq!(lba("recovery-dtb"), (9, 820776, 821799));
    assert_eq!(lba("esp"), (10, 821800, 952871));
    assert_eq!(lba("recovery_alt"), (11, 952872, 1116711));
    assert_eq!(lba("recovery-dtb_alt"), (12, 1116712, 1117735));
    assert_eq!(lba("esp_alt"), (13, 1117736, 1248807));
    assert_eq!(lba("UDA"), (14, 1248832, 2068031));
    assert_eq!(lba("reserved"), (15, 2068032, 3050047));
    assert!(r.get("APP").unwrap().fill_to_end);
    let gpt = r.get("secondary_gpt").unwrap();
    assert_eq!((gpt.start / 512, gpt.size), (1953525168 - 33, Some(16896)));
    assert_eq!(
        r.get("esp").unwrap().partition_type_guid.as_deref(),
        Some("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    );
}

#[test]
fn t234_nvme_rootfs_ab_places_both_rootfs_slots() {
    let app = 16u64 << 30;
    let r = resolve(
        builtin::T234_NVME_ROOTFS_AB,
        &[
            ("EXT_NUM_SECTORS", &(1000215216u64).to_string()),
            ("RECSIZE", "83886080"),
            ("RECNAME", "recovery"),
            ("RECDTB-NAME", "recovery-dtb"),
            ("APPSIZE", &app.to_string()),
        ],
    );
    let a = r.get("APP").unwrap();
    let b = r.get("APP_b").unwrap();
    assert_eq!((a.number, b.number), (Some(1), Some(2)));
    assert_eq!(a.start, 3050048 * 512);
    assert_eq!(a.size, Some(app));
    assert_eq!(b.start, (a.start + app).div_ceil(16384) * 16384);
    assert!(!a.fill_to_end && !b.fill_to_end);
    assert_eq!(r.get("A_kernel").unwrap().number, Some(3));
    assert_eq!(r.get("A_kernel").unwrap().start, 40 * 512);
    let pairs: Vec<_> = r
        .ab_pairs
        .iter()
        .map(|p| (p.base.as_str(), p.a.as_str(), p.b.as_str()))
        .collect();
    assert!(pairs.contains(&("APP", "APP", "APP_b")));
    assert!(pairs.contains(&("kernel", "A_kernel", "B_kernel")));
    assert!(pairs.contains(&("kernel-dtb", "A_kernel-dtb", "B_kernel-dtb")));
    // recovery and recovery_alt are not an A/B pair, esp/esp_alt neither
    assert!(!pairs.iter().any(|p| p.0 == "recovery" || p.0 == "esp"));
}

#[test]
fn unknown_device_size_leaves_tail_sizes_open() {
    let r = resolve(
        builtin::T234_NVME_ROOTFS_AB,
        &[("RECSIZE", "83886080"), ("APPSIZE", "1073741824")],
    );
    assert_eq!(r.size, None);
    assert_eq!(r.get("APP").unwrap().start, 3050048 * 512);
    assert_eq!(r.get("secondary_gpt").unwrap().size, None);
}

#[test]
fn missing_placeholders_are_listed_together() {
    let l = Layout::parse(builtin::T234_NVME_ROOTFS_AB).unwrap();
    let e = l.devices[0].resolve(None).unwrap_err().to_string();
    assert!(e.contains("APPSIZE (APP, APP_b)"), "{e}");
    assert!(e.contains("RECSIZE (RECNAME, RECNAME_alt)"), "{e}");
    // a fill-to-end partition needs no size
    let l = Layout::parse_with(builtin::T234_NVME, &vars(&[("RECSIZE", "1048576")])).unwrap();
    l.devices[0].resolve(Some(64 << 30)).unwrap();
}

fn dev(kind: &str, num: &str, parts: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<partition_layout version=\"01.00.0000\">\n<device type=\"{kind}\" instance=\"0\" sector_size=\"512\" num_sectors=\"{num}\">\n{parts}</device>\n</partition_layout>\n"
    )
}

fn p(name: &str, body: &str) -> String {
    format!("<partition name=\"{name}\" type=\"data\">\n{body}\n</partition>\n")
}

#[test]
fn alignment_start_location_and_rounding() {
    let x = dev(
        "spi",
        "131072",
        &[
            p("a", "<size> 1000 </size>"),
            p(
                "b",
                "<size>0x200</size><align_boundary> 16384 </align_boundary>",
            ),
            p(
                "c",
                "<size> 512 </size><start_location> 0x10000 </start_location>",
            ),
            p("d", "<size> 512 </size>"),
        ]
        .concat(),
    );
    let r = resolve(&x, &[]);
    let at = |n: &str| (r.get(n).unwrap().start, r.get(n).unwrap().size.unwrap());
    assert_eq!(at("a"), (0, 1024)); // rounded up to sectors
    assert_eq!(at("b"), (16384, 512)); // aligned from the device start, gap left
    assert_eq!(at("c"), (0x10000, 512)); // absolute, gap left
    assert_eq!(at("d"), (0x10200, 512));
}

#[test]
fn overlaps_and_overflows_are_errors_naming_the_partition() {
    let x = dev(
        "spi",
        "131072",
        &[
            p("a", "<size> 65536 </size>"),
            p(
                "b",
                "<size> 512 </size><start_location> 0x8000 </start_location>",
            ),
        ]
        .concat(),
    );
    let e = Layout::parse(&x).unwrap().devices[0]
        .resolve(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("partition b") && e.contains("overlaps"), "{e}");

    let x = dev("spi", "128", &p("big", "<size> 1048576 </size>"));
    let e = Layout::parse(&x).unwrap().devices[0]
        .resolve(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partition big") && e.contains("beyond the device"),
        "{e}"
    );

    let x = dev(
        "nvme",
        "2048",
        &[
            p(
                "a",
                "<size> 512 </size><allocation_attribute> 0x808 </allocation_attribute>",
            ),
            p("b", "<size> 512 </size>"),
        ]
        .concat(),
    );
    let e = Layout::parse(&x).unwrap().devices[0]
        .resolve(None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("partition b") && e.contains("fills the rest"),
        "{e}"
    );

    let x = dev(
        "nvme",
        "2048",
        &[
            "<partition name=\"a\" id=\"1\" type=\"data\"><size>512</size></partition>\n",
            "<partition name=\"b\" id=\"1\" type=\"data\"><size>512</size></partition>\n",
        ]
        .concat(),
    );
    let e = Layout::parse(&x).unwrap().devices[0]
        .resolve(None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("GPT entry 1 is already used by a"), "{e}");
}

#[test]
fn bad_values_name_line_and_field() {
    let x = dev(
        "spi",
        "131072",
        &p(
            "a",
            "<size> 512 </size>\n<align_boundary> lots </align_boundary>",
        ),
    );
    let e = Layout::parse(&x).unwrap_err();
    assert!(
        matches!(&e, LayoutError::Field { line: 6, field, partition: Some(n), .. } if field == "align_boundary" && n == "a"),
        "{e:?}"
    );
    let x = dev(
        "spi",
        "131072",
        &p("a", "<allocation_attribute> 8g </allocation_attribute>"),
    );
    assert!(Layout::parse(&x)
        .unwrap_err()
        .to_string()
        .contains("allocation_attribute"));
    let x = dev("spi", "131072", &p("a", "<size> 512 </size>"))
        .replace("sector_size=\"512\"", "sector_size=\"500\"");
    assert!(Layout::parse(&x)
        .unwrap_err()
        .to_string()
        .contains("sector_size"));
    let x = "<partition_layout>\n<device type=\"spi\">\n<partition name=\"a\">\n<size>1</size>\n</device>\n</partition_layout>";
    let e = Layout::parse(x).unwrap_err();
    assert!(matches!(e, LayoutError::Xml { line: 5, .. }), "{e:?}");
    let e =
        Layout::parse("<partition_layout><partition name=\"x\"/></partition_layout>").unwrap_err();
    assert!(e.to_string().contains("unexpected <partition>"), "{e}");
    assert!(Layout::parse("").is_err());
    assert!(Layout::parse("<partition_layout>").is_err());
}

#[test]
fn legacy_suffix_naming_pairs() {
    let names = [
        "mb1", "mb1_b", "kernel", "kernel_b", "APP", "APP_b", "VER", "VER_b", "esp", "SMD",
        "SMD_b", "x_a", "x_b",
    ];
    assert_eq!(ab_role("mb1", &names), Some((Slot::A, "mb1".into())));
    assert_eq!(ab_role("mb1_b", &names), Some((Slot::B, "mb1".into())));
    assert_eq!(ab_role("APP_b", &names), Some((Slot::B, "APP".into())));
    assert_eq!(ab_role("x_a", &names), Some((Slot::A, "x".into())));
    assert_eq!(ab_role("x_b", &names), Some((Slot::B, "x".into())));
    assert_eq!(ab_role("esp", &names), None);
    assert_eq!(ab_role("A_orphan", &names), None);
}

#[test]
fn unknown_elements_and_attributes_are_kept() {
    let x = dev(
        "spi",
        "131072",
        "<partition name=\"a\" type=\"data\" oem_sign=\"true\"><size>512</size><future_thing> 1 </future_thing><!-- c --></partition>\n",
    );
    let l = Layout::parse(&x).unwrap();
    let a = &l.devices[0].partitions[0];
    assert_eq!(
        a.attributes.get("oem_sign").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        a.attributes.get("<future_thing>").map(String::as_str),
        Some("1")
    );
}

#[test]
fn device_aliases() {
    let l = Layout::parse(builtin::T234_NVME).unwrap();
    assert_eq!(l.devices_of("nvme").count(), 1);
    assert_eq!(l.devices_of("external").count(), 1);
    assert_eq!(l.devices_of("spi").count(), 0);
    let l = Layout::parse(builtin::T234_QSPI).unwrap();
    assert_eq!(l.devices_of("qspi").count(), 1);
}

/// Found by `mutated_layouts_never_panic` in CI: a size turned into a huge number made the
/// placement overflow while naming the error. Now it is an error.
#[test]
fn huge_sizes_are_an_error_not_an_overflow() {
    let mut t: Vec<char> = builtin::T234_NVME_ROOTFS_AB.chars().collect();
    t[8806] = 'A';
    let t: String = t.into_iter().collect();
    let v = vars(&[
        ("APPSIZE", "1073741824"),
        ("RECSIZE", "83886080"),
        ("EXT_NUM_SECTORS", "1000215216"),
    ]);
    if let Ok(l) = Layout::parse_with(&t, &v) {
        for d in &l.devices {
            let _ = d.resolve(None);
        }
    }
    // Offsets near the top of u64, directly.
    let x = dev(
        "external",
        "100000000",
        &(p("a", "<size>4096</size>")
            + &p(
                "b",
                "<start_location>0xFFFFFFFFFFFFF000</start_location><size>4096</size>",
            )),
    );
    let e = Layout::parse(&x).unwrap().devices[0]
        .resolve(None)
        .unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e}");
}

proptest! {
    #[test]
    fn random_text_never_panics(s in "\\PC{0,400}") {
        if let Ok(l) = Layout::parse(&s) {
            for d in &l.devices { let _ = d.resolve(None); }
        }
    }

    #[test]
    fn mutated_layouts_never_panic(i in 0usize..9000, c in any::<char>(), size in proptest::option::of(any::<u64>())) {
        let mut t: Vec<char> = builtin::T234_NVME_ROOTFS_AB.chars().collect();
        if i < t.len() { t[i] = c; }
        let t: String = t.into_iter().collect();
        let v = vars(&[("APPSIZE", "1073741824"), ("RECSIZE", "83886080"), ("EXT_NUM_SECTORS", "1000215216")]);
        if let Ok(l) = Layout::parse_with(&t, &v) {
            for d in &l.devices {
                if let Ok(r) = d.resolve(size) {
                    // placed partitions never overlap, apart from the unnumbered GPT tail
                    let mut spans: Vec<(u64, u64)> = r.partitions.iter()
                        .filter_map(|p| p.end().map(|e| (p.start, e))).collect();
                    spans.sort();
                    for w in spans.windows(2) { prop_assert!(w[0].1 <= w[1].0, "{:?}", w); }
                }
            }
        }
    }

    #[test]
    fn numbers_and_offsets_hold_for_random_layouts(sizes in proptest::collection::vec((1u64..5_000_000, proptest::option::of(prop_oneof![Just(512u64), Just(4096), Just(16384), Just(65536)])), 1..20)) {
        let body: String = sizes.iter().enumerate().map(|(i, (s, a))| {
            let al = a.map(|a| format!("<align_boundary>{a}</align_boundary>")).unwrap_or_default();
            p(&format!("p{i}"), &format!("<size>{s}</size>{al}"))
        }).collect();
        let x = dev("external", "100000000", &body);
        let r = Layout::parse(&x).unwrap().devices[0].resolve(None).unwrap();
        let mut prev_end = 0;
        for (pl, (s, a)) in r.partitions.iter().zip(&sizes) {
            prop_assert!(pl.start >= prev_end);
            prop_assert_eq!(pl.start % 512, 0);
            if let Some(a) = a { prop_assert_eq!(pl.start % a, 0); }
            prop_assert_eq!(pl.size.unwrap(), s.div_ceil(512) * 512);
            prev_end = pl.end().unwrap();
        }
    }
}
