//! SHA3-256 digests and their lower-case hex form, the form stored in `hash` and `prev_hash`.

use crate::error::{LedgerError, Result, SqlState};
use sha3::{Digest as _, Sha3_256};

pub type Digest = [u8; 32];

pub fn sha3_256(bytes: &[u8]) -> Digest {
    Sha3_256::digest(bytes).into()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex, 64 characters.
pub fn to_hex(digest: &Digest) -> String {
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(HEX[(byte >> 4) as usize] as char);
        out.push(HEX[(byte & 15) as usize] as char);
    }
    out
}

/// Lower-case hex into a buffer, sparing an allocation per record.
pub fn hex_into(digest: &Digest, out: &mut [u8; 64]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[(byte >> 4) as usize];
        pair[1] = HEX[(byte & 15) as usize];
    }
}

/// Parses exactly 64 lower-case hex characters; `what` names the value in the error.
pub fn parse_hex(text: &str, what: &str) -> Result<Digest> {
    let bytes = text.as_bytes();
    let malformed = || {
        LedgerError::new(SqlState::InvalidTextRepresentation, format!("malformed {what}"))
            .detail(format!("\"{}\" is not 64 lower-case hexadecimal digits", truncate(text, 80)))
    };
    if bytes.len() != 64 {
        return Err(malformed());
    }
    // Verification parses two hashes per record, so this is table-driven and branch-light.
    let mut digest = [0u8; 32];
    let mut invalid = 0u8;
    for (out, pair) in digest.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        invalid |= (high | low) & 0x10;
        *out = (high << 4) | (low & 0x0F);
    }
    if invalid != 0 {
        return Err(malformed());
    }
    Ok(digest)
}

/// The value of each lower-case hex digit; 0x10 marks every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha3_of_empty_input_is_the_fips_202_value() {
        assert_eq!(to_hex(&sha3_256(b"")), "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
    }

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_lower_case_hex() {
        let digest = sha3_256(b"abc");
        assert_eq!(parse_hex(&to_hex(&digest), "hash").unwrap(), digest);
        let mut buffer = [0u8; 64];
        hex_into(&digest, &mut buffer);
        assert_eq!(&buffer[..], to_hex(&digest).as_bytes());
        let upper = to_hex(&digest).to_uppercase();
        assert_eq!(parse_hex(&upper, "hash").unwrap_err().state, SqlState::InvalidTextRepresentation);
        assert!(parse_hex("abc", "hash").is_err());
        assert!(parse_hex(&"g".repeat(64), "hash").is_err());
        assert!(parse_hex(&"é".repeat(32), "hash").is_err());
    }
}
