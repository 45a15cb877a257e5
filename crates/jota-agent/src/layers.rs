//! Application layers (seed 001 §2.2 layers 2 and 3, §11): a bundle that holds only `file`,
//! `model` and `container` components (and scripts) updates the running system — no slot
//! switch, no reboot.
//!
//! - `file`/`model` with path `/data/models/model.engine`: the layer is the directory
//!   `/data/models`; the file lands in `/data/models/<version>/model.engine` (every file of
//!   the bundle for that directory in the same version directory, written and verified
//!   first), then `/data/models/current` is switched to `<version>` with one atomic rename.
//!   The previous version stays for rollback (`[layers] keep` more are kept).
//! - `container`: the payload is an image reference (`registry/app@sha256:…`, pulled) or an
//!   image archive (`docker save` output, loaded) for the engine CLI in `[layers] engine`;
//!   the component's path is the tag the application runs (`inference:current`). The tag's
//!   previous image is kept as `<tag>-jota-previous`.
//!
//! After the switch the `reload` and `restart` commands run, then the application's
//! `health` command until it passes or `health_timeout_s` runs out; on failure every layer
//! and tag goes back to what it was, reload/restart run again, and the install ends
//! [`AgentError::RolledBack`].

use crate::device::Device;
use crate::install::ChunkSource;
use crate::journal::DataDir;
use crate::run::{run, Env};
use crate::AgentError;
use jota_bundle::manifest::{ComponentType, Manifest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether a bundle is an application bundle (installed live, without a reboot).
pub fn is_application(m: &Manifest) -> bool {
    !m.components.is_empty()
        && m.components.iter().all(|c| {
            matches!(
                c.kind,
                ComponentType::File
                    | ComponentType::Model
                    | ComponentType::Container
                    | ComponentType::Script
            )
        })
        && m.components.iter().any(|c| c.kind != ComponentType::Script)
}

/// What `layers.json` on the data partition records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Layers {
    /// Layer directory → versions.
    pub dirs: BTreeMap<String, LayerState>,
    /// Container tag → images.
    pub containers: BTreeMap<String, LayerState>,
}

/// One layer's current and previous version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerState {
    /// Running now.
    pub current: String,
    /// Before (what a rollback returns to).
    pub previous: Option<String>,
}

const STATE_FILE: &str = "layers.json";

/// Reads `layers.json`.
pub fn state(dev: &Device) -> Layers {
    let p = DataDir::new(&dev.storage, &dev.config.data_dir)
        .host_path()
        .join(STATE_FILE);
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::io(p, e)
}

/// A name that is safe as one path component.
fn safe(v: &str) -> Result<&str, AgentError> {
    if v.is_empty()
        || v.starts_with('.')
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c))
    {
        return Err(AgentError::Rejected(format!(
            "`{v}` cannot name a layer version directory"
        )));
    }
    Ok(v)
}

fn fsync_dir(p: &Path) {
    if let Ok(d) = std::fs::File::open(p) {
        let _ = d.sync_all();
    }
}

