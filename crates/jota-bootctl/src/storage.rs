//! Partitions by GPT label, on a Jetson or inside a simulated one.
//!
//! Partitions are found the way the L4T tools do it: by reading the GPT of the boot and
//! rootfs devices (`/dev/nvme0n1`, `/dev/mmcblk0`, the QSPI `/dev/mtdblock0`, ...) and
//! addressing the partition as a byte range of that device. On a Jetson these are block
//! devices; in a simulated Jetson the same paths are disk-image files. Every write goes
//! through [`PartitionIo::write_at`], bounds-checked and subject to injected faults.

use crate::faults::{Faults, WriteVerdict};
use crate::root::{paths, DeviceRoot};
use jota_tegra::gpt::Gpt;
use jota_tegra::guid::Guid;
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A problem finding or using a partition.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No disk has a partition of that name.
    #[error("no partition labelled `{label}` on {searched}")]
    NotFound {
        /// Label.
        label: String,
        /// Disks that were searched.
        searched: String,
    },
    /// An access outside the partition.
    #[error("partition {label}: {what} of {len} bytes at offset {offset} exceeds its size {size}")]
    OutOfBounds {
        /// Label.
        label: String,
        /// read or write.
        what: &'static str,
        /// Offset within the partition.
        offset: u64,
        /// Length.
        len: u64,
        /// Partition size.
        size: u64,
    },
    /// The device could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| StorageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A disk with a partition table.
#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    /// Device path on the device (`/dev/nvme0n1`).
    pub device: String,
    /// File actually opened (inside the root).
    pub file: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Its table.
    pub gpt: Gpt,
}

/// Where a partition is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartitionRef {
    /// GPT label.
    pub label: String,
    /// Device path of the disk (`/dev/nvme0n1`).
    pub device: String,
    /// Entry number (`nvme0n1p<number>`).
    pub number: u32,
    /// File opened (inside the root).
    pub file: PathBuf,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Unique partition GUID (PARTUUID).
    pub unique_guid: Guid,
}

impl PartitionRef {
    /// The kernel's name for it (`/dev/nvme0n1p2`, `/dev/mmcblk0p1`).
    pub fn node(&self) -> String {
        let sep = if self.device.ends_with(|c: char| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        format!("{}{sep}{}", self.device, self.number)
    }
}

/// Partition access for one device root.
#[derive(Clone, Debug)]
pub struct Storage {
    root: DeviceRoot,
    faults: Option<Faults>,
}

fn disk_size(f: &mut File) -> io::Result<u64> {
    // Works for regular files and block devices alike.
    f.seek(SeekFrom::End(0))
}

impl Storage {
    /// Storage of the device at `root`.
    pub fn new(root: &DeviceRoot) -> Storage {
        Storage {
            root: root.clone(),
            faults: Faults::for_root(root.dir()),
        }
    }

    /// The device root.
    pub fn root(&self) -> &DeviceRoot {
        &self.root
    }

    /// The fault plan, on a simulated device.
    pub fn faults(&self) -> Option<&Faults> {
        self.faults.as_ref()
    }

    /// Every known disk that has a readable partition table.
    pub fn disks(&self) -> Vec<Disk> {
        paths::DISKS
            .iter()
            .filter_map(|d| self.disk(d).ok().flatten())
            .collect()
    }

