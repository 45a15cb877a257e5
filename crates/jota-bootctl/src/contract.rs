//! Other updaters' bootloader contracts on top of [`BootControl`].
//!
//! * RAUC `bootloader=custom` (`[handlers] bootloader-custom-backend=`): RAUC runs
//!   `<handler> get-primary | get-state <bootname> | set-primary <bootname> |
//!   set-state <bootname> good|bad | get-current` and reads `good`/`bad` or a bootname from
//!   stdout. Bootnames are `A` and `B` (`rauc.slot=`/`bootname=` in system.conf).
//! * SWUpdate handler (seed 000): `get` prints the current slot, `set A|B` activates a slot,
//!   `confirm` marks the current boot successful.

use crate::{BootControl, BootError, Target};
use jota_tegra::efivar::Slot;

/// Parses a RAUC bootname (`A`/`B`; also `0`/`1`, `a`/`b`).
pub fn bootname(s: &str) -> Result<Slot, BootError> {
    s.parse().map_err(|e: String| BootError::Unsupported {
        backend: "rauc",
        message: format!("bootname {e}"),
    })
}

/// A RAUC custom-backend request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaucRequest {
    /// `get-primary`
    GetPrimary,
    /// `set-primary <bootname>`
    SetPrimary(Slot),
    /// `get-state <bootname>`
    GetState(Slot),
    /// `set-state <bootname> good|bad`
    SetState(Slot, bool),
    /// `get-current`
    GetCurrent,
}

/// Performs a RAUC request; returns what to print on stdout.
pub fn rauc(bc: &mut dyn BootControl, req: &RaucRequest) -> Result<Option<String>, BootError> {
    match req {
        RaucRequest::GetPrimary => {
            let st = bc.status(Target::Rootfs)?;
            let primary = st.active;
            match st.slot(primary) {
                Some(s) if s.bootable => Ok(Some(primary.to_string())),
                // RAUC reports an empty answer as "no primary".
                _ => Ok(Some(String::new())),
            }
        }
        RaucRequest::SetPrimary(s) => {
            bc.switch_both(*s)?;
            Ok(None)
        }
        RaucRequest::GetState(s) => {
            let st = bc.status(Target::Rootfs)?;
            let good = st.slot(*s).is_some_and(|x| x.bootable);
            Ok(Some(if good { "good" } else { "bad" }.to_string()))
        }
        RaucRequest::SetState(s, good) => {
            let st = bc.status(Target::Rootfs)?;
            if *good {
                if st.current == *s {
                    bc.mark_successful(Target::Rootfs)?;
                    bc.mark_successful(Target::Bootloader)?;
                } else if !st.slot(*s).is_some_and(|x| x.bootable) {
                    return Err(BootError::Unsupported {
                        backend: "rauc",
                        message: format!(
                            "slot {s} is not booted; it can only become good by booting it"
                        ),
                    });
                }
            } else {
                bc.mark_bad(Target::Rootfs, *s)?;
            }
            Ok(None)
        }
        RaucRequest::GetCurrent => Ok(Some(bc.current_slot(Target::Rootfs)?.to_string())),
    }
}

/// A SWUpdate handler request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwupdateRequest {
    /// `get`: current slot.
    Get,
    /// `set A|B`: activate a slot (bootloader and rootfs together).
    Set(Slot),
    /// `confirm`: mark the running slot successful.
    Confirm,
}

/// Performs a SWUpdate request; returns what to print.
pub fn swupdate(
    bc: &mut dyn BootControl,
    req: &SwupdateRequest,
) -> Result<Option<String>, BootError> {
    match req {
        SwupdateRequest::Get => Ok(Some(bc.current_slot(Target::Rootfs)?.to_string())),
        SwupdateRequest::Set(s) => {
            bc.switch_both(*s)?;
            Ok(None)
        }
        SwupdateRequest::Confirm => {
            bc.mark_successful(Target::Rootfs)?;
            bc.mark_successful(Target::Bootloader)?;
            Ok(None)
        }
    }
}