/// Points `<dir>/current` at `target` (or removes it) with one rename.
fn switch_link(dir: &Path, target: Option<&str>) -> Result<(), AgentError> {
    let link = dir.join("current");
    match target {
        Some(t) => {
            let tmp = dir.join(".current.tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(t, &tmp).map_err(io(&tmp))?;
            std::fs::rename(&tmp, &link).map_err(io(&link))?;
        }
        None => {
            let _ = std::fs::remove_file(&link);
        }
    }
    fsync_dir(dir);
    Ok(())
}

/// Output of an engine command, or why it failed.
fn engine(argv: &[String], args: &[&str]) -> Result<String, String> {
    let (prog, pre) = argv
        .split_first()
        .ok_or_else(|| "no container engine configured ([layers] engine)".to_string())?;
    let out = std::process::Command::new(prog)
        .args(pre)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("`{prog}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs an application bundle into the running system (see the module documentation).
pub fn apply(
    dev: &Device,
    src: &dyn ChunkSource,
    extract: &dyn Fn(usize) -> Result<Vec<u8>, AgentError>,
    progress: &dyn Fn(&str, u64, u64),
) -> Result<(), AgentError> {
    let m = &src.parsed().manifest;
    let cfg = &dev.config.layers;
    let data = DataDir::new(&dev.storage, &dev.config.data_dir);
    let mut st = state(dev);
    let before = st.clone();

    // 1. Stage: every file into its version directory, every image into the engine.
    let mut dirs: BTreeMap<PathBuf, (String, String)> = BTreeMap::new(); // host dir → (device dir, version)
    let mut images: Vec<(String, String)> = Vec::new(); // (tag, image)
    let total = m.components.len() as u64;
    for (i, c) in m.components.iter().enumerate() {
        progress(&c.name, i as u64, total);
        match c.kind {
            ComponentType::File | ComponentType::Model => {
                let path = c.path.as_deref().unwrap_or_default();
                let p = Path::new(path);
                let (Some(dir), Some(name)) = (p.parent(), p.file_name()) else {
                    return Err(AgentError::Rejected(format!(
                        "{}: path `{path}` has no directory and file name",
                        c.name
                    )));
                };
                if !p.is_absolute() || dir == Path::new("/") {
                    return Err(AgentError::Rejected(format!(
                        "{}: a layer file's path is absolute and below a directory (`/data/models/model.engine`), not `{path}`",
                        c.name
                    )));
                }
                let version = safe(c.version.as_deref().unwrap_or(&m.version))?.to_string();
                let host = dev.root.path(dir);
                if let Some((_, v)) = dirs.get(&host) {
                    if *v != version {
                        return Err(AgentError::Rejected(format!(
                            "{}: one bundle puts versions {v} and {version} in {}",
                            c.name,
                            dir.display()
                        )));
                    }
                }
                let staging = host.join(format!(".{version}.partial"));
                if !dirs.contains_key(&host) {
                    let _ = std::fs::remove_dir_all(&staging);
                    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
                }
                let bytes = extract(i)?;
                let f = staging.join(name);
                write_synced(&f, &bytes, c.mode.as_deref())?;
                dirs.insert(host, (dir.display().to_string(), version));
            }
            ComponentType::Container => {
                let tag = c.path.clone().ok_or_else(|| {
                    AgentError::Rejected(format!(
                        "{}: a container component's path is the tag the application runs",
                        c.name
                    ))
                })?;
                let bytes = extract(i)?;
                let image = if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
                    let tmp = data.host_path().join("image.tar");
                    write_synced(&tmp, &bytes, None)?;
                    let out = engine(&cfg.engine, &["load", "-i", &tmp.display().to_string()]);
                    let _ = std::fs::remove_file(&tmp);
                    let out = out.map_err(AgentError::Hook)?;
                    out.lines()
                        .find_map(|l| {
                            l.strip_prefix("Loaded image: ")
                                .or(l.strip_prefix("Loaded image ID: "))
                        })
                        .map(|s| s.trim().to_string())
                        .ok_or_else(|| {
                            AgentError::Hook(format!("the engine loaded no image: {out}"))
                        })?
                } else {
                    let r = String::from_utf8_lossy(&bytes).trim().to_string();
                    if r.is_empty() || r.contains(char::is_whitespace) {
                        return Err(AgentError::Rejected(format!(
                            "{}: the payload is neither an image archive nor an image reference",
                            c.name
                        )));
                    }
                    engine(&cfg.engine, &["pull", &r]).map_err(AgentError::Hook)?;
                    r
                };
                images.push((tag, image));
            }
            _ => {}
        }
    }

    // 2. Switch: version directories in place, `current` links, container tags.
    for (host, (dev_dir, version)) in &dirs {
        let staging = host.join(format!(".{version}.partial"));
        let dest = host.join(version);
        if dest.exists() {
            let _ = std::fs::remove_dir_all(&dest);
        }
        std::fs::rename(&staging, &dest).map_err(io(&dest))?;
        fsync_dir(host);
        let prev = std::fs::read_link(host.join("current"))
            .ok()
            .map(|p| p.display().to_string())
            .filter(|p| p != version);
        switch_link(host, Some(version))?;
        st.dirs.insert(
            dev_dir.clone(),
            LayerState {
                current: version.clone(),
                previous: prev
                    .or_else(|| before.dirs.get(dev_dir).and_then(|s| s.previous.clone())),
            },
        );
    }
    for (tag, image) in &images {
        let prev = engine(
            &cfg.engine,
            &["image", "inspect", "--format", "{{.Id}}", tag],
        )
        .ok();
        if let Some(p) = &prev {
            engine(&cfg.engine, &["tag", p, &format!("{tag}-jota-previous")])
                .map_err(AgentError::Hook)?;
        }
        engine(&cfg.engine, &["tag", image, tag]).map_err(AgentError::Hook)?;
        st.containers.insert(
            tag.clone(),
            LayerState {
                current: image.clone(),
                previous: prev,
            },
        );
    }
    save(&data, &st)?;

    // 3. The application picks it up and must stay healthy; else everything goes back.
    let env: Env = vec![
        ("JOTA_VERSION".into(), m.version.clone()),
        ("JOTA_ROOT".into(), dev.root.dir().display().to_string()),
    ];
    let restart = |why: &str| -> Result<(), String> {
        for argv in [&cfg.reload, &cfg.restart] {
            if !argv.is_empty() {
                run(argv, &env, Duration::from_secs(120)).map_err(|e| format!("{why}: {e}"))?;
            }
        }
        Ok(())
    };
    let healthy = restart("reload").and_then(|()| health(&cfg.health, &env, cfg.health_timeout_s));
    let Err(why) = healthy else {
        prune(&dirs, cfg.keep);
        tracing::info!(version = %m.version, "application layers switched");
        return Ok(());
    };
    tracing::warn!("application update failed ({why}); rolling back");
    for (host, (dev_dir, version)) in &dirs {
        let back = before
            .dirs
            .get(dev_dir)
            .map(|s| s.current.clone())
            .or_else(|| st.dirs.get(dev_dir).and_then(|s| s.previous.clone()));
        switch_link(host, back.as_deref())?;
        let _ = std::fs::remove_dir_all(host.join(version));
    }
    for (tag, _) in &images {
        if let Some(prev) = st.containers.get(tag).and_then(|s| s.previous.clone()) {
            engine(&cfg.engine, &["tag", &prev, tag]).map_err(AgentError::Hook)?;
        }
    }
    save(&data, &before)?;
    let again = restart("reload after the rollback").err();
    Err(AgentError::RolledBack(format!(
        "{} failed: {why}; the previous layers are back{}",
        m.version,
        again.map(|e| format!(" (but {e})")).unwrap_or_default()
    )))
}

fn save(data: &DataDir<'_>, st: &Layers) -> Result<(), AgentError> {
    let text = serde_json::to_string_pretty(st).map_err(|e| AgentError::Device(e.to_string()))?;
    Ok(data.set(STATE_FILE, &text)?)
}

fn write_synced(p: &Path, bytes: &[u8], mode: Option<&str>) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let mut f = std::fs::File::create(p).map_err(io(p))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(p))?;
    if let Some(m) = mode.and_then(|m| u32::from_str_radix(m, 8).ok()) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).map_err(io(p))?;
    }
    Ok(())
}

/// Runs the health command until it passes or `timeout_s` is over.
fn health(argv: &[String], env: &Env, timeout_s: u64) -> Result<(), String> {
    if argv.is_empty() {
        return Ok(());
    }
    let end = Instant::now() + Duration::from_secs(timeout_s.max(1));
    loop {
        let left = end
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match run(argv, env, left) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= end => return Err(format!("health check: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Removes version directories beyond the current, the previous and `keep` more.
fn prune(dirs: &BTreeMap<PathBuf, (String, String)>, keep: u32) {
    for host in dirs.keys() {
        let current = std::fs::read_link(host.join("current")).ok();
        let Ok(rd) = std::fs::read_dir(host) else {
            continue;
        };
        let mut versions: Vec<(std::time::SystemTime, PathBuf)> = rd
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| current.as_deref() != Some(Path::new(&e.file_name())))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        versions.sort();
        versions.reverse();
        // The newest non-current one is the previous version (the rollback target).
        for (_, p) in versions.into_iter().skip(1 + keep as usize) {
            tracing::info!(dir = %p.display(), "old layer version removed");
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
