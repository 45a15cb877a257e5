//! The boot-control backends and auto-detection.

mod l4t_uefi;
mod nvbootctrl_tool;
mod r32_smd;
mod uboot;

pub use l4t_uefi::{L4tUefi, Scratch, SrRf, SIM_SR_RF as SIM_SR_RF_PATH};
pub use nvbootctrl_tool::NvBootctrlTool;
pub use r32_smd::{cmdline_slot, R32Smd};
pub use uboot::UbootBackend;
