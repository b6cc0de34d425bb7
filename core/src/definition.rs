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

/// The ledger triggers every partition of a partitioned ledger carries, as its `partition` line
/// ends (docs/FORMAT.md, "Partitioned ledgers").
pub const PARTITION_TRIGGERS: &str = "triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A";

/// Whether `after` differs from `before` only by partitions added (docs/FORMAT.md, "Partitioned
/// ledgers"): new `partition` lines, each with the table's persistence and every ledger trigger
/// enabled always, and nothing removed.
pub fn only_partitions_added(before: &str, after: &str) -> bool {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    let Some(persistence) = old.iter().find_map(|l| l.strip_prefix("persistence ")) else {
        return false;
    };
    let conforming = format!(" persistence {persistence} {PARTITION_TRIGGERS}");
    let mut added = new.iter().filter(|l| !old.contains(l)).peekable();
    old.iter().all(|l| new.contains(l))
        && added.peek().is_some()
        && added.all(|l| l.starts_with("partition ") && l.ends_with(&conforming))
}

/// Whether `after` differs from `before` only by partitions removed: `partition` lines gone, and
/// nothing added. `ledger.prune` drops the partitions it emptied (their records' hashes are kept);
/// a partition that still held records is missed by the chains, not by this rule.
pub fn only_partitions_removed(before: &str, after: &str) -> bool {
    let old: Vec<&str> = before.lines().collect();
    let new: Vec<&str> = after.lines().collect();
    let mut removed = old.iter().filter(|l| !new.contains(l)).peekable();
    new.iter().all(|l| old.contains(l)) && removed.peek().is_some() && removed.all(|l| l.starts_with("partition "))
}

/// Whether one registered definition may follow another for a checkpoint's or digest's definition
/// to hold (docs/FORMAT.md, "Definitions"): columns added, partitions added, or partitions removed.
pub fn is_registered_step(before: &str, after: &str) -> bool {
    only_columns_added(before, after) || only_partitions_added(before, after) || only_partitions_removed(before, after)
}

/// Whether the definition with fingerprint `recorded` (hex) is one of `earlier` (the definitions
/// registered before `registered`, oldest first), after which each next one up to `registered`
/// is a registered step.
pub fn follows_registered_steps(recorded: &str, earlier: &[String], registered: &str) -> bool {
    let steps: Vec<&str> = earlier.iter().map(String::as_str).chain([registered]).collect();
    let Some(start) = steps[..steps.len() - 1].iter().position(|d| fingerprint_hex(d) == recorded) else {
        return false;
    };
    steps[start..].windows(2).all(|pair| is_registered_step(pair[0], pair[1]))
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
        assert!(follows_registered_steps(&fingerprint_hex(base), &earlier, added));
        assert!(!follows_registered_steps(&fingerprint_hex(base), &earlier, &retyped));
        assert!(!follows_registered_steps(&fingerprint_hex(added), &earlier, added));
        assert!(!follows_registered_steps(&fingerprint_hex(base), &[], added));
    }

    #[test]
    fn partitions_added_are_an_allowed_step() {
        let base = "ledger-definition/v1\npersistence p\npartitioned_by RANGE (at)\n\
                    partition public.t1 FOR VALUES FROM (1) TO (2) persistence p triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A\n";
        let added = format!(
            "{base}partition public.t2 FOR VALUES FROM (2) TO (3) persistence p triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A\n"
        );
        assert!(only_partitions_added(base, &added));
        assert!(!only_partitions_added(base, base));
        assert!(!only_partitions_added(&added, base), "a partition removed");
        let new_line = added.strip_prefix(base).expect("added after the base");
        let unlogged = new_line.replace("persistence p", "persistence u");
        let disabled = new_line.replace("ledger_refuse_truncate:A", "ledger_refuse_truncate:D");
        assert!(!only_partitions_added(base, &format!("{base}{unlogged}")));
        assert!(!only_partitions_added(base, &format!("{base}{disabled}")));
        let with_column = format!("{added}column memo text\n");
        assert!(!only_partitions_added(base, &with_column));
        assert!(follows_registered_steps(&fingerprint_hex(base), &[base.to_string()], &added));
        assert!(only_partitions_removed(&added, base));
        assert!(!only_partitions_removed(base, &added));
        assert!(!only_partitions_removed(&added, &base.replace("persistence p\n", "persistence u\n")));
        assert!(follows_registered_steps(&fingerprint_hex(base), &[base.to_string(), added.clone()], base));
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
