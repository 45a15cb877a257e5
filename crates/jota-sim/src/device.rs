//! Creating, opening and flashing simulated devices.

use crate::model::{FirmwareKind, Model};
use crate::release::{self, ReleaseManifest};
use crate::state::SimState;
use crate::{io, Result, SimError};
use jota_bootctl::backend::SrRf;
use jota_bootctl::efivarfs::EfivarfsStore;
use jota_bootctl::faults::{FaultPlan, Faults};
use jota_bootctl::storage::Storage;
use jota_bootctl::uboot_env::UbootEnv;
use jota_bootctl::DeviceRoot;
use jota_tegra::bootconf::NvBootControlConf;
use jota_tegra::bup::{Bup, SelectionRule, Target};
use jota_tegra::efivar::{
    attr, EfiVariable, L4tVar, L4tVars, RedundancyLevel, RootfsStatus, Slot, VarStore,
};
use jota_tegra::gpt::{Gpt, Style};
use jota_tegra::guid::Guid;
use jota_tegra::layout::{builtin, Layout, Resolved};
use jota_tegra::release::L4tVersion;
use jota_tegra::smd::Smd;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Compact layouts for simulated devices.
pub mod layouts {
    /// T234 NVMe rootfs A/B.
    pub const T234_NVME: &str = include_str!("../layouts/sim_t234_nvme_rootfs_ab.xml");
    /// R32 Nano SD card.
    pub const R32_NANO_SD: &str = include_str!("../layouts/sim_r32_nano_sd.xml");
    /// R32 cboot eMMC (boot and user areas).
    pub const R32_EMMC: &str = include_str!("../layouts/sim_r32_emmc.xml");
}

/// A disk of the simulated device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMeta {
    /// Device path the OS sees (`/dev/nvme0n1`).
    pub device: String,
    /// Image file in the device directory.
    pub image: String,
    /// Size in bytes.
    pub size: u64,
}

/// `jota-sim.json`: what the simulator knows about a device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMeta {
    /// Format version.
    pub format: u32,
    /// Model name.
    pub model: String,
    /// Boot firmware.
    pub firmware: FirmwareKind,
    /// L4T version flashed.
    pub l4t: L4tVersion,
    /// Serial number.
    pub serial: String,
    /// Full TNSPEC.
    pub tnspec: String,
    /// Compat spec.
    pub compat_spec: Option<String>,
    /// Disks.
    pub disks: Vec<DiskMeta>,
    /// Rootfs retry count maximum (RootfsRetryCountMax / SMD / BOOT_x_LEFT).
    pub retry_count_max: u32,
}

/// Options of `jota sim create`.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Model.
    pub model: &'static Model,
    /// L4T version (default: the model's).
    pub l4t: Option<L4tVersion>,
    /// Layout files to use instead of the compact built-in ones.
    pub layouts: Vec<PathBuf>,
    /// Placeholder values for the layouts.
    pub vars: BTreeMap<String, String>,
    /// Size of each rootfs slot (APPSIZE).
    pub rootfs_size: u64,
    /// Serial number (default: derived from the directory name).
    pub serial: Option<String>,
    /// Release to flash into both slots.
    pub release: Option<PathBuf>,
    /// Boot attempts per slot before fallback.
    pub retry_count_max: u32,
}

/// A simulated device.
#[derive(Clone, Debug)]
pub struct SimDevice {
    /// Directory.
    pub dir: PathBuf,
    /// Its record.
    pub meta: SimMeta,
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(io(p))
}

fn write(p: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(d) = p.parent() {
        mkdir(d)?;
    }
    std::fs::write(p, data).map_err(io(p))
}

fn symlink(target: &str, link: &Path) -> Result<()> {
    if let Some(d) = link.parent() {
        mkdir(d)?;
    }
    std::os::unix::fs::symlink(target, link).map_err(io(link))
}

/// The partition name of a component base name in a slot, for a firmware's naming scheme.
pub fn part_name(fw: FirmwareKind, base: &str, slot: Slot) -> String {
    match (fw, base, slot) {
        (_, "APP", Slot::A) => "APP".into(),
        (_, "APP", Slot::B) => "APP_b".into(),
        (FirmwareKind::Uefi, b, Slot::A) => format!("A_{b}"),
        (FirmwareKind::Uefi, b, Slot::B) => format!("B_{b}"),
        (_, b, Slot::A) => b.to_string(),
        (_, b, Slot::B) => format!("{b}_b"),
    }
}

