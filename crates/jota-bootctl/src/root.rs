//! Where the device's files are: `/` on a Jetson, a directory for a simulated one.

use std::path::{Path, PathBuf};

/// The root of a device's filesystem namespace. Every device path jota uses
/// (`/sys/firmware/efi/efivars`, `/dev/nvme0n1`, `/proc/cmdline`, ...) is taken inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRoot {
    root: PathBuf,
}

impl Default for DeviceRoot {
    fn default() -> Self {
        DeviceRoot::host()
    }
}

impl DeviceRoot {
    /// The running system (`/`).
    pub fn host() -> DeviceRoot {
        DeviceRoot {
            root: PathBuf::from("/"),
        }
    }

    /// A device rooted at `dir` (a simulated Jetson, or a mounted image).
    pub fn at(dir: impl Into<PathBuf>) -> DeviceRoot {
        DeviceRoot { root: dir.into() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Maps an absolute device path into this root (`/proc/cmdline` → `<root>/proc/cmdline`).
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let p = abs.as_ref();
        let rel = p.strip_prefix("/").unwrap_or(p);
        self.root.join(rel)
    }

    /// Whether this is the running system.
    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Reads a small text file, `None` if it does not exist.
    pub fn read_text(&self, abs: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.path(abs)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a small binary file (device-tree property), `None` if it does not exist.
    pub fn read_bytes(&self, abs: &str) -> std::io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(abs)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Well-known device paths.
pub mod paths {
    /// efivarfs mount.
    pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
    /// ESRT entries.
    pub const ESRT: &str = "/sys/firmware/efi/esrt/entries";
    /// Kernel command line.
    pub const CMDLINE: &str = "/proc/cmdline";
    /// Device tree.
    pub const DEVICE_TREE: &str = "/proc/device-tree";
    /// L4T release file.
    pub const NV_TEGRA_RELEASE: &str = "/etc/nv_tegra_release";
    /// nvbootctrl configuration.
    pub const NV_BOOT_CONTROL_CONF: &str = "/etc/nv_boot_control.conf";
    /// libubootenv configuration.
    pub const FW_ENV_CONFIG: &str = "/etc/fw_env.config";
    /// ESP mount point used by L4T.
    pub const ESP: &str = "/boot/efi";
    /// Disks searched for partitions, in order.
    pub const DISKS: &[&str] = &[
        "/dev/nvme0n1",
        "/dev/mmcblk0",
        "/dev/mmcblk1",
        "/dev/sda",
        "/dev/mtdblock0",
        "/dev/mmcblk0boot0",
        "/dev/mmcblk0boot1",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_paths_into_the_root() {
        let r = DeviceRoot::at("/tmp/sim1");
        assert_eq!(
            r.path("/proc/cmdline"),
            PathBuf::from("/tmp/sim1/proc/cmdline")
        );
        assert_eq!(r.path("etc/x"), PathBuf::from("/tmp/sim1/etc/x"));
        assert_eq!(
            DeviceRoot::host().path("/proc/cmdline"),
            PathBuf::from("/proc/cmdline")
        );
        assert!(DeviceRoot::host().is_host());
    }
}
