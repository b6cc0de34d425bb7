//! A ledger's definition (docs/FORMAT.md, "Definitions"): the text `ledger.definition(tbl)` writes,
//! one line per property (table, persistence, row security, chain key, hashed columns, columns,
//! the ledger's triggers, rules). Comparing two of them says what changed.

use crate::hash::{sha3_256, to_hex, Digest};

/// The fingerprint checkpoints record: SHA3-256 of the definition text.
pub fn fingerprint(definition: &str) -> Digest {
    sha3_256(definition.as_bytes())
}

pub fn fingerprint_hex(definition: &str) -> String {
    to_hex(&fingerprint(definition))
}

/// What differs between a registered definition and today's, as `- line` (gone) and `+ line`
/// (new) entries joined by "; ", or None when they are the same.
pub fn differences(registered: &str, current: &str) -> Option<String> {
    if registered == current {
        return None;
    }
    let old: Vec<&str> = registered.lines().collect();
    let new: Vec<&str> = current.lines().collect();
    let mut out: Vec<String> = old.iter().filter(|l| !new.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(new.iter().filter(|l| !old.contains(l)).map(|l| format!("+ {l}")));
    if out.is_empty() {
        out.push("the same lines in another order".to_string());
    }
    Some(out.join("; "))
}

/// Whether `after` differs from `before` only as columns added do (docs/FORMAT.md, "Added
/// columns"): `column` lines added, and the `hashed` and `added` lines that list them; or, for a
/// history ledger whose tracked table had columns added, its `history_of` line.
pub fn only_columns_added(before: &str, after: &str) -> bool {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    let starts = |line: &&str, prefixes: &[&str]| prefixes.iter().any(|p| line.starts_with(p));
    let removed: Vec<&str> = old.iter().filter(|l| !new.contains(l)).copied().collect();
    let added: Vec<&str> = new.iter().filter(|l| !old.contains(l)).copied().collect();
    removed.iter().all(|l| starts(l, &["hashed ", "added ", "history_of "]))
        && added.iter().any(|l| starts(l, &["column ", "history_of "]))
        && added.iter().all(|l| starts(l, &["column ", "hashed ", "added ", "history_of "]))
}

/// Whether the definition with fingerprint `recorded` (hex) is one of `earlier` (the definitions
/// registered before `registered`, oldest first), after which each next one up to `registered`
/// only added columns.
pub fn extended_by_added_columns(recorded: &str, earlier: &[String], registered: &str) -> bool {
    let steps: Vec<&str> = earlier.iter().map(String::as_str).chain([registered]).collect();
    let Some(start) = steps[..steps.len() - 1].iter().position(|d| fingerprint_hex(d) == recorded) else {
        return false;
    };
    steps[start..].windows(2).all(|pair| only_columns_added(pair[0], pair[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_columns_are_the_one_allowed_step() {
        let base = "ledger-definition/v1\nhashed id seq prev_hash\ncolumn id integer\n";
        let added =
            "ledger-definition/v1\nhashed id seq prev_hash memo\nadded memo\ncolumn id integer\ncolumn memo text\n";
        let retyped = added.replace("column id integer", "column id bigint");
        assert!(only_columns_added(base, added));
        assert!(!only_columns_added(base, &retyped));
        assert!(!only_columns_added(base, base));
        assert!(!only_columns_added(base, "ledger-definition/v1\nhashed id seq prev_hash memo\ncolumn id integer\n"));
        assert!(only_columns_added("a\nhistory_of public.t 00\n", "a\nhistory_of public.t 11\n"));
        let earlier = vec![base.to_string()];
        assert!(extended_by_added_columns(&fingerprint_hex(base), &earlier, added));
        assert!(!extended_by_added_columns(&fingerprint_hex(base), &earlier, &retyped));
        assert!(!extended_by_added_columns(&fingerprint_hex(added), &earlier, added));
        assert!(!extended_by_added_columns(&fingerprint_hex(base), &[], added));
    }

    const REGISTERED: &str = "ledger-definition/v1\ntable public.t\ntrigger zz_ledger_append A\n";

    #[test]
    fn same_definition_has_no_differences() {
        assert_eq!(differences(REGISTERED, REGISTERED), None);
    }

    #[test]
    fn changed_lines_are_named() {
        let current = "ledger-definition/v1\ntable public.t\ntrigger zz_ledger_append O\nrule r\n";
        assert_eq!(
            differences(REGISTERED, current).unwrap(),
            "- trigger zz_ledger_append A; + trigger zz_ledger_append O; + rule r"
        );
    }

    #[test]
    fn reordering_is_a_difference() {
        let reordered = "table public.t\nledger-definition/v1\ntrigger zz_ledger_append A\n";
        assert_eq!(differences(REGISTERED, reordered).unwrap(), "the same lines in another order");
    }

    #[test]
    fn fingerprints_differ_with_the_text() {
        assert_ne!(fingerprint(REGISTERED), fingerprint("ledger-definition/v1\n"));
        assert_eq!(fingerprint_hex(REGISTERED).len(), 64);
    }
}
