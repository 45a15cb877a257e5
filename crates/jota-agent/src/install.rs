//! The install pipeline: check everything, write the inactive slot, read it back, switch.
//!
//! 1. Before anything is written: signature (keyring), hardware compatibility (device tree
//!    board ids), anti-rollback floor and downgrade, pre-flight (power, space, services), the
//!    install lock, and that every target is the inactive slot's, exists, fits and is not
//!    mounted.
//! 2. Each component is streamed into its target; every chunk is verified before its bytes
//!    are written, and every target is read back and hashed after.
//! 3. Only then the switch: a capsule is staged, bootloader and rootfs chains switch together.
//!
//! The journal records each stage; an interrupted install of the same bundle resumes and
//! re-verifies what it had written.

use crate::device::{other, Device};
use crate::journal::{now, DataDir, Journal, State};
use crate::run::{run, Env};
use crate::{precheck, AgentError};
use jota_bootctl::efivarfs::EfivarfsStore;
use jota_bootctl::faults::Faults;
use jota_bootctl::root::paths;
use jota_bootctl::storage::{PartitionIo, PartitionRef, Storage};
use jota_bootctl::Target;
use jota_bundle::manifest::{Component, ComponentType, Digest, Phase};
use jota_bundle::read::{
    extract_parsed, Bundle, ChunkBytes, ExtractOptions, Parsed, ReadError, Trust,
};
use jota_bundle::sign::Keyring;
use jota_tegra::efivar::{L4tVars, Slot, OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED};
use sha2::Digest as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default ESP location of a capsule.
pub const CAPSULE_PATH: &str = "/boot/efi/EFI/UpdateCapsule/TEGRA_BL.Cap";
/// Largest component installed to a file path or parsed in memory (BUP, capsule, script).
const MAX_IN_MEMORY: u64 = 256 << 20;
/// Timeout of an install hook or bundle script.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

/// What to install and how.
#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Where it came from (file path or URL), for the journal.
    pub source: String,
    /// Keyring directory (host path); default: the configured one inside the device root.
    pub keyring: Option<PathBuf>,
    /// Write and verify, but do not switch.
    pub no_switch: bool,
    /// Decompression threads (0 = one per CPU).
    pub threads: usize,
}

/// What an install did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InstallReport {
    /// Bundle version.
    pub version: String,
    /// Slot written.
    pub target_slot: Slot,
    /// Components written (name, bytes).
    pub written: Vec<(String, u64)>,
    /// Components an interrupted install had written and that read back intact.
    pub resumed: Vec<String>,
    /// Applied to the running system (application layers): no switch, no reboot.
    #[serde(default)]
    pub live: bool,
    /// Whether the chains were switched.
    pub switched: bool,
}

/// The install lock (`install.lock` in the data directory), held while installing.
pub struct InstallLock {
    _file: std::fs::File,
}

