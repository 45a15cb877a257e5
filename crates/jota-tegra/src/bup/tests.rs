use super::*;
use proptest::prelude::*;

fn meta(partition: &str, spec: &str, op: OpMode) -> EntryMeta {
    EntryMeta {
        partition: partition.into(),
        version: 0x3643,
        op_mode: op,
        spec: spec.into(),
        length: 0,
    }
}

/// A multi-spec Orin payload shaped like L4T's: common entries, per-SKU entries keyed by
/// compat spec, and a dev/prod pair.
fn orin_payload() -> Vec<u8> {
    let nano8 = "3767--0005--1--jetson-orin-nano-devkit-";
    let nano4 = "3767--0004--1--jetson-orin-nano-devkit-";
    let nx16 = "3767-000-0000--1--jetson-orin-nano-devkit-";
    Bup::build(
        BupFormat::V3,
        BupFormat::V3.default_version(),
        vec![0; V3_ACCESSORY_LEN],
        &[
            (meta("BCT", "", OpMode::Common), b"bct-common".as_slice()),
            (meta("mb1", "", OpMode::NonProduction), b"mb1-dev"),
            (meta("mb1", "", OpMode::Production), b"mb1-prod"),
            (meta("MB1_BCT", nano4, OpMode::Common), b"mb1bct-nano4"),
            (meta("MB1_BCT", nano8, OpMode::Common), b"mb1bct-nano8"),
            (meta("MB1_BCT", nx16, OpMode::Common), b"mb1bct-nx16"),
            (meta("cpu-bootloader", "", OpMode::Common), b"uefi"),
        ],
    )
    .unwrap()
}

fn chosen<'a>(bup: &Bup, data: &'a [u8], part: &str, t: &Target) -> Option<&'a [u8]> {
    let sel = bup.select(part, t, SelectionRule::Uefi);
    sel.entry
        .map(|i| bup.entry_data(data, &bup.entries[i]).unwrap())
}

