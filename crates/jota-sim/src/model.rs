//! The built-in simulated Jetson models.

use jota_tegra::board::{BoardSpec, Soc, TnSpec};
use jota_tegra::release::L4tVersion;
use serde::{Deserialize, Serialize};

/// What boots the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirmwareKind {
    /// L4T R35/R36: UEFI, BootChainDxe, L4TLauncher; A/B state in UEFI variables.
    Uefi,
    /// L4T R32 on TX2/Xavier: cboot with slot metadata (SMD).
    Cboot,
    /// L4T R32 Jetson Nano with U-Boot and RAUC's BOOT_ORDER scheme.
    Uboot,
}

/// A built-in model.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    /// Name used on the command line.
    pub name: &'static str,
    /// Product.
    pub product: &'static str,
    /// Module board id, SKU, FAB, board revision.
    pub module: (&'static str, &'static str, &'static str, &'static str),
    /// Carrier board id, SKU, FAB.
    pub carrier: (&'static str, &'static str, &'static str),
    /// Chip revision field of the TNSPEC.
    pub chip_rev: &'static str,
    /// `model` of the device tree.
    pub dt_model: &'static str,
    /// `compatible` of the device tree.
    pub compatible: &'static [&'static str],
    /// Target board (flash config) name of the TNSPEC.
    pub target_board: &'static str,
    /// R32 TNSPEC boot device.
    pub boot_dev: Option<&'static str>,
    /// SoC.
    pub soc: Soc,
    /// Boot firmware.
    pub firmware: FirmwareKind,
    /// Default L4T version.
    pub l4t: L4tVersion,
}

/// All built-in models.
pub const MODELS: &[Model] = &[
    Model {
        name: "orin-nano-8gb",
        product: "Jetson Orin Nano 8GB (developer kit module, 3767-0005)",
        module: ("3767", "0005", "300", "K.2"),
        carrier: ("3768", "0000", "A03"),
        chip_rev: "1",
        dt_model: "NVIDIA Jetson Orin Nano Developer Kit",
        compatible: &[
            "nvidia,p3768-0000+p3767-0005",
            "nvidia,p3767-0005",
            "nvidia,tegra234",
        ],
        target_board: "jetson-orin-nano-devkit",
        boot_dev: None,
        soc: Soc::T234,
        firmware: FirmwareKind::Uefi,
        l4t: L4tVersion::new(36, 4, 3),
    },
    Model {
        name: "orin-nano-4gb",
        product: "Jetson Orin Nano 4GB (3767-0004)",
        module: ("3767", "0004", "300", "K.2"),
        carrier: ("3768", "0000", "A03"),
        chip_rev: "1",
        dt_model: "NVIDIA Jetson Orin Nano Developer Kit",
        compatible: &[
            "nvidia,p3768-0000+p3767-0004",
            "nvidia,p3767-0004",
            "nvidia,tegra234",
        ],
        target_board: "jetson-orin-nano-devkit",
        boot_dev: None,
        soc: Soc::T234,
        firmware: FirmwareKind::Uefi,
        l4t: L4tVersion::new(36, 4, 3),
    },
    Model {
        name: "orin-nx-16gb",
        product: "Jetson Orin NX 16GB (3767-0000)",
        module: ("3767", "0000", "301", "G.1"),
        carrier: ("3768", "0000", "A03"),
        chip_rev: "1",
        dt_model: "NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
        compatible: &[
            "nvidia,p3768-0000+p3767-0000",
            "nvidia,p3767-0000",
            "nvidia,tegra234",
        ],
        target_board: "jetson-orin-nano-devkit",
        boot_dev: None,
        soc: Soc::T234,
        firmware: FirmwareKind::Uefi,
        l4t: L4tVersion::new(36, 4, 3),
    },
    Model {
        name: "nano-r32",
        product: "Jetson Nano (3448-0000), L4T R32 with U-Boot and RAUC's A/B scheme",
        module: ("3448", "0000", "400", "B.0"),
        carrier: ("3449", "0000", "B01"),
        chip_rev: "0",
        dt_model: "NVIDIA Jetson Nano Developer Kit",
        compatible: &[
            "nvidia,p3449-0000-b00+p3448-0000-b00",
            "nvidia,jetson-nano",
            "nvidia,tegra210",
        ],
        target_board: "jetson-nano-qspi-sd",
        boot_dev: Some("mmcblk0p1"),
        soc: Soc::T210,
        firmware: FirmwareKind::Uboot,
        l4t: L4tVersion::new(32, 7, 4),
    },
    Model {
        name: "xavier-r32",
        product: "Jetson AGX Xavier 32GB (2888-0004), L4T R32 with cboot and SMD",
        module: ("2888", "0004", "400", "M.0"),
        carrier: ("2822", "0000", "600"),
        chip_rev: "2",
        dt_model: "Jetson-AGX",
        compatible: &["nvidia,galen", "nvidia,jetson-xavier", "nvidia,tegra194"],
        target_board: "jetson-agx-xavier-devkit",
        boot_dev: Some("mmcblk0p1"),
        soc: Soc::T194,
        firmware: FirmwareKind::Cboot,
        l4t: L4tVersion::new(32, 7, 4),
    },
    Model {
        name: "tx2-r32",
        product: "Jetson TX2 (3310-1000), L4T R32 with cboot and SMD",
        module: ("3310", "1000", "C04", "B.0"),
        carrier: ("3489", "0000", "200"),
        chip_rev: "0",
        dt_model: "quill",
        compatible: &["nvidia,quill", "nvidia,p2771-0000", "nvidia,tegra186"],
        target_board: "jetson-tx2-devkit",
        boot_dev: Some("mmcblk0p1"),
        soc: Soc::T186,
        firmware: FirmwareKind::Cboot,
        l4t: L4tVersion::new(32, 7, 4),
    },
];

