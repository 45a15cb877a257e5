//! Release versions and their order.
//!
//! jota orders versions exactly like `dpkg --compare-versions`: `[epoch:]upstream[-revision]`,
//! digit runs compared as numbers, letters before other characters, `~` before everything
//! (so `1.0~rc1` < `1.0`). Date versions (`2024.03.15-r1`) and semantic versions
//! (`1.2.10` > `1.2.9`) both order as people expect.

use std::cmp::Ordering;

/// A version string that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad version `{input}`: {reason}")]
pub struct VersionError {
    /// The rejected input.
    pub input: String,
    /// Why.
    pub reason: &'static str,
}

/// Checks that `v` is a usable version: non-empty, at most 128 characters, only
/// `A-Za-z0-9.+~:-_`, and an epoch (before `:`) that is a number.
pub fn validate(v: &str) -> Result<(), VersionError> {
    let err = |reason| {
        Err(VersionError {
            input: v.to_string(),
            reason,
        })
    };
    if v.is_empty() {
        return err("empty");
    }
    if v.len() > 128 {
        return err("longer than 128 characters");
    }
    if !v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+.~:-_".contains(&b))
    {
        return err("only letters, digits and . + ~ : - _ are allowed");
    }
    if let Some((epoch, _)) = v.split_once(':') {
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) || epoch.len() > 9 {
            return err("the epoch before `:` must be a number");
        }
    }
    let upstream = v.split_once(':').map_or(v, |(_, rest)| rest);
    if !upstream.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return err("must start with a letter or digit");
    }
    Ok(())
}

/// Compares two versions the way `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a);
    let (eb, ub, rb) = split(b);
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), r)
        }
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((u, r)) => (epoch, u, r),
        None => (epoch, rest, ""),
    }
}

fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(b'~') => -1,
        Some(c) => c as i32 + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and digit runs.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let ac = order(a.get(i).copied());
            let bc = order(b.get(j).copied());
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_like_people_expect() {
        for (a, b, o) in [
            ("1.2.10", "1.2.9", Greater),
            ("2024.03.15-r1", "2024.01.01-r1", Greater),
            ("2024.03.15-r2", "2024.03.15-r10", Less),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0", Equal),
            ("1.0", "1.00", Equal),
            ("1:0.1", "9.9", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0+b1", "1.0", Greater),
        ] {
            assert_eq!(compare(a, b), o, "{a} vs {b}");
            assert_eq!(compare(b, a), o.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(validate("2024.03.15-r1").is_ok());
        assert!(validate("1:2.0~rc1+b2").is_ok());
        for (v, why) in [
            ("", "empty"),
            ("1.0 beta", "only letters"),
            ("x:1.0", "epoch"),
            ("../1", "only letters"),
            ("-1", "start"),
        ] {
            let e = validate(v).unwrap_err();
            assert!(e.to_string().contains(why), "{v}: {e}");
        }
    }

    /// The real `dpkg --compare-versions` agrees on random versions (skipped where dpkg is
    /// not installed).
    #[test]
    fn agrees_with_dpkg() {
        use std::process::Command;
        if Command::new("dpkg").arg("--version").output().is_err() {
            eprintln!("dpkg not installed; skipping");
            return;
        }
        let parts = [
            "0", "1", "2", "10", "01", "a", "b", "rc1", "~", "~rc", "+b1", ".", "-1", "-r2",
        ];
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let make = |n: &mut dyn FnMut() -> u64| {
            let mut s = String::from("1");
            for _ in 0..(n() % 5) {
                s.push_str(parts[(n() % parts.len() as u64) as usize]);
            }
            s
        };
        for _ in 0..200 {
            let a = make(&mut next);
            let b = make(&mut next);
            if validate(&a).is_err() || validate(&b).is_err() {
                continue;
            }
            let lt = Command::new("dpkg")
                .args(["--compare-versions", &a, "lt", &b])
                .status()
                .unwrap()
                .success();
            let eq = Command::new("dpkg")
                .args(["--compare-versions", &a, "eq", &b])
                .status()
                .unwrap()
                .success();
            let want = if lt {
                Less
            } else if eq {
                Equal
            } else {
                Greater
            };
            assert_eq!(compare(&a, &b), want, "{a} vs {b}");
        }
    }
}
