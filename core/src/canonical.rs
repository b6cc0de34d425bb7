//! The canonical record encoding, version 1 (specified byte by byte in docs/FORMAT.md).
//!
//! ```text
//! record = version:u8 (0x01)  column_count:u32  column*
//! column = name:bytes  type_tag:u8  (0x00 | 0x01 value:bytes)     0x00 is SQL NULL
//! bytes  = length:u32  octets                                    all integers big-endian
//! ```
//!
//! Values are encoded from what PostgreSQL stores, never from text shaped by session settings,
//! so the encoding is the same whatever TimeZone, DateStyle or extra_float_digits say.

use crate::error::{LedgerError, Result, SqlState};
use crate::hash::{sha3_256, Digest};

pub const FORMAT_VERSION: u8 = 1;

/// The column types the encoding covers. The tag is part of the format; never renumber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Boolean,
    Smallint,
    Integer,
    Bigint,
    Real,
    DoublePrecision,
    Numeric,
    Text,
    Bytea,
    Uuid,
    Jsonb,
    Date,
    Time,
    Timestamp,
    Timestamptz,
    Interval,
}

impl ColumnType {
    pub const ALL: [ColumnType; 16] = [
        ColumnType::Boolean,
        ColumnType::Smallint,
        ColumnType::Integer,
        ColumnType::Bigint,
        ColumnType::Real,
        ColumnType::DoublePrecision,
        ColumnType::Numeric,
        ColumnType::Text,
        ColumnType::Bytea,
        ColumnType::Uuid,
        ColumnType::Jsonb,
        ColumnType::Date,
        ColumnType::Time,
        ColumnType::Timestamp,
        ColumnType::Timestamptz,
        ColumnType::Interval,
    ];

    pub fn tag(self) -> u8 {
        match self {
            ColumnType::Boolean => 0x01,
            ColumnType::Smallint => 0x02,
            ColumnType::Integer => 0x03,
            ColumnType::Bigint => 0x04,
            ColumnType::Real => 0x05,
            ColumnType::DoublePrecision => 0x06,
            ColumnType::Numeric => 0x07,
            ColumnType::Text => 0x08,
            ColumnType::Bytea => 0x09,
            ColumnType::Uuid => 0x0A,
            ColumnType::Jsonb => 0x0B,
            ColumnType::Date => 0x0C,
            ColumnType::Time => 0x0D,
            ColumnType::Timestamp => 0x0E,
            ColumnType::Timestamptz => 0x0F,
            ColumnType::Interval => 0x10,
        }
    }

    /// The name used in the registry and in exports; `text` also stands for varchar and char(n).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Smallint => "smallint",
            ColumnType::Integer => "integer",
            ColumnType::Bigint => "bigint",
            ColumnType::Real => "real",
            ColumnType::DoublePrecision => "double precision",
            ColumnType::Numeric => "numeric",
            ColumnType::Text => "text",
            ColumnType::Bytea => "bytea",
            ColumnType::Uuid => "uuid",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Interval => "interval",
        }
    }

    pub fn from_name(name: &str) -> Option<ColumnType> {
        ColumnType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether two values of this type that SQL calls equal are always stored alike. Only such
    /// types can select chains: the chain's lock, head lookup and unique index use SQL equality,
    /// the canonical encoding uses the stored value (numeric 1.0 = 1.00, float 0 = -0, interval
    /// '1 day' = '24 hours' are equal but stored differently).
    pub fn equality_is_identity(self) -> bool {
        !matches!(
            self,
            ColumnType::Real
                | ColumnType::DoublePrecision
                | ColumnType::Numeric
                | ColumnType::Interval
                | ColumnType::Jsonb
        )
    }

    /// For error hints: the types that can select chains.
    pub fn chain_types_list() -> String {
        let names: Vec<&str> = ColumnType::ALL.iter().filter(|t| t.equality_is_identity()).map(|t| t.name()).collect();
        format!("{}, varchar, char(n), and domains over these", names.join(", "))
    }

    /// For error hints: what `ledger.enable` accepts.
    pub fn supported_list() -> String {
        let names: Vec<&str> = ColumnType::ALL.iter().map(|t| t.name()).collect();
        format!("{}, varchar, char(n), and domains over these", names.join(", "))
    }
}

