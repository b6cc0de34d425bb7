//! Canonical JSON for jsonb values (docs/FORMAT.md, "jsonb").
//!
//! ```text
//! json = 0x00 | 0x01 | 0x02                          null, false, true
//!      | 0x03 bytes                                  number, normalised decimal text
//!      | 0x04 bytes                                  string, UTF-8
//!      | 0x05 count:u32 json*                        array, in order
//!      | 0x06 count:u32 (key:bytes json)*            object, keys in unsigned byte order
//!      | 0x07 commitment:bytes                       an erasable member's commitment
//! ```
//!
//! Input arrives as a stream of [`JsonToken`]s, so nesting depth costs heap, not stack.

use crate::canonical::{write_bytes, Erasable};
use crate::error::{LedgerError, Result, SqlState};
use crate::hash::{sha3_256, Digest};

/// The tag of a member value replaced by its commitment (docs/FORMAT.md, "Erasable columns").
pub const COMMITTED: u8 = 0x07;

/// What a member commitment hashes before the salt: not the domain of column commitments.
const MEMBER_DOMAIN: &[u8] = b"ledger-erasable-member/v1";

fn corrupt() -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, "malformed canonical JSON")
}

fn read_len(bytes: &[u8], at: usize) -> Result<usize> {
    let b = bytes.get(at..at + 4).ok_or_else(corrupt)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Where the canonical JSON value starting at `at` ends.
fn value_end(bytes: &[u8], mut at: usize) -> Result<usize> {
    // Open containers, innermost last: how many values each has still to come, and whether a key
    // precedes each (an object).
    let mut open: Vec<(usize, bool)> = Vec::new();
    loop {
        let tag = *bytes.get(at).ok_or_else(corrupt)?;
        match tag {
            0x00..=0x02 => at += 1,
            0x03 | 0x04 | COMMITTED => at += 5 + read_len(bytes, at + 1)?,
            0x05 | 0x06 => {
                open.push((read_len(bytes, at + 1)?, tag == 0x06));
                at += 5;
            }
            _ => return Err(corrupt()),
        }
        if at > bytes.len() {
            return Err(corrupt());
        }
        // On to the next value of the innermost container that has one.
        loop {
            match open.last_mut() {
                None => return Ok(at),
                Some((0, _)) => {
                    open.pop();
                }
                Some((remaining, object)) => {
                    *remaining -= 1;
                    if *object {
                        at += 4 + read_len(bytes, at)?;
                    }
                    break;
                }
            }
        }
    }
}

/// The commitment to an erasable member's value (its canonical JSON): SHA3-256 of the member
/// domain, the salt and the value.
pub fn member_commitment(salt: &[u8; 32], value: &[u8]) -> Digest {
    let mut input = Vec::with_capacity(MEMBER_DOMAIN.len() + 32 + value.len());
    input.extend_from_slice(MEMBER_DOMAIN);
    input.extend_from_slice(salt);
    input.extend_from_slice(value);
    sha3_256(&input)
}

/// The canonical JSON of an object whose members `entry_of` names are committed to (docs/FORMAT.md,
/// "Erasable columns"): a member with a salt becomes its commitment, an erased one (whose value is
/// null) the stored commitment; an erased member that holds a value again stays as it is, so the
/// record no longer matches its hash. A value that is not an object is returned as it is.
pub fn commit_members(canonical: &[u8], entry_of: impl Fn(&str) -> Option<Erasable>) -> Result<Vec<u8>> {
    if canonical.first() != Some(&0x06) {
        return Ok(canonical.to_vec());
    }
    let count = read_len(canonical, 1)?;
    let mut out = Vec::with_capacity(canonical.len());
    out.extend_from_slice(&canonical[..5]);
    let mut at = 5;
    for _ in 0..count {
        let key_end = at + 4 + read_len(canonical, at)?;
        let key = canonical.get(at + 4..key_end).ok_or_else(corrupt)?;
        let end = value_end(canonical, key_end)?;
        out.extend_from_slice(&canonical[at..key_end]);
        let value = &canonical[key_end..end];
        match entry_of(std::str::from_utf8(key).map_err(|_| corrupt())?) {
            Some(Erasable::Salt(salt)) => {
                out.push(COMMITTED);
                write_bytes(&mut out, &member_commitment(&salt, value))?;
            }
            Some(Erasable::Erased(commitment)) if value == [0x00] => {
                out.push(COMMITTED);
                write_bytes(&mut out, &commitment)?;
            }
            _ => out.extend_from_slice(value),
        }
        at = end;
    }
    if at != canonical.len() {
        return Err(corrupt());
    }
    Ok(out)
}

/// The canonical JSON of member `key` of an object, if it has one.
pub fn member_value<'a>(canonical: &'a [u8], key: &str) -> Result<Option<&'a [u8]>> {
    if canonical.first() != Some(&0x06) {
        return Ok(None);
    }
    let mut at = 5;
    for _ in 0..read_len(canonical, 1)? {
        let key_end = at + 4 + read_len(canonical, at)?;
        let end = value_end(canonical, key_end)?;
        if canonical.get(at + 4..key_end) == Some(key.as_bytes()) {
            return Ok(Some(&canonical[key_end..end]));
        }
        at = end;
    }
    Ok(None)
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JsonToken<'a> {
    BeginObject,
    EndObject,
    BeginArray,
    EndArray,
    /// An object key; the member's value follows.
    Key(&'a str),
    Null,
    Bool(bool),
    /// Plain decimal text as PostgreSQL's numeric output gives it (no exponent).
    Number(&'a str),
    String(&'a str),
}

enum Frame {
    Array {
        start: usize,
        count: u32,
    },
    /// Members are written in arrival order, then sorted by key when the object ends.
    Object {
        start: usize,
        members: Vec<Member>,
    },
}

struct Member {
    key_start: usize,
    key_end: usize,
    end: usize,
}

/// Turns a token stream into canonical bytes. Reusable: `finish` resets it.
#[derive(Default)]
pub struct JsonCanonicalizer {
    out: Vec<u8>,
    stack: Vec<Frame>,
    scratch: Vec<u8>,
    /// Member lists of closed objects and the last number's normal form, kept so that
    /// canonicalising a record allocates nothing once warm.
    spare_members: Vec<Vec<Member>>,
    number: String,
    done: bool,
}

fn malformed(what: &str) -> LedgerError {
    LedgerError::new(SqlState::InvalidParameterValue, "malformed json token stream").detail(what.to_string())
}

impl JsonCanonicalizer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, token: JsonToken) -> Result<()> {
        if self.done {
            return Err(malformed("token after the end of the value"));
        }
        match token {
            JsonToken::BeginObject => {
                self.value_starts()?;
                self.out.push(0x06);
                let start = self.out.len();
                self.out.extend_from_slice(&[0; 4]);
                let members = self.spare_members.pop().unwrap_or_default();
                self.stack.push(Frame::Object { start, members });
            }
            JsonToken::BeginArray => {
                self.value_starts()?;
                self.out.push(0x05);
                let start = self.out.len();
                self.out.extend_from_slice(&[0; 4]);
                self.stack.push(Frame::Array { start, count: 0 });
            }
            JsonToken::EndArray => match self.stack.pop() {
                Some(Frame::Array { start, count }) => {
                    self.out[start..start + 4].copy_from_slice(&count.to_be_bytes());
                    self.value_ends();
                }
                _ => return Err(malformed("unbalanced array end")),
            },
            JsonToken::EndObject => match self.stack.pop() {
                Some(Frame::Object { start, members }) => {
                    self.close_object(start, members)?;
                    self.value_ends();
                }
                _ => return Err(malformed("unbalanced object end")),
            },
            JsonToken::Key(key) => {
                let key_start = self.out.len();
                write_bytes(&mut self.out, key.as_bytes())?;
                let key_end = self.out.len();
                match self.stack.last_mut() {
                    Some(Frame::Object { members, .. }) if members.last().is_none_or(|m| m.end != usize::MAX) => {
                        members.push(Member { key_start, key_end, end: usize::MAX });
                    }
                    _ => return Err(malformed("key outside an object")),
                }
            }
            JsonToken::Null => self.scalar(&[0x00], None)?,
            JsonToken::Bool(false) => self.scalar(&[0x01], None)?,
            JsonToken::Bool(true) => self.scalar(&[0x02], None)?,
            JsonToken::Number(text) => {
                let mut normal = std::mem::take(&mut self.number);
                let written = write_normal_number(text, &mut normal);
                let result = written.and_then(|()| self.scalar(&[0x03], Some(normal.as_bytes())));
                self.number = normal;
                result?
            }
            JsonToken::String(text) => self.scalar(&[0x04], Some(text.as_bytes()))?,
        }
        Ok(())
    }

    /// The canonical bytes of the one complete value pushed; resets for the next value.
    pub fn finish(&mut self) -> Result<&[u8]> {
        if !self.done || !self.stack.is_empty() {
            return Err(malformed("incomplete value"));
        }
        self.done = false;
        Ok(&self.out)
    }

    /// Clears any partial state (after an error, or before reuse).
    pub fn reset(&mut self) {
        self.out.clear();
        self.stack.clear();
        self.done = false;
    }

    fn scalar(&mut self, tag: &[u8], octets: Option<&[u8]>) -> Result<()> {
        self.value_starts()?;
        self.out.extend_from_slice(tag);
        if let Some(octets) = octets {
            write_bytes(&mut self.out, octets)?;
        }
        self.value_ends();
        Ok(())
    }

    fn value_starts(&mut self) -> Result<()> {
        match self.stack.last() {
            None if self.out.is_empty() => Ok(()),
            None => Err(malformed("second top-level value")),
            Some(Frame::Array { .. }) => Ok(()),
            Some(Frame::Object { members, .. }) => match members.last() {
                Some(m) if m.end == usize::MAX => Ok(()),
                _ => Err(malformed("object member without a key")),
            },
        }
    }

    fn value_ends(&mut self) {
        let end = self.out.len();
        match self.stack.last_mut() {
            None => self.done = true,
            Some(Frame::Array { count, .. }) => *count += 1,
            Some(Frame::Object { members, .. }) => {
                if let Some(m) = members.last_mut() {
                    m.end = end;
                }
            }
        }
    }

    fn close_object(&mut self, start: usize, mut members: Vec<Member>) -> Result<()> {
        if members.last().is_some_and(|m| m.end == usize::MAX) {
            return Err(malformed("object key without a value"));
        }
        let count = u32::try_from(members.len()).map_err(|_| malformed("too many members"))?;
        self.out[start..start + 4].copy_from_slice(&count.to_be_bytes());
        let body = start + 4;
        let out = &self.out;
        // Keys carry a length prefix; compare the key octets after it.
        members.sort_by(|a, b| out[a.key_start + 4..a.key_end].cmp(&out[b.key_start + 4..b.key_end]));
        if members.windows(2).any(|w| out[w[0].key_start + 4..w[0].key_end] == out[w[1].key_start + 4..w[1].key_end]) {
            return Err(malformed("duplicate object key"));
        }
        self.scratch.clear();
        for m in &members {
            self.scratch.extend_from_slice(&self.out[m.key_start..m.end]);
        }
        self.out.truncate(body);
        self.out.extend_from_slice(&self.scratch);
        members.clear();
        self.spare_members.push(members);
        Ok(())
    }
}