    /// One disk by device path; `None` if it does not exist or has no table.
    pub fn disk(&self, device: &str) -> Result<Option<Disk>, StorageError> {
        let file = self.root.path(device);
        let mut f = match File::open(&file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&file)(e)),
        };
        let size = disk_size(&mut f).map_err(io_err(&file))?;
        for ss in [512u64, 4096] {
            if let Ok(gpt) = Gpt::read(&mut f, size, ss) {
                return Ok(Some(Disk {
                    device: device.to_string(),
                    file,
                    size,
                    gpt,
                }));
            }
        }
        Ok(None)
    }

    /// Finds a partition by GPT label on any disk.
    pub fn find(&self, label: &str) -> Result<PartitionRef, StorageError> {
        let disks = self.disks();
        for d in &disks {
            if let Some(e) = d.gpt.find(label) {
                let ss = d.gpt.sector_size;
                return Ok(PartitionRef {
                    label: label.to_string(),
                    device: d.device.clone(),
                    number: e.number,
                    file: d.file.clone(),
                    offset: e.offset(ss),
                    size: e.size(ss),
                    unique_guid: e.unique_guid,
                });
            }
        }
        Err(StorageError::NotFound {
            label: label.to_string(),
            searched: if disks.is_empty() {
                format!(
                    "any disk (none with a GPT under {})",
                    self.root.dir().display()
                )
            } else {
                disks
                    .iter()
                    .map(|d| d.device.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })
    }

    /// Opens a partition for reading, or reading and writing.
    pub fn open(&self, part: &PartitionRef, write: bool) -> Result<PartitionIo, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(&part.file)
            .map_err(io_err(&part.file))?;
        Ok(PartitionIo {
            file,
            part: part.clone(),
            faults: self.faults.clone(),
        })
    }

    /// Writes a whole file atomically (ESP, data partition), honouring injected faults:
    /// a torn write leaves the temp file, never a half-written target.
    pub fn write_file(&self, abs: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.root.path(abs);
        let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = path.with_extension("jota-tmp");
        let mut n = data.len();
        let mut torn = false;
        if let Some(f) = &self.faults {
            if let WriteVerdict::Tear(k) = f.before_write(data.len()).map_err(io_err(&path))? {
                n = k;
                torn = true;
            }
        }
        std::fs::write(&tmp, &data[..n]).map_err(io_err(&tmp))?;
        if torn {
            let e = self
                .faults
                .as_ref()
                .map(|f| f.cut_error())
                .unwrap_or_else(|| io::Error::other("torn"));
            return Err(io_err(&path)(e));
        }
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Removes a file (ESP capsule), counted as a write.
    pub fn remove_file(&self, abs: &str) -> Result<(), StorageError> {
        let path = self.root.path(abs);
        if let Some(f) = &self.faults {
            if let WriteVerdict::Tear(_) = f.before_write(0).map_err(io_err(&path))? {
                return Err(io_err(&path)(f.cut_error()));
            }
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }
}

/// An open partition.
#[derive(Debug)]
pub struct PartitionIo {
    file: File,
    part: PartitionRef,
    faults: Option<Faults>,
}

impl PartitionIo {
    /// The partition.
    pub fn part(&self) -> &PartitionRef {
        &self.part
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.part.size
    }

    fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<(), StorageError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.part.size => Ok(()),
            _ => Err(StorageError::OutOfBounds {
                label: self.part.label.clone(),
                what,
                offset,
                len,
                size: self.part.size,
            }),
        }
    }

    /// Reads exactly `buf.len()` bytes at `offset` within the partition.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.check("read", offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, self.part.offset + offset)
            .map_err(io_err(&self.part.file))
    }

    /// Writes `buf` at `offset` within the partition (one write, as far as faults count).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), StorageError> {
        self.check("write", offset, buf.len() as u64)?;
        let mut n = buf.len();
        let mut torn = false;
        if let Some(f) = &self.faults {
            if let WriteVerdict::Tear(k) =
                f.before_write(buf.len()).map_err(io_err(&self.part.file))?
            {
                n = k;
                torn = true;
            }
        }
        self.file
            .write_all_at(&buf[..n], self.part.offset + offset)
            .map_err(io_err(&self.part.file))?;
        if torn {
            let e = self
                .faults
                .as_ref()
                .map(|f| f.cut_error())
                .unwrap_or_else(|| io::Error::other("torn"));
            return Err(io_err(&self.part.file)(e));
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` zero (one write, as far as faults count): a zero-range
    /// allocation on a file-backed partition, written zeros where that is not supported.
    pub fn write_zeros(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        self.check("write", offset, len)?;
        if let Some(f) = &self.faults {
            if let WriteVerdict::Tear(_) = f
                .before_write(len as usize)
                .map_err(io_err(&self.part.file))?
            {
                return Err(io_err(&self.part.file)(f.cut_error()));
            }
        }
        let flags = rustix::fs::FallocateFlags::ZERO_RANGE | rustix::fs::FallocateFlags::KEEP_SIZE;
        if rustix::fs::fallocate(&self.file, flags, self.part.offset + offset, len).is_ok() {
            return Ok(());
        }
        let zeros = vec![0u8; (len as usize).min(1 << 20)];
        let mut at = 0u64;
        while at < len {
            let k = (len - at).min(zeros.len() as u64) as usize;
            self.file
                .write_all_at(&zeros[..k], self.part.offset + offset + at)
                .map_err(io_err(&self.part.file))?;
            at += k as u64;
        }
        Ok(())
    }

    /// Flushes to stable storage.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.file.sync_data().map_err(io_err(&self.part.file))
    }

    /// Drops a range from the page cache (after [`sync`](Self::sync)), so that reading it
    /// back reads the medium, not the cache.
    pub fn drop_cache(&self, offset: u64, len: u64) -> Result<(), StorageError> {
        let len = std::num::NonZeroU64::new(len);
        rustix::fs::fadvise(
            &self.file,
            self.part.offset + offset,
            len,
            rustix::fs::Advice::DontNeed,
        )
        .map_err(|e| io_err(&self.part.file)(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{is_power_cut, FaultPlan};
    use jota_tegra::layout::{builtin, Layout};

    /// A QSPI image with the T234 layout's backup GPT at <root>/dev/mtdblock0.
    pub(crate) fn qspi_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dev")).unwrap();
        let l = Layout::parse(builtin::T234_QSPI).unwrap();
        let r = l.devices[0].resolve(None).unwrap();
        let g = Gpt::from_resolved(&r, Guid::from_digest(b"q")).unwrap();
        let f = File::create(d.path().join("dev/mtdblock0")).unwrap();
        f.set_len(64 << 20).unwrap();
        for (off, b) in g.encode(64 << 20, jota_tegra::gpt::Style::BackupOnly) {
            f.write_all_at(&b, off).unwrap();
        }
        d
    }

    #[test]
    fn finds_partitions_by_label_and_keeps_writes_inside() {
        let d = qspi_root();
        let s = Storage::new(&DeviceRoot::at(d.path()));
        let p = s.find("B_cpu-bootloader").unwrap();
        assert_eq!(p.offset, 0x0C20000 + 0x1EC0000);
        assert_eq!(p.device, "/dev/mtdblock0");
        assert_eq!(p.node(), "/dev/mtdblock0p42");
        let io = s.open(&p, true).unwrap();
        io.write_at(0, b"uefi").unwrap();
        let mut b = [0u8; 4];
        io.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"uefi");
        let e = io.write_at(p.size - 2, b"uefi").unwrap_err();
        assert!(e.to_string().contains("exceeds its size"), "{e}");
        let e = s.find("APP").unwrap_err();
        assert!(e.to_string().contains("/dev/mtdblock0"), "{e}");
    }

    #[test]
    fn power_cut_tears_one_write_and_loses_the_rest() {
        let d = qspi_root();
        Faults::create(
            d.path(),
            &FaultPlan {
                power_cut_after_writes: Some(2),
                ..Default::default()
            },
        )
        .unwrap();
        let s = Storage::new(&DeviceRoot::at(d.path()));
        let p = s.find("A_VER").unwrap();
        let io = s.open(&p, true).unwrap();
        io.write_at(0, &[1u8; 8]).unwrap();
        let e = io.write_at(8, &[2u8; 8]).unwrap_err();
        match &e {
            StorageError::Io { source, .. } => assert!(is_power_cut(source)),
            o => panic!("{o}"),
        }
        assert!(io.write_at(16, &[3u8; 8]).is_err());
        let mut b = [0u8; 24];
        io.read_at(0, &mut b).unwrap();
        assert_eq!(&b[..8], &[1u8; 8]);
        assert_eq!(&b[8..12], &[2u8; 4]); // torn: half of the second write
        assert_eq!(&b[12..24], &[0u8; 12]); // lost
                                            // a file write during the outage leaves the target untouched
        assert!(s.write_file("/boot/efi/x", b"data").is_err());
        assert!(!d.path().join("boot/efi/x").exists());
    }
}
