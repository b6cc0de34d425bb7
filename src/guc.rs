//! Running code under fixed settings, the way a function's SET clauses do: a new GUC nest level,
//! the settings, the code, and the level popped. An error inside aborts the (sub)transaction, and
//! the abort restores the settings.

use pgrx::pg_sys;
use std::ffi::CStr;

/// The extension's own queries resolve names and operators in pg_catalog only, never in schemas
/// the caller put on its path.
pub const PINNED_SEARCH_PATH: &[(&CStr, &CStr)] = &[(c"search_path", c"pg_catalog, pg_temp")];

/// Text output that no session setting shapes, as `ledger.export` writes values (docs/FORMAT.md,
/// "Export"): chains are named alike from every session.
pub const CANONICAL_OUTPUT: &[(&CStr, &CStr)] = &[
    (c"TimeZone", c"UTC"),
    (c"DateStyle", c"ISO, YMD"),
    (c"IntervalStyle", c"iso_8601"),
    (c"extra_float_digits", c"3"),
    (c"bytea_output", c"hex"),
];

/// Runs `f` with `settings` in force.
pub fn with_settings<T>(settings: &[(&CStr, &CStr)], f: impl FnOnce() -> T) -> T {
    // SAFETY: the save/set/restore PostgreSQL does for a function's SET clauses.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        for (name, value) in settings {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        level
    };
    let out = f();
    // SAFETY: pops the level pushed above.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    out
}
