//! jota update bundles.
//!
//! A bundle is one signed file that serves full and delta installs from any static HTTP
//! server: a small header, the manifest (JSON, signed), the signatures, a block index, and
//! the payload of independently zstd-compressed chunks. See `docs/formats/bundle.md`.
//!
//! | module | role |
//! |---|---|
//! | [`manifest`] | the manifest schema and its validation |
//! | [`format`] | the container: header and front sections |
//! | [`index`] | block maps (which stored block each 4 KiB block is) and seed keys |
//! | [`build`] | building: chunking, deduplication, parallel compression |
//! | [`read`] | reading: structure, signatures, chunk and component verification, extraction |
//! | [`sign`] | keys (ed25519, ECDSA P-256, RSA-PSS), signatures, keyring |
//! | [`hwcompat`] | hardware-compatibility rules |
//! | [`version`] | version ordering (dpkg rules) |
//! | [`swu`] | SWUpdate `.swu` export (cpio, sw-description, CMS) |
//! | [`cpio`] | the cpio `newc`/`crc` archive format |

pub mod build;
pub mod cpio;
pub mod format;
pub mod hwcompat;
pub mod index;
pub mod manifest;
pub mod read;
pub mod sign;
pub mod swu;
pub mod version;

pub use manifest::{Component, ComponentType, Digest, Manifest};
pub use read::{Bundle, Trust};
pub use sign::{Keyring, PublicKey, SecretKey};
