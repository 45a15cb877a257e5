//! Bundle reading: header, manifest, signatures, block maps and chunks never panic, and
//! a chunk that decompresses never exceeds its stated length.
#![no_main]
use jota_bundle::format::Front;
use jota_bundle::index::BlockMap;
use jota_bundle::manifest::{Blocks, Component, ComponentType, Compression, Digest, Manifest};
use jota_bundle::read::{verify_chunk, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Manifest::parse(data);
    let _ = jota_bundle::sign::decode_signatures(data);
    if let Ok(front) = Front::read(&mut &data[..]) {
        let off = front.header.payload_offset() as usize;
        if let Ok(p) = Parsed::from_front(front) {
            for (c, m) in p.manifest.components.iter().zip(&p.maps) {
                assert_eq!(m.total(), c.blocks.total);
                for (i, ch) in c.chunks.iter().enumerate() {
                    let s = off.saturating_add(ch.offset as usize);
                    if let Some(raw) = data.get(s..s.saturating_add(ch.size as usize)) {
                        if let Ok(d) = verify_chunk(c, i, s as u64, raw) {
                            assert_eq!(d.len() as u64, ch.length);
                        }
                    }
                }
            }
        }
    }
    // Block maps straight from the input: counts from the first 24 bytes.
    if data.len() >= 24 {
        let n = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap()) % (1 << 20);
        let (total, zero, stored) = (n(0), n(8), n(16));
        let c = Component {
            name: "f".into(),
            kind: ComponentType::RawImage,
            partition: Some("APP".into()),
            path: None,
            mode: None,
            phase: None,
            version: None,
            size: total * 4096,
            sha256: Digest::default(),
            compression: Compression::Zstd,
            blocks: Blocks { total, zero, stored, index_offset: 0, index_length: 0 },
            chunks: vec![],
            tegra: None,
        };
        if let Ok(m) = BlockMap::decode(&c, &data[24..]) {
            assert_eq!(m.total(), total);
            assert_eq!(BlockMap::decode(&c, &m.encode()).unwrap(), m);
        }
    }
});
