//! UEFI variables through Linux efivarfs (or the same file format in a simulated device).
//!
//! efivarfs marks variable files immutable; a writer clears `FS_IMMUTABLE_FL` first and the
//! whole variable (attributes + data) must go in one `write(2)`. In a simulated device the
//! directory is a plain directory and a variable write is atomic (rename), as the firmware's
//! fault-tolerant variable store is.

use crate::faults::{Faults, WriteVerdict};
use jota_tegra::efivar::{EfiVariable, VarName, VarStore};
use rustix::fs::{IFlags, StatFs};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// `EFIVARFS_MAGIC` from `statfs(2)`.
const EFIVARFS_MAGIC: i64 = 0xde5e_81e4;

/// An efivarfs directory as a [`VarStore`].
#[derive(Clone, Debug)]
pub struct EfivarfsStore {
    dir: PathBuf,
    faults: Option<Faults>,
    real: bool,
}

/// A failed variable operation, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("UEFI variable {var}: {action}: {source}")]
pub struct EfivarfsError {
    /// Variable file name.
    pub var: String,
    /// read / write / delete.
    pub action: &'static str,
    /// Cause.
    #[source]
    pub source: io::Error,
}

// `f_type` is a C long whose width depends on the target.
#[allow(clippy::unnecessary_cast)]
fn is_efivarfs(dir: &Path) -> bool {
    rustix::fs::statfs(dir)
        .map(|s: StatFs| s.f_type as i64 == EFIVARFS_MAGIC)
        .unwrap_or(false)
}

