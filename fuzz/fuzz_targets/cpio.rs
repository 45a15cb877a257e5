//! cpio reading (the `.swu` self-check): never panics; what reads back re-encodes to an
//! archive that reads the same.
#![no_main]
use jota_bundle::cpio;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let res = cpio::read(&mut &data[..], &mut |e, d| {
        match files.last_mut() {
            Some((n, v)) if *n == e.name => v.extend_from_slice(d),
            _ => files.push((e.name.clone(), d.to_vec())),
        }
    });
    if let Ok(entries) = res {
        // Entries without data never called back; add them.
        let mut all: Vec<(String, Vec<u8>)> = Vec::new();
        for e in &entries {
            let d = files.iter().find(|(n, _)| *n == e.name).map(|(_, d)| d.clone()).unwrap_or_default();
            all.push((e.name.clone(), d));
        }
        let mut w = cpio::Writer::new(Vec::new());
        for (n, d) in &all {
            w.append_bytes(n, d).unwrap();
        }
        let out = w.finish().unwrap();
        let mut again: Vec<(String, Vec<u8>)> = all.iter().map(|(n, _)| (n.clone(), Vec::new())).collect();
        let e2 = cpio::read(&mut &out[..], &mut |e, d| {
            if let Some((_, v)) = again.iter_mut().find(|(n, _)| *n == e.name) {
                v.extend_from_slice(d);
            }
        })
        .unwrap();
        assert_eq!(e2.len(), entries.len());
        assert_eq!(again, all);
    }
    // The fleet server's check of uploaded .swu files, over the same bytes.
    let _ = jota_bundle::swu::inspect(&mut &data[..]);
});
