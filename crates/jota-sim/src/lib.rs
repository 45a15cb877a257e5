//! Simulated Jetsons: a device is a directory that looks, through the paths jota uses on a
//! real Jetson, like one.
//!
//! ```text
//! DIR/jota-sim.json          model, L4T version, board spec (the simulator's own record)
//! DIR/nvme.img  qspi.img ... real GPT disk images;  DIR/dev/nvme0n1 -> ../nvme.img, ...
//! DIR/efivars/               efivarfs files;        DIR/sys/firmware/efi/efivars -> efivars
//! DIR/esp/                   the mounted ESP;       DIR/boot/efi -> esp
//! DIR/device-tree/           model, compatible, chosen/ids, ...; DIR/proc/device-tree -> it
//! DIR/etc/  DIR/proc/cmdline DIR/data/ (UDA)
//! DIR/sim/                   firmware state: scratch registers, boot log, injected faults
//! ```
//!
//! [`firmware`] emulates what runs at power-on (UEFI + BootChainDxe + L4TLauncher on R35/R36,
//! cboot with SMD, U-Boot with RAUC's script) and decides whether a slot boots: see
//! [`identity`] for how the simulator tells a complete, consistent slot from a torn or
//! mismatched one.

pub mod device;
pub mod firmware;
pub mod identity;
pub mod model;
pub mod release;
pub mod state;

pub use device::{CreateOptions, SimDevice};
pub use model::{FirmwareKind, Model, MODELS};

use std::path::PathBuf;

/// A simulator failure.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// File system trouble.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// An external tool (mke2fs, openssl) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// Tool.
        tool: String,
        /// Its error output.
        message: String,
    },
    /// Bad request or bad simulated device.
    #[error("{0}")]
    Invalid(String),
    /// Partition access.
    #[error(transparent)]
    Storage(#[from] jota_bootctl::storage::StorageError),
    /// Layout.
    #[error(transparent)]
    Layout(#[from] jota_tegra::layout::LayoutError),
    /// GPT.
    #[error(transparent)]
    Gpt(#[from] jota_tegra::gpt::GptError),
    /// Boot control.
    #[error(transparent)]
    Boot(#[from] jota_bootctl::BootError),
    /// U-Boot environment.
    #[error(transparent)]
    Env(#[from] jota_bootctl::uboot_env::EnvError),
    /// UEFI variables.
    #[error("UEFI variable: {0}")]
    Var(String),
}

/// `Result` of the simulator.
pub type Result<T> = std::result::Result<T, SimError>;

pub(crate) fn io<P: Into<PathBuf>>(path: P) -> impl FnOnce(std::io::Error) -> SimError {
    let path = path.into();
    move |source| SimError::Io { path, source }
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
