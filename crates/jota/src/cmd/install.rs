//! `jota install`: verify a bundle, write it into the inactive slot, switch.

use crate::cmd::agent::DeviceArgs;
use crate::util::{print_json, thousands, Bar};
use anyhow::{bail, Result};
use clap::Parser;
use jota_agent::device::Device;
use jota_agent::download::{download, DownloadOptions};
use jota_agent::install::{install, InstallOptions};
use jota_agent::patch::{self, PatchOutcome};
use jota_delta::patch::is_patch_file;
use std::path::{Path, PathBuf};

/// Arguments of `jota install`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(flatten)]
    dev: DeviceArgs,
    /// The bundle: a file, or an http(s) URL (by delta when the server serves byte ranges:
    /// only the chunks the running slot lacks are fetched; else downloaded whole to the data
    /// partition, resuming an interrupted download). Or a static patch (`jota bundle
    /// delta`; a URL ending in `.jotapatch` is downloaded whole first): applied when the
    /// running slot is its base, else the bundle next to it is installed.
    bundle: String,
    /// Download (and keep) the bundle, do not install it.
    #[arg(long)]
    download_only: bool,
    /// For a URL: download the whole bundle even if the server serves byte ranges (by
    /// default a device fetches only the chunks its running slot lacks).
    #[arg(long)]
    full: bool,
    /// For a URL: say how many bytes a delta install would download, and stop.
    #[arg(long)]
    dry_run: bool,
    /// Trusted keys (default: the configured keyring inside the root).
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Write and verify the inactive slot, but do not switch to it.
    #[arg(long)]
    no_switch: bool,
    /// Decompression threads (0 = one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// JSON report.
    #[arg(long)]
    json: bool,
}

/// Runs `jota install`.
pub fn run(a: Args) -> Result<()> {
    let mut dev = a.dev.open()?;
    install_source(&mut dev, &a, &a.bundle)
}

impl Args {
    /// Install options for `file`, named `source` in the journal and hooks.
    fn options(&self, file: &Path, source: &str) -> InstallOptions {
        InstallOptions {
            bundle: file.to_path_buf(),
            source: source.to_string(),
            keyring: self.keyring.clone(),
            no_switch: self.no_switch,
            threads: self.threads,
        }
    }
}

/// Installs `source` (a bundle or patch, a path or URL).
fn install_source(dev: &mut Device, a: &Args, source: &str) -> Result<()> {
    let url = source.starts_with("http://") || source.starts_with("https://");
    let opts = a.options(Path::new(source), source);
    let patch_url = url
        && source
            .split(['?', '#'])
            .next()
            .is_some_and(|u| u.ends_with(".jotapatch"));
    if !url && is_patch_file(Path::new(source)) {
        return install_patch_file(dev, a, Path::new(source), source);
    }
    if url && a.dry_run && !patch_url {
        return match jota_agent::delta::dry_run(dev, source, &opts)? {
            Some(plan) => {
                if a.json {
                    return print_json(&plan);
                }
                for c in &plan.components {
                    outln!(
                        "  {}: {} of {} chunks from the running slot, {} bytes to fetch",
                        c.name,
                        c.seeded.iter().filter(|s| **s).count(),
                        c.seeded.len(),
                        thousands(c.fetch_bytes)
                    );
                }
                outln!(
                    "delta: {} bytes (front {} + chunks {}); full bundle: {} bytes",
                    thousands(plan.front_bytes + plan.fetch_bytes),
                    thousands(plan.front_bytes),
                    thousands(plan.fetch_bytes),
                    thousands(plan.full_bytes)
                );
                Ok(())
            }
            None => {
                outln!("the server does not serve byte ranges: a full download");
                Ok(())
            }
        };
    }
    let downloads = dev.root.path(&dev.config.data_dir).join("downloads");
    // A bundle already downloaded whole (--download-only) is installed from the file.
    let have_file = url && jota_agent::download::target(&downloads, source).exists();
    if url && !a.full && !a.download_only && !have_file && !patch_url {
        let bar = Bar::bytes("installing", 0);
        let last = std::cell::Cell::new(String::new());
        let r = jota_agent::delta::install_url(
            dev,
            source,
            &opts,
            &jota_delta::remote::FetchOptions::default(),
            &|name, n, total| {
                if last.replace(name.to_string()) != name {
                    bar.reset(name, total);
                }
                bar.inc(n);
            },
        );
        bar.done();
        if let Some((rep, d)) = r? {
            if a.json {
                return print_json(&serde_json::json!({ "install": rep, "delta": d }));
            }
            outln!(
                "delta: downloaded {} bytes in {} requests (full bundle {}); {} chunks from the running slot",
                thousands(d.downloaded_bytes),
                d.requests,
                thousands(d.plan.full_bytes),
                d.seeded_chunks
            );
            return report(&rep);
        }
        tracing::info!("the server does not serve byte ranges: downloading the whole bundle");
    }
    let file = if url {
        let bar = Bar::bytes("downloading", 0);
        let got = download(
            source,
            &downloads,
            &DownloadOptions::default(),
            &|n, total| {
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(n);
            },
        );
        bar.done();
        let got = got?;
        tracing::info!(path = %got.path.display(), bytes = got.bytes, resumed_from = got.resumed_from, "downloaded");
        if a.download_only {
            outln!(
                "downloaded {} ({} bytes)",
                got.path.display(),
                thousands(got.bytes)
            );
            return Ok(());
        }
        if is_patch_file(&got.path) {
            return install_patch_file(dev, a, &got.path, source);
        }
        got.path
    } else {
        if a.download_only {
            bail!("--download-only needs a URL");
        }
        PathBuf::from(source)
    };
    let bar = Bar::bytes("installing", 0);
    let last = std::cell::Cell::new(String::new());
    let rep = install(
        dev,
        &InstallOptions {
            bundle: file.clone(),
            ..opts
        },
        &|name, n, total| {
            if last.replace(name.to_string()) != name {
                bar.reset(name, total);
            }
            bar.inc(n);
        },
    );
    bar.done();
    let rep = rep?;
    if url {
        // Installed and verified: the download has served its purpose.
        let _ = std::fs::remove_file(&file);
    }
    if a.json {
        return print_json(&rep);
    }
    report(&rep)
}

