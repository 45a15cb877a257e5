//! efivarfs files and the typed L4T variables: never panic; files round-trip.
#![no_main]
use jota_tegra::efivar::{EfiVariable, L4tVar, L4tVars, MemVarStore, Slot, VarName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Ok(n) = VarName::from_file_name(name) {
            assert_eq!(VarName::from_file_name(&n.file_name()).unwrap(), n);
        }
    }
    let mut store = MemVarStore::default();
    for v in L4tVar::ALL {
        if let Ok(var) = EfiVariable::from_efivarfs(&v.var_name(), data) {
            assert_eq!(var.to_efivarfs(), data);
            store.vars.insert(v.var_name(), var);
        }
    }
    let vars = L4tVars::new(store);
    let _ = vars.fw_current();
    let _ = vars.fw_next();
    let _ = vars.fw_status();
    let _ = vars.rootfs_status(Slot::A);
    let _ = vars.redundancy();
    let _ = vars.retry_count_max();
    let _ = vars.platform_spec();
    let _ = vars.os_indications();
});
