//! PostgreSQL's stored `numeric` as the text its output function writes (`numeric_out`): plain
//! decimal with the value's display scale, or `NaN`, `Infinity`, `-Infinity`. Reading the stored
//! form directly spares a call into the server per value, and the text is what the canonical
//! encoding hashes (docs/FORMAT.md).
//!
//! The stored form (the bytes after the varlena header), all integers in the server's byte order:
//!
//! ```text
//! short: header:u16 (0x8000 | sign 0x2000 | dscale << 7 (6 bits) | weight (7 bits, two's complement)) digit:i16*
//! long:  header:u16 (sign 0x0000 or 0x4000 | dscale (14 bits)) weight:i16 digit:i16*
//! special: header:u16 0xC000 NaN, 0xD000 Infinity, 0xF000 -Infinity
//! ```
//!
//! Digits are base 10000, most significant first; `weight` is the power of 10000 of the first one.

use crate::error::{LedgerError, Result, SqlState};

const SIGN_MASK: u16 = 0xC000;
const NEGATIVE: u16 = 0x4000;
const SHORT: u16 = 0x8000;
const SPECIAL: u16 = 0xC000;
const SHORT_NEGATIVE: u16 = 0x2000;
const SHORT_DSCALE_MASK: u16 = 0x1F80;
const SHORT_DSCALE_SHIFT: u16 = 7;
const SHORT_WEIGHT_SIGN: u16 = 0x0040;
const SHORT_WEIGHT_MASK: u16 = 0x003F;
const LONG_DSCALE_MASK: u16 = 0x3FFF;

fn corrupt(what: &str) -> LedgerError {
    LedgerError::new(SqlState::DataCorrupted, "malformed stored numeric").detail(what.to_string())
}

fn read_u16(bytes: &[u8], at: usize) -> Result<u16> {
    bytes.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]])).ok_or_else(|| corrupt("it ends inside its header"))
}

/// Appends the text of the stored numeric `payload` (the varlena's data, header excluded) to `out`.
pub fn write_text(payload: &[u8], out: &mut String) -> Result<()> {
    let header = read_u16(payload, 0)?;
    let (negative, dscale, weight, digits_at) = if header & SIGN_MASK == SPECIAL {
        out.push_str(match header & 0xF000 {
            0xC000 => "NaN",
            0xD000 => "Infinity",
            0xF000 => "-Infinity",
            _ => return Err(corrupt("an unknown special value")),
        });
        return Ok(());
    } else if header & SHORT != 0 {
        let magnitude = (header & SHORT_WEIGHT_MASK) as i16;
        let weight = if header & SHORT_WEIGHT_SIGN != 0 { magnitude | !(SHORT_WEIGHT_MASK as i16) } else { magnitude };
        (header & SHORT_NEGATIVE != 0, (header & SHORT_DSCALE_MASK) >> SHORT_DSCALE_SHIFT, weight, 2)
    } else {
        (header & SIGN_MASK == NEGATIVE, header & LONG_DSCALE_MASK, read_u16(payload, 2)? as i16, 4)
    };
    let digit_bytes = &payload[digits_at.min(payload.len())..];
    if digit_bytes.len() % 2 != 0 || digits_at > payload.len() {
        return Err(corrupt("a partial digit"));
    }
    // Base-10000 digits, read in place: a record's numerics cost no allocation.
    let stored = |i: usize| i16::from_ne_bytes([digit_bytes[2 * i], digit_bytes[2 * i + 1]]);
    let count = digit_bytes.len() / 2;
    if (0..count).any(|i| !(0..10000).contains(&stored(i))) {
        return Err(corrupt("a digit out of range"));
    }
    let digit = |d: i32| if d >= 0 && (d as usize) < count { stored(d as usize) } else { 0 };

    // As PostgreSQL's get_str_from_var.
    if negative {
        out.push('-');
    }
    let weight = weight as i32;
    let mut d;
    if weight < 0 {
        d = weight + 1;
        out.push('0');
    } else {
        d = 0;
        while d <= weight {
            let value = digit(d);
            if d == 0 {
                push_without_leading_zeros(out, value);
            } else {
                push_four(out, value);
            }
            d += 1;
        }
    }
    if dscale > 0 {
        out.push('.');
        let end = out.len() + dscale as usize;
        let mut written = 0;
        while written < dscale as usize {
            push_four(out, digit(d));
            d += 1;
            written += 4;
        }
        out.truncate(end);
    }
    Ok(())
}

fn push_without_leading_zeros(out: &mut String, value: i16) {
    let value = value as u16;
    let mut started = false;
    for divisor in [1000, 100, 10, 1] {
        let digit = (value / divisor) % 10;
        started |= digit != 0 || divisor == 1;
        if started {
            out.push(char::from(b'0' + digit as u8));
        }
    }
}

fn push_four(out: &mut String, value: i16) {
    let value = value as u16;
    for divisor in [1000, 100, 10, 1] {
        out.push(char::from(b'0' + ((value / divisor) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn long(negative: bool, dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((if negative { NEGATIVE } else { 0 }) | dscale).to_ne_bytes());
        out.extend_from_slice(&weight.to_ne_bytes());
        digits.iter().for_each(|d| out.extend_from_slice(&d.to_ne_bytes()));
        out
    }

    fn short(negative: bool, dscale: u16, weight: i16, digits: &[i16]) -> Vec<u8> {
        let weight_bits = (weight as u16) & (SHORT_WEIGHT_SIGN | SHORT_WEIGHT_MASK);
        let header = SHORT | if negative { SHORT_NEGATIVE } else { 0 } | (dscale << SHORT_DSCALE_SHIFT) | weight_bits;
        let mut out = header.to_ne_bytes().to_vec();
        digits.iter().for_each(|d| out.extend_from_slice(&d.to_ne_bytes()));
        out
    }

    fn text(payload: &[u8]) -> String {
        let mut out = String::new();
        write_text(payload, &mut out).unwrap();
        out
    }

    #[test]
    fn values_as_numeric_out_writes_them() {
        assert_eq!(text(&short(false, 0, 0, &[])), "0");
        assert_eq!(text(&short(false, 2, 0, &[1, 5000])), "1.50");
        assert_eq!(text(&short(true, 4, -1, &[1])), "-0.0001");
        assert_eq!(text(&short(false, 0, 1, &[12, 3456])), "123456");
        assert_eq!(text(&short(false, 0, 2, &[1])), "100000000");
        assert_eq!(text(&short(false, 3, -2, &[1200])), "0.000");
        assert_eq!(text(&short(false, 6, -2, &[1200])), "0.000012");
        assert_eq!(text(&long(false, 20, -5, &[1])), "0.00000000000000000001");
        assert_eq!(text(&long(true, 1, 0, &[7, 5000])), "-7.5");
        assert_eq!(text(&long(false, 0, 25000, &[1])), format!("1{}", "0000".repeat(25000)));
        assert_eq!(text(&(SPECIAL).to_ne_bytes()), "NaN");
        assert_eq!(text(&0xD000u16.to_ne_bytes()), "Infinity");
        assert_eq!(text(&0xF000u16.to_ne_bytes()), "-Infinity");
    }

    #[test]
    fn malformed_stored_values_are_errors() {
        for bad in [vec![], vec![0x80], short(false, 0, 0, &[10000]), [short(false, 0, 0, &[1]), vec![7]].concat()] {
            let mut out = String::new();
            assert_eq!(write_text(&bad, &mut out).unwrap_err().state, SqlState::DataCorrupted, "{bad:?}");
        }
    }
}
