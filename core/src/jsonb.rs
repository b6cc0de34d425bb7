//! PostgreSQL's stored `jsonb` read directly into canonical JSON ([`crate::json`]), without a call
//! into the server per token and without copying short values. Every offset is checked, and nesting
//! costs heap, not stack.
//!
//! The stored form (PostgreSQL's `jsonb.h`; integers in the server's byte order) is a container:
//!
//! ```text
//! container = header:u32 (count, and 0x10000000 raw scalar | 0x20000000 object | 0x40000000 array)
//!             jentry:u32 * (count, or 2 * count for an object: the keys, then the values)
//!             data
//! jentry    = has_offset:1 bit  type:3 bits  offset_or_length:28 bits
//! ```
//!
//! A child's data starts where the previous child's ends (the first at 0) and ends at the jentry's
//! offset when it has one, or after its length. Numerics and containers start at the next 4-byte
//! boundary of the data area; the padding counts in the previous extent.

use crate::error::{LedgerError, Result, SqlState};
use crate::json::{JsonCanonicalizer, JsonToken};
use crate::numeric;

const COUNT_MASK: u32 = 0x0FFF_FFFF;
const RAW_SCALAR: u32 = 0x1000_0000;
const OBJECT: u32 = 0x2000_0000;
const ARRAY: u32 = 0x4000_0000;

const OFFSET_OR_LENGTH: u32 = 0x0FFF_FFFF;
const TYPE_MASK: u32 = 0x7000_0000;
const HAS_OFFSET: u32 = 0x8000_0000;
const STRING: u32 = 0x0000_0000;
const NUMERIC: u32 = 0x1000_0000;
const FALSE: u32 = 0x2000_0000;
const TRUE: u32 = 0x3000_0000;
const NULL: u32 = 0x4000_0000;
const CONTAINER: u32 = 0x5000_0000;

fn corrupt(what: &str) -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, "malformed stored jsonb").detail(what.to_string())
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| corrupt("a container ends inside its header"))
}

/// One container being walked: its children's extents, and which to emit next.
struct Frame<'a> {
    data: &'a [u8],
    jentries: &'a [u8],
    count: usize,
    object: bool,
    next: usize,
    /// Where the next key's and the next value's data start (keys and values are read in step).
    key_at: usize,
    value_at: usize,
}

impl<'a> Frame<'a> {
    fn open(container: &'a [u8]) -> Result<(Frame<'a>, u32)> {
        let header = read_u32(container, 0)?;
        let count = (header & COUNT_MASK) as usize;
        let object = header & OBJECT != 0;
        if (header & OBJECT != 0) == (header & ARRAY != 0) {
            return Err(corrupt("a container that is not exactly one of object and array"));
        }
        let entries = if object { count * 2 } else { count };
        let data_at = 4 + entries * 4;
        if data_at > container.len() {
            return Err(corrupt("more children than the container has room for"));
        }
        let mut frame = Frame {
            data: &container[data_at..],
            jentries: &container[4..data_at],
            count,
            object,
            next: 0,
            key_at: 0,
            value_at: 0,
        };
        if object {
            // Values start where the last key ends.
            let mut at = 0;
            for i in 0..count {
                at = frame.extent(i, at)?.1;
            }
            frame.value_at = at;
        }
        Ok((frame, header))
    }

    fn jentry(&self, i: usize) -> u32 {
        let b = &self.jentries[i * 4..i * 4 + 4];
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    /// (start, end) of child `i` in the data area, given where it starts.
    fn extent(&self, i: usize, start: usize) -> Result<(usize, usize)> {
        let entry = self.jentry(i);
        let field = (entry & OFFSET_OR_LENGTH) as usize;
        let end = if entry & HAS_OFFSET != 0 { field } else { start + field };
        if end < start || end > self.data.len() {
            return Err(corrupt("a child outside its container"));
        }
        Ok((start, end))
    }

    /// The data of a numeric or container child, after its alignment padding.
    fn aligned(&self, start: usize, end: usize) -> Result<&'a [u8]> {
        let start = (start + 3) & !3;
        self.data.get(start..end).ok_or_else(|| corrupt("a child's padding runs past its end"))
    }
}

/// Reusable buffers for [`canonicalize`].
#[derive(Default)]
pub struct JsonbReader {
    number: String,
}

