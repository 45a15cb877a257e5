//! R32 slot metadata: never panics; a parsed copy serialises to the bytes it came from.
#![no_main]
use jota_tegra::smd::Smd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Smd::parse(data) {
        let b = s.to_bytes();
        // versions 1 and 2 carry no CRC, so only their fields (not the crc bytes) round-trip
        if s.version >= 3 {
            assert_eq!(b.as_slice(), &data[..b.len()]);
        }
        assert_eq!(Smd::parse(&b).unwrap(), s);
        let _ = s.boot_slot();
        let _ = s.redundancy();
    }
});
