//! Delta installs from the same signed bundle on any static HTTP server.
//!
//! A device that holds the previous release hashes its active slot into 4 KiB block keys
//! ([`seed`]), works out which of the new bundle's chunks it can assemble locally and which
//! it must fetch ([`plan`]), fetches the missing ones with coalesced, parallel HTTP Range
//! requests into a resumable cache on the data partition ([`remote`]), and hands the
//! installer a chunk source in which every chunk — seeded or fetched — is verified against
//! the signed manifest before its bytes are used.

pub mod patch;
pub mod plan;
pub mod remote;
pub mod seed;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The server cannot serve ranges (answered a Range request with the whole file).
    #[error("{0}: the server does not serve byte ranges")]
    NoRanges(String),
    /// HTTP failed.
    #[error("{url}: {reason}")]
    Http {
        /// URL.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The bundle (front or a chunk) is not valid.
    #[error(transparent)]
    Bundle(#[from] jota_bundle::read::ReadError),
    /// The bundle header.
    #[error(transparent)]
    Header(#[from] jota_bundle::format::HeaderError),
    /// Local I/O (seed slot, cache).
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

impl DeltaError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> DeltaError {
        DeltaError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
