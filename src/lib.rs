//! `ledger`: tamper-evident, append-only, SHA3-256 hash-chained tables enforced by PostgreSQL.
//!
//! The pure logic (canonical encoding, hashing, chain checks) is the `ledger-core` crate; this
//! crate is the PostgreSQL glue: triggers, SQL functions, and the hand-written SQL in `sql/`.

use pgrx::prelude::*;

mod alter;
mod checkpoint;
mod confirm;
mod conflict;
mod datum;
mod durability;
mod enable;
mod erasure;
mod error;
mod guc;
mod head;
mod history;
mod layout;
mod lifecycle;
mod metrics;
mod partition;
mod retention;
mod scheduled;
mod shared_heads;
mod subtrees;
mod trigger;
mod verify;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/export.sql", name = "export", requires = ["schema", retention::pruned_runs]);
extension_sql_file!(
    "../sql/guard.sql",
    name = "guard",
    requires = ["schema", "history", verify::sha3_256, alter::register_added_columns]
);
extension_sql_file!("../sql/history.sql", name = "history", requires = ["schema"]);
extension_sql_file!(
    "../sql/stats.sql",
    name = "stats",
    requires = ["schema", metrics::counters, metrics::refusal_counters]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    checkpoint::register_settings();
    confirm::register_settings();
    durability::register_settings();
    metrics::init();
    shared_heads::init();
    conflict::init();
    // SAFETY: registering process-lifetime callbacks once, at library load.
    unsafe {
        pg_sys::RegisterXactCallback(Some(head::on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(head::on_subxact), std::ptr::null_mut());
        pg_sys::RegisterResourceReleaseCallback(Some(durability::after_locks), std::ptr::null_mut());
        pg_sys::CacheRegisterRelcacheCallback(Some(layout::invalidate), pg_sys::Datum::from(0));
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