impl JsonbReader {
    /// Feeds the stored jsonb `root` (the varlena's data, header excluded) to `out` as one value.
    pub fn canonicalize(&mut self, root: &[u8], out: &mut JsonCanonicalizer) -> Result<()> {
        out.reset();
        let (frame, header) = Frame::open(root)?;
        let raw_scalar = header & RAW_SCALAR != 0;
        if raw_scalar && (frame.object || frame.count != 1) {
            return Err(corrupt("a raw scalar that is not a one-element array"));
        }
        if !raw_scalar {
            out.push(if frame.object { JsonToken::BeginObject } else { JsonToken::BeginArray })?;
        }
        let mut stack = vec![frame];
        while let Some(frame) = stack.last_mut() {
            if frame.next == frame.count {
                let object = frame.object;
                stack.pop();
                if !(raw_scalar && stack.is_empty()) {
                    out.push(if object { JsonToken::EndObject } else { JsonToken::EndArray })?;
                }
                continue;
            }
            let i = frame.next;
            frame.next += 1;
            let value_index = if frame.object {
                let (start, end) = frame.extent(i, frame.key_at)?;
                frame.key_at = end;
                if frame.jentry(i) & TYPE_MASK != STRING {
                    return Err(corrupt("an object key that is not a string"));
                }
                out.push(JsonToken::Key(utf8(&frame.data[start..end])?))?;
                frame.count + i
            } else {
                i
            };
            let at = if frame.object { frame.value_at } else { frame.key_at };
            let (start, end) = frame.extent(value_index, at)?;
            if frame.object {
                frame.value_at = end;
            } else {
                frame.key_at = end;
            }
            let entry = frame.jentry(value_index);
            match entry & TYPE_MASK {
                STRING => out.push(JsonToken::String(utf8(&frame.data[start..end])?))?,
                NUMERIC => {
                    let numeric = varlena_data(frame.aligned(start, end)?)?;
                    self.number.clear();
                    numeric::write_text(numeric, &mut self.number)?;
                    out.push(JsonToken::Number(&self.number))?;
                }
                FALSE => out.push(JsonToken::Bool(false))?,
                TRUE => out.push(JsonToken::Bool(true))?,
                NULL => out.push(JsonToken::Null)?,
                CONTAINER => {
                    let (child, child_header) = Frame::open(frame.aligned(start, end)?)?;
                    if child_header & RAW_SCALAR != 0 {
                        return Err(corrupt("a raw scalar inside a container"));
                    }
                    out.push(if child.object { JsonToken::BeginObject } else { JsonToken::BeginArray })?;
                    stack.push(child);
                }
                _ => return Err(corrupt("an unknown child type")),
            }
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| corrupt("a string that is not UTF-8"))
}

/// A varlena stored inside jsonb (a numeric): the data after its 1- or 4-byte header, which must
/// be uncompressed and inline.
fn varlena_data(bytes: &[u8]) -> Result<&[u8]> {
    let first = *bytes.first().ok_or_else(|| corrupt("an empty numeric"))?;
    // Little-endian varlena headers: a set low bit is the 1-byte form (0x01 alone is external).
    if cfg!(target_endian = "little") && first & 0x01 != 0 || cfg!(target_endian = "big") && first & 0x80 != 0 {
        let len = if cfg!(target_endian = "little") { (first >> 1) as usize } else { (first & 0x7F) as usize };
        if len == 0 || len > bytes.len() {
            return Err(corrupt("a numeric with a bad short header"));
        }
        return Ok(&bytes[1..len]);
    }
    let header = read_u32(bytes, 0)?;
    let (compressed, len) = if cfg!(target_endian = "little") {
        (header & 0x02 != 0, (header >> 2) as usize)
    } else {
        (header & 0x4000_0000 != 0, (header & 0x3FFF_FFFF) as usize)
    };
    if compressed || len < 4 || len > bytes.len() {
        return Err(corrupt("a numeric with a bad header"));
    }
    Ok(&bytes[4..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stored container, built the way PostgreSQL's convertJsonb lays it out.
    enum V {
        Null,
        Bool(bool),
        Str(&'static str),
        /// A short-form numeric: (negative, dscale, weight, digits).
        Num(bool, u16, i16, Vec<i16>),
        Arr(Vec<V>),
        Obj(Vec<(&'static str, V)>),
    }

    fn numeric(negative: bool, dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let header: u16 = 0x8000 | if negative { 0x2000 } else { 0 } | (dscale << 7) | ((weight as u16) & 0x7F);
        let mut payload = header.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| payload.extend_from_slice(&d.to_ne_bytes()));
        let mut out = ((payload.len() as u32 + 4) << 2).to_ne_bytes().to_vec();
        out.extend(payload);
        out
    }

    /// (type bits, data with its padding relative to `at`).
    fn child(v: &V, at: usize) -> (u32, Vec<u8>) {
        let pad = |bytes: Vec<u8>| [vec![0; ((at + 3) & !3) - at], bytes].concat();
        match v {
            V::Null => (NULL, vec![]),
            V::Bool(false) => (FALSE, vec![]),
            V::Bool(true) => (TRUE, vec![]),
            V::Str(s) => (STRING, s.as_bytes().to_vec()),
            V::Num(n, s, w, d) => (NUMERIC, pad(numeric(*n, *s, *w, d))),
            V::Arr(_) | V::Obj(_) => (CONTAINER, pad(container(v))),
        }
    }

    /// A stored container (a scalar becomes the raw-scalar array jsonb stores it as).
    fn container(v: &V) -> Vec<u8> {
        let mut data = Vec::new();
        let mut extents = Vec::new(); // (type bits, start, end)
        let mut put = |data: &mut Vec<u8>, v: &V| {
            let start = data.len();
            let (bits, bytes) = child(v, start);
            data.extend(bytes);
            extents.push((bits, start, data.len()));
        };
        let (flags, count) = match v {
            V::Arr(items) => {
                items.iter().for_each(|item| put(&mut data, item));
                (ARRAY, items.len())
            }
            V::Obj(members) => {
                // jsonb keeps keys shortest first, then by bytes.
                let mut sorted: Vec<&(&str, V)> = members.iter().collect();
                sorted.sort_by(|a, b| (a.0.len(), a.0).cmp(&(b.0.len(), b.0)));
                sorted.iter().for_each(|(key, _)| put(&mut data, &V::Str(key)));
                sorted.iter().for_each(|(_, value)| put(&mut data, value));
                (OBJECT, members.len())
            }
            scalar => {
                put(&mut data, scalar);
                (ARRAY | RAW_SCALAR, 1)
            }
        };
        let mut out = (flags | count as u32).to_ne_bytes().to_vec();
        for (i, (bits, start, end)) in extents.iter().enumerate() {
            // Every 32nd entry stores its end offset, the others their length.
            let field = if i % 32 == 31 { HAS_OFFSET | *end as u32 } else { (*end - *start) as u32 };
            out.extend_from_slice(&(bits | field).to_ne_bytes());
        }
        out.extend(data);
        out
    }

    fn canonical(v: &V) -> Vec<u8> {
        let mut out = JsonCanonicalizer::new();
        JsonbReader::default().canonicalize(&container(v), &mut out).unwrap();
        out.finish().unwrap().to_vec()
    }

    #[test]
    fn stored_values_read_as_their_json_text_would() {
        let doc = V::Obj(vec![
            ("b", V::Arr(vec![V::Num(false, 2, 0, vec![1, 5000]), V::Null, V::Bool(true)])),
            ("a", V::Str("x")),
        ]);
        assert_eq!(canonical(&doc), crate::json::tests::canonical(r#"{"b": [1.50, null, true], "a": "x"}"#));
        assert_eq!(canonical(&V::Num(true, 0, 0, vec![5])), crate::json::tests::canonical("-5"));
        assert_eq!(canonical(&V::Str("ü")), crate::json::tests::canonical(r#""ü""#));
        assert_eq!(canonical(&V::Arr(vec![])), crate::json::tests::canonical("[]"));
        let nested = V::Arr(vec![V::Obj(vec![("k", V::Arr(vec![V::Bool(false)]))]), V::Num(false, 3, -1, vec![10])]);
        assert_eq!(canonical(&nested), crate::json::tests::canonical(r#"[{"k": [false]}, 0.001]"#));
    }

    #[test]
    fn long_containers_use_stored_offsets() {
        let items: Vec<V> =
            (0..100).map(|i| if i % 3 == 0 { V::Num(false, 0, 0, vec![i]) } else { V::Str("s") }).collect();
        let text = format!(
            "[{}]",
            (0..100).map(|i| if i % 3 == 0 { i.to_string() } else { "\"s\"".into() }).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(canonical(&V::Arr(items)), crate::json::tests::canonical(&text));
    }

    #[test]
    fn damaged_containers_are_errors_not_panics() {
        let good = container(&V::Arr(vec![V::Str("abc"), V::Num(false, 0, 0, vec![7])]));
        let mut out = JsonCanonicalizer::new();
        let mut reader = JsonbReader::default();
        assert!(reader.canonicalize(&good, &mut out).is_ok());
        for cut in 0..good.len() {
            assert!(reader.canonicalize(&good[..cut], &mut out).is_err(), "cut at {cut}");
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                let _ = reader.canonicalize(&bad, &mut out); // any result but a panic
            }
        }
    }
}