/// Normalises a plain decimal: no '+', no leading zeros, no trailing fractional zeros, no bare
/// '.', and no "-0". Values that compare equal as jsonb numbers (1.0 and 1) normalise alike.
pub fn normalize_number(text: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    write_normal_number(text, &mut out)?;
    Ok(out)
}

/// [`normalize_number`] into a reusable buffer (cleared first).
fn write_normal_number(text: &str, out: &mut String) -> Result<()> {
    out.clear();
    let bad = || malformed(&format!("\"{text}\" is not a plain decimal number"));
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return Err(bad());
    }
    if digits.contains('.') && frac_part.is_empty() {
        return Err(bad());
    }
    let int_part = int_part.trim_start_matches('0');
    let frac_part = frac_part.trim_end_matches('0');
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let is_zero = int_part == "0" && frac_part.is_empty();
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(int_part);
    if !frac_part.is_empty() {
        out.push('.');
        out.push_str(frac_part);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value as J;

    fn feed(c: &mut JsonCanonicalizer, v: &J) {
        match v {
            J::Null => c.push(JsonToken::Null).unwrap(),
            J::Bool(b) => c.push(JsonToken::Bool(*b)).unwrap(),
            J::Number(n) => c.push(JsonToken::Number(&n.to_string())).unwrap(),
            J::String(s) => c.push(JsonToken::String(s)).unwrap(),
            J::Array(items) => {
                c.push(JsonToken::BeginArray).unwrap();
                items.iter().for_each(|i| feed(c, i));
                c.push(JsonToken::EndArray).unwrap();
            }
            J::Object(map) => {
                c.push(JsonToken::BeginObject).unwrap();
                for (k, v) in map {
                    c.push(JsonToken::Key(k)).unwrap();
                    feed(c, v);
                }
                c.push(JsonToken::EndObject).unwrap();
            }
        }
    }

    /// Canonical bytes of a JSON text (test helper; numbers must be plain decimals).
    pub(crate) fn canonical(text: &str) -> Vec<u8> {
        let v: J = serde_json::from_str(text).unwrap();
        let mut c = JsonCanonicalizer::new();
        feed(&mut c, &v);
        c.finish().unwrap().to_vec()
    }

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        assert_eq!(
            canonical(r#"{"b":1,"a":[2,{"y":null,"x":true}]}"#),
            canonical(r#"{ "a": [2, {"x": true, "y": null}], "b": 1 }"#)
        );
    }

    #[test]
    fn keys_sort_by_bytes_not_by_length() {
        // jsonb itself keeps keys shortest first; canonical order is plain byte order.
        let bytes = canonical(r#"{"bb":1,"a":2}"#);
        let a = bytes.windows(1).position(|w| w == b"a").unwrap();
        let bb = bytes.windows(2).position(|w| w == b"bb").unwrap();
        assert!(a < bb);
    }

    #[test]
    fn number_forms_that_jsonb_considers_equal_encode_alike() {
        assert_eq!(canonical("[1.0, 1.50, 0.000, -0.0]"), canonical("[1, 1.5, 0, 0]"));
        assert_ne!(canonical("[1]"), canonical("[\"1\"]"));
        assert_ne!(canonical("[10]"), canonical("[1]"));
    }

    #[test]
    fn the_exact_bytes_of_a_small_document() {
        let expected: Vec<u8> = [
            &[0x06, 0, 0, 0, 2][..],
            &[0, 0, 0, 1, b'a', 0x04, 0, 0, 0, 1, b'x'],
            &[0, 0, 0, 1, b'b', 0x05, 0, 0, 0, 2, 0x03, 0, 0, 0, 3, b'1', b'.', b'5', 0x00],
        ]
        .concat();
        assert_eq!(canonical(r#"{"b": [1.50, null], "a": "x"}"#), expected);
    }

    #[test]
    fn normalisation() {
        for (input, out) in [
            ("0", "0"),
            ("-0", "0"),
            ("-0.00", "0"),
            ("007", "7"),
            ("1.2300", "1.23"),
            ("-12.000", "-12"),
            ("0.001", "0.001"),
            ("100", "100"),
        ] {
            assert_eq!(normalize_number(input).unwrap(), out, "{input}");
        }
        for bad in ["", "-", "1.", ".5", "1e5", "+1", "NaN", "1.2.3", "١"] {
            assert!(normalize_number(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        let mut c = JsonCanonicalizer::new();
        assert!(c.push(JsonToken::EndArray).is_err());
        c.reset();
        c.push(JsonToken::BeginObject).unwrap();
        assert!(c.push(JsonToken::Null).is_err());
        c.reset();
        c.push(JsonToken::Null).unwrap();
        assert!(c.push(JsonToken::Null).is_err());
        c.reset();
        c.push(JsonToken::BeginArray).unwrap();
        assert!(c.finish().is_err());
        c.reset();
        c.push(JsonToken::BeginObject).unwrap();
        c.push(JsonToken::Key("a")).unwrap();
        c.push(JsonToken::Null).unwrap();
        c.push(JsonToken::Key("a")).unwrap();
        c.push(JsonToken::Null).unwrap();
        assert!(c.push(JsonToken::EndObject).is_err());
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        let mut c = JsonCanonicalizer::new();
        for _ in 0..100_000 {
            c.push(JsonToken::BeginArray).unwrap();
        }
        for _ in 0..100_000 {
            c.push(JsonToken::EndArray).unwrap();
        }
        assert_eq!(c.finish().unwrap().len(), 500_000);
    }

    #[test]
    fn committed_members_replace_their_values_and_nothing_else() {
        let mut c = JsonCanonicalizer::new();
        for token in [
            JsonToken::BeginObject,
            JsonToken::Key("email"),
            JsonToken::String("a@example.org"),
            JsonToken::Key("n"),
            JsonToken::BeginArray,
            JsonToken::Number("1"),
            JsonToken::BeginObject,
            JsonToken::EndObject,
            JsonToken::EndArray,
            JsonToken::Key("z"),
            JsonToken::Null,
            JsonToken::EndObject,
        ] {
            c.push(token).unwrap();
        }
        let canonical = c.finish().unwrap().to_vec();
        let salt = [3u8; 32];
        let email = member_value(&canonical, "email").unwrap().unwrap().to_vec();
        assert_eq!(email, [&[0x04, 0, 0, 0, 13][..], b"a@example.org"].concat());
        assert_eq!(member_value(&canonical, "n").unwrap().unwrap().len(), 1 + 4 + 1 + 4 + 1 + 1 + 4);
        let committed = commit_members(&canonical, |k| (k == "email").then_some(Erasable::Salt(salt))).unwrap();
        let commitment = member_commitment(&salt, &email);
        let expected = [
            &canonical[..5 + 4 + 5],
            &[COMMITTED, 0, 0, 0, 32][..],
            &commitment,
            &canonical[5 + 4 + 5 + email.len()..],
        ]
        .concat();
        assert_eq!(committed, expected);
        // Erased: the value is null, the stored commitment stands in for it, the bytes are alike.
        let erased = [&canonical[..5 + 4 + 5], &[0x00][..], &canonical[5 + 4 + 5 + email.len()..]].concat();
        assert_eq!(
            commit_members(&erased, |k| (k == "email").then_some(Erasable::Erased(commitment))).unwrap(),
            committed
        );
        // A value put back under an erased entry is itself again: the bytes differ.
        assert_eq!(
            commit_members(&canonical, |k| (k == "email").then_some(Erasable::Erased(commitment))).unwrap(),
            canonical
        );
        // No entries, or not an object: unchanged.
        assert_eq!(commit_members(&canonical, |_| None).unwrap(), canonical);
        assert_eq!(commit_members(&[0x00], |_| Some(Erasable::Salt(salt))).unwrap(), vec![0x00]);
        assert!(commit_members(&canonical[..canonical.len() - 1], |_| None).is_err());
    }
}

#[cfg(test)]
mod erasable_member_vector {
    use super::*;
    use crate::canonical::{ColumnType, RecordEncoder, Value};

    /// docs/FORMAT.md, "Erasable members": a history version ('{"id": 2}', 1, 'insert',
    /// {"id": 2, "plan": "free", "email": "bob@example.org"}, NULL), email salted with 0x01..0x20.
    #[test]
    fn format_document_vector() {
        let row = |email: JsonToken<'static>| {
            let mut c = JsonCanonicalizer::new();
            for token in [
                JsonToken::BeginObject,
                JsonToken::Key("id"),
                JsonToken::Number("2"),
                JsonToken::Key("plan"),
                JsonToken::String("free"),
                JsonToken::Key("email"),
                email,
                JsonToken::EndObject,
            ] {
                c.push(token).unwrap();
            }
            c.finish().unwrap().to_vec()
        };
        let salt: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let record = |row: &[u8]| {
            let mut e = RecordEncoder::new();
            e.begin(5);
            e.column("key", ColumnType::Text, &Value::Text("{\"id\": 2}")).unwrap();
            e.column("seq", ColumnType::Bigint, &Value::Bigint(1)).unwrap();
            e.column("op", ColumnType::Text, &Value::Text("insert")).unwrap();
            e.column("row", ColumnType::Jsonb, &Value::Jsonb(row)).unwrap();
            e.column("prev_hash", ColumnType::Text, &Value::Null).unwrap();
            e.hash()
        };
        let stored = row(JsonToken::String("bob@example.org"));
        let email = member_value(&stored, "email").unwrap().unwrap().to_vec();
        let commitment = member_commitment(&salt, &email);
        assert_eq!(
            crate::hash::to_hex(&commitment),
            "bdcc9c45c2424032daf716ef91ac35299f229b4564b0f0dc62ef3ca9557cbeb5"
        );
        let salted = commit_members(&stored, |m| (m == "email").then_some(Erasable::Salt(salt))).unwrap();
        let hash = crate::hash::to_hex(&record(&salted));
        assert_eq!(hash, "8844e5725475a0dcbd7028781dbd95eff65305a27277c7207c75860993cfbd7b");
        let erased =
            commit_members(&row(JsonToken::Null), |m| (m == "email").then_some(Erasable::Erased(commitment))).unwrap();
        assert_eq!(crate::hash::to_hex(&record(&erased)), hash);
    }
}
