//! The checkpoint digest: a self-contained, signed statement meant to be kept outside the
//! database (docs/FORMAT.md, "Digests"). Its layout follows C2SP signed notes: a text body, a
//! blank line, then one line per signature: `— <name> <base64(key id || Ed25519 signature)>`,
//! where the key id is the first 4 bytes of SHA-256(name || "\n" || 0x01 || public key).

use crate::error::{LedgerError, Result, SqlState};
use crate::hash::{parse_hex, to_hex, Digest};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

pub const FIRST_LINE: &str = "ledger-checkpoint/v1";
pub const KEY_NAME: &str = "ledger";
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// What a checkpoint states. Every field is known before the checkpoint row is stored, so the
/// row can carry the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub ledger: String,
    pub chain: Option<String>,
    pub size: u64,
    pub root: Digest,
    /// The `hash` of the previous checkpoint of this chain.
    pub previous: Option<Digest>,
    /// created_at, UTC, as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
    pub time: String,
    pub checkpoint: String,
    pub public_key: Option<[u8; 32]>,
    /// Fingerprint of the ledger's definition (docs/FORMAT.md, "Definitions") at the checkpoint.
    pub definition: Option<Digest>,
}

fn malformed(detail: impl Into<String>) -> LedgerError {
    LedgerError::new(SqlState::InvalidParameterValue, "malformed digest").detail(detail.into())
}

impl Statement {
    /// The signed text: one `name value` line per field, strings as JSON strings.
    pub fn body(&self) -> String {
        let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut body = String::new();
        body.push_str(FIRST_LINE);
        body.push('\n');
        body.push_str(&format!("ledger {}\n", quote(&self.ledger)));
        body.push_str(&format!("chain {}\n", self.chain.as_deref().map_or("none".into(), quote)));
        body.push_str(&format!("size {}\n", self.size));
        body.push_str(&format!("root {}\n", to_hex(&self.root)));
        body.push_str(&format!("previous {}\n", self.previous.as_ref().map_or("none".into(), to_hex)));
        body.push_str(&format!("time {}\n", self.time));
        body.push_str(&format!("checkpoint {}\n", self.checkpoint));
        body.push_str(&format!("key {}\n", self.public_key.as_ref().map_or("none".into(), |k| BASE64.encode(k))));
        body.push_str(&format!("definition {}\n", self.definition.as_ref().map_or("none".into(), to_hex)));
        body
    }

    /// The statement of a body (its lines, each ending in `\n`, split by [`Note::parse`]).
    fn parse_body(body: &str) -> Result<Statement> {
        // Split on `\n` alone: `str::lines` would also drop a `\r`, and a changed octet must not
        // pass unseen (Note::parse has refused every `\r` already).
        let mut lines = body.strip_suffix('\n').unwrap_or(body).split('\n');
        if lines.next() != Some(FIRST_LINE) {
            return Err(malformed(format!("the first line must be \"{FIRST_LINE}\"")));
        }
        let mut field = |name: &str| -> Result<String> {
            let line = lines.next().ok_or_else(|| malformed(format!("the \"{name}\" line is missing")))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| malformed(format!("expected the \"{name}\" line, found \"{}\"", shorten(line))))
        };
        let ledger = json_string(&field("ledger")?, "ledger")?;
        let chain = match field("chain")?.as_str() {
            "none" => None,
            other => Some(json_string(other, "chain")?),
        };
        let size = plain_u64(&field("size")?).ok_or_else(|| {
            malformed("\"size\" must be a non-negative integer in plain decimal digits, at most 2^64 - 1")
        })?;
        let root = hash(&field("root")?, "root")?;
        let previous = match field("previous")?.as_str() {
            "none" => None,
            other => Some(hash(other, "previous")?),
        };
        let time = field("time")?;
        if !is_digest_time(&time) {
            return Err(malformed("\"time\" must be YYYY-MM-DDTHH:MM:SS.ffffffZ"));
        }
        let checkpoint = field("checkpoint")?;
        if !is_lower_case_uuid(&checkpoint) {
            return Err(malformed("\"checkpoint\" must be a checkpoint id, a lower-case UUID"));
        }
        let public_key = match field("key")?.as_str() {
            "none" => None,
            other => Some(
                canonical_base64(other)
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or_else(|| malformed("\"key\" must be the base64 of a 32-octet Ed25519 public key"))?,
            ),
        };
        let definition = match field("definition")?.as_str() {
            "none" => None,
            other => Some(hash(other, "definition")?),
        };
        if lines.next().is_some() {
            return Err(malformed("unexpected lines after \"definition\""));
        }
        Ok(Statement { ledger, chain, size, root, previous, time, checkpoint, public_key, definition })
    }
}

