//! Tegra (NVIDIA Jetson) boot and update formats, parsed and written natively.
//!
//! This crate is pure: it reads and writes bytes and text, never devices. Everything that
//! touches a device (efivarfs, partitions, `nvbootctrl`) lives in `jota-bootctl` and
//! `jota-sim` and uses these types.
//!
//! | module | format |
//! |---|---|
//! | [`bup`] | bootloader update payload `NVIDIA__BLOB__V2` (R32) and `V3` (R35/R36), TNSPEC matching |
//! | [`capsule`] | UEFI FMP capsules (`TEGRA_BL.Cap`) wrapping a BUP |
//! | [`layout`] | flash-layout XML (`partition_layout`) and the offsets the flash tools compute |
//! | [`smd`] | R32 slot metadata (cboot A/B) incl. the version-4 extension |
//! | [`ver`] | the `VER` partition (NV3/NV4 firmware version record) |
//! | [`efivar`] | efivarfs files and the L4T R35/R36 A/B UEFI variables |
//! | [`esrt`] | capsule results: ESRT entries, `ota-check-firmware` reports |
//! | [`gpt`] | GUID partition tables as the Tegra flash tools write them (also backup-only, for QSPI) |
//! | [`guid`] | GUIDs (text and on-disk forms) |
//! | [`nvbootctrl`] | `nvbootctrl dump-slots-info` output (R32 SMD, R35/R36 bootloader and rootfs) |
//! | [`release`] | `/etc/nv_tegra_release` and L4T version numbers |
//! | [`bootconf`] | `/etc/nv_boot_control.conf` |
//! | [`board`] | board identity: TNSPEC/boardspec, device-tree ids, module SKUs |

pub mod board;
pub mod bootconf;
pub mod bup;
pub mod capsule;
pub mod efivar;
pub mod esrt;
pub mod gpt;
pub mod guid;
pub mod layout;
pub mod nvbootctrl;
pub mod release;
pub mod smd;
pub mod ver;

mod bytes;
