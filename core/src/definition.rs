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

#[cfg(test)]
mod tests {
    use super::*;

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
