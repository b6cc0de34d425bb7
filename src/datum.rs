//! Reading stored datums as canonical [`Value`]s: PostgreSQL's binary values, never text that
//! session settings could shape (numeric's output has no such settings).

use crate::error::{raise, OrRaise};
use ledger_core::canonical::{ColumnType, Value};
use ledger_core::json::JsonCanonicalizer;
use ledger_core::jsonb::JsonbReader;
use ledger_core::numeric;
use ledger_core::{LedgerError, SqlState};
use pgrx::pg_sys::{self, Datum, Oid};
use std::ffi::CStr;

/// The format type of a column type (domains resolve to their base type), or `None`.
pub fn column_type_of(type_oid: Oid) -> Option<ColumnType> {
    // SAFETY: a catalog lookup; errors are PostgreSQL errors.
    let base = unsafe { pg_sys::getBaseType(type_oid) };
    Some(match base {
        pg_sys::BOOLOID => ColumnType::Boolean,
        pg_sys::INT2OID => ColumnType::Smallint,
        pg_sys::INT4OID => ColumnType::Integer,
        pg_sys::INT8OID => ColumnType::Bigint,
        pg_sys::FLOAT4OID => ColumnType::Real,
        pg_sys::FLOAT8OID => ColumnType::DoublePrecision,
        pg_sys::NUMERICOID => ColumnType::Numeric,
        pg_sys::TEXTOID | pg_sys::VARCHAROID | pg_sys::BPCHAROID => ColumnType::Text,
        pg_sys::BYTEAOID => ColumnType::Bytea,
        pg_sys::UUIDOID => ColumnType::Uuid,
        pg_sys::JSONBOID => ColumnType::Jsonb,
        pg_sys::DATEOID => ColumnType::Date,
        pg_sys::TIMEOID => ColumnType::Time,
        pg_sys::TIMESTAMPOID => ColumnType::Timestamp,
        pg_sys::TIMESTAMPTZOID => ColumnType::Timestamptz,
        pg_sys::INTERVALOID => ColumnType::Interval,
        _ => return None,
    })
}

/// Reusable buffers for turning one record's datums into values.
#[derive(Default)]
pub struct DatumReader {
    json: JsonCanonicalizer,
    jsonb: JsonbReader,
    /// Canonical jsonb bytes, one buffer per jsonb column of the record.
    json_out: Vec<Vec<u8>>,
    json_used: usize,
    /// Numeric text, one buffer per numeric column of the record.
    numeric_out: Vec<String>,
    numeric_used: usize,
}

/// The next of a record's reusable buffers, cleared.
fn next_buffer<'a, T: Default>(buffers: &'a mut Vec<T>, used: &mut usize, clear: impl FnOnce(&mut T)) -> &'a mut T {
    if *used == buffers.len() {
        buffers.push(T::default());
    }
    *used += 1;
    let buffer = &mut buffers[*used - 1];
    clear(buffer);
    buffer
}

impl DatumReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call before reading a new record: jsonb and numeric buffers are reused from here on.
    pub fn begin_record(&mut self) {
        self.json_used = 0;
        self.numeric_used = 0;
    }

    /// Reads a non-null datum of `column_type`. Pointers into detoasted data live as long as the
    /// current memory context; jsonb bytes and numeric text live until the next `begin_record`.
    ///
    /// # Safety
    /// `datum` must be a valid, non-null datum of a type that `column_type_of` mapped to `column_type`.
    pub unsafe fn read<'a>(&'a mut self, column_type: ColumnType, datum: Datum) -> Value<'a> {
        match column_type {
            ColumnType::Boolean => Value::Boolean(datum.value() != 0),
            ColumnType::Smallint => Value::Smallint(datum.value() as i16),
            ColumnType::Integer => Value::Integer(datum.value() as i32),
            ColumnType::Bigint => Value::Bigint(datum.value() as i64),
            ColumnType::Real => Value::Real(f32::from_bits(datum.value() as u32)),
            ColumnType::DoublePrecision => Value::DoublePrecision(f64::from_bits(datum.value() as u64)),
            ColumnType::Numeric => Value::Numeric(self.numeric_text(datum)),
            ColumnType::Text => Value::Text(text_datum_to_str(datum)),
            ColumnType::Bytea => Value::Bytea(varlena_bytes(datum)),
            ColumnType::Uuid => Value::Uuid(&*(datum.cast_mut_ptr::<[u8; 16]>())),
            ColumnType::Jsonb => Value::Jsonb(self.canonical_jsonb(datum)),
            ColumnType::Date => Value::Date(datum.value() as i32),
            ColumnType::Time => Value::Time(datum.value() as i64),
            ColumnType::Timestamp => Value::Timestamp(datum.value() as i64),
            ColumnType::Timestamptz => Value::Timestamptz(datum.value() as i64),
            ColumnType::Interval => {
                let interval = &*(datum.cast_mut_ptr::<pg_sys::Interval>());
                Value::Interval { months: interval.month, days: interval.day, microseconds: interval.time }
            }
        }
    }

    /// numeric's output text (docs/FORMAT.md), read from the stored value.
    unsafe fn numeric_text(&mut self, datum: Datum) -> &str {
        let out = next_buffer(&mut self.numeric_out, &mut self.numeric_used, String::clear);
        numeric::write_text(varlena_bytes(datum), out).or_raise();
        out
    }

    /// Canonical JSON of a jsonb value, read from its stored form.
    unsafe fn canonical_jsonb(&mut self, datum: Datum) -> &[u8] {
        self.jsonb.canonicalize(varlena_bytes(datum), &mut self.json).or_raise();
        let bytes = self.json.finish().or_raise();
        let out = next_buffer(&mut self.json_out, &mut self.json_used, Vec::clear);
        out.extend_from_slice(bytes);
        out
    }
}

