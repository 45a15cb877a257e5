//! Flash-layout XML: never panics; placed partitions never overlap.
#![no_main]
use jota_tegra::layout::Layout;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(l) = Layout::parse(text) {
        for d in &l.devices {
            if let Ok(r) = d.resolve(None) {
                let mut spans: Vec<(u64, u64)> =
                    r.partitions.iter().filter_map(|p| p.end().map(|e| (p.start, e))).collect();
                spans.sort();
                for w in spans.windows(2) {
                    assert!(w[0].1 <= w[1].0, "{w:?}");
                }
            }
        }
    }
});