impl EfivarfsStore {
    /// The store at `dir` (normally `/sys/firmware/efi/efivars`), with the device's faults.
    pub fn new(dir: impl Into<PathBuf>, faults: Option<Faults>) -> EfivarfsStore {
        let dir = dir.into();
        let real = is_efivarfs(&dir);
        EfivarfsStore { dir, faults, real }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the directory exists.
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    fn err<'a>(
        name: &'a VarName,
        action: &'static str,
    ) -> impl FnOnce(io::Error) -> EfivarfsError + 'a {
        move |source| EfivarfsError {
            var: name.file_name(),
            action,
            source,
        }
    }

    /// Clears the immutable flag of an existing variable file; returns whether it was set.
    /// On file systems without inode flags (tmpfs) there is nothing to clear.
    fn make_mutable(&self, path: &Path) -> io::Result<bool> {
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let flags = match rustix::fs::ioctl_getflags(&f) {
            Ok(fl) => fl,
            Err(e) if !self.real => {
                tracing::trace!("no inode flags on {}: {e}", path.display());
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        if flags.contains(IFlags::IMMUTABLE) {
            rustix::fs::ioctl_setflags(&f, flags - IFlags::IMMUTABLE)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Sets the immutable flag back, as efivarfs and libefivar leave variable files.
    fn make_immutable(path: &Path) -> io::Result<()> {
        let f = File::open(path)?;
        let flags = rustix::fs::ioctl_getflags(&f)?;
        rustix::fs::ioctl_setflags(&f, flags | IFlags::IMMUTABLE)?;
        Ok(())
    }

    fn count_write(&self) -> io::Result<bool> {
        match &self.faults {
            // An interrupted variable write never lands half-way: the store is atomic.
            Some(f) => Ok(matches!(f.before_write(1)?, WriteVerdict::Tear(_))),
            None => Ok(false),
        }
    }
}

impl VarStore for EfivarfsStore {
    type Error = EfivarfsError;

    fn get(&self, name: &VarName) -> Result<Option<EfiVariable>, EfivarfsError> {
        let path = self.dir.join(name.file_name());
        match std::fs::read(&path) {
            Ok(b) => EfiVariable::from_efivarfs(name, &b)
                .map(Some)
                .map_err(|e| EfivarfsError {
                    var: name.file_name(),
                    action: "decode",
                    source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(name, "read")(e)),
        }
    }

    fn set(&mut self, name: &VarName, value: &EfiVariable) -> Result<(), EfivarfsError> {
        let path = self.dir.join(name.file_name());
        if self.count_write().map_err(Self::err(name, "write"))? {
            let cut = self
                .faults
                .as_ref()
                .map(|f| f.cut_error())
                .unwrap_or_else(|| io::Error::other("power cut"));
            return Err(Self::err(name, "write")(cut));
        }
        let bytes = value.to_efivarfs();
        let was_immutable = self
            .make_mutable(&path)
            .map_err(Self::err(name, "clear immutable flag"))?;
        if self.real {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(Self::err(name, "open"))?;
            // efivarfs takes the variable in a single write.
            let n = f.write(&bytes).map_err(Self::err(name, "write"))?;
            if n != bytes.len() {
                return Err(Self::err(name, "write")(io::Error::other(format!(
                    "short write: {n} of {} bytes",
                    bytes.len()
                ))));
            }
        } else {
            std::fs::create_dir_all(&self.dir).map_err(Self::err(name, "create store"))?;
            let tmp = self.dir.join(format!(".{}.tmp", name.file_name()));
            std::fs::write(&tmp, &bytes).map_err(Self::err(name, "write"))?;
            std::fs::rename(&tmp, &path).map_err(Self::err(name, "write"))?;
        }
        if was_immutable {
            Self::make_immutable(&path).map_err(Self::err(name, "restore immutable flag"))?;
        }
        Ok(())
    }

    fn delete(&mut self, name: &VarName) -> Result<(), EfivarfsError> {
        let path = self.dir.join(name.file_name());
        if !path.exists() {
            return Ok(());
        }
        if self.count_write().map_err(Self::err(name, "delete"))? {
            let cut = self
                .faults
                .as_ref()
                .map(|f| f.cut_error())
                .unwrap_or_else(|| io::Error::other("power cut"));
            return Err(Self::err(name, "delete")(cut));
        }
        self.make_mutable(&path)
            .map_err(Self::err(name, "clear immutable flag"))?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::err(name, "delete")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jota_tegra::efivar::{L4tVar, L4tVars, RootfsStatus, Slot};

    #[test]
    fn writes_files_in_efivarfs_format() {
        let d = tempfile::tempdir().unwrap();
        let store = EfivarfsStore::new(d.path().join("efivars"), None);
        let mut vars = L4tVars::new(store);
        vars.set_fw_next(Slot::B).unwrap();
        let f = d
            .path()
            .join("efivars/BootChainFwNext-781e084c-a330-417c-b678-38e696380cb9");
        assert_eq!(std::fs::read(&f).unwrap(), [7, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(vars.fw_next().unwrap(), Some(Slot::B));
        vars.clear_fw_next().unwrap();
        assert!(!f.exists());
        vars.clear_fw_next().unwrap();
        assert_eq!(vars.fw_next().unwrap(), None);
        let raw = vars
            .store()
            .get(&L4tVar::BootChainFwNext.var_name())
            .unwrap();
        assert!(raw.is_none());
    }

    fn immutable(p: &Path) -> Option<bool> {
        let f = File::open(p).ok()?;
        rustix::fs::ioctl_getflags(&f)
            .ok()
            .map(|fl| fl.contains(IFlags::IMMUTABLE))
    }

    /// efivarfs variable files are immutable; writes and deletes clear the flag first.
    #[test]
    fn immutable_variable_files_are_handled() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("efivars");
        let mut vars = L4tVars::new(EfivarfsStore::new(&dir, None));
        vars.set_rootfs_status(Slot::A, RootfsStatus::Normal)
            .unwrap();
        let f = dir.join(L4tVar::RootfsStatusSlotA.var_name().file_name());
        if EfivarfsStore::make_immutable(&f).is_err() {
            // not root, or no inode flags on this file system: nothing to prove here
            eprintln!("skipping: cannot set FS_IMMUTABLE_FL in {}", dir.display());
            return;
        }
        assert_eq!(immutable(&f), Some(true));
        assert!(std::fs::remove_file(&f).is_err(), "immutable file removed");
        vars.set_rootfs_status(Slot::A, RootfsStatus::Unbootable)
            .unwrap();
        assert_eq!(
            vars.rootfs_status(Slot::A).unwrap(),
            RootfsStatus::Unbootable
        );
        assert_eq!(immutable(&f), Some(true), "flag restored after the write");
        vars.store_mut()
            .delete(&L4tVar::RootfsStatusSlotA.var_name())
            .unwrap();
        assert!(!f.exists());
    }
}
