//! UEFI capsules and VER records: never panic; ranges stay inside the file.
#![no_main]
use jota_tegra::capsule::Capsule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Capsule::parse(data) {
        assert!(c.payload_range.0 <= c.payload_range.1 && c.payload_range.1 <= data.len());
        let _ = c.payload(data);
        let _ = c.signed_content(data);
    }
    let _ = jota_tegra::ver::Ver::parse(data);
});