#[test]
fn build_then_parse_is_byte_exact() {
    let data = orin_payload();
    let bup = Bup::parse(&data).unwrap();
    assert_eq!(bup.header.format, BupFormat::V3);
    assert_eq!(bup.header.header_size, 48);
    assert_eq!(bup.header.entry_count, 7);
    assert_eq!(bup.header.blob_size as usize, data.len());
    assert_eq!(bup.header.uncomp_size, Some(data.len() as u32));
    assert_eq!(bup.entries[0].offset, 48 + 7 * 184);
    assert_eq!(
        bup.entries[4].spec,
        "3767--0005--1--jetson-orin-nano-devkit-"
    );
    // re-encoding the parsed index gives the same bytes
    let idx = bup.encode_index();
    assert_eq!(idx.as_slice(), &data[..idx.len()]);
    // and rebuilding from the parsed entries gives the same file
    let rebuilt = Bup::build(
        bup.header.format,
        bup.header.version.0,
        bup.header.accessory.clone(),
        &bup.entries
            .iter()
            .map(|e| {
                (
                    EntryMeta {
                        partition: e.partition.clone(),
                        version: e.version,
                        op_mode: e.op_mode,
                        spec: e.spec.clone(),
                        length: e.length,
                    },
                    bup.entry_data(&data, e).unwrap(),
                )
            })
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(rebuilt, data);
}

#[test]
fn v2_layout_matches_the_r32_struct() {
    let data = Bup::build(
        BupFormat::V2,
        BupFormat::V2.default_version(),
        vec![],
        &[(
            meta(
                "cpu-bootloader",
                "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1",
                OpMode::Common,
            ),
            b"cboot".as_slice(),
        )],
    )
    .unwrap();
    assert_eq!(&data[..16], b"NVIDIA__BLOB__V2");
    assert_eq!(
        u32::from_le_bytes(data[16..20].try_into().unwrap()),
        0x0002_0000
    );
    assert_eq!(u32::from_le_bytes(data[24..28].try_into().unwrap()), 40);
    // entry: 40-byte name, offset at +40, length at +44, spec at +56 (64 bytes)
    assert_eq!(&data[40..54], b"cpu-bootloader");
    assert_eq!(u32::from_le_bytes(data[80..84].try_into().unwrap()), 160);
    assert_eq!(u32::from_le_bytes(data[84..88].try_into().unwrap()), 5);
    assert_eq!(&data[96..100], b"3448");
    assert_eq!(data.len(), 40 + 120 + 5);
    assert_eq!(&data[160..], b"cboot");
    let bup = Bup::parse(&data).unwrap();
    assert_eq!(bup.header.format, BupFormat::V2);
    assert_eq!(bup.header.version.to_string(), "v2.0-2000.0-0");
}

#[test]
fn version_word_renders_like_bup_generator() {
    assert_eq!(BupVersion(0x0103_0622).to_string(), "v3.1-2022.6-0");
    assert_eq!(BupVersion(0x0103_0622).major(), 3);
    assert_eq!(BupVersion(0x0103_0622).minor(), 1);
}

#[test]
fn orin_nano_8gb_gets_its_own_entry_and_others_get_theirs() {
    let data = orin_payload();
    let bup = Bup::parse(&data).unwrap();
    let nano8 = Target::from_spec("3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-");
    let nano4 = Target::from_spec("3767-300-0004-K.2-1-1-jetson-orin-nano-devkit-");
    let nx16 = Target::from_spec("3767-300-0000-K.2-1-1-jetson-orin-nano-devkit-");
    let agx = Target::from_spec("3701-500-0000-H.0-1-0-jetson-agx-orin-devkit-");
    assert_eq!(
        chosen(&bup, &data, "MB1_BCT", &nano8),
        Some(&b"mb1bct-nano8"[..])
    );
    assert_eq!(
        chosen(&bup, &data, "MB1_BCT", &nano4),
        Some(&b"mb1bct-nano4"[..])
    );
    assert_eq!(
        chosen(&bup, &data, "MB1_BCT", &nx16),
        Some(&b"mb1bct-nx16"[..])
    );
    assert_eq!(chosen(&bup, &data, "MB1_BCT", &agx), None);
    // common entries go to everybody
    assert_eq!(chosen(&bup, &data, "BCT", &agx), Some(&b"bct-common"[..]));
    // entries keyed by compat spec have empty (wildcard) tokens, so the full spec already
    // matches them, as in edk2-nvidia
    let sel = bup.select("MB1_BCT", &nano8, SelectionRule::Uefi);
    assert_eq!(sel.matched_by, Some(tnspec::MatchKind::FullSpec));
    assert!(sel.also_matched.is_empty());
}

#[test]
fn fusing_picks_dev_or_prod_image() {
    let data = orin_payload();
    let bup = Bup::parse(&data).unwrap();
    let fused = Target::from_spec("3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-");
    let unfused = Target::from_spec("3767-300-0005-K.2-0-1-jetson-orin-nano-devkit-");
    assert!(fused.production_fused && !unfused.production_fused);
    assert_eq!(chosen(&bup, &data, "mb1", &fused), Some(&b"mb1-prod"[..]));
    assert_eq!(chosen(&bup, &data, "mb1", &unfused), Some(&b"mb1-dev"[..]));
}

#[test]
fn full_spec_match_wins_over_an_earlier_compat_match() {
    let full = "3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-";
    let data = Bup::build(
        BupFormat::V3,
        BupFormat::V3.default_version(),
        vec![0; 8],
        &[
            // matches only through the compat spec (FAB 000 and chip rev 5 differ from the full spec)
            (
                meta(
                    "VER",
                    "3767-000-0005-X.9-1-5-jetson-orin-nano-devkit-",
                    OpMode::Common,
                ),
                b"compat".as_slice(),
            ),
            (meta("VER", full, OpMode::Common), b"exact"),
        ],
    )
    .unwrap();
    let bup = Bup::parse(&data).unwrap();
    let sel = bup.select("VER", &Target::from_spec(full), SelectionRule::Uefi);
    assert_eq!(sel.entry, Some(1));
    assert_eq!(sel.matched_by, Some(tnspec::MatchKind::FullSpec));
    assert_eq!(sel.also_matched, vec![0]);
    // a board of another FAB only matches the compat entry
    let other = Target::from_spec("3767-000-0005-X.9-1-5-jetson-orin-nano-devkit-");
    let sel = bup.select("VER", &other, SelectionRule::Uefi);
    assert_eq!(sel.entry, Some(0));
    let odd = Target::from_spec("3767-100-0005-B.1-1-2-jetson-orin-nano-devkit-");
    let sel = bup.select("VER", &odd, SelectionRule::Uefi);
    assert_eq!(
        (sel.entry, sel.matched_by),
        (Some(0), Some(tnspec::MatchKind::CompatSpec))
    );
}

#[test]
fn r32_rule_skips_preproduction_entries() {
    let spec = "3448-400-0000-B.0-1-2-jetson-nano-qspi-sd-mmcblk0p1";
    let data = Bup::build(
        BupFormat::V2,
        BupFormat::V2.default_version(),
        vec![],
        &[
            (meta("sc7", spec, OpMode::NonProduction), b"dev".as_slice()),
            (meta("sc7", spec, OpMode::Production), b"prod"),
        ],
    )
    .unwrap();
    let bup = Bup::parse(&data).unwrap();
    let t = Target::from_spec(spec);
    let sel = bup.select_all(&t);
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].entry, Some(1));
}

