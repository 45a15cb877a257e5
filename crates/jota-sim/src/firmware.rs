//! What runs when a simulated Jetson is powered on or reset.
//!
//! * **UEFI (R35/R36)**, following edk2-nvidia: the boot ROM starts the chain in the BR-BCT
//!   (falling back to the other chain when this one is damaged); UEFI processes capsules on
//!   the ESP when `OsIndications` asks for it (writing the *inactive* chain, switching the
//!   BR-BCT, always a cold reset); BootChainDxe carries out a `BootChainFwNext` request
//!   (status 1 in progress → 0 success / 12 failed; the status is never deleted by firmware);
//!   L4TLauncher keeps the rootfs retry counters in the SR_RF scratch register (lost at
//!   power-off), decrements the current slot's counter each boot, and when it reaches zero
//!   marks the slot unbootable (0xFF) and switches chain and rootfs to the other slot.
//! * **cboot (R32 TX2/Xavier)**: highest-priority bootable slot from SMD, retry decremented
//!   until the slot is marked successful.
//! * **U-Boot (R32 Nano)**: RAUC's `contrib/uboot.sh` over BOOT_ORDER / BOOT_x_LEFT.
//!
//! A slot whose images fail the [`crate::identity`] checks does not boot: the attempt ends
//! in a (warm) reset, exactly as a kernel panic and the watchdog would.

use crate::device::{part_name, SimDevice};
use crate::identity::{self, Identity};
use crate::model::FirmwareKind;
use crate::release::{self, bootloader_parts};
use crate::state::{Booted, SimState};
use crate::{io, Result, SimError};
use jota_bootctl::backend::SrRf;
use jota_bootctl::efivarfs::EfivarfsStore;
use jota_bootctl::faults::{is_power_cut, Faults};
use jota_bootctl::storage::{PartitionRef, Storage, StorageError};
use jota_bootctl::uboot_env::UbootEnv;
use jota_tegra::bup::{Bup, SelectionRule, Target};
use jota_tegra::capsule::{self, Capsule};
use jota_tegra::efivar::{
    EfiVarError, FwStatus, L4tVarError, L4tVars, RootfsStatus, Slot, VarStore,
    OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED,
};
use jota_tegra::release::L4tVersion;
use jota_tegra::smd::Smd;
use jota_tegra::ver::Ver;
use serde::Serialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

/// Resets before the simulator calls it a boot loop.
const MAX_RESETS: usize = 24;

/// How a power-on ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Outcome {
    /// The OS is up.
    Booted {
        /// Firmware/bootloader chain.
        chain: Slot,
        /// Rootfs slot.
        slot: Slot,
        /// Release version running.
        version: String,
    },
    /// Both slots are exhausted: the recovery kernel runs (or nothing does).
    Recovery {
        /// Why.
        reason: String,
    },
    /// Neither boot chain works.
    Bricked {
        /// Why.
        reason: String,
    },
    /// Reset after reset without an OS.
    BootLoop {
        /// Last failure.
        reason: String,
    },
    /// The firmware lost power while writing (an injected power cut).
    PowerLost {
        /// What it was doing.
        during: String,
    },
}

/// What a capsule did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CapsuleResult {
    /// File on the ESP.
    pub file: String,
    /// Capsule version.
    pub version: Option<String>,
    /// ESRT last attempt status.
    pub last_attempt_status: u32,
    /// Its name.
    pub status_name: String,
    /// Applied to this chain.
    pub applied_to: Option<Slot>,
}

/// The report of one `jota sim boot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootReport {
    /// Boot counter afterwards.
    pub boots: u64,
    /// Whether it started from power-off (scratch registers lost).
    pub cold: bool,
    /// Result.
    pub outcome: Outcome,
    /// What the firmware did, in order.
    pub events: Vec<String>,
    /// Capsules processed.
    pub capsules: Vec<CapsuleResult>,
}

struct Ctx<'a> {
    dev: &'a SimDevice,
    st: Storage,
    state: SimState,
    events: Vec<String>,
    capsules: Vec<CapsuleResult>,
}

/// A read-only view of a partition (for hashing and ext4).
pub struct PartReader {
    file: File,
    offset: u64,
    len: u64,
    pos: u64,
}

impl PartReader {
    /// Opens a partition.
    pub fn open(p: &PartitionRef) -> std::io::Result<PartReader> {
        Ok(PartReader {
            file: File::open(&p.file)?,
            offset: p.offset,
            len: p.size,
            pos: 0,
        })
    }
}

impl Read for PartReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.offset + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Seek for PartReader {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::End(d) => self.len as i64 + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if new < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before start",
            ));
        }
        self.pos = new as u64;
        Ok(self.pos)
    }
}

impl ext4_view::Ext4Read for PartReader {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        if start + dst.len() as u64 > self.len {
            return Err("read past the end of the partition".into());
        }
        self.file
            .read_exact_at(dst, self.offset + start)
            .map_err(|e| Box::new(e) as _)
    }
}

