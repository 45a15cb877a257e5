//! `jota bundle`: build, inspect, verify, sign, extract bundles; export SWUpdate `.swu`.

use crate::util::{print_json, thousands, Bar};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use jota_bundle::build::{self, BaseKeys, Builder, ComponentSpec, Release};
use jota_bundle::manifest::{Phase, PreChecks};
use jota_bundle::read::{base_keys, Trust};
use jota_bundle::sign::{self, Signature, Signer};
use jota_bundle::{Bundle, Component, ComponentType, Keyring, PublicKey, SecretKey};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Arguments of `jota bundle`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Parser, Debug, Default)]
struct CreateArgs {
    /// Output bundle file.
    #[arg(short, long)]
    output: PathBuf,
    /// TOML recipe with the release and its components (paths relative to the recipe);
    /// options given here add to it or override it.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Release version (ordered like dpkg versions: 1.2.10 > 1.2.9, 1.0~rc1 < 1.0).
    #[arg(long)]
    version: Option<String>,
    /// Free-text description.
    #[arg(long)]
    description: Option<String>,
    /// Hardware rule BOARDID-SKU[-FAB] with globs, `+` joining module and carrier
    /// (e.g. 3767-0005, 3767-000[345]-*, 3767-*+3768-0000). Repeatable; none = any device.
    #[arg(long = "hw-compat")]
    hw_compat: Vec<String>,
    /// Anti-rollback floor: once committed, devices refuse bundles older than this.
    #[arg(long)]
    min_version: Option<String>,
    /// Signing key (PEM; repeat to sign with several keys, e.g. during key rotation).
    #[arg(long = "key")]
    keys: Vec<PathBuf>,
    /// Root filesystem image (ext4) for partition APP.
    #[arg(long)]
    rootfs: Option<PathBuf>,
    /// Kernel image for partition kernel (A_kernel/B_kernel on R35+).
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Kernel device tree for partition kernel-dtb.
    #[arg(long)]
    dtb: Option<PathBuf>,
    /// Bootloader update payload (BUP, e.g. bl_update_payload).
    #[arg(long)]
    bup: Option<PathBuf>,
    /// UEFI capsule (TEGRA_BL.Cap) for R35/R36 firmware.
    #[arg(long)]
    capsule: Option<PathBuf>,
    /// Script run after install, before the switch (`FILE` or `FILE:pre-install`).
    #[arg(long = "script")]
    scripts: Vec<String>,
    /// A file for the device: `SRC:/dest/path[:MODE]`.
    #[arg(long = "file")]
    files: Vec<String>,
    /// Any component: `NAME:TYPE:SRC[:TARGET]` (TARGET a partition label or /path).
    #[arg(long = "component")]
    components: Vec<String>,
    /// Previous release's bundle: group chunks so devices holding it fetch only what is new.
    #[arg(long)]
    base: Option<PathBuf>,
    /// zstd level of chunks.
    #[arg(long, default_value_t = 3)]
    level: i32,
    /// zstd level of chunks the base lacks (with --base).
    #[arg(long, default_value_t = 19)]
    new_level: i32,
    /// Chunk size in KiB (a multiple of 4).
    #[arg(long, default_value_t = 512)]
    chunk_kib: u32,
    /// Chunk size in KiB for blocks the base lacks (with --base).
    #[arg(long, default_value_t = 8192)]
    new_chunk_kib: u32,
    /// Compression threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Pre-check: minimum battery percent.
    #[arg(long)]
    min_battery: Option<u8>,
    /// Pre-check: minimum free space on the data partition, MiB.
    #[arg(long)]
    min_free_mb: Option<u64>,
    /// Pre-check: systemd unit that must be active (repeatable).
    #[arg(long = "require-service")]
    require_services: Vec<String>,
    /// Machine-readable output (the manifest).
    #[arg(long)]
    json: bool,
}

