//! The one error type. Messages follow PostgreSQL style: lower case, no trailing period, the
//! specifics in `detail`, the way out in `hint`.

use std::fmt;

/// The SQLSTATEs ledger raises. Standard codes only, so every driver knows what class they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlState {
    /// 23001: an UPDATE, DELETE or TRUNCATE of a ledger.
    RestrictViolation,
    /// 23514: a supplied seq, prev_hash or hash that is not what the chain requires.
    CheckViolation,
    /// 23502: a null chain key.
    NotNullViolation,
    /// 22P02: text that is not what the format says (bad hex, wrong length).
    InvalidTextRepresentation,
    /// 22023: an argument out of range or otherwise unusable.
    InvalidParameterValue,
    /// 22004: NULL for an argument that needs a value.
    NullValueNotAllowed,
    /// 42703: no such column.
    UndefinedColumn,
    /// 42P16: a table definition ledger cannot work with (no primary key, generated columns).
    InvalidTableDefinition,
    /// 42804: a column of the wrong type.
    DatatypeMismatch,
    /// 42809: not an ordinary table.
    WrongObjectType,
    /// 42710: already a ledger.
    DuplicateObject,
    /// 42704: not a ledger, or no such record.
    UndefinedObject,
    /// 0A000: a column type the canonical encoding does not cover.
    FeatureNotSupported,
    /// 40001: a concurrent append under REPEATABLE READ or SERIALIZABLE.
    SerializationFailure,
    /// 40P01: appends to several chains that waited for each other in a cycle.
    DeadlockDetected,
    /// XX001: stored ledger data that cannot be read back, or no longer matches a checkpoint.
    DataCorrupted,
    /// F0000: the signing key file is missing, unreadable, too widely readable or not a key.
    ConfigFileError,
    /// 42501: a change to a ledger's definition, or a retirement, by a role that may not make it.
    InsufficientPrivilege,
    /// 55000: an append to a retired ledger, or retiring one twice.
    ObjectNotInPrerequisiteState,
    /// 25006: a checkpoint or retirement asked of a hot standby.
    ReadOnlySqlTransaction,
    /// 42701: a column `ledger.enable` would rename another to already exists.
    DuplicateColumn,
    /// 42601: an `order_by` that is not a list of columns.
    SyntaxError,
    /// 58000: the operating system failed us (no random numbers to be had).
    SystemError,
}

impl SqlState {
    /// The five-character SQLSTATE.
    pub fn code(self) -> &'static str {
        match self {
            SqlState::RestrictViolation => "23001",
            SqlState::CheckViolation => "23514",
            SqlState::NotNullViolation => "23502",
            SqlState::InvalidTextRepresentation => "22P02",
            SqlState::InvalidParameterValue => "22023",
            SqlState::NullValueNotAllowed => "22004",
            SqlState::UndefinedColumn => "42703",
            SqlState::InvalidTableDefinition => "42P16",
            SqlState::DatatypeMismatch => "42804",
            SqlState::WrongObjectType => "42809",
            SqlState::DuplicateObject => "42710",
            SqlState::UndefinedObject => "42704",
            SqlState::FeatureNotSupported => "0A000",
            SqlState::SerializationFailure => "40001",
            SqlState::DeadlockDetected => "40P01",
            SqlState::DataCorrupted => "XX001",
            SqlState::ConfigFileError => "F0000",
            SqlState::InsufficientPrivilege => "42501",
            SqlState::ObjectNotInPrerequisiteState => "55000",
            SqlState::ReadOnlySqlTransaction => "25006",
            SqlState::DuplicateColumn => "42701",
            SqlState::SyntaxError => "42601",
            SqlState::SystemError => "58000",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerError {
    pub state: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl LedgerError {
    pub fn new(state: SqlState, message: impl Into<String>) -> Self {
        LedgerError { state, message: message.into(), detail: None, hint: None }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for LedgerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.state.code())?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LedgerError {}

pub type Result<T> = std::result::Result<T, LedgerError>;