impl InstallLock {
    /// Takes the lock or says who has it.
    pub fn take(data: &DataDir<'_>) -> Result<InstallLock, AgentError> {
        let dir = data.host_path();
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::io(&dir, e))?;
        let p = dir.join("install.lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| AgentError::io(&p, e))?;
        match f.try_lock() {
            Ok(()) => {
                // Who holds it, for the next one's message.
                let _ = f.set_len(0);
                let _ = (&f).write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(InstallLock { _file: f })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&p).unwrap_or_default();
                Err(AgentError::Busy(format!(
                    "another install is running (pid {}); wait for it to finish",
                    pid.trim()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(AgentError::io(&p, e)),
        }
    }
}

/// A target decided before anything is written.
enum Plan {
    Partition(PartitionRef),
    Bup(String),
    Capsule(String),
    File(String),
    Script(Phase),
}

/// Where an install's chunks come from: a local bundle file, or a delta source (seed,
/// cache, HTTP ranges). Every chunk it returns is decompressed and verified.
pub trait ChunkSource: Sync {
    /// The bundle's front (signatures already checked).
    fn parsed(&self) -> &Parsed;
    /// Chunk `ci` of component `comp`.
    fn load(&self, comp: usize, ci: usize) -> Result<ChunkBytes, ReadError>;
    /// Bytes of owned chunks to keep for blocks that occur again.
    fn cache_bytes(&self) -> u64 {
        jota_bundle::read::CACHE_BYTES
    }
}

impl ChunkSource for Bundle {
    fn parsed(&self) -> &Parsed {
        &self.parsed
    }
    fn load(&self, comp: usize, ci: usize) -> Result<ChunkBytes, ReadError> {
        self.read_chunk(comp, ci).map(ChunkBytes::from)
    }
}

impl ChunkSource for jota_delta::remote::DeltaSource {
    fn parsed(&self) -> &Parsed {
        &self.parsed
    }
    fn load(&self, comp: usize, ci: usize) -> Result<ChunkBytes, ReadError> {
        jota_delta::remote::DeltaSource::load(self, comp, ci).map(ChunkBytes::from)
    }
}

impl ChunkSource for jota_delta::patch::PatchSource {
    fn parsed(&self) -> &Parsed {
        &self.patch.new
    }
    fn load(&self, comp: usize, ci: usize) -> Result<ChunkBytes, ReadError> {
        jota_delta::patch::PatchSource::load(self, comp, ci)
    }
    fn cache_bytes(&self) -> u64 {
        // New chunks are views of the decoded frame (not counted); only the base's
        // chunks are kept on their own, and they are cheap to rebuild.
        4 << 20
    }
}

/// The directory of the keyring an install trusts.
pub fn keyring_dir(dev: &Device, opts: &InstallOptions) -> std::path::PathBuf {
    opts.keyring
        .clone()
        .unwrap_or_else(|| dev.root.path(&dev.config.keyring))
}

/// The keyring an install trusts.
pub fn keyring(dev: &Device, opts: &InstallOptions) -> Result<Keyring, AgentError> {
    Keyring::load(&keyring_dir(dev, opts)).map_err(|e| AgentError::Rejected(e.to_string()))
}

/// Installs a local bundle file into the inactive slot and (unless `no_switch`) switches.
pub fn install(
    dev: &mut Device,
    opts: &InstallOptions,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<InstallReport, AgentError> {
    let ring = keyring(dev, opts)?;
    let bundle = Bundle::open(&opts.bundle, Trust::Keyring(&ring))
        .map_err(|e| AgentError::Rejected(format!("{}: {e}", opts.bundle.display())))?;
    // A local bundle is checked whole before the first write (the payload hash covers every
    // stored byte), so a damaged file never touches a slot; chunks are verified again as
    // they are written.
    bundle
        .check_payload_hash()
        .map_err(|e| AgentError::Rejected(format!("{}: {e}", opts.bundle.display())))?;
    install_from(dev, &bundle, opts, &mut |_, _| Ok(()), progress)
}

/// Installs from any chunk source. `prepare` runs once every check has passed, under the
/// install lock and before the first write, with the running slot (a delta install scans
/// its seeds and fetches the missing chunks there).
pub fn install_from(
    dev: &mut Device,
    src: &dyn ChunkSource,
    opts: &InstallOptions,
    prepare: &mut dyn FnMut(&Device, Slot) -> Result<(), AgentError>,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<InstallReport, AgentError> {
    let st = dev.storage.clone();
    let data = DataDir::new(&st, &dev.config.data_dir);
    let _lock = InstallLock::take(&data)?;

    // 1. Everything that can refuse the bundle, before any write.
    let m = src.parsed().manifest.clone();
    let bundle_id = Digest::of(&src.parsed().manifest_bytes).to_string();

    let rules = m
        .hw_rules()
        .map_err(|e| AgentError::Rejected(e.to_string()))?;
    if !rules.is_empty() {
        let ids = dev.board_ids()?;
        if jota_bundle::hwcompat::check(&rules, &ids).is_none() {
            let have: Vec<String> = ids
                .iter()
                .map(|i| format!("{}-{}-{}", i.board_id, i.sku, i.fab))
                .collect();
            return Err(AgentError::Rejected(format!(
                "bundle {} is for {} but this device is {}",
                m.version,
                m.hardware_compatibility.join(" or "),
                have.join("+")
            )));
        }
    }
    if crate::layers::is_application(&m) {
        // Application layers update the running system: no slot, no reboot, no OS version
        // rules (the bundle's version is the application's).
        if let Some(c) = m.components.iter().find(|c| c.size > MAX_IN_MEMORY) {
            return Err(AgentError::Rejected(format!(
                "{}: {} bytes is more than jota installs to a file ({} MiB)",
                c.name,
                c.size,
                MAX_IN_MEMORY >> 20
            )));
        }
        precheck::check(dev, &m.pre_checks).map_err(AgentError::Precheck)?;
        let current = dev.current_slot()?;
        prepare(dev, current)?;
        crate::layers::apply(dev, src, &|i| extract_small(src, i), progress)?;
        return Ok(InstallReport {
            version: m.version.clone(),
            target_slot: current,
            written: m
                .components
                .iter()
                .map(|c| (c.name.clone(), c.size))
                .collect(),
            resumed: Vec::new(),
            switched: false,
            live: true,
        });
    }
    let status = data.status();
    if let Some(floor) = &status.min_version {
        if jota_bundle::version::compare(&m.version, floor).is_lt() {
            return Err(AgentError::Rejected(format!(
                "bundle version {} is below this device's minimum version {floor} (anti-rollback)",
                m.version
            )));
        }
    }
    let running = dev.running_version();
    if let Some(run_v) = &running {
        if !dev.config.allow_downgrade && jota_bundle::version::compare(&m.version, run_v).is_lt() {
            return Err(AgentError::Rejected(format!(
                "bundle version {} is older than the running {run_v} (downgrade; set allow_downgrade to permit it)",
                m.version
            )));
        }
    }
    precheck::check(dev, &m.pre_checks).map_err(AgentError::Precheck)?;

    let current = dev.current_slot()?;
    let target = other(current);
    let active_bl = dev.boot.active_slot(Target::Bootloader)?;
    let active_fs = dev.boot.active_slot(Target::Rootfs)?;
    let prev = data.journal().map_err(AgentError::Device)?;
    if let Some(j) = &prev {
        if matches!(j.state, State::Switched | State::Validating { .. }) {
            return Err(AgentError::Busy(format!(
                "version {} is installed in slot {} and switched to; reboot and validate it first",
                j.version, j.target_slot
            )));
        }
    }
    if active_fs == target && active_bl == target {
        // Switched by someone else (or an earlier run) without a reboot: writing the slot
        // that will boot next would be writing the live path.
        return Err(AgentError::Busy(format!(
            "slot {target} is already the active slot for the next boot; reboot or `jota status mark-active booted` first"
        )));
    }

    let uefi = dev.boot.name() == "l4t-uefi";
    let mut plans = Vec::new();
    for c in &m.components {
        plans.push(plan(dev, c, target, uefi)?);
    }

    prepare(dev, current)?;

    // Resume an interrupted install of the same bundle into the same slot.
    let resume = prev.filter(|j| {
        j.bundle_id == bundle_id
            && j.target_slot == target
            && matches!(
                j.state,
                State::Installing { .. } | State::Installed | State::Interrupted
            )
    });
    let mut j = Journal {
        bundle_id,
        version: m.version.clone(),
        source: opts.source.clone(),
        from_slot: current,
        from_version: running.clone(),
        target_slot: target,
        state: State::Installing { component: 0 },
        verified: Vec::new(),
        minimum_version: m.minimum_version.clone(),
        started: now(),
        updated: now(),
        error: None,
    };
    let previously: Vec<String> = resume.map(|r| r.verified).unwrap_or_default();
    let root_dir = dev.root.dir().display().to_string();
    let env = |stage: &str| -> Env {
        vec![
            ("JOTA_STAGE".into(), stage.into()),
            ("JOTA_VERSION".into(), m.version.clone()),
            ("JOTA_CURRENT_SLOT".into(), current.to_string()),
            ("JOTA_TARGET_SLOT".into(), target.to_string()),
            ("JOTA_BUNDLE".into(), opts.bundle.display().to_string()),
            ("JOTA_ROOT".into(), root_dir.clone()),
            (
                "JOTA_DATA_DIR".into(),
                data.host_path().display().to_string(),
            ),
        ]
    };

    let _inhibit = (!dev.simulated()).then(Inhibitor::take);
    let res = (|| -> Result<InstallReport, AgentError> {
        data.save(&mut j)?;
        data.set_status("installing")?;
        tracing::info!(version = %m.version, slot = %target, "install started");
        hook(&dev.config.hooks.pre_install, &env("pre-install"))?;
        run_scripts(src, &plans, Phase::PreInstall, &data, &env("pre-install"))?;

        let mut report = InstallReport {
            version: m.version.clone(),
            target_slot: target,
            written: Vec::new(),
            resumed: Vec::new(),
            switched: false,
            live: false,
        };
        let block = dev.config.write_block_kib as usize * 1024;
        for (i, (c, p)) in m.components.iter().zip(&plans).enumerate() {
            j.state = State::Installing { component: i };
            data.save(&mut j)?;
            if previously.contains(&c.name) && verify_written(dev, src, i, p, target)? {
                tracing::info!(component = %c.name, "resumed: already written and intact");
                report.resumed.push(c.name.clone());
                j.verified.push(c.name.clone());
                continue;
            }
            let wrote = match p {
                Plan::Partition(part) => {
                    write_partition(&st, src, i, part, block, opts.threads, &|n| {
                        progress(&c.name, n, c.size)
                    })?;
                    c.size
                }
                Plan::Bup(tnspec) => write_bup(dev, src, i, tnspec, target)?,
                Plan::File(path) => {
                    let bytes = extract_small(src, i)?;
                    st.write_file(path, &bytes)?;
                    bytes.len() as u64
                }
                // Capsules are staged with the switch; scripts run at their phase.
                Plan::Capsule(_) | Plan::Script(_) => continue,
            };
            report.written.push((c.name.clone(), wrote));
            j.verified.push(c.name.clone());
            data.save(&mut j)?;
        }
        run_scripts(src, &plans, Phase::PostInstall, &data, &env("post-install"))?;
        hook(&dev.config.hooks.post_install, &env("post-install"))?;
        j.state = State::Installed;
        data.save(&mut j)?;
        data.set_status("installed")?;
        if opts.no_switch {
            return Ok(report);
        }

        // 3. The switch: every component is written and verified.
        for (i, p) in plans.iter().enumerate() {
            if let Plan::Capsule(path) = p {
                stage_capsule(dev, src, i, path)?;
            }
        }
        dev.boot.switch_both(target)?;
        j.state = State::Switched;
        data.save(&mut j)?;
        data.set_status("switched")?;
        report.switched = true;
        tracing::info!(version = %m.version, slot = %target, "switched; reboot to boot it");
        if let Err(e) = hook(&dev.config.hooks.post_activate, &env("post-activate")) {
            tracing::warn!("post-activate hook: {e}");
        }
        Ok(report)
    })();

    if let Err(e) = &res {
        if !power_lost(&st) {
            j.state = if j.verified.is_empty() {
                State::Failed
            } else {
                State::Interrupted
            };
            j.error = Some(e.to_string());
            let _ = data.save(&mut j);
            let _ = data.set_status("failed");
            let mut env = env("on-failure");
            env.push(("JOTA_ERROR".into(), e.to_string()));
            if let Err(h) = hook(&dev.config.hooks.on_failure, &env) {
                tracing::warn!("on-failure hook: {h}");
            }
        }
    }
    res
}

/// A systemd inhibitor lock (shutdown, sleep, idle) held while the install runs.
struct Inhibitor(Option<std::process::Child>);

impl Inhibitor {
    fn take() -> Inhibitor {
        let child = std::process::Command::new("systemd-inhibit")
            .args([
                "--what=shutdown:sleep:idle",
                "--who=jota",
                "--why=Writing a system update",
                "--mode=block",
                "sleep",
                "infinity",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = &child {
            tracing::debug!("no systemd-inhibit ({e}): shutdown is not inhibited");
        }
        Inhibitor(child.ok())
    }
}

impl Drop for Inhibitor {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether the simulated power is off (nothing more can be written).
pub fn power_lost(st: &Storage) -> bool {
    st.faults()
        .and_then(|f| f.load().ok())
        .is_some_and(|p| p.power_lost)
}

fn hook(argv: &[String], env: &Env) -> Result<(), AgentError> {
    if argv.is_empty() {
        return Ok(());
    }
    run(argv, env, SCRIPT_TIMEOUT).map_err(AgentError::Hook)
}

/// Decides where a component goes, checking it fits, before anything is written.
fn plan(dev: &Device, c: &Component, target: Slot, uefi: bool) -> Result<Plan, AgentError> {
    let rej = |why: String| AgentError::Rejected(format!("component `{}`: {why}", c.name));
    Ok(match c.kind {
        ComponentType::RawImage => {
            let base = c
                .partition
                .as_deref()
                .ok_or_else(|| rej("a raw image needs a partition".into()))?;
            let p = dev.label(base, target)?;
            if c.size > p.size {
                return Err(rej(format!(
                    "{} bytes do not fit partition {} ({} bytes)",
                    c.size, p.label, p.size
                )));
            }
            if dev.mounted(&p) {
                return Err(rej(format!("partition {} is mounted", p.label)));
            }
            Plan::Partition(p)
        }
        ComponentType::TegraBup => {
            if uefi {
                return Err(rej(
                    "a BUP installs on R32 (cboot/U-Boot) devices; R35/R36 update firmware with a uefi-capsule component".into(),
                ));
            }
            if c.size > MAX_IN_MEMORY {
                return Err(rej(format!("{} bytes is too large for a BUP", c.size)));
            }
            Plan::Bup(dev.tnspec()?)
        }
        ComponentType::UefiCapsule => {
            if !uefi {
                return Err(rej(
                    "a UEFI capsule needs an R35/R36 (UEFI) device; R32 devices take a tegra-bup"
                        .into(),
                ));
            }
            Plan::Capsule(c.path.clone().unwrap_or_else(|| CAPSULE_PATH.into()))
        }
        ComponentType::File | ComponentType::Model | ComponentType::Container => {
            let path = c
                .path
                .clone()
                .filter(|p| p.starts_with('/'))
                .ok_or_else(|| rej("needs an absolute target path in an A/B bundle".into()))?;
            if c.size > MAX_IN_MEMORY {
                return Err(rej(format!(
                    "{} bytes is more than jota installs to a file ({} MiB)",
                    c.size,
                    MAX_IN_MEMORY >> 20
                )));
            }
            Plan::File(path)
        }
        ComponentType::Script => Plan::Script(c.phase.unwrap_or(Phase::PostInstall)),
    })
}

/// Writes component `i` into `part` in `block`-sized writes.
fn write_partition(
    st: &Storage,
    src: &dyn ChunkSource,
    i: usize,
    part: &PartitionRef,
    block: usize,
    threads: usize,
    progress: &dyn Fn(u64),
) -> Result<(), AgentError> {
    let c = &src.parsed().manifest.components[i];
    let io = st.open(part, true)?;
    // A read-back thread trails the writer: each time it is kicked it makes what was
    // written so far durable (fsync), drops it from the page cache and reads it back from
    // the medium into the running sha256. Writeback, read-back and hashing overlap with
    // decompression; at the end only the tail is left.
    let (kick, kicked) = std::sync::mpsc::sync_channel::<u64>(1);
    let (hasher, verified) = std::thread::scope(|s| {
        let io = &io;
        let reader = s.spawn(move || -> Result<(sha2::Sha256, u64), AgentError> {
            let mut h = sha2::Sha256::new();
            let mut done = 0u64;
            for upto in kicked {
                io.sync()?;
                read_into(io, done, upto, &mut h)?;
                done = upto;
            }
            Ok((h, done))
        });
        let mut w = PartWriter {
            io,
            buf: Vec::with_capacity(block),
            block,
            at: 0,
            since_flush: 0,
            kick,
            err: None,
        };
        // The read-back hash covers the component: no second hash while extracting.
        let load = |ci: usize| src.load(i, ci);
        let res = extract_parsed(
            src.parsed(),
            i,
            &load,
            &mut w,
            &|n| progress(n),
            ExtractOptions {
                threads,
                hash_component: false,
                cache_bytes: src.cache_bytes(),
            },
        );
        let flushed = w.flush_block();
        let err = w.err.take();
        drop(w); // closes the channel: the reader finishes what it was given
        let read = reader
            .join()
            .map_err(|_| AgentError::Device("the read-back thread panicked".into()))?;
        if let Some(e) = err {
            return Err(e.into());
        }
        res.map_err(|e| AgentError::Rejected(e.to_string()))?;
        flushed?;
        read
    })?;
    io.sync()?;
    let mut h = hasher;
    read_into(&io, verified, c.size, &mut h)?;
    let got = Digest(h.finalize().into());
    if got != c.sha256 {
        return Err(AgentError::Verify(format!(
            "component `{}` read back from {} hashes to {got}, expected {}",
            c.name, part.label, c.sha256
        )));
    }
    Ok(())
}

/// Reads `[from, to)` of a partition from the medium (cache dropped first) into `h`.
fn read_into(io: &PartitionIo, from: u64, to: u64, h: &mut sha2::Sha256) -> Result<(), AgentError> {
    if to <= from {
        return Ok(());
    }
    io.drop_cache(from, to - from)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < to {
        let k = (to - at).min(buf.len() as u64) as usize;
        io.read_at(at, &mut buf[..k])?;
        h.update(&buf[..k]);
        at += k as u64;
    }
    Ok(())
}

/// Buffers extracted bytes into whole writes to a partition.
struct PartWriter<'a> {
    io: &'a PartitionIo,
    buf: Vec<u8>,
    block: usize,
    at: u64,
    since_flush: u64,
    kick: std::sync::mpsc::SyncSender<u64>,
    err: Option<jota_bootctl::storage::StorageError>,
}

/// Bytes written between read-back kicks.
const FLUSH_EVERY: u64 = 64 << 20;

impl PartWriter<'_> {
    fn flush_block(&mut self) -> Result<(), jota_bootctl::storage::StorageError> {
        if !self.buf.is_empty() {
            // Zero runs (free space of a filesystem image) become zero-range allocations:
            // no data to move, and the read-back reads holes.
            if self.buf.iter().all(|b| *b == 0) {
                self.io.write_zeros(self.at, self.buf.len() as u64)?;
            } else {
                self.io.write_at(self.at, &self.buf)?;
            }
            self.at += self.buf.len() as u64;
            self.since_flush += self.buf.len() as u64;
            self.buf.clear();
            if self.since_flush >= FLUSH_EVERY {
                self.since_flush = 0;
                // While the reader is busy, skip: its next kick covers this range too.
                let _ = self.kick.try_send(self.at);
            }
        }
        Ok(())
    }
}

impl Write for PartWriter<'_> {
    fn write(&mut self, mut b: &[u8]) -> std::io::Result<usize> {
        let n = b.len();
        while !b.is_empty() {
            let k = (self.block - self.buf.len()).min(b.len());
            self.buf.extend_from_slice(&b[..k]);
            b = &b[k..];
            if self.buf.len() == self.block {
                if let Err(e) = self.flush_block() {
                    let msg = e.to_string();
                    self.err = Some(e);
                    return Err(std::io::Error::other(msg));
                }
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Hashes the first `len` bytes of a partition.
pub fn hash_partition(st: &Storage, part: &PartitionRef, len: u64) -> Result<Digest, AgentError> {
    let io = st.open(part, false)?;
    // Read the medium, not what the page cache still holds of the writes.
    io.drop_cache(0, len)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let k = (len - at).min(buf.len() as u64) as usize;
        io.read_at(at, &mut buf[..k])?;
        h.update(&buf[..k]);
        at += k as u64;
    }
    Ok(Digest(h.finalize().into()))
}

/// Reads a written partition back and compares it with the manifest.
fn read_back(
    st: &Storage,
    part: &PartitionRef,
    len: u64,
    want: &Digest,
    name: &str,
) -> Result<(), AgentError> {
    let got = hash_partition(st, part, len)?;
    if got != *want {
        return Err(AgentError::Verify(format!(
            "component `{name}` read back from {} hashes to {got}, expected {want}",
            part.label
        )));
    }
    Ok(())
}

/// Whether a component an interrupted install wrote is still intact.
fn verify_written(
    dev: &Device,
    src: &dyn ChunkSource,
    i: usize,
    p: &Plan,
    target: Slot,
) -> Result<bool, AgentError> {
    let c = &src.parsed().manifest.components[i];
    Ok(match p {
        Plan::Partition(part) => hash_partition(&dev.storage, part, c.size)? == c.sha256,
        Plan::Bup(tnspec) => bup_written(dev, src, i, tnspec, target)?,
        Plan::File(path) => std::fs::read(dev.root.path(path))
            .map(|b| Digest::of(&b) == c.sha256)
            .unwrap_or(false),
        Plan::Capsule(_) | Plan::Script(_) => false,
    })
}

fn extract_small(src: &dyn ChunkSource, i: usize) -> Result<Vec<u8>, AgentError> {
    let c = &src.parsed().manifest.components[i];
    let mut v = Vec::with_capacity(c.size.min(MAX_IN_MEMORY) as usize);
    extract_parsed(
        src.parsed(),
        i,
        &|ci| src.load(i, ci),
        &mut v,
        &|_| {},
        ExtractOptions {
            cache_bytes: src.cache_bytes(),
            ..ExtractOptions::default()
        },
    )
    .map_err(|e| AgentError::Rejected(e.to_string()))?;
    Ok(v)
}

/// The BUP entries chosen for this board: (partition, bytes).
fn bup_entries(bytes: &[u8], tnspec: &str) -> Result<Vec<(String, Vec<u8>)>, AgentError> {
    use jota_tegra::bup::{Bup, SelectionRule, Target as BupTarget};
    let bup = Bup::parse(bytes).map_err(|e| AgentError::Rejected(format!("BUP: {e}")))?;
    let t = BupTarget::from_spec(tnspec);
    let rule = SelectionRule::for_format(bup.header.format);
    let mut out = Vec::new();
    for p in bup.partitions() {
        let sel = bup.select(p, &t, rule);
        let Some(e) = sel.entry else {
            return Err(AgentError::Rejected(format!(
                "the BUP has no `{p}` entry for this board ({tnspec})"
            )));
        };
        let data = bup.entry_data(bytes, &bup.entries[e]).ok_or_else(|| {
            AgentError::Rejected(format!("BUP entry `{p}` lies outside the payload"))
        })?;
        out.push((p.to_string(), data.to_vec()));
    }
    Ok(out)
}

/// Writes the BUP entries for this board into the inactive chain's partitions (those the
/// device has), then reads each back.
fn write_bup(
    dev: &Device,
    src: &dyn ChunkSource,
    i: usize,
    tnspec: &str,
    target: Slot,
) -> Result<u64, AgentError> {
    let bytes = extract_small(src, i)?;
    let entries = bup_entries(&bytes, tnspec)?;
    let mut total = 0;
    for (p, data) in &entries {
        let Ok(part) = dev.label(p, target) else {
            continue;
        };
        if data.len() as u64 > part.size {
            return Err(AgentError::Rejected(format!(
                "BUP entry `{p}` ({} bytes) does not fit {} ({} bytes)",
                data.len(),
                part.label,
                part.size
            )));
        }
        let io = dev.storage.open(&part, true)?;
        let block = dev.config.write_block_kib as usize * 1024;
        for (k, piece) in data.chunks(block).enumerate() {
            io.write_at((k * block) as u64, piece)?;
        }
        io.sync()?;
        read_back(
            &dev.storage,
            &part,
            data.len() as u64,
            &Digest::of(data),
            &format!("bup:{p}"),
        )?;
        total += data.len() as u64;
    }
    Ok(total)
}

fn bup_written(
    dev: &Device,
    src: &dyn ChunkSource,
    i: usize,
    tnspec: &str,
    target: Slot,
) -> Result<bool, AgentError> {
    let bytes = extract_small(src, i)?;
    for (p, data) in bup_entries(&bytes, tnspec)? {
        let Ok(part) = dev.label(&p, target) else {
            continue;
        };
        if hash_partition(&dev.storage, &part, data.len() as u64)? != Digest::of(&data) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Places the capsule on the ESP and asks the firmware to process it at the next boot.
fn stage_capsule(
    dev: &Device,
    src: &dyn ChunkSource,
    i: usize,
    path: &str,
) -> Result<(), AgentError> {
    let bytes = extract_small(src, i)?;
    // Leftovers (a torn earlier staging) would be processed as capsules too.
    let dir = Path::new(path).parent().map(|p| p.display().to_string());
    if let Some(dir) = &dir {
        if let Ok(rd) = std::fs::read_dir(dev.root.path(dir)) {
            for e in rd.flatten() {
                let name = format!("{dir}/{}", e.file_name().to_string_lossy());
                if name != path {
                    dev.storage.remove_file(&name)?;
                }
            }
        }
    }
    dev.storage.write_file(path, &bytes)?;
    let store = EfivarfsStore::new(
        dev.root.path(paths::EFIVARS),
        Faults::for_root(dev.root.dir()),
    );
    let mut vars = L4tVars::new(store);
    let cur = vars
        .os_indications()
        .map_err(|e| AgentError::Device(format!("OsIndications: {e}")))?;
    vars.set_os_indications(cur | OS_INDICATIONS_FILE_CAPSULE_DELIVERY_SUPPORTED)
        .map_err(|e| AgentError::Device(format!("OsIndications: {e}")))?;
    Ok(())
}

/// Runs the bundle's scripts of `phase` (extracted to the data directory).
fn run_scripts(
    src: &dyn ChunkSource,
    plans: &[Plan],
    phase: Phase,
    data: &DataDir<'_>,
    env: &Env,
) -> Result<(), AgentError> {
    for (i, p) in plans.iter().enumerate() {
        if !matches!(p, Plan::Script(ph) if *ph == phase) {
            continue;
        }
        let c = &src.parsed().manifest.components[i];
        let dir = data.host_path().join("scripts");
        std::fs::create_dir_all(&dir).map_err(|e| AgentError::io(&dir, e))?;
        let f = dir.join(&c.name);
        std::fs::write(&f, extract_small(src, i)?).map_err(|e| AgentError::io(&f, e))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| AgentError::io(&f, e))?;
        run(&[f.display().to_string()], env, SCRIPT_TIMEOUT)
            .map_err(|e| AgentError::Hook(format!("{phase} script `{}`: {e}", c.name)))?;
    }
    Ok(())
}
