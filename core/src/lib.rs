//! The parts of `ledger` that need no PostgreSQL: the canonical record encoding, canonical JSON,
//! SHA3-256 record hashes and the chain checks behind `ledger.verify`. The extension crate is a thin
//! layer that turns PostgreSQL datums into [`canonical::Value`]s and reports [`LedgerError`]s.

pub mod canonical;
pub mod chain;
pub mod definition;
pub mod error;
pub mod hash;
pub mod json;
pub mod jsonb;
pub mod merkle;
pub mod note;
pub mod numeric;
pub mod parallel;
pub mod proof;
pub mod tiles;

pub use error::{LedgerError, SqlState};
