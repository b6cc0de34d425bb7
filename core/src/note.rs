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

    fn parse_body(body: &str) -> Result<Statement> {
        let mut lines = body.lines();
        if lines.next() != Some(FIRST_LINE) {
            return Err(malformed(format!("the first line must be \"{FIRST_LINE}\"")));
        }
        let mut field = |name: &str| -> Result<String> {
            let line = lines.next().ok_or_else(|| malformed(format!("the \"{name}\" line is missing")))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(str::to_string)
                .ok_or_else(|| malformed(format!("expected the \"{name}\" line, found \"{line}\"")))
        };
        let string = |value: String, name: &str| -> Result<String> {
            serde_json::from_str::<String>(&value).map_err(|_| malformed(format!("\"{name}\" must be a JSON string")))
        };
        let ledger = string(field("ledger")?, "ledger")?;
        let chain = match field("chain")?.as_str() {
            "none" => None,
            other => Some(string(other.to_string(), "chain")?),
        };
        let size = field("size")?.parse::<u64>().map_err(|_| malformed("\"size\" must be a non-negative integer"))?;
        let root = parse_hex(&field("root")?, "root")?;
        let previous = match field("previous")?.as_str() {
            "none" => None,
            other => Some(parse_hex(other, "previous")?),
        };
        let time = field("time")?;
        let checkpoint = field("checkpoint")?;
        let public_key = match field("key")?.as_str() {
            "none" => None,
            other => Some(
                BASE64
                    .decode(other)
                    .ok()
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or_else(|| malformed("\"key\" must be a base64 Ed25519 public key"))?,
            ),
        };
        let definition = match field("definition")?.as_str() {
            "none" => None,
            other => Some(parse_hex(other, "definition")?),
        };
        if lines.next().is_some() {
            return Err(malformed("unexpected lines after \"definition\""));
        }
        Ok(Statement { ledger, chain, size, root, previous, time, checkpoint, public_key, definition })
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

/// A parsed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub body: String,
    pub statement: Statement,
    /// Signatures by the statement's key (key id matched); others are ignored, as in signed notes.
    pub signature: Option<[u8; 64]>,
    /// How many signature lines the digest has, whoever made them.
    pub signature_lines: usize,
}

impl Note {
    pub fn parse(text: &str) -> Result<Note> {
        let (body, signatures) = text
            .split_once("\n\n")
            .ok_or_else(|| malformed("a digest is a body, a blank line, and signature lines"))?;
        let body = format!("{body}\n");
        let statement = Statement::parse_body(&body)?;
        let mut signature = None;
        let mut signature_lines = 0;
        for line in signatures.lines().filter(|l| !l.is_empty()) {
            signature_lines += 1;
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| malformed("signature lines start with an em dash"))?;
            let (name, blob) =
                rest.split_once(' ').ok_or_else(|| malformed("a signature line is \"— name signature\""))?;
            let blob = BASE64.decode(blob).map_err(|_| malformed("a signature must be base64"))?;
            if name != KEY_NAME || blob.len() != 68 {
                continue;
            }
            if let Some(key) = &statement.public_key {
                if blob[..4] == key_id(key) {
                    signature = Some(<[u8; 64]>::try_from(&blob[4..]).expect("68 - 4 bytes"));
                }
            }
        }
        Ok(Note { body, statement, signature, signature_lines })
    }

    /// Does the signature verify with the statement's own key? (Whether that key is trusted is the
    /// reader's question.)
    pub fn signature_valid(&self) -> bool {
        match (&self.statement.public_key, &self.signature) {
            (Some(key), Some(sig)) => verify_signature(&self.body, key, sig),
            _ => false,
        }
    }
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
        assert_eq!((note.statement.public_key, note.signature_lines), (None, 1));
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

    #[test]
    fn times_are_rfc_3339_utc() {
        assert_eq!(format_time(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(format_time(-1), "1999-12-31T23:59:59.999999Z");
        assert_eq!(format_time(846_000_000_000_000 + 123_456), "2026-10-22T16:00:00.123456Z");
    }
}