/// A value written as one JSON string literal and nothing around it (no white space either).
fn json_string(value: &str, name: &str) -> Result<String> {
    let quoted = value.len() >= 2 && value.starts_with('"') && value.ends_with('"');
    quoted
        .then(|| serde_json::from_str::<String>(value).ok())
        .flatten()
        .ok_or_else(|| malformed(format!("\"{name}\" must be a JSON string")))
}

/// `0` or a decimal integer without a leading zero or sign, at most 2^64 - 1.
pub fn plain_u64(text: &str) -> Option<u64> {
    let plain =
        text == "0" || (text.starts_with(|c: char| matches!(c, '1'..='9')) && text.bytes().all(|b| b.is_ascii_digit()));
    plain.then(|| text.parse().ok()).flatten()
}

/// A hash in a digest: malformed digest (22023) rather than parse_hex's 22P02, as for every other
/// malformation of a digest.
fn hash(text: &str, name: &str) -> Result<Digest> {
    parse_hex(text, name).map_err(|_| malformed(format!("\"{name}\" must be 64 lower-case hexadecimal digits")))
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (four or more year digits), as format_time writes it. Only the
/// shape: the `checkpoint` check compares the value with the stored row.
fn is_digest_time(text: &str) -> bool {
    let Some((year, rest)) = text.split_once('-') else { return false };
    let pattern = b"dd-ddTdd:dd:dd.ddddddZ";
    year.len() >= 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && rest.len() == pattern.len()
        && rest.bytes().zip(pattern).all(|(b, &p)| if p == b'd' { b.is_ascii_digit() } else { b == p })
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lower-case hex, as `cid::text` prints it.
fn is_lower_case_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                matches!(b, b'0'..=b'9' | b'a'..=b'f')
            }
        })
}

/// Standard base64 with padding, in its one canonical spelling (the encoding of what it decodes
/// to: no stray bits in the last character), so a digest has one text for one content.
fn canonical_base64(text: &str) -> Option<Vec<u8>> {
    BASE64.decode(text).ok().filter(|octets| BASE64.encode(octets) == text)
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

/// The 4-byte key id of signed notes.
pub fn key_id(public_key: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(KEY_NAME.as_bytes());
    h.update(b"\n\x01");
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

pub fn sign(body: &str, key: &SigningKey) -> [u8; 64] {
    key.sign(body.as_bytes()).to_bytes()
}

pub fn verify_signature(body: &str, public_key: &[u8; 32], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public_key)
        .map(|k| k.verify(body.as_bytes(), &Signature::from_bytes(signature)).is_ok())
        .unwrap_or(false)
}

/// The digest text: body, blank line, and the signature line when signed.
pub fn render(statement: &Statement, signature: Option<&[u8; 64]>) -> String {
    let mut text = statement.body();
    text.push('\n');
    if let (Some(sig), Some(key)) = (signature, &statement.public_key) {
        let mut blob = key_id(key).to_vec();
        blob.extend_from_slice(sig);
        text.push_str(&format!("{SIGNATURE_PREFIX}{KEY_NAME} {}\n", BASE64.encode(blob)));
    }
    text
}

/// At most this many signature lines (as Go's sumdb note.Open): more is a malformed digest.
pub const MAX_SIGNATURE_LINES: usize = 100;

/// A parsed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub body: String,
    pub statement: Statement,
    /// What the first `ledger` signature line whose key id is the statement key's carries after
    /// the key id (the Ed25519 signature when it is 64 octets). Later ones, and lines by other key
    /// names or key ids (cosignatures), are ignored, as in C2SP signed notes.
    pub signature: Option<Vec<u8>>,
    /// How many signature lines have the key name `ledger`, whatever their key id.
    pub ledger_signature_lines: usize,
}

