//! Hardware compatibility: which Jetsons a bundle may be installed on.
//!
//! A bundle lists rules; a device may install it when any rule matches. A rule names one or
//! more board ids joined by `+` (module and carrier, like the device tree's `compatible`
//! `p3768-0000+p3767-0005`), each `BOARDID-SKU[-FAB]` in the form the device tree's
//! `chosen/ids` uses (`3767-0005-300`). Every field is a glob (`*`, `?`, `[0-5]`); a missing
//! or empty FAB matches any FAB, as an empty TNSPEC field does. Every id of a rule must match
//! one of the device's ids.
//!
//! | rule | matches |
//! |---|---|
//! | `3767-0005` | Orin Nano 8GB modules, any FAB, any carrier |
//! | `3767-000[345]-*` | the Orin Nano SKUs |
//! | `3767-*+3768-0000` | any Orin Nano/NX on the Orin Nano devkit carrier |

use jota_tegra::board::BoardId;
use std::fmt;

/// A rule that is not `BOARDID-SKU[-FAB]` globs joined by `+`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad hardware-compatibility rule `{rule}`: {reason}")]
pub struct RuleError {
    /// The rule.
    pub rule: String,
    /// Why it was rejected.
    pub reason: String,
}

/// One parsed rule.
#[derive(Debug, Clone)]
pub struct Rule {
    text: String,
    ids: Vec<[glob::Pattern; 3]>,
}

/// Splits `BOARDID-SKU[-FAB]` at the dashes outside `[...]`, so `3767-000[0-5]` is two
/// fields and its range stays whole.
pub(crate) fn split_fields(id: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in id.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '-' if depth == 0 => {
                out.push(&id[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&id[start..]);
    out
}

impl Rule {
    /// Parses a rule.
    pub fn parse(s: &str) -> Result<Rule, RuleError> {
        let err = |reason: String| RuleError {
            rule: s.to_string(),
            reason,
        };
        if s.is_empty() || s.len() > 256 {
            return Err(err("must be 1 to 256 characters".into()));
        }
        let mut ids = Vec::new();
        for id in s.split('+') {
            let f = split_fields(id);
            if f.len() < 2 || f.len() > 3 {
                return Err(err(format!(
                    "`{id}` is not BOARDID-SKU or BOARDID-SKU-FAB (e.g. 3767-0005-300)"
                )));
            }
            if f[0].is_empty() {
                return Err(err(format!("`{id}` has an empty board id")));
            }
            let pat = |p: &str| {
                let p = if p.is_empty() { "*" } else { p };
                if !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"*?[]!._-".contains(&b))
                {
                    return Err(err(format!("`{p}` has characters a board id never has")));
                }
                glob::Pattern::new(p).map_err(|e| err(format!("`{p}`: {e}")))
            };
            ids.push([
                pat(f[0])?,
                pat(f[1])?,
                pat(f.get(2).copied().unwrap_or("*"))?,
            ]);
        }
        Ok(Rule {
            text: s.to_string(),
            ids,
        })
    }

    /// Whether every id of the rule matches one of the device's ids.
    pub fn matches(&self, device: &[BoardId]) -> bool {
        self.ids.iter().all(|[b, s, f]| {
            device
                .iter()
                .any(|d| b.matches(&d.board_id) && s.matches(&d.sku) && f.matches(&d.fab))
        })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a device with `ids` may install a bundle with `rules` (an empty list means any
/// device). Returns the first matching rule.
pub fn check<'a>(rules: &'a [Rule], ids: &[BoardId]) -> Option<&'a Rule> {
    rules.iter().find(|r| r.matches(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<BoardId> {
        s.split_whitespace()
            .map(|i| BoardId::parse(i).unwrap())
            .collect()
    }

    #[test]
    fn rules_match_module_and_carrier() {
        let nano8 = ids("3767-0005-300 3768-0000-A03");
        let nx16 = ids("3767-0000-301 3768-0000-A03");
        let agx = ids("3701-0005-500 3737-0000-TS1");
        let r = |s| Rule::parse(s).unwrap();
        assert!(r("3767-0005").matches(&nano8));
        assert!(!r("3767-0005").matches(&nx16));
        assert!(r("3767-000[345]-*").matches(&nano8));
        // A range's dash is not a field separator.
        assert!(r("3767-000[0-5]").matches(&nano8));
        assert!(r("3767-000[0-5]-[2-3]0[0-9]").matches(&nano8));
        assert!(!r("3767-000[0-4]").matches(&nano8));
        assert!(!r("3767-000[!0-5]").matches(&nano8));
        assert!(r("3767-*+3768-0000").matches(&nx16));
        assert!(!r("3767-*+3768-0000").matches(&agx));
        assert!(r("3767-0005-300").matches(&nano8));
        assert!(!r("3767-0005-301").matches(&nano8));
        assert!(r("3767-0005-").matches(&nano8));
        assert!(r("37??-*").matches(&agx));
        assert!(r("3768-0000-A0?").matches(&nano8));
        let rules = [r("3701-*"), r("3767-0005")];
        assert_eq!(check(&rules, &nano8).unwrap().to_string(), "3767-0005");
        assert!(check(&rules, &nx16).is_none());
    }

    #[test]
    fn bad_rules_are_named() {
        for (s, why) in [
            ("", "1 to 256"),
            ("3767", "BOARDID-SKU"),
            ("3767-0005-300-1", "BOARDID-SKU"),
            ("-0005", "empty board id"),
            ("3767-00 05", "characters"),
            ("3767-[", "`[`"),
            ("3767-0005+", "BOARDID-SKU"),
        ] {
            let e = Rule::parse(s).unwrap_err();
            assert!(e.to_string().contains(why), "{s:?}: {e}");
        }
    }
}