fn put_u32(d: &mut [u8], off: usize, v: u32) {
    d[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn errors_name_field_and_offset() {
    let good = orin_payload();
    let msg = |d: &[u8]| Bup::parse(d).unwrap_err().to_string();

    let mut d = good.clone();
    d[0] = b'X';
    assert!(msg(&d).contains("not a BUP"), "{}", msg(&d));

    let mut d = good.clone();
    put_u32(&mut d, 32, 1);
    assert!(msg(&d).contains("`blob_type` at offset 32"), "{}", msg(&d));
    assert!(msg(&d).contains("BMP"));

    let mut d = good.clone();
    put_u32(&mut d, 28, 1000);
    assert!(
        msg(&d).contains("`entry_count` at offset 28"),
        "{}",
        msg(&d)
    );

    // entry 2 length runs off the end
    let mut d = good.clone();
    put_u32(&mut d, 48 + 2 * 184 + 44, 1 << 30);
    let m = msg(&d);
    assert!(
        m.contains("entry 2 (mb1) field `length` at offset 460"),
        "{m}"
    );

    // bad op_mode
    let mut d = good.clone();
    put_u32(&mut d, 48 + 184 + 52, 7);
    assert!(
        msg(&d).contains("field `op_mode` at offset 284"),
        "{}",
        msg(&d)
    );

    // garbage after the partition name terminator
    let mut d = good.clone();
    d[48 + 10] = b'x';
    assert!(
        msg(&d).contains("field `partition` at offset 58"),
        "{}",
        msg(&d)
    );

    // data overlapping the table
    let mut d = good.clone();
    put_u32(&mut d, 48 + 40, 50);
    assert!(msg(&d).contains("overlaps"), "{}", msg(&d));

    // V3 size equation
    let mut d = good.clone();
    d.push(0);
    let n = d.len() as u32;
    put_u32(&mut d, 20, n);
    assert!(msg(&d).contains("header+table+data"), "{}", msg(&d));

    // truncated file
    let m = msg(&good[..good.len() - 1]);
    assert!(m.contains("`blob_size` at offset 20"), "{m}");
    let m = msg(&good[..100]);
    assert!(m.contains("blob_size"), "{m}");
    assert!(msg(&good[..10]).contains("truncated"));
}

#[test]
fn space_padded_names_parse_and_reencode_nul_padded() {
    let mut d = orin_payload();
    // "BCT" padded with spaces and a tab instead of NULs, as tegra-boot-tools tolerates
    d[48 + 3..48 + 6].copy_from_slice(b"  \t");
    let b = Bup::parse(&d).unwrap();
    assert_eq!(b.entries[0].partition, "BCT");
    let idx = b.encode_index();
    assert_eq!(&idx[48..56], b"BCT\0\0\0\0\0");
}

#[test]
fn v2_rejects_unknown_version() {
    let mut d = Bup::build(BupFormat::V2, 0x0002_0000, vec![], &[]).unwrap();
    put_u32(&mut d, 16, 0x0003_0000);
    let m = Bup::parse(&d).unwrap_err().to_string();
    assert!(m.contains("`version` at offset 16"), "{m}");
    // 2.1 is fine
    put_u32(&mut d, 16, 0x0102_0000);
    Bup::parse(&d).unwrap();
}

#[test]
fn legacy_t210_header_without_uncomp_size_parses() {
    let mut d = Vec::new();
    d.extend_from_slice(b"NVIDIA__BLOB__V2");
    for v in [0x0002_0000u32, 36 + 120 + 3, 36, 1, 0] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    crate::bytes::put_padded(&mut d, "NVC", 40);
    for v in [156u32, 3, 1, 0] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    crate::bytes::put_padded(&mut d, "", 64);
    d.extend_from_slice(b"abc");
    let bup = Bup::parse(&d).unwrap();
    assert_eq!(bup.header.uncomp_size, None);
    assert_eq!(bup.entry_data(&d, &bup.entries[0]), Some(&b"abc"[..]));
    assert_eq!(bup.encode_index(), d[..156].to_vec());
}

#[test]
fn builder_rejects_unrepresentable_entries() {
    let long = "x".repeat(40);
    let e = Bup::build(
        BupFormat::V3,
        0,
        vec![],
        &[(meta(&long, "", OpMode::Common), b"".as_slice())],
    )
    .unwrap_err();
    assert!(e.to_string().contains("at most 39"), "{e}");
    let e = Bup::build(
        BupFormat::V3,
        0,
        vec![],
        &[(meta("a b", "", OpMode::Common), b"".as_slice())],
    )
    .unwrap_err();
    assert!(e.to_string().contains("printable"), "{e}");
    let spec = "1-".repeat(64);
    let e = Bup::build(
        BupFormat::V3,
        0,
        vec![],
        &[(meta("mb1", &spec, OpMode::Common), b"".as_slice())],
    )
    .unwrap_err();
    assert!(e.to_string().contains("spec"), "{e}");
    // `common` is stored as the empty spec, as BUP_generator.py does
    let d = Bup::build(
        BupFormat::V3,
        0,
        vec![],
        &[(meta("mb1", "common", OpMode::Common), b"".as_slice())],
    )
    .unwrap();
    assert_eq!(Bup::parse(&d).unwrap().entries[0].spec, "");
}

#[test]
fn read_from_streams_only_the_index() {
    let data = orin_payload();
    let mut cur = std::io::Cursor::new(&data);
    let a = Bup::read_from(&mut cur).unwrap();
    assert_eq!(a, Bup::parse(&data).unwrap());
    // a header claiming 4 billion entries must not allocate 4 billion entries
    let mut bad = data.clone();
    put_u32(&mut bad, 28, u32::MAX);
    assert!(Bup::read_from(&mut std::io::Cursor::new(&bad)).is_err());
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Bup::parse(&data);
        let _ = Bup::read_from(&mut std::io::Cursor::new(&data));
    }

    #[test]
    fn mutated_payloads_never_panic(flips in proptest::collection::vec((0usize..1500, any::<u8>()), 1..8),
                                    cut in 0usize..1600) {
        let mut d = orin_payload();
        for (i, b) in flips {
            if i < d.len() { d[i] = b; }
        }
        d.truncate(cut.max(1));
        if let Ok(b) = Bup::parse(&d) {
            // whatever parses re-encodes to an index that parses the same (padding is
            // normalised to NUL)
            let idx = b.encode_index();
            let mut again = d.clone();
            again[..idx.len()].copy_from_slice(&idx);
            prop_assert_eq!(Bup::parse(&again).unwrap(), b.clone());
            for e in &b.entries {
                prop_assert!(b.entry_data(&d, e).is_some());
            }
            let t = Target::from_spec("3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-");
            let _ = b.select_all(&t);
        }
    }

    #[test]
    fn build_parse_round_trip(entries in proptest::collection::vec(
        ("[a-zA-Z0-9_-]{1,36}", "[0-9A-Za-z.-]{0,60}", 0u32..3, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..64)), 0..12),
        v3 in any::<bool>()) {
        let format = if v3 { BupFormat::V3 } else { BupFormat::V2 };
        let owned: Vec<(EntryMeta, Vec<u8>)> = entries.into_iter().map(|(p, s, op, ver, data)| (EntryMeta {
            partition: p, version: ver, op_mode: OpMode::from_code(op).unwrap(),
            spec: if s == "common" { String::new() } else { s }, length: 0 }, data)).collect();
        let refs: Vec<(EntryMeta, &[u8])> = owned.iter().map(|(m, d)| (m.clone(), d.as_slice())).collect();
        let acc = if v3 { vec![1, 2, 3, 4, 5, 6, 7, 8] } else { vec![] };
        let bytes = Bup::build(format, format.default_version(), acc, &refs).unwrap();
        let bup = Bup::parse(&bytes).unwrap();
        prop_assert_eq!(bup.entries.len(), owned.len());
        for (e, (m, d)) in bup.entries.iter().zip(&owned) {
            prop_assert_eq!(&e.partition, &m.partition);
            prop_assert_eq!(&e.spec, &m.spec);
            prop_assert_eq!(e.version, m.version);
            prop_assert_eq!(e.op_mode, m.op_mode);
            prop_assert_eq!(bup.entry_data(&bytes, e).unwrap(), d.as_slice());
        }
        let idx = bup.encode_index();
        prop_assert_eq!(idx.as_slice(), &bytes[..idx.len()]);
    }
}
