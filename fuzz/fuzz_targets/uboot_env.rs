//! U-Boot environment blocks and fw_env.config: never panic; decoded variables re-encode
//! to a block that decodes the same.
#![no_main]
use jota_bootctl::uboot_env::{decode_copy, encode_copy, parse_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for red in [false, true] {
        if let Ok((flags, vars)) = decode_copy(data, red) {
            if let Ok(again) = encode_copy(&vars, data.len(), red, flags) {
                assert_eq!(decode_copy(&again, red).unwrap(), (flags, vars));
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_config(s, "fuzz");
    }
});
