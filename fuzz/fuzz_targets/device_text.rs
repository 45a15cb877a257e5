//! Text a device reports (nvbootctrl output, nv_tegra_release, nv_boot_control.conf,
//! TNSPECs, device-tree ids): never panics; nvbootctrl dumps print back to themselves.
#![no_main]
use jota_tegra::{board, bootconf, esrt, nvbootctrl, release};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = board::parse_chosen_ids(data);
    let _ = board::PartNumber::parse(data);
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(info) = nvbootctrl::SlotsInfo::parse(s) {
        assert_eq!(nvbootctrl::SlotsInfo::parse(&info.to_string()).unwrap(), info);
    }
    let _ = nvbootctrl::parse_transcript(s);
    let _ = release::NvTegraRelease::parse(s);
    let _ = s.parse::<release::L4tVersion>();
    let _ = bootconf::NvBootControlConf::parse(s);
    let _ = esrt::FirmwareReport::parse(s);
    if let Ok(t) = board::TnSpec::parse(s) {
        let _ = t.compat_spec();
    }
});
