//! `jota`: OTA updates for NVIDIA Jetson fleets. One binary, a subcommand per area.

/// `println!` that returns an error instead of panicking (e.g. on a closed pipe).
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock())?
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod cmd;
mod util;

use clap::{Parser, Subcommand};

/// OTA updates for NVIDIA Jetson fleets.
///
/// jota builds signed update bundles, reads and writes Tegra formats (BUP, flash layouts,
/// UEFI variables) natively, controls A/B boot slots, and simulates Jetsons; the device
/// agent and the fleet server join the same binary.
#[derive(Parser, Debug)]
#[command(name = "jota", version, max_term_width = 100)]
struct Cli {
    /// Log filter (tracing syntax), e.g. `info`, `jota=debug`. Also `JOTA_LOG`.
    #[arg(long, global = true, env = "JOTA_LOG", default_value = "warn")]
    log: String,
    /// Log format: `text`, `json`, or `auto` (text on a terminal, JSON elsewhere).
    #[arg(long, global = true, default_value = "auto", value_parser = ["auto", "text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A fleet update on simulated Jetsons, start to end: server, keys, bundles, 20 devices,
    /// a staged rollout with a rollback, a power cut and an offline device, and a report.
    Demo(cmd::demo::Args),
    /// Update bundles: create, inspect, verify, sign, extract; export SWUpdate `.swu`.
    ///
    /// A bundle is one signed file (manifest + block index + independently zstd-compressed
    /// chunks) that a device installs from a stream, or, holding the previous release,
    /// fetches only the chunks it lacks with HTTP Range requests.
    Bundle(cmd::bundle::Args),
    /// Signing keys for bundles: generate, show, print the public half.
    Keys(cmd::keys::Args),
    /// Install a bundle into the inactive slot and switch to it (like `rauc install`).
    ///
    /// Checks the signature, hardware, anti-rollback floor and pre-flight conditions before
    /// anything is written; streams every component into the inactive slot verifying each
    /// chunk, reads it back, and only then switches bootloader and rootfs together.
    Install(cmd::install::Args),
    /// Slots, versions and the last update; mark-good, mark-bad, mark-active (RAUC habits).
    Status(cmd::status::Args),
    /// Device services: boot validation (`jota agent validate`).
    Agent(cmd::agent::Args),
    /// Bootloader update payloads (BUP, `NVIDIA__BLOB__V2`/`V3`): inspect, extract, create.
    ///
    /// A BUP carries every bootloader/firmware partition image (mb1, MB1_BCT, cpu-bootloader,
    /// ...) for one or many board variants; the consumer (UEFI capsule on R35/R36,
    /// nv_update_engine on R32) picks each partition's entry by TNSPEC. jota reads and writes
    /// both generations byte-exactly and applies the same selection rules.
    Bup(cmd::bup::Args),
    /// L4T flash-layout XML: partitions with the offsets and sizes the flash tools compute.
    ///
    /// Reads NVIDIA `partition_layout` files (QSPI, eMMC, NVMe/external), resolves
    /// placeholders such as APPSIZE, `start_location`, `align_boundary` and the
    /// fill-the-device partitions, and pairs A/B partitions.
    Layout(cmd::layout::Args),
    /// A/B boot control: nvbootctrl-compatible commands, RAUC and SWUpdate backends.
    ///
    /// Backends: l4t-uefi (R35/R36 UEFI variables, native), nvbootctrl (NVIDIA's tool),
    /// uboot-env (libubootenv format, RAUC's BOOT_ORDER scheme), r32-smd (cboot slot
    /// metadata); `auto` picks the one the device has. `--root` points at a simulated device.
    Bootctl(cmd::bootctl::Args),
    /// Simulated Jetsons: create, make releases, boot (UEFI/cboot/U-Boot A/B logic), inject
    /// faults.
    ///
    /// A simulated device is a directory with real GPT disk images, efivars, an ESP and a
    /// device tree, reached through the same paths as a Jetson, so every other jota command
    /// works on it with `--root DIR`.
    Sim(cmd::sim::Args),
    /// The fleet server: device registry, artifacts, deployments, device poll and status.
    ///
    /// SQLite in the data directory by default, PostgreSQL with --database. Bundles are
    /// verified on upload and served with Range/ETag for resuming devices and CDNs.
    Server(cmd::server::Args),
    /// The fleet server's admin API: upload bundles, register devices, deploy.
    Fleet(cmd::fleet::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The demo shows what its devices do itself; their agents' retries are not news there.
    let log = if matches!(cli.command, Command::Demo(_)) && cli.log == "warn" {
        "error"
    } else {
        cli.log.as_str()
    };
    util::init_logging(log, &cli.log_format);
    let res = match cli.command {
        Command::Demo(a) => cmd::demo::run(a),
        Command::Bundle(a) => cmd::bundle::run(a).map(|()| 0),
        Command::Keys(a) => cmd::keys::run(a).map(|()| 0),
        Command::Install(a) => {
            util::small_heap();
            cmd::install::run(a).map(|()| 0)
        }
        Command::Status(a) => cmd::status::run(a).map(|()| 0),
        Command::Agent(a) => cmd::agent::run(a),
        Command::Bup(a) => cmd::bup::run(a).map(|()| 0),
        Command::Layout(a) => cmd::layout::run(a).map(|()| 0),
        Command::Bootctl(a) => cmd::bootctl::run(a),
        Command::Sim(a) => cmd::sim::run(a),
        Command::Server(a) => cmd::server::run(a).map(|()| 0),
        Command::Fleet(a) => cmd::fleet::run(a).map(|()| 0),
    };
    match res {
        Ok(code) => std::process::ExitCode::from(code),
        // `jota ... | head` closing the pipe early is not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-joined; a cause a message already quotes (library errors
/// print their source) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn error_chain_does_not_repeat_quoted_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(io)
            .context("r2.jota: No such file")
            .context("bundle r2.jota");
        assert_eq!(
            super::error_chain(&e),
            "bundle r2.jota: r2.jota: No such file"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_chain(&e), "outer: inner");
    }
}