impl Note {
    /// Parses a digest (docs/FORMAT.md, "Digests"). Every line ends in a line feed alone; the
    /// body ends at the first blank line, which is there even when there is no signature line.
    pub fn parse(text: &str) -> Result<Note> {
        if let Some(c) = text.chars().find(|&c| c < ' ' && c != '\n') {
            return Err(if c == '\r' {
                malformed("the digest has a carriage return: its lines must end in a line feed alone")
                    .hint("Convert the digest's line endings to LF (for example with dos2unix) and verify it again.")
            } else {
                malformed(format!(
                    "the digest has the control character U+{:04X}: only line feeds may appear",
                    c as u32
                ))
            });
        }
        let (body, signatures) = text.split_once("\n\n").ok_or_else(|| {
            malformed("a digest is a body, a blank line, and signature lines: the blank line is missing")
                .hint("The blank line after the body is part of the digest even when it is unsigned.")
        })?;
        let body = format!("{body}\n");
        let statement = Statement::parse_body(&body)?;

        let mut lines: Vec<&str> = match signatures.strip_suffix('\n') {
            Some(lines) => lines.split('\n').collect(),
            None if signatures.is_empty() => Vec::new(),
            None => return Err(malformed("the last signature line does not end in a line feed")),
        };
        // Empty lines after the last signature line are not part of it (psql -At adds one).
        while lines.last() == Some(&"") {
            lines.pop();
        }
        if lines.len() > MAX_SIGNATURE_LINES {
            return Err(malformed(format!(
                "{} signature lines: a digest has at most {MAX_SIGNATURE_LINES}",
                lines.len()
            )));
        }
        let own_key_id = statement.public_key.as_ref().map(key_id);
        let mut signature = None;
        let mut ledger_signature_lines = 0;
        for line in lines {
            let (name, blob) = parse_signature_line(line)?;
            if name != KEY_NAME {
                continue;
            }
            ledger_signature_lines += 1;
            if signature.is_none() && own_key_id.is_some_and(|id| blob[..4] == id) {
                signature = Some(blob[4..].to_vec());
            }
        }
        Ok(Note { body, statement, signature, ledger_signature_lines })
    }

    /// Does the signature verify with the statement's own key? (Whether that key is trusted is the
    /// reader's question.)
    pub fn signature_valid(&self) -> bool {
        match (&self.statement.public_key, self.signature.as_deref().map(<[u8; 64]>::try_from)) {
            (Some(key), Some(Ok(sig))) => verify_signature(&self.body, key, &sig),
            _ => false,
        }
    }
}

/// `— <name> <base64>`: a key name (no white space, no `+`) and at least 5 octets (a key id and a
/// signature), or the digest is malformed, whoever's line it is.
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>)> {
    let shape =
        || malformed(format!("a signature line is \"\u{2014} <key name> <base64>\", not \"{}\"", shorten(line)));
    let (name, blob) = line.strip_prefix(SIGNATURE_PREFIX).and_then(|rest| rest.split_once(' ')).ok_or_else(shape)?;
    if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c == '+') {
        return Err(shape());
    }
    let blob = canonical_base64(blob).ok_or_else(|| malformed("a signature must be canonical base64"))?;
    if blob.len() < 5 {
        return Err(malformed("a signature line holds a key id and a signature: at least 5 octets"));
    }
    Ok((name, blob))
}

