//! BUP parsing: never panics; whatever parses re-encodes to an index that parses to the same
//! payload (names padded with spaces/tabs come back NUL-padded) and every entry's data lies
//! inside the input.
#![no_main]
use jota_tegra::bup::{Bup, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Bup::read_from(&mut std::io::Cursor::new(data));
    if let Ok(b) = Bup::parse(data) {
        let idx = b.encode_index();
        let mut again = data.to_vec();
        again[..idx.len()].copy_from_slice(&idx);
        assert_eq!(Bup::parse(&again).unwrap(), b);
        for e in &b.entries {
            assert!(b.entry_data(data, e).is_some());
        }
        let _ = b.select_all(&Target::from_spec("3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-"));
    }
});
