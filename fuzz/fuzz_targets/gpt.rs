//! GPT reading (primary or backup) never panics; every entry lies on the disk.
#![no_main]
use jota_tegra::gpt::Gpt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(g) = Gpt::read(&mut std::io::Cursor::new(data), len, 512) {
        for e in &g.entries {
            assert!(e.first_lba <= e.last_lba);
            assert!((e.last_lba + 1) * 512 <= len);
        }
    }
});