/// Microseconds since 2000-01-01 UTC (PostgreSQL's timestamptz) as RFC 3339 with microseconds.
pub fn format_time(micros_since_2000: i64) -> String {
    const EPOCH_2000_DAYS: i64 = 10_957; // days from 1970-01-01 to 2000-01-01
    let secs = micros_since_2000.div_euclid(1_000_000);
    let micros = micros_since_2000.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + EPOCH_2000_DAYS;
    let secs_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::sha3_256;

    fn statement(key: Option<&SigningKey>) -> Statement {
        Statement {
            ledger: "public.payments".into(),
            chain: Some("alice \"the\" payer\n".into()),
            size: 9,
            root: sha3_256(b"root"),
            previous: Some(sha3_256(b"previous")),
            time: format_time(0),
            checkpoint: "6f1c2a54-6c0e-4e8b-9d3e-2b0f5a7c1101".into(),
            public_key: key.map(|k| k.verifying_key().to_bytes()),
            definition: Some(sha3_256(b"definition")),
        }
    }

    #[test]
    fn a_signed_digest_round_trips_and_verifies() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(Some(&key));
        let sig = sign(&st.body(), &key);
        let text = render(&st, Some(&sig));
        let note = Note::parse(&text).unwrap();
        assert_eq!(note.statement, st);
        assert!(note.signature_valid());
        assert!(text.contains("\n\n\u{2014} ledger "));
    }

    #[test]
    fn any_change_to_a_signed_digest_breaks_the_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(Some(&key));
        let text = render(&st, Some(&sign(&st.body(), &key)));
        let forged = text.replace("size 9", "size 8");
        assert!(!Note::parse(&forged).unwrap().signature_valid());
        // A signature by another key under the same name does not count as the statement's.
        let other = SigningKey::from_bytes(&[8; 32]);
        let resigned = render(&st, Some(&sign(&st.body(), &other)));
        assert!(!Note::parse(&resigned).unwrap().signature_valid());
    }

    #[test]
    fn an_unsigned_digest_says_so() {
        let st = statement(None);
        let note = Note::parse(&render(&st, None)).unwrap();
        assert_eq!(note.statement.public_key, None);
        assert!(!note.signature_valid());
    }

    #[test]
    fn a_signature_line_without_a_key_is_counted() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(Some(&key));
        let text = render(&st, Some(&sign(&st.body(), &key)));
        let keyless = text.replace(&format!("key {}", BASE64.encode(key.verifying_key().to_bytes())), "key none");
        let note = Note::parse(&keyless).unwrap();
        assert_eq!((note.statement.public_key, note.ledger_signature_lines), (None, 1));
        assert!(!note.signature_valid());
    }

    #[test]
    fn malformed_digests_are_errors() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(Some(&key));
        let good = render(&st, Some(&sign(&st.body(), &key)));
        for bad in [
            "".to_string(),
            "ledger-checkpoint/v2\n\n".to_string(),
            good.replace("size 9", "size nine"),
            good.replace("root ", "root zz"),
            good.replace("\u{2014} ", "- "),
            good.replace("\n\n", "\n"),
            good.replace("ledger \"public.payments\"", "ledger public.payments"),
        ] {
            assert!(Note::parse(&bad).is_err(), "{bad:?}");
        }
    }

    fn signed_text() -> (SigningKey, Statement, String) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let st = statement(Some(&key));
        let text = render(&st, Some(&sign(&st.body(), &key)));
        (key, st, text)
    }

    fn line(name: &str, blob: &[u8]) -> String {
        format!("{SIGNATURE_PREFIX}{name} {}\n", BASE64.encode(blob))
    }

    fn detail_of(text: &str) -> String {
        Note::parse(text).unwrap_err().detail.unwrap_or_default()
    }

    #[test]
    fn a_carriage_return_anywhere_is_malformed_with_a_hint() {
        let (_, _, text) = signed_text();
        for bad in [
            text.replace('\n', "\r\n"),
            text.replacen('\n', "\r\n", 1),
            format!("{text}\r\n"),
            text.replace("size 9", "size 9\r"),
        ] {
            let err = Note::parse(&bad).unwrap_err();
            assert_eq!((err.state, err.message.as_str()), (SqlState::InvalidParameterValue, "malformed digest"));
            assert!(err.detail.as_deref().unwrap().contains("line feed alone"), "{err:?}");
            assert!(err.hint.as_deref().unwrap().contains("line endings"), "{err:?}");
        }
        assert!(detail_of(&text.replace("size 9", "size\t9")).contains("U+0009"));
    }

    #[test]
    fn the_blank_line_is_required_even_unsigned() {
        let st = statement(None);
        let unsigned = render(&st, None);
        assert!(unsigned.ends_with("\n\n"));
        assert!(Note::parse(&unsigned).is_ok());
        assert!(Note::parse(&format!("{unsigned}\n")).is_ok(), "psql's newline after the digest");
        let err = Note::parse(&st.body()).unwrap_err();
        assert!(err.detail.as_deref().unwrap().contains("blank line"), "{err:?}");
        assert!(Note::parse(st.body().trim_end()).is_err());
    }

    #[test]
    fn the_first_signature_line_by_the_digest_key_decides() {
        let (key, st, text) = signed_text();
        let id = key_id(&st.public_key.unwrap());
        let garbage = line(KEY_NAME, &[&id[..], &[0u8; 64]].concat());
        let good = text.split_once("\n\n").unwrap().1.to_string();
        let body = st.body();
        // First valid, then garbage under the same key id: valid.
        assert!(Note::parse(&format!("{body}\n{good}{garbage}")).unwrap().signature_valid());
        // First garbage, then valid: the garbage decides.
        assert!(!Note::parse(&format!("{body}\n{garbage}{good}")).unwrap().signature_valid());
        // A short blob under the key id decides too, and is no Ed25519 signature.
        let short = Note::parse(&format!("{body}\n{}{good}", line(KEY_NAME, &[&id[..], b"x"].concat()))).unwrap();
        assert_eq!(short.signature.as_deref(), Some(&b"x"[..]));
        assert!(!short.signature_valid());
        // Cosignatures (another name, or another key id) are ignored wherever they are.
        let witness = line("witness.example", &[7u8; 68]);
        let other_id = line(KEY_NAME, &[&[!id[0], id[1], id[2], id[3]][..], &[0u8; 64]].concat());
        let note = Note::parse(&format!("{body}\n{witness}{other_id}{good}{witness}")).unwrap();
        assert!(note.signature_valid());
        assert_eq!(note.ledger_signature_lines, 2);
        let _ = key;
    }

    #[test]
    fn signature_lines_are_bounded_and_well_formed() {
        let (_, st, text) = signed_text();
        let body = st.body();
        let good = text.split_once("\n\n").unwrap().1.to_string();
        let witness = line("w", &[1u8; 5]);
        let hundred = format!("{body}\n{good}{}", witness.repeat(99));
        assert!(Note::parse(&hundred).unwrap().signature_valid());
        assert!(detail_of(&format!("{hundred}{witness}")).contains("101 signature lines"));
        for bad_line in [
            format!("- ledger {}\n", BASE64.encode([1u8; 68])),
            format!("{SIGNATURE_PREFIX}ledger\n"),
            format!("{SIGNATURE_PREFIX} {}\n", BASE64.encode([1u8; 68])),
            format!("{SIGNATURE_PREFIX}a+b {}\n", BASE64.encode([1u8; 68])),
            format!("{SIGNATURE_PREFIX}ledger {} \n", BASE64.encode([1u8; 68])),
            format!("{SIGNATURE_PREFIX}ledger !!!!\n"),
            format!("{SIGNATURE_PREFIX}ledger AAAAAAB=\n"), // stray bits: not canonical
            format!("{SIGNATURE_PREFIX}ledger AAAAAA\n"),   // no padding
            line("w", &[1u8; 4]),
        ] {
            // Malformed whoever's line it is, before or after the decisive one.
            assert!(Note::parse(&format!("{body}\n{good}{bad_line}")).is_err(), "{bad_line:?}");
            assert!(Note::parse(&format!("{body}\n{bad_line}{good}")).is_err(), "{bad_line:?}");
        }
        assert!(Note::parse(&format!("{body}\n{good}\n{witness}")).is_err(), "a blank line among them");
        assert!(Note::parse(text.trim_end_matches('\n')).is_err(), "the last line ends in a line feed");
    }

    #[test]
    fn an_unsigned_digest_with_signature_lines() {
        let st = statement(None);
        let unsigned = render(&st, None);
        let witness = Note::parse(&format!("{unsigned}{}", line("witness", &[1u8; 68]))).unwrap();
        assert_eq!((witness.ledger_signature_lines, witness.signature.is_none()), (0, true));
        let ledger = Note::parse(&format!("{unsigned}{}", line(KEY_NAME, &[1u8; 68]))).unwrap();
        assert_eq!((ledger.ledger_signature_lines, ledger.signature.is_none()), (1, true));
    }

    #[test]
    fn body_fields_have_one_spelling() {
        let (_, _, text) = signed_text();
        let with = |field: &str, value: &str| {
            let start = text.find(&format!("\n{field} ")).unwrap() + 1;
            let end = start + text[start..].find('\n').unwrap();
            format!("{}{field} {value}{}", &text[..start], &text[end..])
        };
        for (field, value) in [
            ("size", "+9"),
            ("size", "09"),
            ("size", "18446744073709551616"),
            ("size", " 9"),
            ("ledger", " \"public.payments\""),
            ("ledger", "\"public.payments\" "),
            ("ledger", "\"\\ud800\""),
            ("time", "1970-01-01 00:00:00Z"),
            ("time", "2000-01-01T00:00:00Z"),
            ("checkpoint", "6F1C2A54-6C0E-4E8B-9D3E-2B0F5A7C1101"),
            ("checkpoint", ""),
            ("key", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc"),
        ] {
            let err = Note::parse(&with(field, value)).unwrap_err();
            assert_eq!(err.state, SqlState::InvalidParameterValue, "{field} {value}");
        }
        for field in ["root", "previous", "definition"] {
            let err = Note::parse(&with(field, &"A".repeat(64))).unwrap_err();
            assert_eq!((err.state, err.message.as_str()), (SqlState::InvalidParameterValue, "malformed digest"));
        }
        let max = Note::parse(&with("size", "18446744073709551615")).unwrap();
        assert_eq!(max.statement.size, u64::MAX);
        assert_eq!(Note::parse(&with("time", "10000-01-01T00:00:00.000000Z")).unwrap().statement.time.len(), 28);
    }

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(format_time(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_time(-1), "1999-12-31T23:59:59.999999Z");
        assert_eq!(format_time(846_000_000_000_000 + 123_456), "2026-10-22T16:00:00.123456Z");
    }
}
