//! Static patch reading: header, manifest, the new release's front, ops, frames and chunk
//! rebuilding never panic, and whatever is rebuilt is checked against the new manifest.
#![no_main]
use jota_delta::patch::{decode_ops, Patch, PatchSource};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_ops(data, 1 << 16, 1 << 16, data.len() as u64);
    let Ok(p) = Patch::parse(Box::new(data.to_vec())) else {
        return;
    };
    for f in 0..p.manifest.frames.len().min(4) {
        let _ = p.frame(f, &[]);
    }
    let comps: Vec<(usize, usize)> = p
        .new
        .manifest
        .components
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.chunks.len()))
        .collect();
    // Bases that read as zeros: copies rebuild, then fail their sha256 (no fallback).
    let bases = comps
        .iter()
        .map(|_| {
            Some(Box::new(|_off: u64, buf: &mut [u8]| {
                buf.fill(0);
                Ok(())
            }) as jota_delta::patch::BaseRead)
        })
        .collect();
    let src = PatchSource::new(p, bases, None);
    for (i, n) in comps {
        for ci in 0..n.min(16) {
            if let Ok(d) = src.load(i, ci) {
                let ch = &src.patch.new.manifest.components[i].chunks[ci];
                assert_eq!(d.len() as u64, ch.length);
            }
        }
    }
});