/// Installs a static patch when the running slot is its base, else the bundle it names.
fn install_patch_file(dev: &mut Device, a: &Args, file: &Path, source: &str) -> Result<()> {
    let opts = a.options(file, source);
    if a.dry_run {
        let p = patch::dry_run(dev, file, source, &opts)?;
        if a.json {
            return print_json(&p);
        }
        if p.base_matches {
            outln!(
                "patch {} -> {}: the running slot is the base; {} bytes (chunked delta {}, full bundle {})",
                p.base_version,
                p.target_version,
                thousands(p.patch_bytes),
                thousands(p.chunked_bytes),
                thousands(p.full_bytes)
            );
        } else {
            outln!(
                "patch {} -> {}: not applicable ({}); would install {} instead",
                p.base_version,
                p.target_version,
                p.mismatch.as_deref().unwrap_or("?"),
                p.bundle
                    .as_deref()
                    .unwrap_or("nothing (no bundle next to the patch)")
            );
        }
        return Ok(());
    }
    let bar = Bar::bytes("installing", 0);
    let last = std::cell::Cell::new(String::new());
    let r = patch::install_patch(dev, file, source, &opts, &|name, n, total| {
        if last.replace(name.to_string()) != name {
            bar.reset(name, total);
        }
        bar.inc(n);
    });
    bar.done();
    match r? {
        PatchOutcome::Installed(rep, p) => {
            if file != Path::new(source) {
                let _ = std::fs::remove_file(file);
            }
            if a.json {
                return print_json(&serde_json::json!({ "install": rep, "patch": p }));
            }
            outln!(
                "patch from {}: {} bytes; {} chunks rebuilt from the running slot{}",
                p.base_version,
                thousands(p.patch_bytes),
                p.rebuilt_chunks,
                if p.fallback_chunks > 0 {
                    format!(", {} from the new bundle", p.fallback_chunks)
                } else {
                    String::new()
                }
            );
            report(&rep)
        }
        PatchOutcome::NotBase { reason, bundle } => {
            if file != Path::new(source) {
                // A downloaded patch that does not apply is of no further use.
                let _ = std::fs::remove_file(file);
            }
            tracing::warn!("the patch does not apply ({reason}): installing {bundle}");
            if !a.json {
                outln!("the patch does not apply ({reason}): installing {bundle}");
            }
            install_source(dev, a, &bundle)
        }
    }
}

fn report(rep: &jota_agent::install::InstallReport) -> Result<()> {
    for (name, n) in &rep.written {
        outln!("  {name}: {} bytes written and read back", thousands(*n));
    }
    for name in &rep.resumed {
        outln!("  {name}: already written by the interrupted install, intact");
    }
    if rep.live {
        outln!(
            "application layers {} switched live and healthy (no reboot)",
            rep.version
        );
    } else if rep.switched {
        outln!(
            "version {} installed in slot {}; both chains switched: reboot to run it",
            rep.version,
            rep.target_slot
        );
    } else {
        outln!(
            "version {} installed in slot {} (not switched)",
            rep.version,
            rep.target_slot
        );
    }
    Ok(())
}