/// The bytes of a (possibly toasted or short-header) varlena datum.
///
/// # Safety
/// `datum` must be a valid varlena datum.
pub unsafe fn varlena_bytes<'a>(datum: Datum) -> &'a [u8] {
    let ptr = datum.cast_mut_ptr::<pg_sys::varlena>();
    // Most values are stored inline and uncompressed: read them in place, sparing a guarded call.
    if pgrx::varlena::varatt_is_4b_u(ptr) {
        let len = pgrx::varlena::varsize_4b(ptr) - pg_sys::VARHDRSZ;
        return std::slice::from_raw_parts(pgrx::varlena::vardata_4b(ptr) as *const u8, len);
    }
    if pgrx::varlena::varatt_is_1b(ptr) && !pgrx::varlena::varatt_is_1b_e(ptr) {
        let len = pgrx::varlena::varsize_1b(ptr) - 1;
        return std::slice::from_raw_parts(pgrx::varlena::vardata_1b(ptr) as *const u8, len);
    }
    let detoasted = pg_sys::pg_detoast_datum_packed(ptr);
    let len = pgrx::varlena::varsize_any_exhdr(detoasted);
    let data = pgrx::varlena::vardata_any(detoasted) as *const u8;
    std::slice::from_raw_parts(data, len)
}

/// A text, varchar or bpchar datum as UTF-8.
///
/// # Safety
/// `datum` must be a valid text-like datum.
pub unsafe fn text_datum_to_str<'a>(datum: Datum) -> &'a str {
    server_bytes_to_str(varlena_bytes(datum))
}

/// Stored text as UTF-8. Ledgers live only in UTF8 databases ([`require_utf8_database`]), where
/// PostgreSQL has already validated every text value.
unsafe fn server_bytes_to_str(bytes: &[u8]) -> &str {
    require_utf8_database();
    std::str::from_utf8_unchecked(bytes)
}