impl Model {
    /// A model by name.
    pub fn get(name: &str) -> Option<&'static Model> {
        MODELS.iter().find(|m| m.name == name)
    }

    /// The module boardspec (production-fused).
    pub fn boardspec(&self) -> BoardSpec {
        BoardSpec {
            board_id: self.module.0.into(),
            fab: self.module.2.into(),
            board_sku: self.module.1.into(),
            board_rev: self.module.3.into(),
            fuse_level: "1".into(),
            chip_rev: self.chip_rev.into(),
        }
    }

    /// The full TNSPEC (R35/R36 form ends with `-`; R32 form ends with the boot device).
    pub fn tnspec(&self) -> TnSpec {
        TnSpec {
            board: self.boardspec(),
            target: self.target_board.into(),
            boot_dev: self.boot_dev.map(String::from),
        }
    }

    /// The file names of this model's layouts and disk images.
    pub fn family(&self) -> &'static str {
        match self.firmware {
            FirmwareKind::Uefi => "t234",
            FirmwareKind::Uboot => "r32-uboot",
            FirmwareKind::Cboot => "r32-cboot",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tnspecs() {
        let m = Model::get("orin-nano-8gb").unwrap();
        assert_eq!(
            m.tnspec().to_string(),
            "3767-300-0005-K.2-1-1-jetson-orin-nano-devkit-"
        );
        assert_eq!(
            m.tnspec().compat_spec().unwrap(),
            "3767--0005--1--jetson-orin-nano-devkit-"
        );
        let n = Model::get("nano-r32").unwrap();
        assert_eq!(
            n.tnspec().to_string(),
            "3448-400-0000-B.0-1-0-jetson-nano-qspi-sd-mmcblk0p1"
        );
        for m in MODELS {
            assert!(
                jota_tegra::board::Module::lookup(m.module.0, m.module.1).is_some(),
                "{}",
                m.name
            );
        }
    }
}