/// Reads a file from the ext4 root filesystem of a partition.
pub fn read_rootfs_file(p: &PartitionRef, path: &str) -> std::result::Result<Vec<u8>, String> {
    let r = PartReader::open(p).map_err(|e| e.to_string())?;
    let fs =
        ext4_view::Ext4::load(Box::new(r)).map_err(|e| format!("not an ext4 filesystem: {e}"))?;
    fs.read(path).map_err(|e| format!("{path}: {e}"))
}

fn verify_part(st: &Storage, label: &str) -> std::result::Result<Identity, String> {
    let p = st.find(label).map_err(|e| e.to_string())?;
    let mut r = PartReader::open(&p).map_err(|e| e.to_string())?;
    identity::verify(&mut r, p.size).map_err(|e| format!("{label}: {e}"))
}

fn power_cut_in(e: &SimError) -> bool {
    match e {
        SimError::Storage(StorageError::Io { source, .. }) => is_power_cut(source),
        SimError::Io { source, .. } => is_power_cut(source),
        SimError::Var(s) | SimError::Invalid(s) => s.contains("simulated power cut"),
        SimError::Env(jota_bootctl::uboot_env::EnvError::Io { source, .. }) => is_power_cut(source),
        _ => false,
    }
}

fn var_err<E: std::error::Error>(e: L4tVarError<E>) -> SimError {
    SimError::Var(e.to_string())
}

