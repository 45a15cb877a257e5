//! The device the agent runs on: its root, storage, boot control, identity and slots.

use crate::config::Config;
use crate::AgentError;
use jota_bootctl::root::paths;
use jota_bootctl::storage::{PartitionRef, Storage};
use jota_bootctl::{BackendKind, BootControl, DeviceRoot, Target};
use jota_tegra::board::{BoardId, DtIdentity, DtProps};
use jota_tegra::efivar::Slot;

/// The other slot.
pub fn other(s: Slot) -> Slot {
    match s {
        Slot::A => Slot::B,
        Slot::B => Slot::A,
    }
}

/// A device: `/` on a Jetson, a simulator directory here.
pub struct Device {
    /// Root every device path is under.
    pub root: DeviceRoot,
    /// Partitions and files, with the simulator's injected faults.
    pub storage: Storage,
    /// Boot control.
    pub boot: Box<dyn BootControl>,
    /// Configuration.
    pub config: Config,
}

impl Device {
    /// Opens the device at `root` with `config`.
    pub fn open(root: DeviceRoot, config: Config) -> Result<Device, AgentError> {
        let kind: BackendKind = config
            .backend
            .parse()
            .map_err(|e: String| AgentError::Config(e))?;
        let boot = jota_bootctl::open(&root, &kind)?;
        Ok(Device {
            storage: Storage::new(&root),
            root,
            boot,
            config,
        })
    }

    /// Whether this is a simulated device (a directory, not `/`).
    pub fn simulated(&self) -> bool {
        !self.root.is_host()
    }

    /// The slot running now (rootfs).
    pub fn current_slot(&self) -> Result<Slot, AgentError> {
        Ok(self.boot.current_slot(Target::Rootfs)?)
    }

    /// The version of the running release (`/etc/jota-version`, written into every jota
    /// rootfs), if known.
    pub fn running_version(&self) -> Option<String> {
        self.root
            .read_text("/etc/jota-version")
            .ok()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Board ids from the device tree (module first, then carrier).
    pub fn board_ids(&self) -> Result<Vec<BoardId>, AgentError> {
        let dt = paths::DEVICE_TREE;
        let read = |p: &str| self.root.read_bytes(&format!("{dt}/{p}")).ok().flatten();
        let mut plugin_manager_ids = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.path(format!("{dt}/chosen/plugin-manager/ids")))
        {
            for e in rd.flatten() {
                plugin_manager_ids.push(e.file_name().to_string_lossy().to_string());
            }
            plugin_manager_ids.sort();
        }
        let props = DtProps {
            model: read("model"),
            compatible: read("compatible"),
            serial_number: read("serial-number"),
            chosen_ids: read("chosen/ids"),
            chosen_sku: read("chosen/nvidia,sku"),
            plugin_manager_ids,
        };
        let id = DtIdentity::from_props(&props)
            .map_err(|e| AgentError::Device(format!("device tree: {e}")))?;
        let ids: Vec<BoardId> = id.module.into_iter().chain(id.carrier).collect();
        if ids.is_empty() {
            return Err(AgentError::Device(format!(
                "no board id in the device tree ({}/chosen/ids)",
                self.root.path(dt).display()
            )));
        }
        Ok(ids)
    }

    /// The board's TNSPEC (`/etc/nv_boot_control.conf`), for choosing BUP entries.
    pub fn tnspec(&self) -> Result<String, AgentError> {
        let text = self
            .root
            .read_text(paths::NV_BOOT_CONTROL_CONF)
            .map_err(|e| AgentError::Device(format!("{}: {e}", paths::NV_BOOT_CONTROL_CONF)))?
            .ok_or_else(|| {
                AgentError::Device(format!(
                    "{} is missing: cannot choose bootloader entries",
                    paths::NV_BOOT_CONTROL_CONF
                ))
            })?;
        let conf = jota_tegra::bootconf::NvBootControlConf::parse(&text)
            .map_err(|e| AgentError::Device(e.to_string()))?;
        conf.tnspec.ok_or_else(|| {
            AgentError::Device(format!("{} has no TNSPEC", paths::NV_BOOT_CONTROL_CONF))
        })
    }

    /// The label of partition `base` (`APP`, `kernel`, `kernel-dtb`, `mb1`...) in `slot`:
    /// the configured override, else whichever L4T naming the GPT has.
    pub fn label(&self, base: &str, slot: Slot) -> Result<PartitionRef, AgentError> {
        let i = usize::from(slot == Slot::B);
        if let Some(l) = self.config.labels.get(base) {
            return Ok(self.storage.find(&l[i])?);
        }
        let candidates: Vec<String> = match (base, slot) {
            ("APP", Slot::A) => vec!["APP".into(), "APP_a".into()],
            ("APP", Slot::B) => vec!["APP_b".into()],
            (b, Slot::A) => vec![format!("A_{b}"), b.to_string(), format!("{b}_a")],
            (b, Slot::B) => vec![format!("B_{b}"), format!("{b}_b")],
        };
        for c in &candidates {
            if let Ok(p) = self.storage.find(c) {
                return Ok(p);
            }
        }
        Err(AgentError::Device(format!(
            "no partition for `{base}` in slot {slot} (looked for {})",
            candidates.join(", ")
        )))
    }

    /// Whether a partition is mounted (`/proc/mounts` names its node or by-partlabel link).
    pub fn mounted(&self, p: &PartitionRef) -> bool {
        let Ok(Some(m)) = self.root.read_text("/proc/mounts") else {
            return false;
        };
        let node = p.node();
        let by_label = format!("/dev/disk/by-partlabel/{}", p.label);
        m.lines()
            .filter_map(|l| l.split_whitespace().next())
            .any(|dev| dev == node || dev == by_label)
    }
}
