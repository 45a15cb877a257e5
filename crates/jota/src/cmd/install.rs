//! `jota install`: verify a bundle, write it into the inactive slot, switch.

use crate::cmd::agent::DeviceArgs;
use crate::util::{print_json, thousands, Bar};
use anyhow::{bail, Result};
use clap::Parser;
use jota_agent::download::{download, DownloadOptions};
use jota_agent::install::{install, InstallOptions};
use std::path::PathBuf;

/// Arguments of `jota install`.
#[derive(Parser, Debug)]
pub struct Args {
    #[command(flatten)]
    dev: DeviceArgs,
    /// The bundle: a file, or an http(s) URL (downloaded to the data partition, resuming an
    /// interrupted download).
    bundle: String,
    /// Download (and keep) the bundle, do not install it.
    #[arg(long)]
    download_only: bool,
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
    let url = a.bundle.starts_with("http://") || a.bundle.starts_with("https://");
    let file = if url {
        let dir = dev.root.path(&dev.config.data_dir).join("downloads");
        let bar = Bar::bytes("downloading", 0);
        let got = download(&a.bundle, &dir, &DownloadOptions::default(), &|n, total| {
            if let Some(t) = total {
                bar.set_length(t);
            }
            bar.set_position(n);
        });
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
        got.path
    } else {
        if a.download_only {
            bail!("--download-only needs a URL");
        }
        PathBuf::from(&a.bundle)
    };
    let bar = Bar::bytes("installing", 0);
    let last = std::cell::Cell::new(String::new());
    let rep = install(
        &mut dev,
        &InstallOptions {
            bundle: file.clone(),
            source: a.bundle.clone(),
            keyring: a.keyring.clone(),
            no_switch: a.no_switch,
            threads: a.threads,
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
    for (name, n) in &rep.written {
        outln!("  {name}: {} bytes written and read back", thousands(*n));
    }
    for name in &rep.resumed {
        outln!("  {name}: already written by the interrupted install, intact");
    }
    if rep.switched {
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