impl Ctx<'_> {
    fn log(&mut self, s: impl Into<String>) {
        let s = s.into();
        tracing::debug!(target: "jota_sim::firmware", "{s}");
        self.events.push(s);
    }

    fn fw(&self) -> FirmwareKind {
        self.dev.meta.firmware
    }

    /// Checks a boot chain; returns the version its VER reports.
    fn check_chain(&self, chain: Slot) -> std::result::Result<L4tVersion, String> {
        let mut version = None;
        for p in bootloader_parts(self.fw()) {
            let label = part_name(self.fw(), p, chain);
            if *p == "VER" {
                let part = self.st.find(&label).map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 4096.min(part.size as usize)];
                self.st
                    .open(&part, false)
                    .and_then(|io| io.read_at(0, &mut buf))
                    .map_err(|e| e.to_string())?;
                let v = Ver::parse(&buf).map_err(|e| format!("{label}: {e}"))?;
                version = Some(v.fw_version());
            } else {
                verify_part(&self.st, &label)?;
            }
        }
        version.ok_or_else(|| "no VER partition".into())
    }

    /// Checks that a slot's kernel, DTB and rootfs are complete, belong together and fit the
    /// running bootloader.
    fn check_slot(
        &self,
        slot: Slot,
        bootloader: Option<L4tVersion>,
    ) -> std::result::Result<(Identity, String), String> {
        let fw = self.fw();
        let kernel = verify_part(&self.st, &part_name(fw, "kernel", slot))?;
        let dtb = verify_part(&self.st, &part_name(fw, "kernel-dtb", slot))?;
        if dtb.release != kernel.release || Some(&dtb.content_sha256) != kernel.dtb_sha256.as_ref()
        {
            return Err(format!(
                "kernel {} and DTB {} of slot {slot} are from different releases",
                kernel.version, dtb.version
            ));
        }
        let app = self
            .st
            .find(&part_name(fw, "APP", slot))
            .map_err(|e| e.to_string())?;
        let len = kernel.rootfs_len.ok_or("kernel names no rootfs")?;
        if len > app.size {
            return Err("rootfs image larger than its partition".into());
        }
        let mut r = PartReader::open(&app).map_err(|e| e.to_string())?;
        let got = identity::hash_prefix(&mut r, len).map_err(|e| e.to_string())?;
        if Some(&got) != kernel.rootfs_sha256.as_ref() {
            return Err(format!(
                "rootfs of slot {slot} is not the one kernel {} was built with (torn or from another release): VFS cannot mount root",
                kernel.version
            ));
        }
        if let (Some(bl), Some(need)) = (bootloader, &kernel.requires_bootloader) {
            if &format!("{}.{}", bl.major, bl.minor) != need {
                return Err(format!(
                    "kernel {} needs bootloader {need}.x, the running chain is {bl}: firmware/kernel mismatch",
                    kernel.version
                ));
            }
        }
        let version = read_rootfs_file(&app, "/etc/jota-version")
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .map_err(|e| format!("slot {slot} rootfs: {e}"))?;
        Ok((kernel, version))
    }

    fn watchdog(&mut self) -> std::result::Result<(), String> {
        let plan = self
            .dev
            .faults()
            .and_then(|f| f.load().map_err(io(&self.dev.dir)));
        if let Ok(p) = plan {
            if let (Some(wd), Some(bt)) = (p.watchdog_timeout_s, p.boot_time_s) {
                if bt >= wd {
                    return Err(format!(
                        "hardware watchdog ({wd} s) fired before the OS finished booting ({bt} s)"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Ends one boot attempt: the OS comes up (`Ok(outcome)`) or the attempt fails and
    /// the board resets (`Err(reason)`, logged with what resets it).
    fn attempt(
        &mut self,
        chain: Slot,
        slot: Slot,
        checked: std::result::Result<(Identity, String), String>,
        what: &str,
        reset: &str,
    ) -> Result<std::result::Result<Outcome, String>> {
        match checked.and_then(|k| self.watchdog().map(|_| k)) {
            Ok((kernel, version)) => {
                self.os_up(chain, slot, &kernel, &version)?;
                self.log(format!("Linux up: {what} {slot}, release {version}"));
                Ok(Ok(Outcome::Booted {
                    chain,
                    slot,
                    version,
                }))
            }
            Err(reason) => {
                self.log(format!("{what} {slot} fails to boot: {reason}; {reset}"));
                Ok(Err(reason))
            }
        }
    }

    /// The OS came up: command line, the booted rootfs's identity files, state.
    fn os_up(&mut self, chain: Slot, slot: Slot, kernel: &Identity, version: &str) -> Result<()> {
        let fw = self.fw();
        let app = self.st.find(&part_name(fw, "APP", slot))?;
        let cmdline = match fw {
            FirmwareKind::Uefi => format!(
                "root=PARTUUID={} rw rootwait rootfstype=ext4 console=ttyTCU0,115200 bl_prof_dataptr=0x10000@0x82b000000 bootchain={}",
                app.unique_guid,
                slot.index()
            ),
            FirmwareKind::Cboot => format!(
                "root={} rw rootwait boot.slot_suffix={} console=ttyTCU0,115200",
                app.node(),
                if slot == Slot::B { "_b" } else { "" }
            ),
            FirmwareKind::Uboot => format!("root={} rw rootwait rauc.slot={slot}", app.node()),
        };
        let d = &self.dev.dir;
        std::fs::write(d.join("proc/cmdline"), format!("{cmdline}\n"))
            .map_err(io(d.join("proc/cmdline")))?;
        // The booted rootfs is what /etc shows.
        for f in [
            "jota-version",
            "jota-release.json",
            "os-release",
            "nv_tegra_release",
        ] {
            if let Ok(b) = read_rootfs_file(&app, &format!("/etc/{f}")) {
                std::fs::write(d.join("etc").join(f), b).map_err(io(d.join("etc").join(f)))?;
            }
        }
        self.state.booted = Some(Booted {
            chain,
            slot,
            version: version.to_string(),
            release: kernel.release.clone(),
            boot: self.state.boots,
            fails_health_check: kernel.fails_health_check,
        });
        Ok(())
    }
}

/// Powers the device on (or resets it, if it is running).
pub fn boot(dev: &SimDevice, force_cold: bool) -> Result<BootReport> {
    let faults = dev.faults()?;
    let mut state = dev.state()?;
    // A power cut (possibly during a write by another jota process) means a cold start.
    let cut = faults.load().map_err(io(&dev.dir))?.power_lost;
    let cold = force_cold || cut || !state.power_on;
    faults.power_on().map_err(io(&dev.dir))?;
    state.power_on = true;
    state.booted = None;
    let mut ctx = Ctx {
        dev,
        st: dev.storage(),
        state,
        events: Vec::new(),
        capsules: Vec::new(),
    };
    ctx.log(if cold {
        "power on (cold boot)"
    } else {
        "reset (warm boot)"
    });
    let res = match dev.meta.firmware {
        FirmwareKind::Uefi => boot_uefi(&mut ctx, cold),
        FirmwareKind::Cboot => boot_cboot(&mut ctx),
        FirmwareKind::Uboot => boot_uboot(&mut ctx),
    };
    let outcome = match res {
        Ok(o) => o,
        Err(e) if power_cut_in(&e) => Outcome::PowerLost {
            during: e.to_string(),
        },
        Err(e) => return Err(e),
    };
    if !matches!(outcome, Outcome::Booted { .. }) {
        ctx.state.booted = None;
    }
    if matches!(outcome, Outcome::PowerLost { .. }) {
        ctx.state.power_on = false;
        ctx.log("power lost");
    }
    ctx.state.save(&dev.dir)?;
    let report = BootReport {
        boots: ctx.state.boots,
        cold,
        outcome,
        events: ctx.events,
        capsules: ctx.capsules,
    };
    let line = serde_json::to_string(&report).unwrap_or_default();
    let logp = dev.dir.join("sim/boot-log.jsonl");
    let mut prev = std::fs::read_to_string(&logp).unwrap_or_default();
    prev.push_str(&line);
    prev.push('\n');
    std::fs::write(&logp, prev).map_err(io(&logp))?;
    Ok(report)
}

/// Cuts the power: volatile state (scratch registers) is lost at the next power-on.
pub fn power_off(dev: &SimDevice) -> Result<()> {
    let mut s = dev.state()?;
    s.power_on = false;
    s.booted = None;
    s.save(&dev.dir)
}

fn volatile_vars(dev: &SimDevice) -> L4tVars<EfivarfsStore> {
    // Volatile variables live in RAM: writing them is not a storage write.
    L4tVars::new(EfivarfsStore::new(dev.dir.join("efivars"), None))
}

fn sr_rf_path(dev: &SimDevice) -> std::path::PathBuf {
    dev.dir.join(jota_bootctl::backend::SIM_SR_RF_PATH)
}

fn read_sr(dev: &SimDevice) -> SrRf {
    std::fs::read_to_string(sr_rf_path(dev))
        .ok()
        .and_then(|t| u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok())
        .map(SrRf::from_u32)
        .unwrap_or(SrRf::from_u32(0))
}

fn write_sr(dev: &SimDevice, r: SrRf) -> Result<()> {
    let p = sr_rf_path(dev);
    std::fs::write(&p, format!("{:#010x}\n", r.to_u32())).map_err(io(p))
}

fn clear_sr(dev: &SimDevice) -> Result<()> {
    write_sr(dev, SrRf::from_u32(0))
}

fn write_esrt(ctx: &Ctx<'_>, fw_version: u32) -> Result<()> {
    let d = ctx.dev.dir.join("sys/firmware/efi/esrt/entries/entry0");
    std::fs::create_dir_all(&d).map_err(io(&d))?;
    let s = &ctx.state;
    for (k, v) in [
        ("fw_class", capsule::T234_IMAGE_TYPE.to_string()),
        ("fw_type", "1".into()),
        ("fw_version", fw_version.to_string()),
        ("lowest_supported_fw_version", s.fmp_lsv.to_string()),
        ("capsule_flags", "0x0".into()),
        ("last_attempt_version", s.last_attempt_version.to_string()),
        ("last_attempt_status", s.last_attempt_status.to_string()),
    ] {
        std::fs::write(d.join(k), format!("{v}\n")).map_err(io(d.join(k)))?;
    }
    Ok(())
}

enum Step {
    Continue,
    ColdReset,
}

fn boot_uefi(ctx: &mut Ctx<'_>, cold: bool) -> Result<Outcome> {
    let dev = ctx.dev;
    let mut vars = dev.vars();
    if cold {
        clear_sr(dev)?;
    }
    let mut last_failure = String::new();
    for _ in 0..MAX_RESETS {
        ctx.state.boots += 1;
        // Volatile variables do not survive a reset.
        let mut vol = volatile_vars(dev);
        vol.store_mut()
            .delete(&jota_tegra::efivar::L4tVar::BootChainOsCurrent.var_name())
            .map_err(|e| SimError::Var(e.to_string()))?;

        // Boot ROM / MB1: the BR-BCT chain, or the other one if it is damaged.
        let mut chain = ctx.state.brbct_chain;
        let bl_version = match ctx.check_chain(chain) {
            Ok(v) => v,
            Err(reason) => {
                ctx.log(format!("boot chain {chain} does not come up: {reason}"));
                let other = chain.other();
                match ctx.check_chain(other) {
                    Ok(v) => {
                        ctx.log(format!("MB1 falls back to boot chain {other}; UEFI updates the BR-BCT (AutoUpdateBrBct)"));
                        chain = other;
                        ctx.state.brbct_chain = other;
                        v
                    }
                    Err(r2) => {
                        return Ok(Outcome::Bricked {
                            reason: format!("chain {chain}: {reason}; chain {other}: {r2}"),
                        })
                    }
                }
            }
        };
        vol.set_fw_current(chain).map_err(var_err)?;
        write_esrt(ctx, bl_version.to_fw_version())?;
        ctx.log(format!("UEFI {bl_version} up on chain {chain}"));

        // Capsule on disk.
        let osi = vars.os_indications().map_err(var_err)?;
        if osi & OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED != 0 {
            let dir = dev.dir.join("esp/EFI/UpdateCapsule");
            let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.is_file())
                        .collect()
                })
                .unwrap_or_default();
            files.sort();
            if !files.is_empty() {
                vars.set_os_indications(osi & !OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
                    .map_err(var_err)?;
                let loaded: Vec<(String, Vec<u8>)> = files
                    .iter()
                    .map(|p| {
                        let b = std::fs::read(p).map_err(io(p))?;
                        // Always removed, whatever happens next (no capsule deadloop).
                        ctx.st.remove_file(&format!(
                            "/boot/efi/EFI/UpdateCapsule/{}",
                            p.file_name().unwrap_or_default().to_string_lossy()
                        ))?;
                        Ok((
                            p.file_name()
                                .unwrap_or_default()
                                .to_string_lossy()
                                .into_owned(),
                            b,
                        ))
                    })
                    .collect::<Result<_>>()?;
                for (name, data) in loaded {
                    process_capsule(ctx, &mut vars, chain, &name, &data)?;
                }
                ctx.log("capsule processing done: cold reset");
                clear_sr(dev)?;
                continue;
            }
        }

        // BootChainDxe.
        if let Step::ColdReset = boot_chain_dxe(ctx, &mut vars, chain)? {
            clear_sr(dev)?;
            continue;
        }

        // L4TLauncher.
        let slot = match l4t_launcher(ctx, &mut vars, &mut vol, chain)? {
            Launch::Boot(s) => s,
            Launch::SwitchReset => {
                clear_sr(dev)?;
                continue;
            }
            Launch::Recovery(reason) => return Ok(Outcome::Recovery { reason }),
        };
        let checked = ctx.check_slot(slot, Some(bl_version));
        match ctx.attempt(chain, slot, checked, "rootfs slot", "watchdog reset")? {
            Ok(booted) => return Ok(booted),
            // Warm reset: the scratch register keeps its counts.
            Err(reason) => last_failure = reason,
        }
    }
    Ok(Outcome::BootLoop {
        reason: last_failure,
    })
}

/// BootChainDxe's handling of `BootChainFwNext` (edk2-nvidia BootChainDxe.c).
fn boot_chain_dxe(
    ctx: &mut Ctx<'_>,
    vars: &mut L4tVars<EfivarfsStore>,
    chain: Slot,
) -> Result<Step> {
    let next = match vars.fw_next() {
        Ok(n) => n,
        Err(L4tVarError::Decode(EfiVarError::Value { .. })) => {
            vars.set_fw_status(FwStatus::BadBootChainNext)
                .map_err(var_err)?;
            vars.clear_fw_next().map_err(var_err)?;
            ctx.log("BootChainDxe: BootChainFwNext invalid: status 9");
            return Ok(Step::Continue);
        }
        Err(e) => return Err(var_err(e)),
    };
    let Some(next) = next else {
        return Ok(Step::Continue);
    };
    let status = vars.fw_status().map_err(var_err)?;
    let finish = |ctx: &mut Ctx<'_>, vars: &mut L4tVars<EfivarfsStore>| -> Result<()> {
        vars.clear_fw_next().map_err(var_err)?;
        ctx.state.fw_previous = None;
        ctx.state.fw_reset_count = 0;
        Ok(())
    };
    match status {
        None => {
            if next == chain {
                vars.set_fw_status(FwStatus::NoOperationRequired)
                    .map_err(var_err)?;
                finish(ctx, vars)?;
                ctx.log(format!("BootChainDxe: already on chain {chain}: status 2"));
                return Ok(Step::Continue);
            }
            ctx.state.fw_reset_count += 1;
            if ctx.state.fw_reset_count > 3 {
                vars.set_fw_status(FwStatus::MaxResetCount)
                    .map_err(var_err)?;
                finish(ctx, vars)?;
                ctx.log("BootChainDxe: reset count exceeded: status 5");
                return Ok(Step::Continue);
            }
            ctx.state.fw_previous = Some(chain);
            vars.set_fw_status(FwStatus::InProgress).map_err(var_err)?;
            ctx.state.brbct_chain = next;
            ctx.log(format!("BootChainDxe: rebooting to new boot chain {next}"));
            Ok(Step::ColdReset)
        }
        Some(FwStatus::InProgress) => {
            if chain == next {
                vars.set_fw_status(FwStatus::Success).map_err(var_err)?;
                ctx.log(format!(
                    "BootChainDxe: switch to chain {next} succeeded: status 0"
                ));
                finish(ctx, vars)?;
                Ok(Step::Continue)
            } else {
                vars.set_fw_status(FwStatus::BootChainFailed)
                    .map_err(var_err)?;
                ctx.log(format!(
                    "BootChainDxe: chain {next} did not come up: status 12"
                ));
                let prev = ctx.state.fw_previous;
                finish(ctx, vars)?;
                match prev {
                    Some(p) if p != chain => {
                        ctx.state.brbct_chain = p;
                        ctx.log(format!("BootChainDxe: rebooting to restore boot chain {p}"));
                        Ok(Step::ColdReset)
                    }
                    _ => Ok(Step::Continue),
                }
            }
        }
        Some(other) => {
            // A stale status: the request is dropped (the firmware never deletes the status).
            ctx.log(format!(
                "BootChainDxe: BootChainFwStatus {} left from an earlier switch: request for chain {next} ignored",
                other.code()
            ));
            finish(ctx, vars)?;
            Ok(Step::Continue)
        }
    }
}

enum Launch {
    Boot(Slot),
    SwitchReset,
    Recovery(String),
}

/// L4TLauncher's `ValidateRootfsStatus` (edk2-nvidia L4TRootfsValidation.c).
fn l4t_launcher(
    ctx: &mut Ctx<'_>,
    vars: &mut L4tVars<EfivarfsStore>,
    vol: &mut L4tVars<EfivarfsStore>,
    chain: Slot,
) -> Result<Launch> {
    let dev = ctx.dev;
    let max = vars.retry_count_max().map_err(var_err)?;
    let st_a = vars.rootfs_status(Slot::A).map_err(var_err)?;
    let st_b = vars.rootfs_status(Slot::B).map_err(var_err)?;
    let ab = vars.redundancy().map_err(var_err)? == jota_tegra::efivar::RedundancyLevel::BootRootfs;
    let mut sr = read_sr(dev);
    if !sr.valid {
        sr = SrRf {
            valid: true,
            current: chain,
            retry_a: if st_a == RootfsStatus::Unbootable {
                0
            } else {
                max
            },
            retry_b: if st_b == RootfsStatus::Unbootable {
                0
            } else {
                max
            },
        };
        ctx.log(format!(
            "L4TLauncher: retry counters initialised (A={}, B={})",
            sr.retry_a, sr.retry_b
        ));
    }
    let cur = if ab { chain } else { Slot::A };
    // IsValidRootfs: slot A dead without rootfs A/B, or both dead with it.
    let ua = st_a == RootfsStatus::Unbootable;
    if ua && (!ab || st_b == RootfsStatus::Unbootable) {
        clear_sr(dev)?;
        return Ok(Launch::Recovery("no bootable rootfs slot".into()));
    }
    if sr.retry(cur) > 0 {
        sr.set_retry(cur, sr.retry(cur) - 1);
        sr.current = cur;
        write_sr(dev, sr)?;
        vol.set_os_current(cur).map_err(var_err)?;
        ctx.log(format!(
            "L4TLauncher: booting rootfs {cur} ({} tries left)",
            sr.retry(cur)
        ));
        return Ok(Launch::Boot(cur));
    }
    vars.set_rootfs_status(cur, RootfsStatus::Unbootable)
        .map_err(var_err)?;
    ctx.log(format!(
        "L4TLauncher: rootfs {cur} out of tries: marked unbootable"
    ));
    let other = cur.other();
    if ab && sr.retry(other) > 0 {
        vars.set_fw_next(other).map_err(var_err)?;
        vars.clear_fw_status().map_err(var_err)?;
        ctx.log(format!(
            "L4TLauncher: switching the bootchain to {other}, resetting"
        ));
        return Ok(Launch::SwitchReset);
    }
    if ab {
        vars.set_rootfs_status(other, RootfsStatus::Unbootable)
            .map_err(var_err)?;
    }
    clear_sr(dev)?;
    Ok(Launch::Recovery(format!(
        "rootfs {cur} exhausted and no other slot to try"
    )))
}

/// ESRT last-attempt status codes used here.
mod las {
    pub const SUCCESS: u32 = 0;
    pub const INCORRECT_VERSION: u32 = 3;
    pub const INVALID_FORMAT: u32 = 4;
    pub const AUTH_ERROR: u32 = 5;
    pub const INVALID_PACKAGE_HEADER: u32 = 0x1801;
    pub const IMAGE_NOT_IN_PACKAGE: u32 = 0x1807;
    pub const WRITE_IMAGES_FAILED: u32 = 0x180E;
    pub const VERIFY_IMAGES_FAILED: u32 = 0x1810;
    pub const BOOT_CHAIN_UPDATE_CANCELED: u32 = 0x1813;
}

fn process_capsule(
    ctx: &mut Ctx<'_>,
    vars: &mut L4tVars<EfivarfsStore>,
    chain: Slot,
    name: &str,
    data: &[u8],
) -> Result<()> {
    let mut result = CapsuleResult {
        file: name.into(),
        version: None,
        last_attempt_status: las::SUCCESS,
        status_name: String::new(),
        applied_to: None,
    };
    let outcome = apply_capsule(ctx, vars, chain, data, &mut result);
    let status = match outcome {
        Ok(()) => las::SUCCESS,
        Err(CapErr::Status(s, why)) => {
            ctx.log(format!("capsule {name}: {why}"));
            s
        }
        Err(CapErr::NotForUs(why)) => {
            ctx.log(format!("capsule {name} ignored: {why}"));
            return Ok(());
        }
        Err(CapErr::Fatal(e)) => return Err(e),
    };
    ctx.state.last_attempt_status = status;
    result.last_attempt_status = status;
    result.status_name = jota_tegra::esrt::last_attempt_status_name(status);
    ctx.capsules.push(result);
    Ok(())
}

enum CapErr {
    Status(u32, String),
    NotForUs(String),
    Fatal(SimError),
}

impl From<SimError> for CapErr {
    fn from(e: SimError) -> CapErr {
        CapErr::Fatal(e)
    }
}

fn apply_capsule(
    ctx: &mut Ctx<'_>,
    vars: &mut L4tVars<EfivarfsStore>,
    chain: Slot,
    data: &[u8],
    result: &mut CapsuleResult,
) -> std::result::Result<(), CapErr> {
    let c = Capsule::parse(data).map_err(|e| CapErr::Status(las::INVALID_FORMAT, e.to_string()))?;
    if c.image_type != capsule::T234_IMAGE_TYPE {
        return Err(CapErr::NotForUs(format!(
            "image type {} is not this device's {}",
            c.image_type,
            capsule::T234_IMAGE_TYPE
        )));
    }
    let trust = ctx.dev.dir.join("sim/capsule-trust.pem");
    if !release::verify_capsule_signature(data, &c, &trust)? {
        return Err(CapErr::Status(
            las::AUTH_ERROR,
            "authentication failed (not signed by a trusted key)".into(),
        ));
    }
    let v = L4tVersion::from_fw_version(c.fw_version);
    result.version = Some(v.to_string());
    ctx.state.last_attempt_version = c.fw_version;
    if c.fw_version < ctx.state.fmp_lsv {
        return Err(CapErr::Status(
            las::INCORRECT_VERSION,
            format!(
                "version {v} is below the lowest supported {}",
                L4tVersion::from_fw_version(ctx.state.fmp_lsv)
            ),
        ));
    }
    // TegraFmp: a pending or unacknowledged chain switch cancels the capsule.
    let next = vars.fw_next().ok().flatten();
    let status = vars.fw_status().ok().flatten();
    if next.is_some() || status.is_some() {
        vars.clear_fw_next()
            .map_err(|e| CapErr::Fatal(var_err(e)))?;
        vars.set_fw_status(FwStatus::CanceledForFmpConflict)
            .map_err(|e| CapErr::Fatal(var_err(e)))?;
        return Err(CapErr::Status(
            las::BOOT_CHAIN_UPDATE_CANCELED,
            "BootChainFwNext/BootChainFwStatus present: update cancelled (status 3)".into(),
        ));
    }
    let bup_bytes = c.payload(data);
    let bup = Bup::parse(bup_bytes)
        .map_err(|e| CapErr::Status(las::INVALID_PACKAGE_HEADER, e.to_string()))?;
    let spec = vars.platform_spec().ok().flatten();
    let mut target = match &spec {
        Some(s) => Target::from_spec(s),
        None => Target {
            spec: None,
            compat_spec: None,
            production_fused: true,
        },
    };
    if let Ok(Some(cs)) = vars.platform_compat_spec() {
        target.compat_spec = Some(cs);
    }
    let inactive = chain.other();
    let mut writes = Vec::new();
    for p in bootloader_parts(FirmwareKind::Uefi) {
        let sel = bup.select(p, &target, SelectionRule::Uefi);
        let i = sel.entry.ok_or_else(|| {
            CapErr::Status(
                las::IMAGE_NOT_IN_PACKAGE,
                format!("no {p} image for this board"),
            )
        })?;
        let e = &bup.entries[i];
        let d = bup.entry_data(bup_bytes, e).ok_or_else(|| {
            CapErr::Status(
                las::INVALID_PACKAGE_HEADER,
                format!("{p} data out of range"),
            )
        })?;
        writes.push((part_name(FirmwareKind::Uefi, p, inactive), d.to_vec()));
    }
    // Before writing: a failure from here on is a write failure.
    ctx.state.last_attempt_status = las::WRITE_IMAGES_FAILED;
    ctx.state.save(&ctx.dev.dir).map_err(CapErr::Fatal)?;
    ctx.log(format!(
        "capsule {v}: writing the inactive chain {inactive}"
    ));
    let mb1 = part_name(FirmwareKind::Uefi, "mb1", inactive);
    // Invalidate mb1 first and write it last, so a half-written chain never starts.
    crate::device::write_part(&ctx.st, &mb1, &vec![0xffu8; 4096])?;
    for (label, d) in writes.iter().filter(|(l, _)| *l != mb1) {
        crate::device::write_part(&ctx.st, label, d)?;
    }
    if let Some((label, d)) = writes.iter().find(|(l, _)| *l == mb1) {
        crate::device::write_part(&ctx.st, label, d)?;
    }
    for (label, d) in &writes {
        let p = ctx.st.find(label).map_err(|e| CapErr::Fatal(e.into()))?;
        let mut back = vec![0u8; d.len()];
        ctx.st
            .open(&p, false)
            .and_then(|io| io.read_at(0, &mut back))
            .map_err(|e| CapErr::Fatal(e.into()))?;
        if &back != d {
            return Err(CapErr::Status(
                las::VERIFY_IMAGES_FAILED,
                format!("{label} read back differs"),
            ));
        }
    }
    ctx.state.brbct_chain = inactive;
    ctx.state.fmp_lsv = ctx.state.fmp_lsv.max(c.lowest_supported_version);
    result.applied_to = Some(inactive);
    ctx.log(format!(
        "capsule {v} applied to chain {inactive}; BR-BCT now boots chain {inactive}"
    ));
    Ok(())
}

fn boot_cboot(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let mut last = String::new();
    for _ in 0..MAX_RESETS {
        ctx.state.boots += 1;
        let (mut smd, _) = read_smd(&ctx.st)?;
        let Some(i) = smd.boot_slot() else {
            return Ok(Outcome::Recovery {
                reason: "no slot with priority and retries left".into(),
            });
        };
        let slot = Slot::from_index(i as u32).unwrap_or(Slot::A);
        if smd.slots[i].successful == 0 {
            smd.slots[i].retry_count = smd.slots[i].retry_count.saturating_sub(1);
            write_smd(&ctx.st, &smd)?;
        }
        ctx.log(format!(
            "cboot: slot {slot} (priority {}, {} tries left)",
            smd.slots[i].priority, smd.slots[i].retry_count
        ));
        let checked = ctx
            .check_chain(slot)
            .and_then(|bl| ctx.check_slot(slot, Some(bl)));
        match ctx.attempt(slot, slot, checked, "slot", "reset")? {
            Ok(booted) => return Ok(booted),
            Err(reason) => last = reason,
        }
    }
    Ok(Outcome::BootLoop { reason: last })
}

/// Reads the first valid SMD copy.
pub fn read_smd(st: &Storage) -> Result<(Smd, &'static str)> {
    let mut errs = Vec::new();
    for label in ["SMD", "SMD_b"] {
        let p = st.find(label)?;
        let mut b = vec![0u8; 191];
        st.open(&p, false)?.read_at(0, &mut b)?;
        match Smd::parse(&b) {
            Ok(s) => return Ok((s, label)),
            Err(e) => errs.push(format!("{label}: {e}")),
        }
    }
    Err(SimError::Invalid(format!(
        "no valid slot metadata: {}",
        errs.join("; ")
    )))
}

fn write_smd(st: &Storage, smd: &Smd) -> Result<()> {
    let b = smd.to_bytes();
    for label in ["SMD", "SMD_b"] {
        let p = st.find(label)?;
        st.open(&p, true)?.write_at(0, &b)?;
    }
    Ok(())
}

fn boot_uboot(ctx: &mut Ctx<'_>) -> Result<Outcome> {
    let root = ctx.dev.root();
    let mut last = String::new();
    for _ in 0..MAX_RESETS {
        ctx.state.boots += 1;
        let mut env = UbootEnv::open(&root, "/etc/fw_env.config")?;
        let order = env.get("BOOT_ORDER").unwrap_or("A B").to_string();
        let left = |env: &UbootEnv, s: &str| {
            env.get(&format!("BOOT_{s}_LEFT"))
                .and_then(|v| u32::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(3)
        };
        let mut chosen = None;
        for b in order.split(' ') {
            if (b == "A" || b == "B") && left(&env, b) > 0 {
                chosen = Some(b.to_string());
                break;
            }
        }
        let Some(b) = chosen else {
            ctx.log("U-Boot: no valid slot found, resetting tries to 3");
            env.apply(&[("BOOT_A_LEFT", Some("3")), ("BOOT_B_LEFT", Some("3"))])?;
            continue;
        };
        let n = left(&env, &b) - 1;
        let key = format!("BOOT_{b}_LEFT");
        let val = format!("{n:x}");
        env.apply(&[(key.as_str(), Some(val.as_str()))])?;
        let slot: Slot = b.parse().map_err(SimError::Invalid)?;
        ctx.log(format!(
            "U-Boot: found valid slot {b}, {} attempts remaining",
            n + 1
        ));
        let checked = ctx.check_slot(slot, None);
        match ctx.attempt(slot, slot, checked, "slot", "reset")? {
            Ok(booted) => return Ok(booted),
            Err(reason) => last = reason,
        }
    }
    Ok(Outcome::BootLoop { reason: last })
}

/// The simulated health-check result of the running OS (for `jota sim health`).
pub fn health(dev: &SimDevice) -> Result<std::result::Result<String, String>> {
    let s = dev.state()?;
    let Some(b) = &s.booted else {
        return Ok(Err("the device is not running".into()));
    };
    let plan = Faults::for_root(&dev.dir)
        .map(|f| f.load())
        .transpose()
        .map_err(io(&dev.dir))?
        .unwrap_or_default();
    if plan.health_ok == Some(false) {
        return Ok(Err("health checks fail (injected)".into()));
    }
    if plan.health_fail_version.as_deref() == Some(b.version.as_str()) {
        return Ok(Err(format!(
            "the application fails on release {} (injected)",
            b.version
        )));
    }
    if b.fails_health_check && plan.health_ok != Some(true) {
        return Ok(Err(format!(
            "release {} fails its health checks",
            b.version
        )));
    }
    Ok(Ok(format!(
        "release {} on slot {} is healthy",
        b.version, b.slot
    )))
}
