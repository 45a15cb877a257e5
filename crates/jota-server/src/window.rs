//! Maintenance windows: a device tagged `window=HH:MM-HH:MM` (UTC; may wrap midnight, e.g.
//! `window=22:00-04:00`) is given new work only inside it — rollouts assign it then, and
//! polls (jota's and DDI's) hold back a deployment it has not started outside it. Devices
//! without the tag are always available.

use crate::ServerError;

/// The tag's key.
pub const TAG: &str = "window=";

/// Minutes since midnight UTC, `[start, end)`.
pub type Window = (i64, i64);

fn minutes(s: &str) -> Option<i64> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    ((0..24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

/// The window among `tags`, if any; a malformed one is an error naming it.
pub fn of_tags(tags: &[String]) -> Result<Option<Window>, ServerError> {
    let mut found = None;
    for t in tags {
        let Some(v) = t.strip_prefix(TAG) else {
            continue;
        };
        let w = v
            .split_once('-')
            .and_then(|(a, b)| Some((minutes(a)?, minutes(b)?)))
            .filter(|(a, b)| a != b)
            .ok_or_else(|| {
                ServerError::BadRequest(format!(
                    "tag `{t}`: a maintenance window is window=HH:MM-HH:MM (UTC, start ≠ end)"
                ))
            })?;
        if found.replace(w).is_some() {
            return Err(ServerError::BadRequest("more than one window= tag".into()));
        }
    }
    Ok(found)
}

/// Minute of the UTC day at Unix time `t`.
pub fn minute_of_day(t: i64) -> i64 {
    t.rem_euclid(86_400) / 60
}

/// Whether a device with these tags may be given new work at Unix time `t`.
pub fn open(tags: &[String], t: i64) -> bool {
    match of_tags(tags) {
        Ok(Some((a, b))) => {
            let m = minute_of_day(t);
            if a < b {
                a <= m && m < b
            } else {
                m >= a || m < b
            }
        }
        // A device registered before its tag was checked is not held back for it.
        _ => true,
    }
}

/// SQL that is true when device alias `d` is inside its window at minute `$n`.
pub fn sql_open(d: &str, n: usize) -> String {
    format!(
        "({d}.window_start IS NULL \
         OR ({d}.window_start < {d}.window_end AND ${n} >= {d}.window_start AND ${n} < {d}.window_end) \
         OR ({d}.window_start > {d}.window_end AND (${n} >= {d}.window_start OR ${n} < {d}.window_end)))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(w: &str) -> Vec<String> {
        vec!["region=eu".into(), format!("window={w}")]
    }

    #[test]
    fn windows() {
        assert_eq!(of_tags(&tags("02:00-04:30")).unwrap(), Some((120, 270)));
        assert_eq!(of_tags(&["a".into()]).unwrap(), None);
        for bad in [
            "2:00-04:00",
            "02:00-02:00",
            "25:00-01:00",
            "02:00",
            "02:60-03:00",
        ] {
            let e = of_tags(&tags(bad)).unwrap_err().to_string();
            assert!(e.contains("HH:MM-HH:MM"), "{bad}: {e}");
        }
        let at = |h: i64, m: i64| 1_796_256_000 + h * 3600 + m * 60; // a UTC midnight
        assert_eq!(minute_of_day(at(2, 15)), 135);
        assert!(open(&tags("02:00-04:30"), at(2, 0)));
        assert!(!open(&tags("02:00-04:30"), at(4, 30)));
        assert!(open(&tags("22:00-04:00"), at(23, 59)) && open(&tags("22:00-04:00"), at(1, 0)));
        assert!(!open(&tags("22:00-04:00"), at(12, 0)));
        assert!(open(&["x".into()], at(12, 0)));
    }
}