/// Ledgers hash text and names as UTF-8, and Rust strings are UTF-8 throughout, so other database
/// encodings are refused rather than converted.
pub fn require_utf8_database() {
    // A backend stays connected to one database, so one successful check lasts.
    static CHECKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if CHECKED.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    // SAFETY: reads the database encoding.
    unsafe {
        if pg_sys::GetDatabaseEncoding() != pg_sys::pg_enc::PG_UTF8 as i32 {
            let name = CStr::from_ptr(pg_sys::GetDatabaseEncodingName()).to_string_lossy();
            raise(
                LedgerError::new(SqlState::FeatureNotSupported, "ledger needs a UTF8 database")
                    .detail(format!("This database's encoding is {name}."))
                    .hint("Create the database with ENCODING 'UTF8'."),
            );
        }
    }
    CHECKED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A text datum holding `text` (also valid as bpchar and varchar), in the current memory context.
pub fn text_datum(text: &str) -> Datum {
    // SAFETY: copies `text` into a palloc'd varlena.
    unsafe {
        Datum::from(pg_sys::cstring_to_text_with_len(text.as_ptr() as *const std::ffi::c_char, text.len() as i32))
    }
}

/// A stored row's datums, read in place from its heap page (kept pinned while this lives).
pub struct StoredRow {
    pub values: Vec<Datum>,
    pub nulls: Vec<bool>,
    buffer: pg_sys::Buffer,
}

impl Drop for StoredRow {
    fn drop(&mut self) {
        // SAFETY: the buffer was pinned by heap_fetch.
        unsafe { pg_sys::ReleaseBuffer(self.buffer) };
    }
}

/// The row at `tid` of `rel` as the active snapshot sees it. A ctid names the row itself, which a
/// whole-row reference in SQL cannot do when a column has the table's alias for a name.
///
/// # Safety
/// `rel` must be an open heap relation and `tid_datum` a tid datum.
pub unsafe fn fetch_row(rel: pg_sys::Relation, tid_datum: Datum) -> Option<StoredRow> {
    let mut tuple: pg_sys::HeapTupleData = std::mem::zeroed();
    tuple.t_self = *tid_datum.cast_mut_ptr::<pg_sys::ItemPointerData>();
    let mut buffer: pg_sys::Buffer = 0;
    // PostgreSQL 15 added keep_buf: false releases the buffer of a tuple that is not visible.
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    let found = pg_sys::heap_fetch(rel, pg_sys::GetActiveSnapshot(), &mut tuple, &mut buffer);
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    let found = pg_sys::heap_fetch(rel, pg_sys::GetActiveSnapshot(), &mut tuple, &mut buffer, false);
    if !found {
        return None;
    }
    let tupdesc = (*rel).rd_att;
    let natts = (*tupdesc).natts as usize;
    let mut values = vec![Datum::from(0); natts];
    let mut nulls = vec![false; natts];
    pg_sys::heap_deform_tuple(&mut tuple, tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
    Some(StoredRow { values, nulls, buffer })
}

/// A SHA3-256 hash as the `char(64)` lower-case hex that ledger tables store.
pub struct Hash64(pub String);

// SAFETY: returns a text datum, which is also a valid bpchar datum.
unsafe impl pgrx::callconv::BoxRet for Hash64 {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut pgrx::callconv::FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        fcinfo.return_raw_datum(text_datum(&self.0))
    }
}

// SAFETY: returned as character(64).
unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for Hash64 {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(Hash64);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("character(64)"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef::One(
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("character(64)"),
    ));
}

/// A value of SQL type `name` (PostgreSQL's identifier type), as a function argument.
pub struct SqlName(pub String);

impl pgrx::datum::FromDatum for SqlName {
    unsafe fn from_polymorphic_datum(datum: Datum, is_null: bool, _type_oid: Oid) -> Option<SqlName> {
        // A name datum points at a NUL-terminated NameData.
        (!is_null).then(|| SqlName(CStr::from_ptr(datum.cast_mut_ptr()).to_string_lossy().into_owned()))
    }
}

// SAFETY: SqlName is read from a `name` datum.
unsafe impl pgrx::pgrx_sql_entity_graph::metadata::SqlTranslatable for SqlName {
    const TYPE_IDENT: &'static str = pgrx::pgrx_resolved_type!(SqlName);
    const TYPE_ORIGIN: pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin =
        pgrx::pgrx_sql_entity_graph::metadata::TypeOrigin::External;
    const ARGUMENT_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef,
        pgrx::pgrx_sql_entity_graph::metadata::ArgumentError,
    > = Ok(pgrx::pgrx_sql_entity_graph::metadata::SqlMappingRef::literal("name"));
    const RETURN_SQL: Result<
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsRef,
        pgrx::pgrx_sql_entity_graph::metadata::ReturnsError,
    > = Err(pgrx::pgrx_sql_entity_graph::metadata::ReturnsError::Datum);
}

// SAFETY: reads the argument through FromDatum, as pgrx does for its own types.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for SqlName {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        arg.unbox_arg_using_from_datum().unwrap_or_else(|| panic!("argument {index} must not be null"))
    }

    unsafe fn unbox_nullable_arg(arg: pgrx::callconv::Arg<'_, 'fcx>) -> pgrx::nullable::Nullable<Self> {
        arg.unbox_arg_using_from_datum().into()
    }
}

/// The first column of the first row of a read-only query, or None. Unlike `Spi::get_one`, which
/// takes the read-write path and assigns a transaction id, this works on hot standbys and in
/// read-only transactions.
pub fn select_one<T: pgrx::datum::FromDatum + pgrx::datum::IntoDatum>(
    query: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> Result<Option<T>, pgrx::spi::Error> {
    pgrx::spi::Spi::connect(|client| {
        let rows = client.select(query, Some(1), args)?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.first().get_one::<T>()
    })
}