/// One stored value, as the extension reads it out of a datum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Boolean(bool),
    Smallint(i16),
    Integer(i32),
    Bigint(i64),
    Real(f32),
    DoublePrecision(f64),
    /// The decimal text PostgreSQL's numeric output gives: scale kept, NaN and infinities by name.
    Numeric(&'a str),
    /// UTF-8 text; char(n) with its padding as stored.
    Text(&'a str),
    Bytea(&'a [u8]),
    Uuid(&'a [u8; 16]),
    /// Bytes already produced by [`crate::json::JsonCanonicalizer`].
    Jsonb(&'a [u8]),
    /// Days since 2000-01-01; i32::MIN and i32::MAX are -infinity and infinity.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01 00:00:00; i64::MIN and i64::MAX are the infinities.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 00:00:00 UTC; i64::MIN and i64::MAX are the infinities.
    Timestamptz(i64),
    Interval {
        months: i32,
        days: i32,
        microseconds: i64,
    },
}

impl Value<'_> {
    /// The column type this value belongs to (`None` for NULL, which fits any column).
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Boolean(_) => ColumnType::Boolean,
            Value::Smallint(_) => ColumnType::Smallint,
            Value::Integer(_) => ColumnType::Integer,
            Value::Bigint(_) => ColumnType::Bigint,
            Value::Real(_) => ColumnType::Real,
            Value::DoublePrecision(_) => ColumnType::DoublePrecision,
            Value::Numeric(_) => ColumnType::Numeric,
            Value::Text(_) => ColumnType::Text,
            Value::Bytea(_) => ColumnType::Bytea,
            Value::Uuid(_) => ColumnType::Uuid,
            Value::Jsonb(_) => ColumnType::Jsonb,
            Value::Date(_) => ColumnType::Date,
            Value::Time(_) => ColumnType::Time,
            Value::Timestamp(_) => ColumnType::Timestamp,
            Value::Timestamptz(_) => ColumnType::Timestamptz,
            Value::Interval { .. } => ColumnType::Interval,
        })
    }

    /// Appends the value's octets (without the length prefix).
    fn write_octets(&self, out: &mut Vec<u8>) {
        match *self {
            Value::Null => {}
            Value::Boolean(b) => out.push(b as u8),
            Value::Smallint(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Bigint(v) => out.extend_from_slice(&v.to_be_bytes()),
            // Every NaN is one value to PostgreSQL, so it is one encoding; -0 stays distinct from 0.
            Value::Real(v) => {
                let bits = if v.is_nan() { 0x7FC0_0000 } else { v.to_bits() };
                out.extend_from_slice(&bits.to_be_bytes())
            }
            Value::DoublePrecision(v) => {
                let bits = if v.is_nan() { 0x7FF8_0000_0000_0000 } else { v.to_bits() };
                out.extend_from_slice(&bits.to_be_bytes())
            }
            Value::Numeric(s) | Value::Text(s) => out.extend_from_slice(s.as_bytes()),
            Value::Bytea(b) | Value::Jsonb(b) => out.extend_from_slice(b),
            Value::Uuid(u) => out.extend_from_slice(u),
            Value::Date(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Time(v) | Value::Timestamp(v) | Value::Timestamptz(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Interval { months, days, microseconds } => {
                out.extend_from_slice(&months.to_be_bytes());
                out.extend_from_slice(&days.to_be_bytes());
                out.extend_from_slice(&microseconds.to_be_bytes());
            }
        }
    }
}

/// Appends `bytes` with its u32 length prefix.
pub fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        LedgerError::new(SqlState::InvalidParameterValue, "value too long for the canonical encoding")
            .detail(format!("{} bytes; the limit is 4294967295", bytes.len()))
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

/// The type tag of an erasable column's entry: its value is a commitment (docs/FORMAT.md,
/// "Erasable columns"), never a value of the column's type.
pub const COMMITMENT_TAG: u8 = 0x40;

/// What a record keeps of one erasable value (a column, or a member of a jsonb column's object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Erasable {
    /// The value is there; the record commits to it with this salt.
    Salt([u8; 32]),
    /// The value was erased; this is the commitment the record's hash covers.
    Erased(Digest),
}

/// What a commitment hashes before the salt, so it can be no other hash of the format.
const COMMITMENT_DOMAIN: &[u8] = b"ledger-erasable/v1";

/// The commitment to an erasable column's value: SHA3-256 of the domain, the record's salt for the
/// column (32 random octets, erased with the value), and the column's type tag and presence as an
/// ordinary column encodes them. Without the salt it cannot be tried against guessed values.
pub fn commitment(salt: &[u8; 32], name: &str, column_type: ColumnType, value: &Value) -> Result<Digest> {
    let mut column = RecordEncoder::new();
    column.buf.extend_from_slice(COMMITMENT_DOMAIN);
    column.buf.extend_from_slice(salt);
    let at = column.buf.len();
    column.column(name, column_type, value)?;
    // Drop the name: the commitment is to the typed value, the record entry names the column.
    let name_len = 4 + name.len();
    column.buf.drain(at..at + name_len);
    Ok(sha3_256(&column.buf))
}

/// Builds one record's canonical bytes. Reusable: `begin` clears it.
#[derive(Default)]
pub struct RecordEncoder {
    buf: Vec<u8>,
    columns: u32,
    written: u32,
}

impl RecordEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn begin(&mut self, column_count: u32) {
        self.buf.clear();
        self.buf.push(FORMAT_VERSION);
        self.buf.extend_from_slice(&column_count.to_be_bytes());
        self.columns = column_count;
        self.written = 0;
    }

    /// Appends one column. The value's type must be `column_type` (or NULL).
    pub fn column(&mut self, name: &str, column_type: ColumnType, value: &Value) -> Result<()> {
        if let Some(actual) = value.column_type() {
            if actual != column_type {
                return Err(LedgerError::new(
                    SqlState::DatatypeMismatch,
                    format!("column \"{name}\" holds a {} value, not {}", actual.name(), column_type.name()),
                ));
            }
        }
        write_bytes(&mut self.buf, name.as_bytes())?;
        self.buf.push(column_type.tag());
        if let Value::Null = value {
            self.buf.push(0x00);
        } else {
            self.buf.push(0x01);
            // The length prefix is filled in once the value is written in place.
            let at = self.buf.len();
            self.buf.extend_from_slice(&[0; 4]);
            value.write_octets(&mut self.buf);
            let len = u32::try_from(self.buf.len() - at - 4).map_err(|_| {
                LedgerError::new(SqlState::InvalidParameterValue, "value too long for the canonical encoding")
                    .detail(format!("column \"{name}\" exceeds 4294967295 bytes"))
            })?;
            self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        }
        self.written += 1;
        Ok(())
    }

    /// Appends an erasable column as its commitment.
    pub fn committed_column(&mut self, name: &str, commitment: &Digest) -> Result<()> {
        write_bytes(&mut self.buf, name.as_bytes())?;
        self.buf.push(COMMITMENT_TAG);
        self.buf.push(0x01);
        write_bytes(&mut self.buf, commitment)?;
        self.written += 1;
        Ok(())
    }

    /// The finished record; panics in debug builds if fewer columns were written than announced.
    pub fn bytes(&self) -> &[u8] {
        debug_assert_eq!(self.written, self.columns, "record encoder: column count mismatch");
        &self.buf
    }

    pub fn hash(&self) -> Digest {
        sha3_256(self.bytes())
    }
}

/// A chain key's own encoding: the tag and value octets of the chain column, used to group records
/// into chains (two keys are the same chain exactly when these bytes are equal).
pub fn chain_key_bytes(value: &Value, out: &mut Vec<u8>) {
    out.clear();
    if let Some(t) = value.column_type() {
        out.push(t.tag());
        value.write_octets(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::to_hex;

    fn encode(columns: &[(&str, ColumnType, Value)]) -> Vec<u8> {
        let mut enc = RecordEncoder::new();
        enc.begin(columns.len() as u32);
        for (name, t, v) in columns {
            enc.column(name, *t, v).unwrap();
        }
        enc.bytes().to_vec()
    }

    #[test]
    fn layout_matches_the_format_document() {
        let bytes = encode(&[("a", ColumnType::Integer, Value::Integer(7)), ("b", ColumnType::Text, Value::Null)]);
        let expected: Vec<u8> = [
            &[0x01][..],
            &[0, 0, 0, 2],
            &[0, 0, 0, 1, b'a', 0x03, 0x01, 0, 0, 0, 4, 0, 0, 0, 7],
            &[0, 0, 0, 1, b'b', 0x08, 0x00],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn length_prefixes_keep_adjacent_texts_apart() {
        let ab_c = encode(&[("x", ColumnType::Text, Value::Text("ab")), ("y", ColumnType::Text, Value::Text("c"))]);
        let a_bc = encode(&[("x", ColumnType::Text, Value::Text("a")), ("y", ColumnType::Text, Value::Text("bc"))]);
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn null_and_empty_differ_and_so_do_negative_zero_and_zero() {
        let null = encode(&[("x", ColumnType::Text, Value::Null)]);
        let empty = encode(&[("x", ColumnType::Text, Value::Text(""))]);
        assert_ne!(null, empty);
        let zero = encode(&[("x", ColumnType::DoublePrecision, Value::DoublePrecision(0.0))]);
        let neg_zero = encode(&[("x", ColumnType::DoublePrecision, Value::DoublePrecision(-0.0))]);
        assert_ne!(zero, neg_zero);
    }

    #[test]
    fn every_nan_encodes_alike() {
        let quiet = encode(&[("x", ColumnType::DoublePrecision, Value::DoublePrecision(f64::NAN))]);
        let other = f64::from_bits(0x7FF0_0000_0000_0001);
        assert!(other.is_nan());
        let signalling = encode(&[("x", ColumnType::DoublePrecision, Value::DoublePrecision(other))]);
        assert_eq!(quiet, signalling);
        let real_nan = encode(&[("x", ColumnType::Real, Value::Real(f32::from_bits(0xFFC0_0001)))]);
        assert_eq!(real_nan[real_nan.len() - 4..], [0x7F, 0xC0, 0, 0]);
    }

    #[test]
    fn numeric_scale_is_part_of_the_value() {
        let one = encode(&[("x", ColumnType::Numeric, Value::Numeric("1.0"))]);
        let one_hundredths = encode(&[("x", ColumnType::Numeric, Value::Numeric("1.00"))]);
        assert_ne!(one, one_hundredths);
    }

    #[test]
    fn a_value_of_another_type_is_refused() {
        let mut enc = RecordEncoder::new();
        enc.begin(1);
        let err = enc.column("x", ColumnType::Text, &Value::Integer(1)).unwrap_err();
        assert_eq!(err.state, SqlState::DatatypeMismatch);
    }

    #[test]
    fn an_erasable_column_is_its_commitment() {
        let salt = [7u8; 32];
        let value = Value::Text("alice@example.org");
        let c = commitment(&salt, "email", ColumnType::Text, &value).unwrap();
        // The domain, the salt, then the column as encoded without its name.
        let mut expected = b"ledger-erasable/v1".to_vec();
        expected.extend_from_slice(&salt);
        expected.extend_from_slice(&[0x08, 0x01, 0, 0, 0, 17]);
        expected.extend_from_slice(b"alice@example.org");
        assert_eq!(c, sha3_256(&expected));
        // Another salt, value or NULL: another commitment.
        assert_ne!(c, commitment(&[8u8; 32], "email", ColumnType::Text, &value).unwrap());
        assert_ne!(c, commitment(&salt, "email", ColumnType::Text, &Value::Text("bob@example.org")).unwrap());
        assert_ne!(c, commitment(&salt, "email", ColumnType::Text, &Value::Null).unwrap());
        let mut e = RecordEncoder::new();
        e.begin(1);
        e.committed_column("email", &c).unwrap();
        let mut bytes = vec![0x01, 0, 0, 0, 1, 0, 0, 0, 5];
        bytes.extend_from_slice(b"email");
        bytes.extend_from_slice(&[0x40, 0x01, 0, 0, 0, 32]);
        bytes.extend_from_slice(&c);
        assert_eq!(e.bytes(), bytes.as_slice());
    }

    #[test]
    fn type_names_round_trip() {
        for t in ColumnType::ALL {
            assert_eq!(ColumnType::from_name(t.name()), Some(t));
        }
        let mut tags: Vec<u8> = ColumnType::ALL.iter().map(|t| t.tag()).collect();
        tags.dedup();
        assert_eq!(tags.len(), ColumnType::ALL.len());
    }

    /// The vector in docs/FORMAT.md; the Python verifier's tests check the same one.
    #[test]
    fn format_document_vector() {
        let uuid = [0x6f, 0x1c, 0x2a, 0x54, 0x6c, 0x0e, 0x4e, 0x8b, 0x9d, 0x3e, 0x2b, 0x0f, 0x5a, 0x7c, 0x11, 0x01];
        let payload = crate::json::tests::canonical(r#"{"b": [1.50, null, true], "a": "x"}"#);
        let bytes = encode(&[
            ("id", ColumnType::Uuid, Value::Uuid(&uuid)),
            ("n", ColumnType::Bigint, Value::Bigint(-2)),
            ("at", ColumnType::Timestamptz, Value::Timestamptz(0)),
            ("payload", ColumnType::Jsonb, Value::Jsonb(&payload)),
            ("seq", ColumnType::Bigint, Value::Bigint(1)),
            ("prev_hash", ColumnType::Text, Value::Null),
        ]);
        assert_eq!(to_hex(&sha3_256(&bytes)), FORMAT_VECTOR_HASH);
    }

    pub(crate) const FORMAT_VECTOR_HASH: &str = "6d2a65fb15cbabc02a832b99b01f9e411de07ae50bf97789fa25cbf7ac88d07e";
}

#[cfg(test)]
mod erasable_vector {
    use super::*;

    /// docs/FORMAT.md, "Erasable columns": (id integer, email text, seq bigint, prev_hash text), email
    /// erasable, salt 0x01..0x20, record (1, 'alice@example.org', 1, NULL).
    #[test]
    fn format_document_vector() {
        let salt: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let c = commitment(&salt, "email", ColumnType::Text, &Value::Text("alice@example.org")).unwrap();
        let mut e = RecordEncoder::new();
        e.begin(4);
        e.column("id", ColumnType::Integer, &Value::Integer(1)).unwrap();
        e.committed_column("email", &c).unwrap();
        e.column("seq", ColumnType::Bigint, &Value::Bigint(1)).unwrap();
        e.column("prev_hash", ColumnType::Text, &Value::Null).unwrap();
        assert_eq!(crate::hash::to_hex(&c), "85b87dc37c06ca4ee945c5b2bdd30241b3fa3b38ea6870c5574cf614360d5483");
        let hex: String = e.bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "0100000004000000026964030100000004000000010000000565\
             6d61696c40010000002085b87dc37c06ca4ee945c5b2bdd30241b3fa3b38ea6870c5574cf614360d5483\
             00000003736571040100000008000000000000000100000009707265765f686173680800"
        );
        assert_eq!(crate::hash::to_hex(&e.hash()), "38afb86c296ab3d6a1e6498209cc23373fba160732128dcaaf8af8156694b9bc");
    }
}
