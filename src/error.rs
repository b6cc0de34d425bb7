//! Raising [`LedgerError`] as a PostgreSQL error with its SQLSTATE, detail and hint.

use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// Packs a five-character SQLSTATE the way PostgreSQL's MAKE_SQLSTATE does.
fn make_sqlstate(code: &str) -> i32 {
    code.bytes().enumerate().fold(0, |acc, (i, c)| acc | ((((c - b'0') & 0x3F) as i32) << (6 * i)))
}

fn report(error: LedgerError, level: PgLogLevel) {
    let code = PgSqlErrorCode::from(make_sqlstate(error.state.code()));
    let mut report = ErrorReport::new(code, error.message, "ledger");
    if let Some(detail) = error.detail {
        report = report.set_detail(detail);
    }
    if let Some(hint) = error.hint {
        report = report.set_hint(hint);
    }
    report.report(level);
}

/// Reports the error at ERROR level; never returns.
pub fn raise(error: LedgerError) -> ! {
    report(error, PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// Reports the problem at WARNING level, with its SQLSTATE, and goes on.
pub fn warn(problem: LedgerError) {
    report(problem, PgLogLevel::WARNING);
}

/// `result.unwrap_or_raise()`: the value, or the error raised in PostgreSQL.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, LedgerError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise(e))
    }
}

/// An SPI failure on the extension's own queries: stored data or catalogs that cannot be read.
pub fn spi_error(what: &str, e: impl std::fmt::Display) -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, what.to_string()).detail(e.to_string())
}

/// The value of an argument that must not be NULL, in a function that is not STRICT because
/// another of its arguments may be.
pub fn required<T>(value: Option<T>, name: &str) -> T {
    value.unwrap_or_else(|| raise(LedgerError::new(SqlState::NullValueNotAllowed, format!("{name} must not be null"))))
}

/// Runs its closure when dropped, however the scope ends: an error raised inside unwinds through
/// the drop. For the one-off permissions and flags the extension sets around its own statements.
pub struct OnDrop<F: FnMut()>(pub F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}