/// Which parts of a release to flash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// Root filesystem.
    Rootfs,
    /// Kernel.
    Kernel,
    /// Kernel DTB.
    Dtb,
    /// Bootloader chain (from the BUP).
    Bootloader,
}

impl std::str::FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "rootfs" => Ok(Component::Rootfs),
            "kernel" => Ok(Component::Kernel),
            "dtb" | "kernel-dtb" => Ok(Component::Dtb),
            "bootloader" => Ok(Component::Bootloader),
            o => Err(format!(
                "component `{o}` is not rootfs, kernel, dtb or bootloader"
            )),
        }
    }
}

impl SimDevice {
    /// Opens an existing simulated device.
    pub fn open(dir: &Path) -> Result<SimDevice> {
        let p = dir.join("jota-sim.json");
        let b = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                SimError::Invalid(format!(
                    "{} is not a simulated device (no jota-sim.json)",
                    dir.display()
                ))
            } else {
                SimError::Io {
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        let meta: SimMeta = serde_json::from_slice(&b)
            .map_err(|e| SimError::Invalid(format!("{}: {e}", p.display())))?;
        Ok(SimDevice {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// The device root the rest of jota uses (`--root DIR`).
    pub fn root(&self) -> DeviceRoot {
        DeviceRoot::at(&self.dir)
    }

    /// Partition access with the device's injected faults.
    pub fn storage(&self) -> Storage {
        Storage::new(&self.root())
    }

    /// Firmware state.
    pub fn state(&self) -> Result<SimState> {
        SimState::load(&self.dir)
    }

    /// The fault plan.
    pub fn faults(&self) -> Result<Faults> {
        Faults::for_root(&self.dir)
            .ok_or_else(|| SimError::Invalid("device has no fault plan file".into()))
    }

    /// The model.
    pub fn model(&self) -> Result<&'static Model> {
        Model::get(&self.meta.model)
            .ok_or_else(|| SimError::Invalid(format!("unknown model {}", self.meta.model)))
    }

    /// UEFI variables of the device.
    pub fn vars(&self) -> L4tVars<EfivarfsStore> {
        L4tVars::new(EfivarfsStore::new(
            self.dir.join("efivars"),
            Faults::for_root(&self.dir),
        ))
    }

    /// Creates a simulated device in `dir` (which must not exist or be empty).
    pub fn create(dir: &Path, o: &CreateOptions) -> Result<SimDevice> {
        if dir.exists() && std::fs::read_dir(dir).map_err(io(dir))?.next().is_some() {
            return Err(SimError::Invalid(format!(
                "{} exists and is not empty",
                dir.display()
            )));
        }
        mkdir(dir)?;
        let m = o.model;
        let l4t = o.l4t.unwrap_or(m.l4t);
        if (m.firmware == FirmwareKind::Uefi) != (l4t.major >= 35) {
            return Err(SimError::Invalid(format!(
                "{} boots with {:?}; L4T {l4t} does not (R35+ is UEFI, R32 is not)",
                m.name, m.firmware
            )));
        }
        let serial = o.serial.clone().unwrap_or_else(|| {
            let h = crate::sha256_hex(dir.display().to_string().as_bytes());
            format!(
                "1421{}",
                u64::from_str_radix(&h[..10], 16).unwrap_or(0) % 1_000_000_000
            )
        });
        let tnspec = m.tnspec();
        let compat = tnspec.compat_spec();

        // Disks from layouts.
        let mut vars = o.vars.clone();
        vars.entry("APPSIZE".into())
            .or_insert(o.rootfs_size.to_string());
        vars.entry("RECSIZE".into()).or_insert("83886080".into());
        vars.entry("RECNAME".into()).or_insert("recovery".into());
        vars.entry("RECDTB-NAME".into())
            .or_insert("recovery-dtb".into());
        let sources: Vec<String> = if o.layouts.is_empty() {
            match m.firmware {
                FirmwareKind::Uefi => vec![builtin::T234_QSPI.into(), layouts::T234_NVME.into()],
                FirmwareKind::Uboot => vec![layouts::R32_NANO_SD.into()],
                FirmwareKind::Cboot => vec![layouts::R32_EMMC.into()],
            }
        } else {
            o.layouts
                .iter()
                .map(|p| std::fs::read_to_string(p).map_err(io(p)))
                .collect::<Result<_>>()?
        };
        let mut disks = Vec::new();
        mkdir(&dir.join("sim/layouts"))?;
        for (i, src) in sources.iter().enumerate() {
            write(&dir.join(format!("sim/layouts/layout{i}.xml")), src)?;
            let layout = Layout::parse_with(src, &vars)?;
            for d in &layout.devices {
                let (device, image) = match d.kind.as_str() {
                    "spi" => ("/dev/mtdblock0", "qspi.img"),
                    "external" | "nvme" => ("/dev/nvme0n1", "nvme.img"),
                    "sdcard" => ("/dev/mmcblk0", "sd.img"),
                    "sdmmc_user" => ("/dev/mmcblk0", "emmc.img"),
                    "sdmmc_boot" => ("/dev/mmcblk0boot1", "boot1.img"),
                    o => {
                        return Err(SimError::Invalid(format!(
                            "layout device type {o} is not simulated"
                        )))
                    }
                };
                let resolved = resolve_with_size(d)?;
                let size = resolved.size.unwrap_or(0);
                let seed = crate::sha256_hex(format!("{serial}{device}").as_bytes());
                let gpt = Gpt::from_resolved(&resolved, Guid::from_digest(seed.as_bytes()))?;
                let style = if resolved.partitions.iter().any(|p| p.kind == "primary_gpt") {
                    Style::Full
                } else {
                    Style::BackupOnly
                };
                let img = dir.join(image);
                let f = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&img)
                    .map_err(io(&img))?;
                f.set_len(size).map_err(io(&img))?;
                for (off, b) in gpt.encode(size, style) {
                    f.write_all_at(&b, off).map_err(io(&img))?;
                }
                symlink(
                    &format!("../{image}"),
                    &dir.join(device.trim_start_matches('/')),
                )?;
                disks.push(DiskMeta {
                    device: device.into(),
                    image: image.into(),
                    size,
                });
            }
        }

        let meta = SimMeta {
            format: 1,
            model: m.name.into(),
            firmware: m.firmware,
            l4t,
            serial: serial.clone(),
            tnspec: tnspec.to_string(),
            compat_spec: compat.clone(),
            disks,
            retry_count_max: o.retry_count_max.min(if m.firmware == FirmwareKind::Uefi {
                3
            } else {
                7
            }),
        };
        write(
            &dir.join("jota-sim.json"),
            serde_json::to_vec_pretty(&meta).map_err(|e| SimError::Invalid(e.to_string()))?,
        )?;
        let dev = SimDevice {
            dir: dir.to_path_buf(),
            meta,
        };

        // Device tree.
        let dt = dir.join("device-tree");
        write(&dt.join("model"), format!("{}\0", m.dt_model))?;
        write(
            &dt.join("compatible"),
            m.compatible
                .iter()
                .map(|c| format!("{c}\0"))
                .collect::<String>(),
        )?;
        write(&dt.join("serial-number"), format!("{serial}\0"))?;
        let module_id = format!("{}-{}-{}", m.module.0, m.module.1, m.module.2);
        let carrier_id = format!("{}-{}-{}", m.carrier.0, m.carrier.1, m.carrier.2);
        if m.firmware == FirmwareKind::Uefi {
            write(
                &dt.join("chosen/ids"),
                format!("{module_id} {carrier_id}\0"),
            )?;
            write(
                &dt.join("chosen/nvidia,sku"),
                format!(
                    "699-1{}-{}-{} {}\0",
                    m.module.0, m.module.1, m.module.2, m.module.3
                ),
            )?;
        } else {
            write(
                &dt.join(format!("chosen/plugin-manager/ids/{module_id}")),
                "",
            )?;
            write(
                &dt.join(format!("chosen/plugin-manager/ids/{carrier_id}")),
                "",
            )?;
            write(&dt.join("nvidia,boardids"), format!("{}\0", m.module.0))?;
        }
        symlink("../device-tree", &dir.join("proc/device-tree"))?;

        // /etc
        let rel_line = format!(
            "# R{} (release), REVISION: {}.{}, GCID: 00000000, BOARD: {}, EABI: aarch64, DATE: Thu Jan  1 00:00:00 UTC 2026\n",
            l4t.major,
            l4t.minor,
            l4t.patch,
            if l4t.major >= 36 { "generic" } else { "t186ref" }
        );
        write(&dir.join("etc/nv_tegra_release"), &rel_line)?;
        let (boot_dev, gpt_dev) = match m.firmware {
            FirmwareKind::Uefi | FirmwareKind::Uboot => ("/dev/mtdblock0", "/dev/mtdblock0"),
            FirmwareKind::Cboot => ("/dev/mmcblk0boot0", "/dev/mmcblk0boot1"),
        };
        let conf = NvBootControlConf {
            tnspec: Some(dev.meta.tnspec.clone()),
            compatible_spec: compat.clone(),
            chip_id: Some(m.soc.chip_id()),
            boot_storage: Some(
                if m.firmware == FirmwareKind::Uefi {
                    "nvme0n1"
                } else {
                    "mmcblk0"
                }
                .into(),
            ),
            ota_boot_device: Some(boot_dev.into()),
            ota_gpt_device: Some(gpt_dev.into()),
            all: BTreeMap::new(),
        };
        write(&dir.join("etc/nv_boot_control.conf"), conf.to_text())?;
        write(
            &dir.join("etc/machine-id"),
            format!("{}\n", &crate::sha256_hex(serial.as_bytes())[..32]),
        )?;
        write(&dir.join("proc/cmdline"), "")?;
        mkdir(&dir.join("data"))?;
        mkdir(&dir.join("esp/EFI/UpdateCapsule"))?;
        write(
            &dir.join("esp/EFI/BOOT/BOOTAA64.efi"),
            b"L4TLauncher (simulated)\n",
        )?;
        symlink("../esp", &dir.join("boot/efi"))?;

        // Firmware state.
        mkdir(&dir.join("sim"))?;
        SimState::default().save(dir)?;
        Faults::create(dir, &FaultPlan::default()).map_err(io(dir.join("sim")))?;
        write(
            &dir.join("sim/capsule-trust.pem"),
            release::CAPSULE_TEST_CERT,
        )?;

        match m.firmware {
            FirmwareKind::Uefi => {
                mkdir(&dir.join("efivars"))?;
                symlink("../../../efivars", &dir.join("sys/firmware/efi/efivars"))?;
                mkdir(&dir.join("sys/firmware/efi/esrt/entries/entry0"))?;
                write(
                    &dir.join(jota_bootctl::backend::SIM_SR_RF_PATH),
                    format!("{:#010x}\n", SrRf::from_u32(0).to_u32()),
                )?;
                let mut v = dev.vars();
                let e = |x: jota_tegra::efivar::L4tVarError<
                    jota_bootctl::efivarfs::EfivarfsError,
                >| SimError::Var(x.to_string());
                v.set_fw_current(Slot::A).map_err(e)?;
                v.set_rootfs_status(Slot::A, RootfsStatus::Normal)
                    .map_err(e)?;
                v.set_rootfs_status(Slot::B, RootfsStatus::Normal)
                    .map_err(e)?;
                v.set_redundancy(RedundancyLevel::BootRootfs).map_err(e)?;
                v.set_retry_count_max(dev.meta.retry_count_max).map_err(e)?;
                v.set_spec(L4tVar::TegraPlatformSpec, &dev.meta.tnspec)
                    .map_err(e)?;
                if let Some(c) = &compat {
                    v.set_spec(L4tVar::TegraPlatformCompatSpec, c).map_err(e)?;
                }
                // L4TDefaultBootMode: extlinux ("GRUB" value 0 is the default boot path).
                v.store_mut()
                    .set(
                        &jota_tegra::efivar::VarName::nvidia("L4TDefaultBootMode"),
                        &EfiVariable {
                            attributes: attr::NV_BS_RT,
                            data: 1u32.to_le_bytes().to_vec(),
                        },
                    )
                    .map_err(|x| SimError::Var(x.to_string()))?;
            }
            FirmwareKind::Uboot => {
                let st = dev.storage();
                let env = st.find("UBENV")?;
                write(
                    &dir.join("etc/fw_env.config"),
                    format!(
                        "# device offset size (U-Boot env, redundant)\n/dev/mmcblk0 {:#x} 0x10000\n/dev/mmcblk0 {:#x} 0x10000\n",
                        env.offset,
                        env.offset + 0x10000
                    ),
                )?;
                let left = format!("{:x}", dev.meta.retry_count_max);
                let init: BTreeMap<String, String> = [
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", left.as_str()),
                    ("BOOT_B_LEFT", left.as_str()),
                    ("bootdelay", "2"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                UbootEnv::create(&dev.root(), "/etc/fw_env.config", &init)?;
            }
            FirmwareKind::Cboot => {
                let st = dev.storage();
                let smd = Smd::new_ab(3, 3).to_bytes();
                for label in ["SMD", "SMD_b"] {
                    let p = st.find(label)?;
                    st.open(&p, true)?.write_at(0, &smd)?;
                }
            }
        }
        if let Some(rel) = &o.release {
            dev.flash(
                rel,
                &[Slot::A, Slot::B],
                &[
                    Component::Bootloader,
                    Component::Kernel,
                    Component::Dtb,
                    Component::Rootfs,
                ],
            )?;
        }
        Ok(dev)
    }

    /// Writes a release (or parts of it) into slots, through the device's storage (so
    /// injected faults apply), as a flashing station or a naive updater would.
    pub fn flash(
        &self,
        release_dir: &Path,
        slots: &[Slot],
        parts: &[Component],
    ) -> Result<ReleaseManifest> {
        let rel = release::load(release_dir)?;
        if rel.firmware != self.meta.firmware {
            return Err(SimError::Invalid(format!(
                "release {} is for {:?} devices, this one boots with {:?}",
                rel.version, rel.firmware, self.meta.firmware
            )));
        }
        let st = self.storage();
        let fw = self.meta.firmware;
        for &slot in slots {
            for c in parts {
                match c {
                    Component::Rootfs => self.write_file(
                        &st,
                        &part_name(fw, "APP", slot),
                        &release_dir.join(&rel.rootfs.name),
                    )?,
                    Component::Kernel => self.write_file(
                        &st,
                        &part_name(fw, "kernel", slot),
                        &release_dir.join(&rel.kernel.name),
                    )?,
                    Component::Dtb => self.write_file(
                        &st,
                        &part_name(fw, "kernel-dtb", slot),
                        &release_dir.join(&rel.dtb.name),
                    )?,
                    Component::Bootloader => {
                        let Some(b) = &rel.bup else { continue };
                        let data = std::fs::read(release_dir.join(&b.name))
                            .map_err(io(release_dir.join(&b.name)))?;
                        self.write_bootloader(&st, &data, slot)?;
                    }
                }
            }
        }
        Ok(rel)
    }

    fn write_file(&self, st: &Storage, label: &str, file: &Path) -> Result<()> {
        let data = std::fs::read(file).map_err(io(file))?;
        write_part(st, label, &data)
    }

    /// The board this device is, for BUP selection.
    pub fn target(&self) -> Target {
        let mut t = Target::from_spec(&self.meta.tnspec);
        if let Some(c) = &self.meta.compat_spec {
            t.compat_spec = Some(c.clone());
        }
        t
    }

    /// Writes the entries of a BUP selected for this board into a slot's bootloader chain.
    pub fn write_bootloader(&self, st: &Storage, bup_bytes: &[u8], slot: Slot) -> Result<()> {
        let bup = Bup::parse(bup_bytes).map_err(|e| SimError::Invalid(e.to_string()))?;
        let t = self.target();
        let rule = SelectionRule::for_format(bup.header.format);
        for p in bup.partitions() {
            let sel = bup.select(p, &t, rule);
            let i = sel.entry.ok_or_else(|| {
                SimError::Invalid(format!("payload has no {p} for board {}", self.meta.tnspec))
            })?;
            let e = &bup.entries[i];
            let label = part_name(self.meta.firmware, p, slot);
            if st.find(&label).is_err() {
                continue;
            }
            let data = bup
                .entry_data(bup_bytes, e)
                .ok_or_else(|| SimError::Invalid(format!("{p}: entry data out of range")))?;
            write_part(st, &label, data)?;
        }
        Ok(())
    }
}

/// Writes `data` at the start of a partition in 1 MiB writes.
pub fn write_part(st: &Storage, label: &str, data: &[u8]) -> Result<()> {
    let p = st.find(label)?;
    if data.len() as u64 > p.size {
        return Err(SimError::Invalid(format!(
            "{} bytes do not fit partition {label} ({} bytes)",
            data.len(),
            p.size
        )));
    }
    let w = st.open(&p, true)?;
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        w.write_at((i as u64) << 20, chunk)?;
    }
    w.sync()?;
    Ok(())
}

/// Places a layout device on a disk just large enough (num_sectors when the layout fixes it).
fn resolve_with_size(d: &jota_tegra::layout::Device) -> Result<Resolved> {
    if let Some(jota_tegra::layout::Value::Num(_)) = d.num_sectors {
        return Ok(d.resolve(None)?);
    }
    let probe = d.resolve(None)?;
    let end = probe
        .partitions
        .iter()
        .filter(|p| !p.is_table)
        .filter_map(|p| p.end())
        .max()
        .unwrap_or(0);
    let mib = 1u64 << 20;
    let size = (end + 33 * 512).div_ceil(mib) * mib + mib;
    Ok(d.resolve(Some(size))?)
}