/// A slot naming scheme for `export-swu`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum NamingArg {
    /// R35/R36: APP/APP_b, A_kernel/B_kernel, A_kernel-dtb/B_kernel-dtb.
    L4tUefi,
    /// R32: APP/APP_b, kernel/kernel_b, kernel-dtb/kernel-dtb_b.
    L4tR32,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build and sign a bundle.
    ///
    /// Components come from --rootfs/--kernel/--dtb/--bup/--capsule/--script/--file/
    /// --component and/or a TOML --recipe. Inputs are checked at build time (the rootfs is
    /// ext4, a BUP or capsule parses, scripts start with #!). Each image is cut into 4 KiB
    /// blocks; zero blocks are dropped, equal blocks stored once, and the rest compressed
    /// in independent zstd chunks on every CPU.
    Create(Box<CreateArgs>),
    /// Show what a bundle holds (signatures are not checked; see `verify`).
    Info {
        /// The bundle.
        file: PathBuf,
        /// List every chunk.
        #[arg(long)]
        chunks: bool,
        /// Machine-readable output: manifest, signatures and section offsets.
        #[arg(long)]
        json: bool,
    },
    /// Check signatures, every chunk and every component hash; name what is wrong.
    Verify {
        /// The bundle.
        file: PathBuf,
        /// Directory of trusted public keys (*.pem).
        #[arg(long)]
        keyring: PathBuf,
        /// Threads (0 = one per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Write one component's content to a file (verified; nothing is left on failure).
    Extract {
        /// The bundle.
        file: PathBuf,
        /// Component name.
        component: String,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
        /// Directory of trusted public keys; without it signatures are not checked.
        #[arg(long)]
        keyring: Option<PathBuf>,
    },
    /// Add a signature: with a key, or one made elsewhere (e.g. by an HSM over the output
    /// of `jota bundle manifest`) together with its public key.
    Sign {
        /// The bundle (rewritten in place unless -o).
        file: PathBuf,
        /// Signing key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// A signature file made elsewhere (ed25519: 64 raw bytes; ECDSA: DER; RSA: PSS).
        #[arg(long, requires = "public_key", conflicts_with = "key")]
        signature: Option<PathBuf>,
        /// The public key of --signature.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Write the signed bundle here instead.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Build a static patch from release OLD to release NEW: the fewest bytes for devices
    /// running exactly OLD (they fall back to NEW's chunked delta otherwise). Publish PATCH
    /// next to NEW (same directory or URL): NEW is the fallback.
    Delta {
        /// The base release's bundle.
        old: PathBuf,
        /// The new release's bundle.
        new: PathBuf,
        /// Output patch file.
        #[arg(short, long)]
        output: PathBuf,
        /// Signing key (PEM; repeatable).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Check both bundles' signatures against this keyring first.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// zstd level of the data frames (1-22).
        #[arg(long, default_value_t = 22)]
        level: i32,
        /// Close a data frame at the first chunk boundary past this many MiB (a device
        /// holds one frame in memory while applying).
        #[arg(long, default_value_t = 48)]
        frame_mib: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the exact manifest bytes that signatures cover (for external signing).
    Manifest {
        /// The bundle.
        file: PathBuf,
    },
    /// Export an SWUpdate `.swu` (CMS-signed, zstd images, dual-copy `stable,copy1|copy2`).
    ///
    /// Install on a device with `swupdate -i OUT.swu -k CERT -e stable,copy2` for slot B
    /// (`copy1` for slot A). Images go to /dev/disk/by-partlabel/<slot label> unless --map
    /// says otherwise; hardware-compatibility becomes `#RE:` patterns over the module's
    /// BOARDID-SKU-FAB, so /etc/hwrevision reads e.g. `jetson 3767-0005-300`.
    ExportSwu {
        /// The bundle.
        input: PathBuf,
        /// Output .swu.
        #[arg(short, long)]
        output: PathBuf,
        /// Signer certificate (PEM); devices pass it to swupdate -k.
        #[arg(long)]
        cert: PathBuf,
        /// The certificate's private key (RSA or ECDSA P-256).
        #[arg(long)]
        key: PathBuf,
        /// Target override `COMPONENT=DEVICE_OR_PATH` (both copies) or
        /// `COMPONENT@A=...` / `COMPONENT@B=...`.
        #[arg(long = "map")]
        map: Vec<String>,
        /// Check the bundle's signatures against this keyring first.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// Partition naming of the slots.
        #[arg(long, value_enum, default_value = "l4t-uefi")]
        naming: NamingArg,
        /// Leave out the scripts that switch to the installed slot.
        #[arg(long)]
        no_switch: bool,
        /// hardware-compatibility entries to write instead of the bundle's rules.
        #[arg(long = "hw-revision")]
        hw_revisions: Vec<String>,
        /// zstd level of the images.
        #[arg(long, default_value_t = 9)]
        level: i32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// A recipe file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct Recipe {
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    hardware_compatibility: Vec<String>,
    minimum_version: Option<String>,
    #[serde(default)]
    keys: Vec<PathBuf>,
    #[serde(default)]
    pre_checks: PreChecks,
    #[serde(default, rename = "component")]
    components: Vec<RecipeComponent>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RecipeComponent {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    source: PathBuf,
    partition: Option<String>,
    path: Option<String>,
    mode: Option<String>,
    phase: Option<Phase>,
    version: Option<String>,
}

/// Runs `jota bundle`.
pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        Cmd::Create(c) => create(*c),
        Cmd::Info { file, chunks, json } => info(&file, chunks, json),
        Cmd::Verify {
            file,
            keyring,
            threads,
            json,
        } => verify(&file, &keyring, threads, json),
        Cmd::Extract {
            file,
            component,
            output,
            keyring,
        } => extract(&file, &component, &output, keyring.as_deref()),
        Cmd::Sign {
            file,
            key,
            signature,
            public_key,
            output,
        } => sign_cmd(&file, key, signature, public_key, output),
        Cmd::Delta {
            old,
            new,
            output,
            keys,
            keyring,
            level,
            frame_mib,
            json,
        } => delta(
            &old,
            &new,
            &output,
            &keys,
            keyring.as_deref(),
            level,
            frame_mib,
            json,
        ),
        Cmd::Manifest { file } => {
            let b = Bundle::open(&file, Trust::Unchecked)?;
            use std::io::Write;
            std::io::stdout()
                .lock()
                .write_all(&b.parsed.manifest_bytes)?;
            Ok(())
        }
        Cmd::ExportSwu {
            input,
            output,
            cert,
            key,
            map,
            keyring,
            naming,
            no_switch,
            hw_revisions,
            level,
            json,
        } => {
            let trust_ring;
            let trust = match &keyring {
                Some(k) => {
                    trust_ring = Keyring::load(k)?;
                    Trust::Keyring(&trust_ring)
                }
                None => {
                    tracing::warn!(
                        "no --keyring: exporting without checking the bundle's signatures"
                    );
                    Trust::Unchecked
                }
            };
            let b = Bundle::open(&input, trust)
                .with_context(|| format!("bundle {}", input.display()))?;
            let key = SecretKey::load(&key)?;
            let cert_pem = std::fs::read_to_string(&cert)
                .with_context(|| format!("reading {}", cert.display()))?;
            let mut maps = Vec::new();
            for m in &map {
                let (lhs, target) = m
                    .split_once('=')
                    .with_context(|| format!("--map `{m}` is not COMPONENT=TARGET"))?;
                let (comp, copy) = match lhs.split_once('@') {
                    Some((c, "A")) => (c, Some(false)),
                    Some((c, "B")) => (c, Some(true)),
                    Some((_, s)) => bail!("--map `{m}`: slot `{s}` is not A or B"),
                    None => (lhs, None),
                };
                maps.push((comp.to_string(), copy, target.to_string()));
            }
            let opts = jota_bundle::swu::Options {
                cert_pem,
                key: &key,
                map: maps,
                naming: match naming {
                    NamingArg::L4tUefi => jota_bundle::swu::Naming::L4tUefi,
                    NamingArg::L4tR32 => jota_bundle::swu::Naming::L4tR32,
                },
                switch: !no_switch,
                hw_revisions: (!hw_revisions.is_empty()).then_some(hw_revisions),
                level,
                threads: 0,
            };
            let total: u64 = b.manifest().components.iter().map(|c| c.size).sum();
            let bar = Bar::bytes("export", total);
            let r = jota_bundle::swu::export(&b, &output, &opts, &|n| bar.inc(n))?;
            bar.done();
            if json {
                print_json(&r)?;
            } else {
                outln!("{}: {} bytes", output.display(), thousands(r.size));
                for f in &r.files {
                    outln!(
                        "  {:<28} {:>15}  sha256 {}",
                        f.name,
                        thousands(f.size),
                        f.sha256
                    );
                }
            }
            Ok(())
        }
    }
}

fn parse_kind(s: &str) -> Result<ComponentType> {
    s.parse().map_err(anyhow::Error::msg)
}

/// Turns create options (and the recipe) into component specs and sources.
fn plan(c: &CreateArgs, recipe: &Recipe, rdir: &Path) -> Result<Vec<(ComponentSpec, PathBuf)>> {
    let mut out: Vec<(ComponentSpec, PathBuf)> = Vec::new();
    for rc in &recipe.components {
        let mut s = ComponentSpec::new(&rc.name, parse_kind(&rc.kind)?);
        s.partition = rc.partition.clone().or(s.partition);
        s.path = rc.path.clone().or(s.path);
        s.mode = rc.mode.clone();
        s.phase = rc.phase.or(s.phase);
        s.version = rc.version.clone();
        out.push((s, rdir.join(&rc.source)));
    }
    let mut raw = |name: &str, part: &str, src: &Option<PathBuf>| {
        if let Some(p) = src {
            let mut s = ComponentSpec::new(name, ComponentType::RawImage);
            s.partition = Some(part.into());
            out.push((s, p.clone()));
        }
    };
    raw("rootfs", "APP", &c.rootfs);
    raw("kernel", "kernel", &c.kernel);
    raw("kernel-dtb", "kernel-dtb", &c.dtb);
    if let Some(p) = &c.bup {
        out.push((
            ComponentSpec::new("bootloader", ComponentType::TegraBup),
            p.clone(),
        ));
    }
    if let Some(p) = &c.capsule {
        out.push((
            ComponentSpec::new("capsule", ComponentType::UefiCapsule),
            p.clone(),
        ));
    }
    for s in &c.scripts {
        let (file, phase) = match s.rsplit_once(':') {
            Some((f, "pre-install")) => (f, Phase::PreInstall),
            Some((f, "post-install")) => (f, Phase::PostInstall),
            _ => (s.as_str(), Phase::PostInstall),
        };
        let p = PathBuf::from(file);
        let name = safe_name(&p)?;
        let mut spec = ComponentSpec::new(&name, ComponentType::Script);
        spec.phase = Some(phase);
        out.push((spec, p));
    }
    for f in &c.files {
        let mut parts = f.splitn(3, ':');
        let (src, dest, mode) = (parts.next(), parts.next(), parts.next());
        let (Some(src), Some(dest)) = (src, dest) else {
            bail!("--file `{f}` is not SRC:/dest/path[:MODE]");
        };
        let p = PathBuf::from(src);
        let mut spec = ComponentSpec::new(&safe_name(&p)?, ComponentType::File);
        spec.path = Some(dest.into());
        spec.mode = mode.map(str::to_string);
        out.push((spec, p));
    }
    for g in &c.components {
        let f: Vec<&str> = g.splitn(4, ':').collect();
        if f.len() < 3 {
            bail!("--component `{g}` is not NAME:TYPE:SRC[:TARGET]");
        }
        let mut spec = ComponentSpec::new(f[0], parse_kind(f[1])?);
        match f.get(3) {
            Some(t) if t.starts_with('/') => spec.path = Some(t.to_string()),
            Some(t) => spec.partition = Some(t.to_string()),
            None => {}
        }
        out.push((spec, PathBuf::from(f[2])));
    }
    if out.is_empty() {
        bail!("no components: give --rootfs, --kernel, --dtb, --bup, --capsule, --script, --file, --component or a --recipe");
    }
    Ok(out)
}

/// A component name from a file name (`post-update.sh` → `post-update.sh`).
fn safe_name(p: &Path) -> Result<String> {
    let n = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let n: String = n
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let n = n.trim_start_matches(['.', '-']).to_string();
    jota_bundle::manifest::check_name("component name", &n).map_err(anyhow::Error::msg)?;
    Ok(n)
}

struct BarProgress<'a>(&'a Bar);

impl build::Progress for BarProgress<'_> {
    fn start(&self, name: &str, size: u64) {
        self.0.reset(name, size);
        tracing::info!(component = name, size, "chunking");
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self, c: &Component) {
        let stored: u64 = c.chunks.iter().map(|x| x.size).sum();
        tracing::info!(component = %c.name, size = c.size, stored, chunks = c.chunks.len(), "done");
    }
}

fn create(c: CreateArgs) -> Result<()> {
    let (recipe, rdir) = match &c.recipe {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let r: Recipe =
                toml::from_str(&text).with_context(|| format!("recipe {}", p.display()))?;
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            (r, dir)
        }
        None => (Recipe::default(), PathBuf::new()),
    };
    let version = c
        .version
        .clone()
        .or(recipe.version.clone())
        .context("no version: pass --version or set `version` in the recipe")?;
    jota_bundle::version::validate(&version)?;
    let mut hw = recipe.hardware_compatibility.clone();
    hw.extend(c.hw_compat.iter().cloned());
    for r in &hw {
        jota_bundle::hwcompat::Rule::parse(r)?;
    }
    let min_version = c.min_version.clone().or(recipe.minimum_version.clone());
    let mut pre = recipe.pre_checks.clone();
    pre.min_battery_pct = c.min_battery.or(pre.min_battery_pct);
    pre.min_free_space_mb = c.min_free_mb.or(pre.min_free_space_mb);
    pre.required_services
        .extend(c.require_services.iter().cloned());
    let mut key_paths: Vec<PathBuf> = recipe.keys.iter().map(|k| rdir.join(k)).collect();
    key_paths.extend(c.keys.iter().cloned());
    let keys: Vec<SecretKey> = key_paths
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        tracing::warn!("no --key: the bundle will be unsigned and devices will refuse it");
    }
    let specs = plan(&c, &recipe, &rdir)?;
    let base = match &c.base {
        Some(p) => base_keys(
            &Bundle::open(p, Trust::Unchecked)
                .with_context(|| format!("base bundle {}", p.display()))?,
        ),
        None => BaseKeys::default(),
    };
    for (kib, what) in [
        (c.chunk_kib, "--chunk-kib"),
        (c.new_chunk_kib, "--new-chunk-kib"),
    ] {
        if kib == 0 || kib % 4 != 0 || kib > 65536 {
            bail!("{what} {kib} must be a multiple of 4 from 4 to 65536");
        }
    }
    let opts = build::Options {
        level: c.level,
        new_level: c.new_level,
        threads: c.threads,
        chunk_blocks: c.chunk_kib / 4,
        new_chunk_blocks: c.new_chunk_kib / 4,
    };
    let out_dir = match c.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut b = Builder::new(&out_dir, opts, base)?;
    let bar = Bar::bytes("", 0);
    for (spec, src) in specs {
        let name = spec.name.clone();
        b.add(spec, &src, &BarProgress(&bar))
            .with_context(|| format!("component `{name}` from {}", src.display()))?;
    }
    bar.done();
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => {
            let secs: u64 = s
                .trim()
                .parse()
                .context("SOURCE_DATE_EPOCH is not a number")?;
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
        }
        Err(_) => std::time::SystemTime::now(),
    };
    let release = Release {
        version,
        description: c.description.clone().or(recipe.description.clone()),
        created: Some(humantime::format_rfc3339_seconds(created).to_string()),
        hardware_compatibility: hw,
        minimum_version: min_version,
        pre_checks: pre,
    };
    let signers: Vec<&dyn Signer> = keys.iter().map(|k| k as &dyn Signer).collect();
    let m = b.finish(release, &signers, &c.output)?;
    if c.json {
        print_json(&m)?;
    } else {
        let size = std::fs::metadata(&c.output)?.len();
        outln!(
            "{}: version {}, {} bytes, {} component(s), signed by {}",
            c.output.display(),
            m.version,
            thousands(size),
            m.components.len(),
            if keys.is_empty() {
                "nobody".to_string()
            } else {
                keys.iter()
                    .map(|k| {
                        format!(
                            "{} {}",
                            k.public().algorithm(),
                            sign::short(&k.public().id())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        print_components(&m.components)?;
    }
    Ok(())
}

fn print_components(cs: &[Component]) -> Result<()> {
    outln!(
        "  {:<14} {:<12} {:<26} {:>15} {:>15} {:>7} {:>8}",
        "component",
        "type",
        "target",
        "size",
        "stored",
        "chunks",
        "ratio"
    );
    for c in cs {
        let stored: u64 = c.chunks.iter().map(|x| x.size).sum();
        let target = c
            .partition
            .clone()
            .or(c.path.clone())
            .or(c.phase.map(|p| p.to_string()))
            .unwrap_or_default();
        outln!(
            "  {:<14} {:<12} {:<26} {:>15} {:>15} {:>7} {:>7.1}%",
            c.name,
            c.kind.as_str(),
            target,
            thousands(c.size),
            thousands(stored),
            c.chunks.len(),
            if c.size == 0 {
                0.0
            } else {
                stored as f64 * 100.0 / c.size as f64
            }
        );
    }
    Ok(())
}

fn info(file: &Path, chunks: bool, json: bool) -> Result<()> {
    let b = Bundle::open(file, Trust::Unchecked)
        .with_context(|| format!("bundle {}", file.display()))?;
    let p = &b.parsed;
    let m = &p.manifest;
    if json {
        let h = &p.header;
        print_json(&serde_json::json!({
            "manifest": m,
            "manifest_sha256": jota_bundle::Digest::of(&p.manifest_bytes),
            "signatures": p.signatures,
            "sections": {
                "manifest": [h.manifest_offset(), h.manifest_len],
                "signatures": [h.signatures_offset(), h.signatures_len],
                "index": [h.index_offset(), h.index_len],
                "payload": [h.payload_offset(), h.payload_len],
            },
        }))?;
        return Ok(());
    }
    outln!("version:      {}", m.version);
    if let Some(d) = &m.description {
        outln!("description:  {d}");
    }
    if let Some(c) = &m.created {
        outln!("created:      {c}");
    }
    outln!(
        "hardware:     {}",
        if m.hardware_compatibility.is_empty() {
            "any".to_string()
        } else {
            m.hardware_compatibility.join(", ")
        }
    );
    if let Some(v) = &m.minimum_version {
        outln!("min version:  {v}");
    }
    if let Some(b) = &m.base {
        outln!(
            "delta base:   {} (manifest {})",
            b.version,
            sign::short(&b.manifest_sha256)
        );
    }
    if !m.pre_checks.is_empty() {
        outln!("pre-checks:   {}", serde_json::to_string(&m.pre_checks)?);
    }
    if p.signatures.is_empty() {
        outln!("signatures:   none");
    }
    for s in &p.signatures {
        outln!("signature:    {} by key {}", s.algorithm, s.key);
    }
    outln!(
        "size:         {} bytes (payload {}, index {})",
        thousands(p.header.total_len()),
        thousands(p.header.payload_len),
        thousands(p.header.index_len)
    );
    print_components(&m.components)?;
    if chunks {
        for c in &m.components {
            for (i, ch) in c.chunks.iter().enumerate() {
                outln!(
                    "  {} chunk {i}: offset {} size {} length {} blocks {}{} sha256 {}",
                    c.name,
                    ch.offset,
                    ch.size,
                    ch.length,
                    ch.blocks,
                    if ch.in_base { " in-base" } else { "" },
                    ch.sha256
                );
            }
        }
    }
    Ok(())
}

fn verify(file: &Path, keyring: &Path, threads: usize, json: bool) -> Result<()> {
    let ring = Keyring::load(keyring)?;
    let b = Bundle::open(file, Trust::Keyring(&ring))
        .with_context(|| format!("bundle {}", file.display()))?;
    let total: u64 = b.manifest().components.iter().map(|c| c.size).sum();
    let bar = Bar::bytes("verify", total);
    let t = std::time::Instant::now();
    b.verify_payload(threads, &|n| bar.inc(n))
        .with_context(|| format!("bundle {}", file.display()))?;
    bar.done();
    let secs = t.elapsed().as_secs_f64();
    if json {
        print_json(&serde_json::json!({
            "ok": true,
            "version": b.manifest().version,
            "signatures": b.signature_checks,
            "components": b.manifest().components.iter().map(|c| serde_json::json!({
                "name": c.name, "size": c.size, "sha256": c.sha256, "chunks": c.chunks.len(),
            })).collect::<Vec<_>>(),
            "seconds": secs,
        }))?;
    } else {
        for s in &b.signature_checks {
            match &s.trusted_by {
                Some(p) => outln!(
                    "signature {}: {} by {} ({p}): valid",
                    s.index,
                    s.algorithm,
                    sign::short(&s.key)
                ),
                None => outln!(
                    "signature {}: {} by {}: key not in keyring, not checked",
                    s.index,
                    s.algorithm,
                    sign::short(&s.key)
                ),
            }
        }
        for c in &b.manifest().components {
            outln!(
                "{}: {} bytes, {} chunks verified, sha256 {}",
                c.name,
                thousands(c.size),
                c.chunks.len(),
                c.sha256
            );
        }
        outln!(
            "bundle {} is valid ({:.0} MB/s)",
            b.manifest().version,
            total as f64 / secs.max(1e-9) / 1e6
        );
    }
    Ok(())
}

fn extract(file: &Path, component: &str, output: &Path, keyring: Option<&Path>) -> Result<()> {
    let ring = keyring.map(Keyring::load).transpose()?;
    let trust = match &ring {
        Some(r) => Trust::Keyring(r),
        None => Trust::Unchecked,
    };
    let b = Bundle::open(file, trust).with_context(|| format!("bundle {}", file.display()))?;
    let i = b.parsed.component_index(component)?;
    let size = b.manifest().components[i].size;
    let bar = Bar::bytes(component, size);
    // write_atomic removes the temp file when extraction fails (e.g. a damaged chunk).
    crate::util::write_atomic(output, |f| {
        let mut w = std::io::BufWriter::new(f);
        b.extract(i, &mut w, 0, &|n| bar.inc(n))?;
        use std::io::Write;
        w.flush()?;
        Ok(())
    })?;
    bar.done();
    outln!("{}: {} bytes", output.display(), thousands(size));
    Ok(())
}

/// A signature made elsewhere, checked before it is added.
struct External {
    key: PublicKey,
    sig: Vec<u8>,
}

impl Signer for External {
    fn sign(&self, manifest: &[u8]) -> Result<Signature, sign::SignError> {
        if !self.key.verify(manifest, &self.sig) {
            return Err(sign::SignError::Invalid {
                index: 0,
                key: self.key.id().to_string(),
                path: "--signature".into(),
            });
        }
        Ok(Signature {
            algorithm: self.key.algorithm(),
            key: self.key.id(),
            signature: self.sig.clone(),
        })
    }
}

fn sign_cmd(
    file: &Path,
    key: Option<PathBuf>,
    signature: Option<PathBuf>,
    public_key: Option<PathBuf>,
    output: Option<PathBuf>,
) -> Result<()> {
    let b = Bundle::open(file, Trust::Unchecked)
        .with_context(|| format!("bundle {}", file.display()))?;
    let signer: Box<dyn Signer> = match (key, signature, public_key) {
        (Some(k), None, _) => Box::new(SecretKey::load(&k)?),
        (None, Some(s), Some(p)) => Box::new(External {
            key: PublicKey::load(&p)?,
            sig: std::fs::read(&s).with_context(|| format!("reading {}", s.display()))?,
        }),
        _ => bail!("give --key, or --signature with --public-key"),
    };
    let sig = signer.sign(&b.parsed.manifest_bytes)?;
    let out = output.unwrap_or_else(|| file.to_path_buf());
    let all = b.add_signatures(&[sig], &out)?;
    outln!("{}: {} signature(s)", out.display(), all.len());
    for s in all {
        outln!("  {} by {}", s.algorithm, s.key);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn delta(
    old: &Path,
    new: &Path,
    output: &Path,
    keys: &[PathBuf],
    keyring: Option<&Path>,
    level: i32,
    frame_mib: u64,
    json: bool,
) -> Result<()> {
    use jota_delta::patch::{build, BuildOptions, MAX_FRAME_LEN};
    if !(1..=22).contains(&level) {
        bail!("--level {level}: zstd levels are 1 to 22");
    }
    if frame_mib == 0 || frame_mib << 20 > MAX_FRAME_LEN {
        bail!(
            "--frame-mib {frame_mib}: must be 1 to {} (what devices accept)",
            MAX_FRAME_LEN >> 20
        );
    }
    if keys.is_empty() {
        bail!("--key is required: devices accept only signed patches");
    }
    let ring = keyring.map(Keyring::load).transpose()?;
    let trust = || match &ring {
        Some(r) => Trust::Keyring(r),
        None => Trust::Unchecked,
    };
    let o = Bundle::open(old, trust()).with_context(|| format!("{}", old.display()))?;
    let n = Bundle::open(new, trust()).with_context(|| format!("{}", new.display()))?;
    let secrets = keys
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let signers: Vec<&dyn Signer> = secrets.iter().map(|k| k as &dyn Signer).collect();
    let name = new
        .file_name()
        .and_then(|n| n.to_str())
        .context("the new bundle's path has no file name")?;
    let size = std::fs::metadata(new)?.len();
    let opts = BuildOptions {
        level,
        frame_target: frame_mib << 20,
        ..BuildOptions::default()
    };
    let spin = Bar::spinner("building the patch");
    let r = build(&o, &n, name, size, &signers, &opts, output);
    spin.done();
    let r = r?;
    if json {
        return print_json(&r);
    }
    outln!(
        "patch {} -> {}: {} bytes ({} blocks from the base, {} new in {} frame(s), prefix {} bytes)",
        o.manifest().version,
        n.manifest().version,
        thousands(r.patch_bytes),
        thousands(r.copied_blocks),
        thousands(r.data_blocks),
        r.frames,
        thousands(r.prefix_bytes)
    );
    outln!(
        "a device on {} downloads {} bytes; by chunked delta {}, in full {}",
        o.manifest().version,
        thousands(r.patch_bytes),
        thousands(r.chunked_bytes),
        thousands(r.full_bytes)
    );
    Ok(())
}
