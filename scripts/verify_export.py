#!/usr/bin/env python3
"""Offline verifier for `ledger` exports, Merkle proofs and digests.

Written from docs/FORMAT.md alone (it shares no code with the extension) and using only the Python
standard library, except that checking a digest's Ed25519 signature needs the `cryptography` package
(imported only then). It re-derives every record's canonical bytes from the exported text values,
hashes them with SHA3-256 and applies the verification rules of FORMAT.md to every chain.

Usage:
  verify_export.py [--json] EXPORT
      One line per problem, `chain<TAB>seq<TAB>problem<TAB>detail` (a JSON array with --json), then
      a summary on stderr. Exit status: 0 intact, 1 problems found, 2 malformed input. The export
      of a pruned ledger (ledger.prune) carries the kept hashes of its pruned records: each chain
      is checked from its last pruned record on, and Merkle trees take those hashes as leaves.
      That of a ledger with erasable columns (ledger.set_erasable) carries each record's
      ledger_erasure: a value is checked through its salted commitment, an erased one by the
      commitment kept in its place; so is an erasable member of a jsonb column (a history's row).
  verify_export.py EXPORT --digest DIGEST_FILE [--public-key BASE64] [--allow-unsigned] [--json]
      As above, then one line per digest check, `digest<TAB>check<TAB>ok|failed|skipped<TAB>detail`
      (with --json one object {"problems": [...], "digest": [{"check", "ok", "detail"}, ...]}).
      Exit status: 0 no problems and no failed check, 1 otherwise, 2 malformed input.
  verify_export.py --inclusion PROOF_FILE --record-hash HEX --root HEX [--tree-size N]
  verify_export.py --consistency PROOF_FILE [--between OLD_SIZE OLD_ROOT NEW_SIZE NEW_ROOT]
      One line, `valid: ...` or `invalid: ...`. Exit status: 0 valid, 1 invalid, 2 malformed proof.
      A path does not fix the tree size (RFC 9162): give the size the root is of (--tree-size), or
      the (size, root) pairs of the two trees (--between), as checkpoints or digests state them.
  verify_export.py HISTORY_EXPORT --state STATE_FILE [--digest ...] [--json]
      HISTORY_EXPORT is the export of a history-tracked table's history ledger, STATE_FILE the
      table's state export (ledger.export_state): as the first form, then the rows where the table
      is not the replay of its history (state_mismatch, state_missing, state_unrecorded), as
      ledger.verify(table) reports them; the table's definition_changed comes first.
  verify_export.py EXPORT --merkle-root CHAIN FROM TO
      The Merkle tree hash of records FROM..TO of chain CHAIN (`-` for a single-chain table), in hex.
      Exit status: 0 printed, 1 a record of the range is missing, 2 malformed input.

EXPORT may be `-` for stdin.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import io
import json
import re
import struct
import sys
from dataclasses import dataclass
from json.decoder import scanstring
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

FORMAT_VERSION = 1

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
USECS_PER_SECOND = 1_000_000
USECS_PER_DAY = 86_400 * USECS_PER_SECOND
DAYS_FROM_1970_TO_2000 = 10_957

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")


class MalformedInput(ValueError):
    """Input (an export, a proof, a digest or an argument) that does not follow FORMAT.md."""


class ExportError(MalformedInput):
    """Malformed input: the export, or a value in it, does not follow FORMAT.md."""


# --------------------------------------------------------------------------------------------------
# Canonical JSON (jsonb values)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JsonNumber:
    """A JSON number kept as its original text, so no precision is lost before normalisation."""

    text: str


_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_JSON_LITERALS = {"null": None, "true": True, "false": False}
# numeric's limits are far smaller; this only stops absurd exponents from exhausting memory.
_MAX_JSON_EXPONENT = 1_000_000


def parse_json(text: str):
    """Parse JSON text into None/bool/JsonNumber/str/list/dict.

    Iterative rather than recursive, so arbitrarily deep nesting neither hits the recursion limit nor
    overflows the C stack (json.loads does both). Duplicate object keys keep the last value, as jsonb
    input does.
    """
    # Open containers, innermost last: (list, None) or (dict, key awaiting its value).
    open_containers: list[tuple[list | dict, str | None]] = []
    pos = 0
    while True:
        pos = _JSON_WHITESPACE.match(text, pos).end()
        char = text[pos : pos + 1]
        if char == "[":
            pos = _JSON_WHITESPACE.match(text, pos + 1).end()
            if text.startswith("]", pos):
                value, pos = [], pos + 1
            else:
                open_containers.append(([], None))
                continue
        elif char == "{":
            pos = _JSON_WHITESPACE.match(text, pos + 1).end()
            if text.startswith("}", pos):
                value, pos = {}, pos + 1
            else:
                key, pos = _parse_json_key(text, pos)
                open_containers.append(({}, key))
                continue
        elif char == '"':
            value, pos = scanstring(text, pos + 1)
        elif number := _JSON_NUMBER.match(text, pos):
            value, pos = JsonNumber(number.group()), number.end()
        else:
            literal = next((word for word in _JSON_LITERALS if text.startswith(word, pos)), None)
            if literal is None:
                raise ExportError(f"invalid JSON at offset {pos}")
            value, pos = _JSON_LITERALS[literal], pos + len(literal)

        # Store the value in its container; close every container that ends right after it.
        while True:
            pos = _JSON_WHITESPACE.match(text, pos).end()
            if not open_containers:
                if pos != len(text):
                    raise ExportError(f"invalid JSON: extra data at offset {pos}")
                return value
            container, key = open_containers[-1]
            if isinstance(container, list):
                container.append(value)
            else:
                container[key] = value
            separator = text[pos : pos + 1]
            if separator == ",":
                pos += 1
                if isinstance(container, dict):
                    key, pos = _parse_json_key(text, pos)
                    open_containers[-1] = (container, key)
                break
            if separator != ("]" if isinstance(container, list) else "}"):
                raise ExportError(f"invalid JSON at offset {pos}")
            pos += 1
            open_containers.pop()
            value = container


def _parse_json_key(text: str, pos: int) -> tuple[str, int]:
    """Parse `"key" :` starting at pos (whitespace allowed); return the key and the position after ':'."""
    pos = _JSON_WHITESPACE.match(text, pos).end()
    if not text.startswith('"', pos):
        raise ExportError(f"invalid JSON: expected an object key at offset {pos}")
    key, pos = scanstring(text, pos + 1)
    pos = _JSON_WHITESPACE.match(text, pos).end()
    if not text.startswith(":", pos):
        raise ExportError(f"invalid JSON: expected ':' at offset {pos}")
    return key, pos + 1


def normalise_json_number(text: str) -> str:
    """Normalise a JSON number as FORMAT.md says: plain decimal, no exponent, no redundant zeros,
    no sign on zero (`1.50` -> `1.5`, `-0.0` -> `0`, `1e2` -> `100`)."""
    match = re.fullmatch(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([-+]?[0-9]+))?", text)
    if match is None:
        raise ExportError(f"invalid JSON number {text!r}")
    sign, integer_digits, fraction_digits, exponent = match.groups()
    exponent = int(exponent or "0")
    if abs(exponent) > _MAX_JSON_EXPONENT:
        raise ExportError(f"JSON number exponent out of range: {text!r}")
    digits = integer_digits + (fraction_digits or "")
    # The decimal point sits after `point` digits of `digits` (may be outside the string).
    point = len(integer_digits) + exponent
    significant = digits.lstrip("0")
    point -= len(digits) - len(significant)
    significant = significant.rstrip("0")
    if not significant:
        return "0"
    if point <= 0:
        plain = "0." + "0" * -point + significant
    elif point >= len(significant):
        plain = significant + "0" * (point - len(significant))
    else:
        plain = significant[:point] + "." + significant[point:]
    return sign + plain


def encode_json(value) -> bytes:
    """Canonical JSON bytes of a parsed value (see parse_json), built without recursion."""
    out = bytearray()
    # Values still to encode, next one last. A `bytes` item is an already encoded object key:
    # parsed JSON never produces bytes, so it cannot be confused with a value.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, bytes):
            out += length_prefixed(item)
        elif item is None:
            out.append(0x00)
        elif item is False:
            out.append(0x01)
        elif item is True:
            out.append(0x02)
        elif isinstance(item, JsonNumber):
            out.append(0x03)
            out += length_prefixed(normalise_json_number(item.text).encode("ascii"))
        elif isinstance(item, str):
            out.append(0x04)
            out += length_prefixed(_utf8(item))
        elif isinstance(item, list):
            out.append(0x05)
            out += struct.pack(">I", len(item))
            pending.extend(reversed(item))
        else:
            out.append(0x06)
            out += struct.pack(">I", len(item))
            # bytes compare as unsigned octets, shorter first on a common prefix, as FORMAT.md asks.
            members = sorted((_utf8(key), member) for key, member in item.items())
            for key, member in reversed(members):
                pending.append(member)
                pending.append(key)
    return bytes(out)


def canonical_json(text: str) -> bytes:
    """Canonical JSON bytes (FORMAT.md "Canonical JSON") of jsonb text."""
    try:
        return encode_json(parse_json(text))
    except ValueError as error:  # also json.JSONDecodeError from scanstring
        raise ExportError(f"bad jsonb value: {error}") from None


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a "\ud800" escape
        raise ExportError(f"text is not valid Unicode: {text!r}") from None


# --------------------------------------------------------------------------------------------------
# Text forms of the other types
# --------------------------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|-?Infinity")
_NUMERIC = re.compile(r"-?[0-9]+(?:\.[0-9]+)?|NaN|-?Infinity")
_BYTEA = re.compile(r"\\x((?:[0-9a-fA-F]{2})*)")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DATE = r"([0-9]{4,})-([0-9]{2})-([0-9]{2})"
_TIME = r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,6}))?"
_UTC_OFFSET = r"([-+])([0-9]{2})(?::([0-9]{2})(?::([0-9]{2}))?)?"
_BC = r"( BC)?"
_DATE_TEXT = re.compile(_DATE + _BC)
_TIME_TEXT = re.compile(_TIME)
_TIMESTAMP_TEXT = re.compile(_DATE + " " + _TIME + _BC)
_TIMESTAMPTZ_TEXT = re.compile(_DATE + " " + _TIME + _UTC_OFFSET + _BC)
_INTERVAL_TEXT = re.compile(
    r"P(?:(-?[0-9]+)Y)?(?:(-?[0-9]+)M)?(?:(-?[0-9]+)D)?"
    r"(?:T(?:(-?[0-9]+)H)?(?:(-?[0-9]+)M)?(?:(-?)([0-9]+)(?:\.([0-9]{1,6}))?S)?)?"
)


def _match(pattern: re.Pattern, text: str, type_name: str) -> re.Match:
    match = pattern.fullmatch(text)
    if match is None:
        raise ExportError(f"bad {type_name} value {text!r}")
    return match


def _pack(fmt: str, type_name: str, text: str, *values: int) -> bytes:
    try:
        return struct.pack(fmt, *values)
    except struct.error:
        raise ExportError(f"{type_name} value out of range: {text!r}") from None


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 2000-01-01 of a proleptic Gregorian date; year is astronomical (0 = 1 BC).

    The standard era-based algorithm (400-year eras of 146097 days, years starting in March so the
    leap day comes last); floor division makes it correct for negative years too.
    """
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468 - DAYS_FROM_1970_TO_2000


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _date_days(year_text: str, month_text: str, day_text: str, bc: str | None, text: str) -> int:
    year, month, day = int(year_text), int(month_text), int(day_text)
    month_lengths = (31, 29 if _is_leap(1 - year if bc else year) else 28, 31, 30, 31, 30, 31, 31,
                     30, 31, 30, 31)
    if year == 0 or not 1 <= month <= 12 or not 1 <= day <= month_lengths[month - 1]:
        raise ExportError(f"bad date {text!r}")
    return days_from_civil(1 - year if bc else year, month, day)


def _time_micros(hour: str, minute: str, second: str, fraction: str | None, text: str,
                 max_hour: int = 23) -> int:
    hours, minutes, seconds = int(hour), int(minute), int(second)
    if hours > max_hour or minutes > 59 or seconds > 59:
        raise ExportError(f"bad time {text!r}")
    return (hours * 3600 + minutes * 60 + seconds) * USECS_PER_SECOND + _fraction_micros(fraction)


def _fraction_micros(fraction: str | None) -> int:
    """Microseconds of the digits after a decimal point (at most 6 digits)."""
    return int(fraction.ljust(6, "0")) if fraction else 0


def parse_date(text: str) -> int:
    """`YYYY-MM-DD[ BC]`, `infinity`, `-infinity` -> i32 days since 2000-01-01."""
    if text == "infinity":
        return INT32_MAX
    if text == "-infinity":
        return INT32_MIN
    year, month, day, bc = _match(_DATE_TEXT, text, "date").groups()
    return _date_days(year, month, day, bc, text)


def parse_time(text: str) -> int:
    """`HH:MM:SS[.ffffff]` -> microseconds since midnight (`24:00:00` allowed, as PostgreSQL does)."""
    micros = _time_micros(*_match(_TIME_TEXT, text, "time").groups(), text, max_hour=24)
    if micros > USECS_PER_DAY:
        raise ExportError(f"bad time {text!r}")
    return micros


def parse_timestamp(text: str) -> int:
    """`YYYY-MM-DD HH:MM:SS[.ffffff][ BC]` or +-infinity -> microseconds since 2000-01-01 00:00:00."""
    if text in ("infinity", "-infinity"):
        return INT64_MAX if text == "infinity" else INT64_MIN
    year, month, day, hour, minute, second, fraction, bc = _match(
        _TIMESTAMP_TEXT, text, "timestamp").groups()
    days = _date_days(year, month, day, bc, text)
    return days * USECS_PER_DAY + _time_micros(hour, minute, second, fraction, text)


def parse_timestamptz(text: str) -> int:
    """`YYYY-MM-DD HH:MM:SS[.ffffff]+HH[:MM[:SS]][ BC]` or +-infinity -> microseconds since
    2000-01-01 00:00:00 UTC (the offset is subtracted to get UTC)."""
    if text in ("infinity", "-infinity"):
        return INT64_MAX if text == "infinity" else INT64_MIN
    (year, month, day, hour, minute, second, fraction,
     sign, offset_hours, offset_minutes, offset_seconds, bc) = _match(
        _TIMESTAMPTZ_TEXT, text, "timestamptz").groups()
    if int(offset_minutes or 0) > 59 or int(offset_seconds or 0) > 59:
        raise ExportError(f"bad UTC offset in {text!r}")
    offset = int(offset_hours) * 3600 + int(offset_minutes or 0) * 60 + int(offset_seconds or 0)
    local = (_date_days(year, month, day, bc, text) * USECS_PER_DAY
             + _time_micros(hour, minute, second, fraction, text))
    return local - (offset if sign == "+" else -offset) * USECS_PER_SECOND


def parse_interval(text: str) -> tuple[int, int, int]:
    """ISO 8601 interval (`P1Y2M3DT4H5M6.5S`, `PT0S`, negative fields) -> (months, days, micros).

    `infinity`/`-infinity` (PostgreSQL 17+) are stored with every field at its maximum/minimum.
    """
    if text == "infinity":
        return INT32_MAX, INT32_MAX, INT64_MAX
    if text == "-infinity":
        return INT32_MIN, INT32_MIN, INT64_MIN
    match = _match(_INTERVAL_TEXT, text, "interval")
    years, months, days, hours, minutes, seconds_sign, seconds, fraction = match.groups()
    has_time_part = "T" in text
    if (match.lastindex is None
            or (has_time_part and hours is None and minutes is None and seconds is None)):
        raise ExportError(f"bad interval value {text!r}")
    second_micros = int(seconds or 0) * USECS_PER_SECOND + _fraction_micros(fraction)
    micros = ((int(hours or 0) * 60 + int(minutes or 0)) * 60 * USECS_PER_SECOND
              + (-second_micros if seconds_sign else second_micros))
    return int(years or 0) * 12 + int(months or 0), int(days or 0), micros


# --------------------------------------------------------------------------------------------------
# Value octets per format type
# --------------------------------------------------------------------------------------------------


def _boolean_octets(text: str) -> bytes:
    if text not in ("t", "f"):
        raise ExportError(f"bad boolean value {text!r}")
    return b"\x01" if text == "t" else b"\x00"


def _integer_octets(fmt: str, type_name: str):
    def octets(text: str) -> bytes:
        return _pack(fmt, type_name, text, int(_match(_INTEGER, text, type_name).group()))
    return octets


def _float_value(text: str, type_name: str) -> float:
    return float(_match(_FLOAT, text, type_name).group())


def _real_octets(text: str) -> bytes:
    # The export prints a real as its exact double value, so packing it as binary32 loses nothing.
    value = _float_value(text, "real")
    if value != value:
        return bytes.fromhex("7fc00000")
    try:
        return struct.pack(">f", value)
    except OverflowError:
        raise ExportError(f"real value out of range: {text!r}") from None


def _double_octets(text: str) -> bytes:
    value = _float_value(text, "double precision")
    if value != value:
        return bytes.fromhex("7ff8000000000000")
    return struct.pack(">d", value)


def _numeric_octets(text: str) -> bytes:
    return _match(_NUMERIC, text, "numeric").group().encode("ascii")


def _bytea_octets(text: str) -> bytes:
    return bytes.fromhex(_match(_BYTEA, text, "bytea").group(1))


def _uuid_octets(text: str) -> bytes:
    return bytes.fromhex(_match(_UUID, text, "uuid").group().replace("-", ""))


def _date_octets(text: str) -> bytes:
    return _pack(">i", "date", text, parse_date(text))


def _time_octets(text: str) -> bytes:
    return struct.pack(">q", parse_time(text))


def _timestamp_octets(text: str) -> bytes:
    return _pack(">q", "timestamp", text, parse_timestamp(text))


def _timestamptz_octets(text: str) -> bytes:
    return _pack(">q", "timestamptz", text, parse_timestamptz(text))


def _interval_octets(text: str) -> bytes:
    return _pack(">iiq", "interval", text, *parse_interval(text))


class FormatType(NamedTuple):
    tag: int
    value_octets: Callable[[str], bytes]  # exported text -> value octets


FORMAT_TYPES: dict[str, FormatType] = {
    "boolean": FormatType(0x01, _boolean_octets),
    "smallint": FormatType(0x02, _integer_octets(">h", "smallint")),
    "integer": FormatType(0x03, _integer_octets(">i", "integer")),
    "bigint": FormatType(0x04, _integer_octets(">q", "bigint")),
    "real": FormatType(0x05, _real_octets),
    "double precision": FormatType(0x06, _double_octets),
    "numeric": FormatType(0x07, _numeric_octets),
    "text": FormatType(0x08, _utf8),
    "bytea": FormatType(0x09, _bytea_octets),
    "uuid": FormatType(0x0A, _uuid_octets),
    "jsonb": FormatType(0x0B, canonical_json),
    "date": FormatType(0x0C, _date_octets),
    "time": FormatType(0x0D, _time_octets),
    "timestamp": FormatType(0x0E, _timestamp_octets),
    "timestamptz": FormatType(0x0F, _timestamptz_octets),
    "interval": FormatType(0x10, _interval_octets),
}


def length_prefixed(octets: bytes) -> bytes:
    """FORMAT.md `bytes`: a u32 length, then the octets."""
    return struct.pack(">I", len(octets)) + octets


def value_octets(type_name: str, text: str) -> bytes:
    """The value octets of one exported (non-NULL) text value of the given format type."""
    if type_name not in FORMAT_TYPES:
        raise ExportError(f"unknown format type {type_name!r}")
    return FORMAT_TYPES[type_name].value_octets(text)


def presence_octets(type_name: str, text: str | None) -> bytes:
    """FORMAT.md `presence`: 0x00 for NULL, else 0x01 and the length-prefixed value octets."""
    return b"\x00" if text is None else b"\x01" + length_prefixed(value_octets(type_name, text))


class Column(NamedTuple):
    name: str
    type: str
    # Added after the ledger was enabled (ALTER TABLE ... ADD COLUMN): a record covers it only
    # when it has a value.
    added: bool = False


COMMITMENT_TAG = 0x40
COMMITMENT_DOMAIN = b"ledger-erasable/v1"
# An erasable member's commitment in canonical JSON, and what it hashes before the salt.
MEMBER_COMMITMENT_TAG = 0x07
MEMBER_COMMITMENT_DOMAIN = b"ledger-erasable-member/v1"


class ErasureEntry(NamedTuple):
    """What a record's `ledger_erasure` object keeps of one erasable value (FORMAT.md "Erasable
    columns"), a column's or a member's: while the value is there, its salt; once erased, the
    commitment its hash covers."""

    erased: bool
    octets: bytes  # the salt, or (erased) the commitment: 32 octets


class MembersEntry(NamedTuple):
    """A jsonb column's members entry: the value entries of some top-level members of its object,
    by member name (a history's `row`: the tracked table's erasable columns)."""

    members: dict[str, ErasureEntry]


def _value_entry(entry) -> ErasureEntry | None:
    """`{"salt": hex}` or `{"erased": hex}` (64 lower-case hex digits), or None for anything else."""
    if not isinstance(entry, dict) or len(entry) != 1:
        return None
    [(kind, octets)] = entry.items()
    if kind in ("salt", "erased") and isinstance(octets, str) and HASH_PATTERN.fullmatch(octets):
        return ErasureEntry(kind == "erased", bytes.fromhex(octets))
    return None


def erasure_entries(text: str | None) -> dict[str, ErasureEntry | MembersEntry]:
    """The entries of a record's `ledger_erasure` JSON text (None: SQL NULL), by column name: a
    value entry, or a members entry `{"members": {member: value entry, ...}}` (its ill-formed member
    entries skipped; it may have none).

    Text that is not JSON is malformed input. JSON that is not an entry is no entry, not an error:
    the column is then encoded as an ordinary one, so a record hashed with a commitment no longer
    matches its hash (how a removed or mangled entry is caught). Read as jsonb reads its input, so a
    member named twice keeps its last value.
    """
    if text is None:
        return {}
    try:
        value = parse_json(text)
    except ValueError as error:  # also json.JSONDecodeError from scanstring
        raise ExportError(f"the ledger_erasure value is not JSON text: {error}") from None
    if not isinstance(value, dict):
        return {}
    entries: dict[str, ErasureEntry | MembersEntry] = {}
    for name, entry in value.items():
        if (value_entry := _value_entry(entry)) is not None:
            entries[name] = value_entry
        elif isinstance(entry, dict) and len(entry) == 1 and isinstance(entry.get("members"), dict):
            members = {member: member_entry for member, member_entry in
                       ((member, _value_entry(e)) for member, e in entry["members"].items())
                       if member_entry is not None}
            entries[name] = MembersEntry(members)
    return entries


def commitment(salt: bytes, type_name: str, text: str | None) -> bytes:
    """SHA3-256 of the domain, the salt and the column's ordinary encoding without its name (type tag
    and presence): what a record's hash covers of an erasable column instead of its value."""
    if type_name not in FORMAT_TYPES:
        raise ExportError(f"unknown format type {type_name!r}")
    return hashlib.sha3_256(COMMITMENT_DOMAIN + salt + bytes([FORMAT_TYPES[type_name].tag])
                            + presence_octets(type_name, text)).digest()


def member_commitment(salt: bytes, value: bytes) -> bytes:
    """SHA3-256 of the member domain, the salt and a member's value as canonical JSON: what a
    record's hash covers of an erasable member instead of its value."""
    return hashlib.sha3_256(MEMBER_COMMITMENT_DOMAIN + salt + value).digest()


def committed_json(text: str, members: Mapping[str, ErasureEntry]) -> bytes:
    """Canonical JSON of jsonb text with the top-level members named in `members` committed to
    (FORMAT.md "Erasable members"): a salted member's value becomes `07`, then its commitment as
    `bytes`; an erased member that is null, the stored commitment; an erased member that holds a
    value again, and every other member, stays as it is. A value that is not an object is its
    canonical JSON."""
    try:
        value = parse_json(text)
    except ValueError as error:  # also json.JSONDecodeError from scanstring
        raise ExportError(f"bad jsonb value: {error}") from None
    if not isinstance(value, dict):
        return encode_json(value)
    out = bytearray(b"\x06")
    out += struct.pack(">I", len(value))
    # Members in their canonical order (keys as unsigned octets), as encode_json writes them.
    for name, member in sorted(value.items(), key=lambda item: _utf8(item[0])):
        out += length_prefixed(_utf8(name))
        octets = encode_json(member)
        entry = members.get(name)
        if entry is not None and not entry.erased:
            out.append(MEMBER_COMMITMENT_TAG)
            out += length_prefixed(member_commitment(entry.octets, octets))
        elif entry is not None and member is None:
            out.append(MEMBER_COMMITMENT_TAG)
            out += length_prefixed(entry.octets)
        else:
            out += octets
    return bytes(out)


def canonical_record_bytes(columns: Sequence[tuple], values: Sequence[str | None],
                           entries: Mapping[str, ErasureEntry | MembersEntry] | None = None) -> bytes:
    """Canonical record bytes of one record: columns are (name, format type) pairs in hashed-column
    order, values the exported text values (None for NULL), without the stored hash, and entries
    what the record's `ledger_erasure` keeps (see erasure_entries), by column name."""
    if len(columns) != len(values):
        raise ExportError(f"{len(values)} values for {len(columns)} columns")
    entries = entries or {}
    # A column added after enable (a third member that is true) is encoded only with a value, or
    # with an entry (an erased value was there); a members entry counts, whatever the column.
    encoded = [(column, text) for column, text in zip(columns, values)
               if not (len(column) > 2 and column[2] and text is None and column[0] not in entries)]
    out = bytearray(b"\x01")
    out += struct.pack(">I", len(encoded))
    for (name, type_name, *_), text in encoded:
        if type_name not in FORMAT_TYPES:
            raise ExportError(f"unknown format type {type_name!r}")
        out += length_prefixed(_utf8(name))
        entry = entries.get(name)
        try:
            if isinstance(entry, MembersEntry):
                # Members of a jsonb object committed to; anything else (another type, SQL NULL, a
                # jsonb value that is no object) is an ordinary column.
                out.append(FORMAT_TYPES[type_name].tag)
                if type_name == "jsonb" and text is not None:
                    out += b"\x01" + length_prefixed(committed_json(text, entry.members))
                else:
                    out += presence_octets(type_name, text)
            elif entry is not None and not entry.erased:
                out.append(COMMITMENT_TAG)
                out += b"\x01" + length_prefixed(commitment(entry.octets, type_name, text))
            elif entry is not None and text is None:
                out.append(COMMITMENT_TAG)
                out += b"\x01" + length_prefixed(entry.octets)
            else:
                # No entry, or an erased one whose value is back: the value, as any column.
                out.append(FORMAT_TYPES[type_name].tag)
                out += presence_octets(type_name, text)
        except ExportError as error:
            raise ExportError(f"column {name!r}: {error}") from None
    return bytes(out)


def record_hash(columns: Sequence[tuple], values: Sequence[str | None],
                entries: Mapping[str, ErasureEntry | MembersEntry] | None = None) -> str:
    """The record hash as 64 lower-case hex digits."""
    return hashlib.sha3_256(canonical_record_bytes(columns, values, entries)).hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading an export
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    table: str | None  # only digests use it, so a header without it is still accepted
    chain_by: str | None
    columns: list[Column]
    # The definition registered by ledger.enable and ledger.definition(tbl) at export time; both
    # None in an export made before they were exported (then nothing about definitions is checked).
    definition: str | None = None
    definition_now: str | None = None
    has_definitions: bool = False  # the header has the members (definition may still be null)
    # The definitions registered before `definition`, oldest first, each replaced when columns
    # were added (empty when none were).
    earlier_definitions: tuple[str, ...] = ()
    # The table has a `ledger_erasure` column: each record line has its text before the hash.
    erasure: bool = False


@dataclass(frozen=True)
class Record:
    line_number: int
    chain_key: bytes  # the chain column's presence octets: equal octets mean the same chain
    chain_text: str | None  # the chain column's exported text, for display
    seq: int | None
    prev_hash: str | None
    stored_hash: str | None
    computed_hash: str
    # The hashed columns' exported texts, in header order (the state check replays a history's).
    values: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class PrunedRun:
    """A `pruned` line of an export: the kept hashes of a run of consecutive pruned records of one
    chain (FORMAT.md "Pruned records")."""

    line_number: int
    chain_key: bytes  # as Record.chain_key: a run names its chain by the chain value's octets
    chain_text: str | None
    first_seq: int
    last_seq: int
    hashes: bytes  # 32 octets per seq first_seq..last_seq, in seq order

    def hash_of(self, seq: int) -> bytes:
        """The kept hash of one seq of the run."""
        start = (seq - self.first_seq) * 32
        return self.hashes[start : start + 32]


@dataclass(frozen=True)
class Export:
    """An export as read: its header, records and pruned runs, each in the export's line order."""

    header: Header
    records: list[Record]
    pruned: list[PrunedRun]


def parse_header(line: str) -> Header:
    header = _json_line(line)
    if not isinstance(header, dict) or header.get("format") != "ledger-export":
        raise ExportError('the first line is not a ledger export header ({"format": "ledger-export", ...})')
    if header.get("version") != FORMAT_VERSION or isinstance(header.get("version"), bool):
        raise ExportError(f"unsupported export version {header.get('version')!r}")
    raw_columns = header.get("columns")
    if not isinstance(raw_columns, list) or not all(
            isinstance(column, dict) and isinstance(column.get("name"), str)
            and isinstance(column.get("type"), str) for column in raw_columns):
        raise ExportError('header "columns" must be a list of {"name": ..., "type": ...} objects')
    if not all(column.get("added", False) is True or "added" not in column for column in raw_columns):
        raise ExportError('a header column\'s "added" must be true when present')
    columns = [Column(column["name"], column["type"], "added" in column) for column in raw_columns]
    if any(a.added and not b.added for a, b in zip(columns, columns[1:])):
        raise ExportError("the header's added columns must follow all the others")
    for column in columns:
        if column.type not in FORMAT_TYPES:
            raise ExportError(f"unknown format type {column.type!r} of column {column.name!r}")
    names = [column.name for column in columns]
    chain_by = header.get("chain_by")
    if chain_by is not None and (not isinstance(chain_by, str) or chain_by not in names):
        raise ExportError(f"chain_by {chain_by!r} is not one of the hashed columns")
    for required in ("seq", "prev_hash"):
        if required not in names:
            raise ExportError(f"the hashed columns lack {required!r}")
    table = header.get("table")
    has_definitions = "definition" in header or "definition_now" in header
    definitions = []
    for member in ("definition", "definition_now"):
        text = header.get(member)
        if text is not None and not isinstance(text, str):
            raise ExportError(f'header "{member}" must be a string or null')
        definitions.append(text)
    earlier = header.get("earlier_definitions", [])
    if not isinstance(earlier, list) or not all(isinstance(text, str) for text in earlier):
        raise ExportError('header "earlier_definitions" must be a list of strings')
    erasure = header.get("erasure", False)
    if not isinstance(erasure, bool):
        raise ExportError('header "erasure" must be true or false')
    return Header(table if isinstance(table, str) else None, chain_by, columns, *definitions,
                  has_definitions, tuple(earlier), erasure)


def parse_record(header: Header, row, line_number: int) -> Record:
    """A record line, already parsed as JSON."""
    if not isinstance(row, list):
        raise ExportError('a line after the header must be a record (a JSON array) or a pruned run '
                          '({"pruned": {...}})')
    # With erasure, the record's ledger_erasure text comes between the values and the hash.
    width = len(header.columns) + 1 + int(header.erasure)
    if len(row) != width:
        parts = "columns, the ledger_erasure text and the hash" if header.erasure else "columns and the hash"
        raise ExportError(f"expected {width} values ({len(header.columns)} {parts}), got {len(row)}")
    if not all(value is None or isinstance(value, str) for value in row):
        raise ExportError("every value must be a JSON string or null")
    values, stored_hash = row[:len(header.columns)], row[-1]
    erasure = row[len(header.columns)] if header.erasure else None
    by_name = {column.name: (column, value) for column, value in zip(header.columns, values)}
    seq_text = by_name["seq"][1]
    if seq_text is not None and not _INTEGER.fullmatch(seq_text):
        raise ExportError(f"seq is not an integer: {seq_text!r}")
    if header.chain_by is None:
        chain_key, chain_text = b"", None
    else:
        chain_column, chain_text = by_name[header.chain_by]
        chain_key = presence_octets(chain_column.type, chain_text)
    return Record(
        line_number=line_number,
        chain_key=chain_key,
        chain_text=chain_text,
        seq=None if seq_text is None else int(seq_text),
        prev_hash=by_name["prev_hash"][1],
        stored_hash=stored_hash,
        computed_hash=record_hash(header.columns, values, erasure_entries(erasure)),
        values=tuple(values),
    )


_PRUNED_MEMBERS = {"chain", "first_seq", "last_seq", "hashes"}
_HEX_DIGITS = re.compile(r"[0-9a-f]*")


def parse_pruned_run(header: Header, line: dict, line_number: int) -> PrunedRun:
    """A pruned line, already parsed as JSON: exactly `{"pruned": {"chain", "first_seq",
    "last_seq", "hashes"}}`, with 1 <= first_seq <= last_seq <= 2^63 - 1, 64 lower-case hex digits
    per seq, and a chain value exactly when the table is chained."""
    run = line.get("pruned")
    if set(line) != {"pruned"} or not isinstance(run, dict) or set(run) != _PRUNED_MEMBERS:
        raise ExportError('a pruned run must be {"pruned": {"chain": ..., "first_seq": ..., '
                          '"last_seq": ..., "hashes": ...}}')
    first_seq, last_seq, hashes, chain_text = run["first_seq"], run["last_seq"], run["hashes"], run["chain"]
    # bool is an int to Python, not to JSON.
    if not all(isinstance(seq, int) and not isinstance(seq, bool) for seq in (first_seq, last_seq)):
        raise ExportError("a pruned run's first_seq and last_seq must be JSON integers")
    if not 1 <= first_seq <= last_seq <= INT64_MAX:
        raise ExportError(f"a pruned run needs 1 <= first_seq <= last_seq <= 2^63 - 1, has seqs "
                          f"{first_seq} to {last_seq}")
    if (not isinstance(hashes, str) or len(hashes) != 64 * (last_seq - first_seq + 1)
            or not _HEX_DIGITS.fullmatch(hashes)):
        raise ExportError(f"a pruned run's hashes must be 64 lower-case hex digits for each of its "
                          f"{last_seq - first_seq + 1} seqs")
    if header.chain_by is None:
        if chain_text is not None:
            raise ExportError(f"a pruned run of a single-chain table names the chain {chain_text!r}")
        chain_key = b""
    else:
        if not isinstance(chain_text, str):
            raise ExportError(f"a pruned run's chain must be a string (the table is chained by "
                              f"{header.chain_by!r})")
        chain_column = next(column for column in header.columns if column.name == header.chain_by)
        try:
            chain_key = presence_octets(chain_column.type, chain_text)
        except ExportError as error:
            raise ExportError(f"a pruned run's chain: {error}") from None
    return PrunedRun(line_number, chain_key, chain_text, first_seq, last_seq, bytes.fromhex(hashes))


def parse_export(lines: Iterable[str]) -> Export:
    """Parse an export: the header line, then a JSON object per run of pruned records and a JSON
    array per record, in any order (the extension writes the runs first). Blank lines are ignored.
    Raises ExportError, naming the line, on malformed input."""
    header = None
    records = []
    pruned = []
    line_number = 0
    try:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if header is None:
                header = parse_header(line)
                continue
            value = _json_line(line)
            if isinstance(value, dict) and "pruned" in value:
                pruned.append(parse_pruned_run(header, value, line_number))
            else:
                records.append(parse_record(header, value, line_number))
    except ExportError as error:
        raise ExportError(f"line {line_number}: {error}") from None
    if header is None:
        raise ExportError("empty input: no export header")
    return Export(header, records, pruned)


def read_export(lines: Iterable[str]) -> tuple[Header, list[Record]]:
    """The header and records of an export, for readers of the records alone (the state check's
    replay): the kept hashes of pruned records are read and checked, and left out."""
    export = parse_export(lines)
    return export.header, export.records


def _json_line(line: str):
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as error:
        raise ExportError(f"invalid JSON: {error}") from None


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    chain: str | None
    seq: int | None
    problem: str
    detail: str

    def as_dict(self) -> dict:
        return {"chain": self.chain, "seq": self.seq, "problem": self.problem, "detail": self.detail}


@dataclass(frozen=True)
class Report:
    problems: list[Problem]
    record_count: int
    chain_count: int  # chains with records or pruned runs
    header: Header
    records: list[Record]
    pruned: list[PrunedRun] = dataclasses.field(default_factory=list)

    @property
    def pruned_count(self) -> int:
        """How many pruned records' hashes the export keeps."""
        return sum(run.last_seq - run.first_seq + 1 for run in self.pruned)


class Anchor(NamedTuple):
    """Where a chain's stored records start: after seq `pruned_through`, the first of them linking
    to `last_pruned_hash`, the kept hash of that seq (hex). Nothing pruned: seq 1, linking to NULL."""

    pruned_through: int = 0
    last_pruned_hash: str | None = None


def _verification_order(record: Record):
    """Order of FORMAT.md: by seq, NULL seq last; ties: well-formed hashes by octets, then
    malformed ones (by their text), then NULL; equal stored hashes: the record whose values hash to
    it first, then by the hash of the values. Nothing depends on the order of the export's lines."""
    if record.stored_hash is None:
        category, key = 2, b""
    elif HASH_PATTERN.fullmatch(record.stored_hash):
        category, key = 0, bytes.fromhex(record.stored_hash)
    else:
        category, key = 1, record.stored_hash.encode("utf-8")
    return (record.seq is None, record.seq or 0, category, key,
            record.stored_hash != record.computed_hash, bytes.fromhex(record.computed_hash))


def _run_order(run: PrunedRun) -> tuple:
    """Runs by first_seq; overlapping runs (a pruned_gap) then by last_seq and hashes, so that which
    run's hash anchors the chain depends on nothing but the runs themselves."""
    return run.first_seq, run.last_seq, run.hashes


def check_pruned_runs(chain: str | None, runs: Iterable[PrunedRun]) -> tuple[list[Problem], Anchor]:
    """FORMAT.md "Pruned records": a pruned_gap wherever a chain's runs leave seqs out or cover a
    seq twice, and the anchor its records start from (the last pruned seq and its kept hash)."""
    problems = []
    expected = 1
    ordered = sorted(runs, key=_run_order)
    for run in ordered:
        if run.first_seq > expected:
            problems.append(Problem(chain, expected, "pruned_gap", f"the hashes of pruned seqs {expected} "
                                                                   f"to {run.first_seq - 1} are missing"))
        elif run.first_seq < expected:
            problems.append(Problem(chain, run.first_seq, "pruned_gap",
                                    f"the kept hashes of pruned seqs {run.first_seq} to {run.last_seq} "
                                    f"overlap others (line {run.line_number})"))
        expected = max(expected, run.last_seq + 1)
    if not ordered:
        return problems, Anchor()
    # Every run containing the last pruned seq ends there; the first of them in run order counts.
    last = next(run for run in ordered if run.last_seq == expected - 1)
    return problems, Anchor(last.last_seq, last.hash_of(last.last_seq).hex())


def verify_chain(chain: str | None, records: Iterable[Record],
                 anchor: Anchor = Anchor()) -> list[Problem]:
    """Apply FORMAT.md "Verification" to the records of one chain, stored from after `anchor` on."""
    problems = []

    def report(record: Record, problem: str, detail: str) -> None:
        problems.append(Problem(chain, record.seq, problem, detail))

    def check_hash(record: Record) -> None:
        if record.stored_hash is None:
            report(record, "hash_mismatch", "stored hash is NULL")
        elif not HASH_PATTERN.fullmatch(record.stored_hash):
            report(record, "hash_mismatch", f"stored hash is malformed: {record.stored_hash!r}")
        elif record.stored_hash != record.computed_hash:
            report(record, "hash_mismatch",
                   f"stored {record.stored_hash}, computed {record.computed_hash}")

    pruned_through, last_pruned_hash = anchor
    is_first = True
    expected_seq = pruned_through + 1
    # The previous record's stored hash, once there is a previous record; before the first, the
    # last pruned record's kept hash, if any.
    expected_prev_hash = last_pruned_hash
    previous_seq = None
    ordered = sorted(records, key=_verification_order)
    for record in ordered:
        if record.seq is not None and 1 <= record.seq <= pruned_through:
            report(record, "pruned_seq", f"seqs 1 to {pruned_through} of the chain were pruned, yet a record "
                                         f"with seq {record.seq} is stored (line {record.line_number})")
            continue
        if record.seq is None:
            report(record, "seq_gap", f"seq is NULL (line {record.line_number})")
            check_hash(record)
            continue
        if record.seq == previous_seq:
            report(record, "duplicate_seq", f"seq {record.seq} appears again (line {record.line_number})")
            check_hash(record)
            continue
        previous_seq = record.seq
        if record.seq != expected_seq:
            report(record, "seq_gap", f"expected seq {expected_seq}, found {record.seq}")
        check_hash(record)
        if is_first and last_pruned_hash is None:
            if record.prev_hash is not None:
                report(record, "prev_hash_mismatch",
                       f"first record's prev_hash should be NULL, is {record.prev_hash!r}")
        elif not (expected_prev_hash is not None and HASH_PATTERN.fullmatch(expected_prev_hash)
                  and record.prev_hash == expected_prev_hash):
            previous = (f"the kept hash of pruned seq {pruned_through}" if is_first
                        else "previous record's hash")
            report(record, "prev_hash_mismatch",
                   f"prev_hash {record.prev_hash!r}, {previous} {expected_prev_hash!r}")
        is_first = False
        expected_seq = record.seq + 1
        expected_prev_hash = record.stored_hash
    return problems


def check_export(lines: Iterable[str]) -> Report:
    """Read and verify an export; problems come sorted by chain text, then in rule order (a
    chain's pruned runs before its records)."""
    export = parse_export(lines)
    chains: dict[bytes, tuple[list[Record], list[PrunedRun]]] = {}
    for record in export.records:
        chains.setdefault(record.chain_key, ([], []))[0].append(record)
    for run in export.pruned:
        chains.setdefault(run.chain_key, ([], []))[1].append(run)

    def chain_text(chain: tuple[list[Record], list[PrunedRun]]) -> str | None:
        records, runs = chain
        return (records or runs)[0].chain_text

    # A NULL chain value (shown as empty) sorts first, like the empty string.
    ordered = sorted(chains.values(), key=lambda chain: (chain_text(chain) is not None,
                                                         chain_text(chain) or ""))
    problems = definition_problems(export.header)
    for chain in ordered:
        records, runs = chain
        text = chain_text(chain)
        run_problems, anchor = check_pruned_runs(text, runs)
        problems += run_problems
        if records:
            problems += verify_chain(text, records, anchor)
        else:
            # The newest record is never pruned: a chain of kept hashes alone lost all its records.
            problems.append(Problem(text, anchor.pruned_through + 1, "seq_gap",
                                    f"expected seq {anchor.pruned_through + 1}: the chain has no records "
                                    "after its pruned part"))
    return Report(problems, len(export.records), len(chains), export.header, export.records, export.pruned)


def verify_export(lines: Iterable[str]) -> list[Problem]:
    """The problems of an export, as ledger.verify would report them."""
    return check_export(lines).problems


# --------------------------------------------------------------------------------------------------
# Definitions (FORMAT.md "Definitions" and "Export")
# --------------------------------------------------------------------------------------------------

DEFINITION_FIRST_LINE = "ledger-definition/v1"
_UNQUOTED_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


def definition_lines(text: str) -> list[str]:
    """The lines of a definition text as FORMAT.md splits them: at each "\n" (one "\r" right before
    it belongs to the line ending), the last line's ending optional. Not str.splitlines, which also
    splits at other characters a quoted name may hold."""
    *ended, last = text.split("\n")
    return [line.removesuffix("\r") for line in ended] + ([last] if last else [])


def definition_differences(registered: str, current: str) -> str | None:
    """FORMAT.md "Changed definitions": the registered definition's lines that today's lacks, as
    `- line`, then today's lines that the registered one lacks, as `+ line`, joined by "; "; or None
    when the texts are equal."""
    if registered == current:
        return None
    old, new = definition_lines(registered), definition_lines(current)
    changes = [f"- {line}" for line in old if line not in new]
    changes += [f"+ {line}" for line in new if line not in old]
    return "; ".join(changes or ["the same lines in another order"])


def definition_fingerprint(text: str) -> str:
    """SHA3-256 of a definition's UTF-8 octets, as a checkpoint (and a digest's definition line)
    records it."""
    return hashlib.sha3_256(_utf8(text)).hexdigest()


def _unquote_identifier(text: str) -> str | None:
    """The name an identifier written as quote_ident writes it stands for, or None if it is not one."""
    if _UNQUOTED_IDENTIFIER.fullmatch(text):
        return text
    if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1].replace('""', ""):
        return text[1:-1].replace('""', '"')
    return None


def _header_inconsistencies(header: Header, text: str, which: str) -> list[str]:
    """How a definition text disagrees with the header it came in: its chain_by and hashed lines
    (and, for today's definition, its table line) against the header's chain_by, columns and table."""
    lines = definition_lines(text)
    if not lines or lines[0] != DEFINITION_FIRST_LINE:
        return [f"{which} does not begin with {DEFINITION_FIRST_LINE!r}"]

    def line_of(keyword: str) -> str | None:
        found = [line for line in lines if line.startswith(keyword + " ")]
        return found[0] if len(found) == 1 else None

    found = []
    chain_line = line_of("chain_by")
    chain_name = None if chain_line is None else chain_line.removeprefix("chain_by ")
    if chain_line is None or (chain_name == "-") != (header.chain_by is None) or (
            chain_name != "-" and _unquote_identifier(chain_name) != header.chain_by):
        found.append(f"{which} has {chain_line!r} as its chain_by line, the header's chain_by is "
                     f"{header.chain_by!r}")
    hashed_line = "hashed " + " ".join(column.name for column in header.columns)
    if line_of("hashed") != hashed_line:
        found.append(f"{which} has {line_of('hashed')!r} as its hashed line, the header's columns "
                     f"make {hashed_line!r}")
    added = [column.name for column in header.columns if column.added]
    added_line = "added " + " ".join(added) if added else None
    if line_of("added") != added_line:
        found.append(f"{which} has {line_of('added')!r} as its added line, the header's added columns "
                     f"make {added_line!r}")
    # A rename changes the table line since enabling (definition_changed says so); today's
    # definition names the table as the header does.
    table_line = line_of("table")
    if which == "today's definition" and header.table is not None and table_line != f"table {header.table}":
        found.append(f"{which} has {table_line!r} as its table line, the header's table is "
                     f"{header.table!r}")
    return found


def definition_problems(header: Header) -> list[Problem]:
    """The rows ledger.verify reports before any record's: `definition_changed` when the registered
    definition is not today's; then `definition_inconsistent` for each way a definition in the
    header disagrees with the header itself (an export edited after it was made). Nothing when the
    export carries no definitions (made before they were exported)."""
    problems = []
    if header.definition is not None and header.definition_now is not None:
        changes = definition_differences(header.definition, header.definition_now)
        if changes is not None:
            problems.append(Problem(None, None, "definition_changed", f"since it was enabled: {changes}"))
    for text, which in ((header.definition, "the registered definition"),
                        (header.definition_now, "today's definition")):
        if text is not None:
            problems += [Problem(None, None, "definition_inconsistent", detail)
                         for detail in _header_inconsistencies(header, text, which)]
    return problems


# --------------------------------------------------------------------------------------------------
# Merkle trees (RFC 9162 section 2.1, with SHA3-256)
# --------------------------------------------------------------------------------------------------

EMPTY_TREE_HASH = hashlib.sha3_256(b"").digest()
MAX_PATH_LENGTH = 64


def leaf_hash(record_hash: bytes) -> bytes:
    """leaf(h) of FORMAT.md, for a record hash of 32 octets."""
    return hashlib.sha3_256(b"\x00" + record_hash).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha3_256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k of FORMAT.md: the largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def merkle_tree_hash(record_hashes: Sequence[bytes]) -> bytes:
    """MTH of the tree whose leaves are leaf(h) for the given record hashes, in order."""

    def subtree(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaf_hash(record_hashes[start])
        split = start + largest_power_of_two_below(end - start)
        return node_hash(subtree(start, split), subtree(split, end))

    return subtree(0, len(record_hashes)) if record_hashes else EMPTY_TREE_HASH


def verify_inclusion(leaf_index: int, tree_size: int, path: Sequence[bytes], leaf: bytes,
                     root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2: does `path` prove `leaf` (a leaf hash) at 0-based `leaf_index` of
    the tree of `tree_size` leaves with hash `root`?"""
    if not 0 <= leaf_index < tree_size:
        return False
    fn, sn = leaf_index, tree_size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, path: Sequence[bytes], first_hash: bytes,
                       second_hash: bytes) -> bool:
    """RFC 9162 section 2.1.4.2: does `path` prove the tree of `first` leaves with hash `first_hash`
    a prefix of the tree of `second` leaves with hash `second_hash`?"""
    if first > second:
        return False
    # The RFC's algorithm covers 0 < first < second. In the two trivial cases there is nothing to
    # prove, so the path is empty: a tree is consistent with itself, the empty tree with any tree.
    if first == second:
        return not path and first_hash == second_hash
    if first == 0:
        return not path and first_hash == EMPTY_TREE_HASH
    if not path:
        return False
    if first & (first - 1) == 0:  # first is a power of two: its tree is a subtree of the second's
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_hash and sr == second_hash


class MissingRecord(LookupError):
    """A chain lacks a record that a tree needs."""


def chain_leaves(records: Iterable[Record], chain: str | None, first_seq: int, last_seq: int,
                 pruned: Iterable[PrunedRun] = ()) -> list[bytes]:
    """The record hashes (32 octets) of seqs first_seq..last_seq, in seq order, of the chain whose
    exported chain value is `chain` (None: NULL, so every record of a single-chain table).

    The leaves are the stored hashes, as in FORMAT.md (whether each matches its record's values is
    the chain check's `hash_mismatch`). A duplicated seq counts with the record that verification
    takes as that seq's. Seqs up to the chain's last pruned one take the hashes its pruned runs
    kept, whatever records claim them, so a tree made before a prune has the same root after it.
    Raises MissingRecord naming the first missing seq or kept hash, a seq of the range that two
    runs keep (no leaf is more the seq's than the other), or the first record without a
    well-formed stored hash.
    """
    name = "(single)" if chain is None else repr(chain)
    runs = sorted((run for run in pruned if run.chain_text == chain), key=_run_order)
    pruned_through = max((run.last_seq for run in runs), default=0)
    kept: dict[int, bytes] = {}
    for run in runs:
        for seq in range(max(run.first_seq, first_seq), min(run.last_seq, last_seq) + 1):
            if seq in kept:
                raise MissingRecord(f"chain {name}: the kept hashes of pruned seqs {run.first_seq} to "
                                    f"{run.last_seq} overlap others (at seq {seq})")
            kept[seq] = run.hash_of(seq)
    by_seq: dict[int, Record] = {}
    for record in sorted((record for record in records if record.chain_text == chain),
                         key=_verification_order):
        if record.seq is not None and record.seq > pruned_through:
            by_seq.setdefault(record.seq, record)
    for seq in range(first_seq, last_seq + 1):
        if seq <= pruned_through and seq not in kept:
            raise MissingRecord(f"chain {name} was pruned through seq {pruned_through}, but the "
                                f"hash of pruned record {seq} is missing")
        if seq > pruned_through and seq not in by_seq:
            raise MissingRecord(f"chain {name} has no record with seq {seq}")
    leaves = []
    for seq in range(first_seq, last_seq + 1):
        if seq <= pruned_through:
            leaves.append(kept[seq])
            continue
        stored = by_seq[seq].stored_hash
        if stored is None or not HASH_PATTERN.fullmatch(stored):
            raise MissingRecord(f"record {seq} of chain {name} has no well-formed stored hash")
        leaves.append(bytes.fromhex(stored))
    return leaves


# --------------------------------------------------------------------------------------------------
# Proofs
# --------------------------------------------------------------------------------------------------


def hash_octets(value, what: str) -> bytes:
    """The 32 octets of a hash written as 64 lower-case hex digits."""
    if not isinstance(value, str) or not HASH_PATTERN.fullmatch(value):
        raise MalformedInput(f"{what} is not 64 lower-case hex digits: {value!r}")
    return bytes.fromhex(value)


class _ProofNumber(NamedTuple):
    """A JSON number in a proof, kept as written: a count must be written as plain digits."""

    text: str


# serde_json's limit, which the extension keeps: 127 nested arrays and objects, the proof's own
# object included.
MAX_PROOF_NESTING = 127
_PLAIN_COUNT = re.compile(r"0|[1-9][0-9]*")
MAX_COUNT = 2**64 - 1


def _proof_members(pairs: list[tuple[str, object]]) -> dict:
    """object_pairs_hook: an object, refusing a member name given twice (readers that keep the first
    and readers that keep the last would verify different proofs)."""
    members = {}
    for name, value in pairs:
        if name in members:
            raise MalformedInput(f'proof is not JSON a proof can be read from: the member name "{name}" '
                                 "appears twice in an object")
        members[name] = value
    return members


def _refuse_constant(name: str):
    raise MalformedInput(f"proof is not JSON: {name} is not a JSON value")


def _check_proof_json(proof) -> None:
    """What JSON allows but the extension's reader refuses: nesting deeper than MAX_PROOF_NESTING,
    and strings (member names included) holding a lone surrogate escape such as "\ud800"."""
    pending = [(proof, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_PROOF_NESTING:
                raise MalformedInput(f"proof is not JSON a proof can be read from: nested more than "
                                     f"{MAX_PROOF_NESTING} deep")
            items = [*value, *value.values()] if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
        elif isinstance(value, str) and any(0xD800 <= ord(char) <= 0xDFFF for char in value):
            raise MalformedInput("proof is not JSON a proof can be read from: a lone surrogate escape")


def _proof_object(data: bytes, proof_type: str) -> dict:
    try:
        proof = json.loads(data.decode("utf-8"), object_pairs_hook=_proof_members,
                           parse_int=_ProofNumber, parse_float=_ProofNumber,
                           parse_constant=_refuse_constant)
    except MalformedInput:
        raise
    except (ValueError, RecursionError) as error:  # ValueError covers UnicodeDecodeError
        raise MalformedInput(f"proof is not JSON: {error}") from None
    _check_proof_json(proof)
    if not isinstance(proof, dict) or proof.get("type") != proof_type:
        raise MalformedInput(f'proof is not a JSON object with "type": "{proof_type}"')
    return proof


def _proof_integer(proof: dict, name: str) -> int:
    """A count: a JSON number written as plain decimal digits (not `1e0`, `1.0`, `-0`), at most
    2^64 - 1. Whether it makes sense (a seq of 0, a size of 0) is the verification's question."""
    value = proof.get(name)
    if not isinstance(value, _ProofNumber) or not _PLAIN_COUNT.fullmatch(value.text):
        written = value.text if isinstance(value, _ProofNumber) else value
        raise MalformedInput(f'proof "{name}" is not a non-negative integer in plain decimal digits: '
                             f"{str(written)[:40]!r}")
    if len(value.text) > 20 or int(value.text) > MAX_COUNT:
        raise MalformedInput(f'proof "{name}" is more than 2^64 - 1: {value.text[:40]}...')
    return int(value.text)


def _proof_path(proof: dict) -> list[bytes]:
    path = proof.get("path")
    if not isinstance(path, list) or len(path) > MAX_PATH_LENGTH:
        raise MalformedInput(f'proof "path" is not a list of at most {MAX_PATH_LENGTH} hashes')
    return [hash_octets(entry, "a proof path entry") for entry in path]


def check_inclusion_proof(data: bytes, record_hash: bytes, root: bytes,
                          root_size: int | None = None) -> tuple[bool, str]:
    """Verify an inclusion proof (JSON text) of a record hash against a root (of `root_size`
    records, when known): (valid, description). Raises MalformedInput when the proof is malformed."""
    proof = _proof_object(data, "inclusion")
    seq = _proof_integer(proof, "seq")
    tree_size = _proof_integer(proof, "tree_size")
    path = _proof_path(proof)
    description = (f"record {record_hash.hex()} as seq {seq} of the tree of size {tree_size} with "
                   f"root {root.hex()}")
    if root_size is not None and tree_size != root_size:
        return False, f"{description}: the proof is for a tree of size {tree_size}, not {root_size}"
    # seq 0 is well-formed and proves nothing: leaf index -1 is in no tree.
    return verify_inclusion(seq - 1, tree_size, path, leaf_hash(record_hash), root), description


def check_consistency_proof(data: bytes,
                            between: tuple[int, bytes, int, bytes] | None = None) -> tuple[bool, str]:
    """Verify a consistency proof (JSON text), optionally between two trusted (size, root) pairs:
    (valid, description). Raises MalformedInput when the proof is malformed."""
    proof = _proof_object(data, "consistency")
    old_size = _proof_integer(proof, "old_size")
    new_size = _proof_integer(proof, "new_size")
    old_root = hash_octets(proof.get("old_root"), 'proof "old_root"')
    new_root = hash_octets(proof.get("new_root"), 'proof "new_root"')
    path = _proof_path(proof)
    description = (f"the tree of size {old_size} with root {old_root.hex()} as a prefix of the tree "
                   f"of size {new_size} with root {new_root.hex()}")
    if between is not None and between != (old_size, old_root, new_size, new_root):
        trusted_old_size, trusted_old_root, trusted_new_size, trusted_new_root = between
        return False, (f"{description}: the proof is not about the trees of size {trusted_old_size} "
                       f"with root {trusted_old_root.hex()} and of size {trusted_new_size} with root "
                       f"{trusted_new_root.hex()}")
    return verify_consistency(old_size, new_size, path, old_root, new_root), description


# --------------------------------------------------------------------------------------------------
# Digests
# --------------------------------------------------------------------------------------------------

DIGEST_FIRST_LINE = "ledger-checkpoint/v1"
DIGEST_KEYWORDS = ("ledger", "chain", "size", "root", "previous", "time", "checkpoint", "key", "definition")
KEY_NAME = "ledger"
_DIGEST_SIZE = re.compile(r"0|[1-9][0-9]*")
_DIGEST_TIME = re.compile(r"[0-9]{4,}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_DIGEST_CHECKPOINT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DIGEST_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # every control character but LF
SIGNATURE_PREFIX = "\u2014 "  # U+2014 EM DASH, a space
MAX_SIGNATURE_LINES = 100


@dataclass(frozen=True)
class Digest:
    body: bytes  # the signed octets, including the body's last "\n"
    ledger: str
    chain: str | None  # None: `chain none`
    size: int
    root: bytes
    public_key: bytes | None  # None: `key none`
    # After the key id, the first `ledger` signature line with the key id of public_key: the
    # Ed25519 signature when it is 64 octets. None: no such line.
    signature: bytes | None
    ledger_signature_lines: int  # signature lines with key name `ledger`, whatever their key id


def canonical_base64(text: str) -> bytes | None:
    """The octets of standard padded base64 in its one canonical spelling (no stray bits in the
    last character), else None."""
    try:
        octets = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    return octets if base64.b64encode(octets).decode("ascii") == text else None


def base64_octets(text: str, length: int, what: str) -> bytes:
    octets = canonical_base64(text)
    if octets is None or len(octets) != length:
        raise MalformedInput(f"{what} is not the canonical base64 of {length} octets: {text!r}")
    return octets


def _digest_json_string(value: str, keyword: str) -> str:
    """The string a digest line's value holds as one JSON string literal, nothing around it."""
    if value.startswith('"'):
        try:
            text, end = scanstring(value, 1)
        except ValueError:
            end = None
        # A lone surrogate escape ("\\ud800") is no Unicode text; the extension refuses it.
        if end == len(value) and not any(0xD800 <= ord(char) <= 0xDFFF for char in text):
            return text
    raise MalformedInput(f"digest: {keyword} is not a JSON string: {value!r}")


def parse_digest(data: bytes) -> Digest:
    """Parse a digest (FORMAT.md "Digests"). Raises MalformedInput, saying what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedInput("digest is not UTF-8 text") from None
    if not text:
        raise MalformedInput("digest is empty")
    control = _DIGEST_CONTROL.search(text)
    if control and control.group() == "\r":
        raise MalformedInput("digest: a carriage return: its lines must end in a line feed alone "
                             "(convert the line endings to LF, e.g. with dos2unix)")
    if control:
        raise MalformedInput(f"digest: the control character U+{ord(control.group()):04X}: only line "
                             "feeds may appear")
    # Body lines are never empty, so the first blank line ends the body. It is there even when
    # there is no signature line.
    body, blank_line, trailer = text.partition("\n\n")
    if not blank_line:
        raise MalformedInput("digest: no blank line after the body (required, even when unsigned)")
    body += "\n"
    lines = body[:-1].split("\n")
    if lines[0] != DIGEST_FIRST_LINE:
        raise MalformedInput(f"digest: the first line is not {DIGEST_FIRST_LINE!r}: {lines[0]!r}")
    if len(lines) != 1 + len(DIGEST_KEYWORDS):
        raise MalformedInput(f"digest: the body has {len(lines)} lines, not {1 + len(DIGEST_KEYWORDS)} "
                             f"({DIGEST_FIRST_LINE}, {', '.join(DIGEST_KEYWORDS)})")
    values = {}
    for keyword, line in zip(DIGEST_KEYWORDS, lines[1:]):
        found, space, values[keyword] = line.partition(" ")
        if found != keyword or not space:
            raise MalformedInput(f"digest: expected a {keyword!r} line, found {line!r}")

    ledger = _digest_json_string(values["ledger"], "ledger")
    chain = None if values["chain"] == "none" else _digest_json_string(values["chain"], "chain")
    if not _DIGEST_SIZE.fullmatch(values["size"]) or int(values["size"]) > MAX_COUNT:
        raise MalformedInput(f"digest: size is not a decimal integer of at most 2^64 - 1: "
                             f"{values['size'][:40]!r}")
    root = hash_octets(values["root"], "digest: root")
    if values["previous"] != "none":
        hash_octets(values["previous"], "digest: previous")
    if not _DIGEST_TIME.fullmatch(values["time"]):
        raise MalformedInput(f"digest: time is not YYYY-MM-DDTHH:MM:SS.ffffffZ: {values['time']!r}")
    if not _DIGEST_CHECKPOINT.fullmatch(values["checkpoint"]):
        raise MalformedInput(f"digest: checkpoint is not a lower-case UUID: {values['checkpoint']!r}")
    public_key = (None if values["key"] == "none"
                  else base64_octets(values["key"], 32, "digest: key"))
    if values["definition"] != "none":
        hash_octets(values["definition"], "digest: definition")

    if trailer and not trailer.endswith("\n"):
        raise MalformedInput("digest: the last signature line does not end in a line feed")
    signature_lines = trailer[:-1].split("\n") if trailer else []
    # Empty lines after the last signature line (psql -At adds one) are not signature lines.
    while signature_lines and not signature_lines[-1]:
        signature_lines.pop()
    if len(signature_lines) > MAX_SIGNATURE_LINES:
        raise MalformedInput(f"digest: {len(signature_lines)} signature lines, at most "
                             f"{MAX_SIGNATURE_LINES} allowed")
    own_key_id = None if public_key is None else key_id(public_key)
    signature, ledger_signature_lines = None, 0
    for line in signature_lines:
        name, blob = _signature_line(line)
        # Lines by other key names or key ids are cosignatures (a witness's): ignored. The first
        # line by the digest's own key decides; later ones are ignored too.
        if name == KEY_NAME:
            ledger_signature_lines += 1
            if signature is None and own_key_id is not None and blob[:4] == own_key_id:
                signature = blob[4:]
    return Digest(body.encode("utf-8"), ledger, chain, int(values["size"]), root, public_key,
                  signature, ledger_signature_lines)


def _signature_line(line: str) -> tuple[str, bytes]:
    """`— <key name> <base64>`: (name, octets). Malformed, whoever's line it is, unless the name is
    free of white space and `+` and the octets are at least a key id and one more."""
    name, space, blob_text = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    if (not line.startswith(SIGNATURE_PREFIX) or not space or not name
            or any(char.isspace() or char == "+" for char in name)):
        raise MalformedInput(f"digest: a signature line is not '{SIGNATURE_PREFIX}<key name> <base64>': "
                             f"{line[:80]!r}")
    blob = canonical_base64(blob_text)
    if blob is None:
        raise MalformedInput(f"digest: a signature is not canonical base64: {blob_text[:80]!r}")
    if len(blob) < 5:
        raise MalformedInput("digest: a signature line holds a key id and a signature: at least 5 octets")
    return name, blob


def key_id(public_key: bytes) -> bytes:
    """The 4-octet key id of FORMAT.md: SHA-256("ledger" || "\\n" || 0x01 || public key)[:4]."""
    return hashlib.sha256(KEY_NAME.encode() + b"\n\x01" + public_key).digest()[:4]


def ed25519_verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    # Imported here so that every other mode needs only the standard library.
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):  # ValueError: the key octets are no Ed25519 key
        return False
    return True


@dataclass(frozen=True)
class DigestCheck:
    check: str
    ok: bool | None  # None: skipped
    detail: str

    @property
    def status(self) -> str:
        return {True: "ok", False: "failed", None: "skipped"}[self.ok]

    def as_dict(self) -> dict:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


def check_signature(digest: Digest, allow_unsigned: bool) -> DigestCheck:
    """Is the body signed with the digest's own key (a matching key id, a valid Ed25519 signature)?"""
    def result(ok: bool | None, detail: str) -> DigestCheck:
        return DigestCheck("signature", ok, detail)

    if digest.public_key is None:
        if digest.ledger_signature_lines:
            return result(False, "the body says key none, yet there is a ledger signature line: the "
                                 "key line was changed")
        if allow_unsigned:
            return result(None, "unsigned digest (key none), accepted by --allow-unsigned")
        return result(False, "unsigned digest (key none); --allow-unsigned accepts it")
    if digest.signature is None:
        return result(False, f"no signature line by the digest's key (key id "
                             f"{key_id(digest.public_key).hex()})")
    signature = digest.signature
    if len(signature) != 64:
        return result(False, f"the signature line by the digest's key holds {4 + len(signature)} "
                             "octets, not an Ed25519 signature")
    if not ed25519_verifies(digest.public_key, signature, digest.body):
        return result(False, "the Ed25519 signature does not verify under the digest's key")
    return result(True, "the Ed25519 signature verifies under the digest's key")


def check_key(digest: Digest, expected_key: bytes | None) -> DigestCheck:
    """Is the digest's key the one the auditor trusts (--public-key)?"""
    if expected_key is None:
        return DigestCheck("key", None, "no --public-key given")
    if digest.public_key == expected_key:
        return DigestCheck("key", True, "the digest's key is the given public key")
    stated = "none" if digest.public_key is None else base64.b64encode(digest.public_key).decode()
    return DigestCheck("key", False, f"the digest's key is {stated}, not the given public key")


def check_extends(digest: Digest, report: Report) -> DigestCheck:
    """Do the export's first `size` records of the digest's chain (the pruned ones by their kept
    hashes) still have the digest's root?"""
    def result(ok: bool, detail: str) -> DigestCheck:
        return DigestCheck("extends", ok, detail)

    header = report.header
    if digest.ledger != header.table:
        return result(False, f"the digest is of ledger {digest.ledger!r}, the export of "
                             f"{header.table!r}")
    if digest.chain is not None and header.chain_by is None:
        return result(False, f"the digest is of chain {digest.chain!r}, but the export's table "
                             "has a single chain")
    try:
        leaves = chain_leaves(report.records, digest.chain, 1, digest.size, report.pruned)
    except MissingRecord as error:
        return result(False, f"{error}; the digest covers seqs 1..{digest.size}")
    root = merkle_tree_hash(leaves)
    if root != digest.root:
        return result(False, f"the tree of seqs 1..{digest.size} has root {root.hex()}, the "
                             f"digest states {digest.root.hex()}")
    return result(True, f"the tree of seqs 1..{digest.size} has the digest's root")


def _digest_definition(digest: Digest) -> str | None:
    """The digest's definition fingerprint (hex), None for `definition none`. parse_digest has
    checked the line's form."""
    for line in digest.body.decode("utf-8").split("\n"):
        if line.startswith("definition "):
            value = line.removeprefix("definition ")
            return None if value == "none" else value
    raise MalformedInput("digest: no definition line")


def only_columns_added(before: str, after: str) -> bool:
    """Does `after` differ from `before` only as an addition of columns does (FORMAT.md, "Added
    columns"): new column lines, and the hashed and added lines that list them; or, for a history
    ledger, a new history_of line (columns added to its tracked table)?"""
    old, new = definition_lines(before), definition_lines(after)
    removed = [line for line in old if line not in new]
    added = [line for line in new if line not in old]
    return (all(line.startswith(("hashed ", "added ", "history_of ")) for line in removed)
            and any(line.startswith(("column ", "history_of ")) for line in added)
            and all(line.startswith(("column ", "hashed ", "added ", "history_of ")) for line in added))


PARTITION_TRIGGERS = "triggers ledger_refuse_change:A,ledger_refuse_truncate:A,zz_ledger_append:A"


def only_partitions_added(before: str, after: str) -> bool:
    """Does `after` differ from `before` only by partitions added (FORMAT.md, "Partitioned
    ledgers"): new partition lines, each with the table's persistence and every ledger trigger
    enabled always, and no line removed?"""
    old, new = definition_lines(before), definition_lines(after)
    persistence = next((line.removeprefix("persistence ") for line in old if line.startswith("persistence ")), None)
    if persistence is None:
        return False
    conforming = f" persistence {persistence} {PARTITION_TRIGGERS}"
    added = [line for line in new if line not in old]
    return (all(line in new for line in old) and bool(added)
            and all(line.startswith("partition ") and line.endswith(conforming) for line in added))


def only_partitions_removed(before: str, after: str) -> bool:
    """Does `after` differ from `before` only by partition lines removed (partitions ledger.prune
    emptied and dropped), with nothing added?"""
    old, new = definition_lines(before), definition_lines(after)
    removed = [line for line in old if line not in new]
    return all(line in old for line in new) and bool(removed) and all(line.startswith("partition ") for line in removed)


def is_registered_step(before: str, after: str) -> bool:
    """May `after` follow `before` as registered definitions, for a digest's definition to hold
    (FORMAT.md, "Definitions"): columns added, partitions added, or partitions removed?"""
    return only_columns_added(before, after) or only_partitions_added(before, after) or only_partitions_removed(before, after)


def check_definition(digest: Digest, header: Header) -> DigestCheck:
    """Is the digest's definition the fingerprint of the registered definition the export carries?
    Then the signature also fixes the header's hashed columns and chain key (definition_problems
    checks the text against them)."""
    def result(ok: bool | None, detail: str) -> DigestCheck:
        return DigestCheck("definition", ok, detail)

    stated = _digest_definition(digest)
    if stated is None:
        return result(None, "the digest records no definition (definition none)")
    if not header.has_definitions:
        return result(None, "the export carries no definition (made before exports had one)")
    if header.definition is None:
        return result(None, "the export's ledger has no registered definition")
    registered = definition_fingerprint(header.definition)
    if stated == registered:
        return result(True, "the digest's definition is the fingerprint of the registered definition")
    steps = [*header.earlier_definitions, header.definition]
    for position, earlier in enumerate(steps[:-1]):
        if stated == definition_fingerprint(earlier):
            if all(is_registered_step(a, b) for a, b in zip(steps[position:], steps[position + 1:])):
                return result(True, "the digest's definition is the fingerprint of an earlier registered "
                                    "definition, and since then only columns or partitions were added, or "
                                    "emptied partitions removed")
            return result(False, "the digest's definition is the fingerprint of an earlier registered "
                                 "definition, but the definitions after it change more than columns or "
                                 "partitions added or emptied partitions removed")
    detail = (f"the digest's definition is {stated}, the registered definition's fingerprint is "
              f"{registered}")
    if header.definition_now is not None and stated == definition_fingerprint(header.definition_now):
        detail += "; it is today's definition's: the definition had changed when the checkpoint was made"
    return result(False, detail)


def check_digest(digest: Digest, report: Report, expected_key: bytes | None,
                 allow_unsigned: bool) -> list[DigestCheck]:
    return [check_signature(digest, allow_unsigned), check_key(digest, expected_key),
            check_extends(digest, report),
            check_definition(digest, report.header)]


# --------------------------------------------------------------------------------------------------
# History-tracked tables (FORMAT.md "History-tracked tables")
# --------------------------------------------------------------------------------------------------

STATE_FORMAT = "ledger-state"
HISTORY_COLUMNS = ("key", "op", "row")  # the history ledger's columns the state check reads


@dataclass(frozen=True)
class StateHeader:
    table: str
    history: str
    key_columns: list[str]
    # The tracked table's definition when tracking began, and at export time (either may be null).
    definition: str | None
    definition_now: str | None


@dataclass(frozen=True)
class StateRow:
    line_number: int
    key: str
    row: str  # to_jsonb(row)::text, compared as text


@dataclass(frozen=True)
class Version:
    """A history record as the replay reads it."""

    seq: int | None
    op: str | None
    row: str | None
    order: tuple  # _verification_order of its record, to break ties of seq alike every time


def _jsonb_string(text: str) -> str:
    """A string as jsonb prints it: `"` `\\` and \\b \\f \\n \\r \\t escaped, other control
    characters as \\u00xx (lower-case hex), everything else as is."""
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(char) or (f"\\u{ord(char):04x}" if char < " " else char)
                         for char in text) + '"'


def _jsonb_key_order(key: str) -> tuple[int, bytes]:
    """jsonb's order of object keys: shorter (in UTF-8 octets) first, then by octets."""
    octets = _utf8(key)
    return len(octets), octets


class _Printed(NamedTuple):
    """Text already printed, among the values still to print (a str there is a JSON string)."""

    text: str


def jsonb_text(value) -> str:
    """A parsed value (see parse_json) printed as jsonb prints it: keys in jsonb's order, ", " and
    ": " separators, numbers as written (jsonb's own text writes them as numeric does). Built
    without recursion, as encode_json is, since a jsonb column may nest deeply."""
    out: list[str] = []
    pending = [value]  # next one last
    while pending:
        item = pending.pop()
        if isinstance(item, _Printed):
            out.append(item.text)
        elif item is None:
            out.append("null")
        elif item is True or item is False:
            out.append("true" if item else "false")
        elif isinstance(item, JsonNumber):
            out.append(item.text)
        elif isinstance(item, str):
            out.append(_jsonb_string(item))
        else:
            if isinstance(item, list):
                parts: list = ["["]
                for position, element in enumerate(item):
                    parts += [_Printed(", ")] * (position > 0) + [element]
            else:
                parts = ["{"]
                members = sorted(item.items(), key=lambda member: _jsonb_key_order(member[0]))
                for position, (key, member) in enumerate(members):
                    parts += [_Printed(", ")] * (position > 0) + [_Printed(_jsonb_string(key) + ": "), member]
            parts[0] = _Printed(parts[0])
            parts.append(_Printed("]" if isinstance(item, list) else "}"))
            pending.extend(reversed(parts))
    return "".join(out)


def version_key(row: dict, key_columns: Sequence[str]) -> str:
    """A row's key as ledger.version_key writes it: the primary-key columns as a jsonb object."""
    return jsonb_text({column: row.get(column) for column in key_columns})


def parse_state_header(line: str) -> StateHeader:
    header = _json_line(line)
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise ExportError(f'the first line is not a state export header ({{"format": "{STATE_FORMAT}", ...}})')
    if header.get("version") != FORMAT_VERSION or isinstance(header.get("version"), bool):
        raise ExportError(f"unsupported state export version {header.get('version')!r}")
    for member in ("table", "history"):
        if not isinstance(header.get(member), str):
            raise ExportError(f'state header "{member}" must be a string')
    key_columns = header.get("key_columns")
    if (not isinstance(key_columns, list) or not key_columns
            or not all(isinstance(column, str) for column in key_columns)
            or len(set(key_columns)) != len(key_columns)):
        raise ExportError('state header "key_columns" must be a list of distinct column names')
    definitions = []
    for member in ("definition", "definition_now"):
        text = header.get(member)
        if text is not None and not isinstance(text, str):
            raise ExportError(f'state header "{member}" must be a string or null')
        definitions.append(text)
    return StateHeader(header["table"], header["history"], key_columns, *definitions)


def parse_state_row(header: StateHeader, line: str, line_number: int) -> StateRow:
    entry = _json_line(line)
    if (not isinstance(entry, dict) or set(entry) != {"key", "row"}
            or not isinstance(entry["key"], str) or not isinstance(entry["row"], str)):
        raise ExportError('a state row must be {"key": "<text>", "row": "<text>"}')
    try:
        row = parse_json(entry["row"])
    except ExportError:
        raise
    except ValueError as error:  # json.JSONDecodeError from scanstring
        raise ExportError(f"a state row's row is not JSON: {error}") from None
    # The row is compared as text, so it must be the one text jsonb gives its value; and its key
    # must be the key of its own columns, or the state check would compare the wrong versions.
    if not isinstance(row, dict) or jsonb_text(row) != entry["row"]:
        raise ExportError("a state row's row is not a JSON object in jsonb's text form")
    if version_key(row, header.key_columns) != entry["key"]:
        raise ExportError(f"key {entry['key']!r} is not the key of its row, "
                          f"{version_key(row, header.key_columns)!r}")
    return StateRow(line_number, entry["key"], entry["row"])


def read_state(lines: Iterable[str]) -> tuple[StateHeader, list[StateRow]]:
    """Parse a state export (ledger.export_state). Blank lines are ignored. Raises ExportError,
    naming the line, on malformed input, two rows of one key included."""
    header = None
    rows: list[StateRow] = []
    seen: dict[str, int] = {}
    line_number = 0
    try:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            if header is None:
                header = parse_state_header(line)
                continue
            row = parse_state_row(header, line, line_number)
            if row.key in seen:
                raise ExportError(f"key {row.key!r} appears again (first on line {seen[row.key]})")
            seen[row.key] = line_number
            rows.append(row)
    except ExportError as error:
        raise ExportError(f"state line {line_number}: {error}") from None
    if header is None:
        raise ExportError("empty state export: no header")
    return header, rows


def replay(header: Header, records: Iterable[Record]) -> dict[str | None, Version]:
    """Each key's last version: the greatest seq, as ledger.verify's `ORDER BY seq DESC` takes it
    (so a NULL seq, possible only after tampering, counts as the greatest). Ties of seq exist only
    in a chain whose check fails; they go to the record last in verification order."""
    if header.chain_by != "key" or not all(name in {c.name for c in header.columns} for name in HISTORY_COLUMNS):
        raise ExportError("the export is not of a history ledger (chained by key, with columns "
                          "key, op and row)")
    index = {column.name: position for position, column in enumerate(header.columns)}
    last: dict[str | None, Version] = {}
    for record in records:
        version = Version(record.seq, record.values[index["op"]], record.values[index["row"]],
                          _verification_order(record))
        key = record.values[index["key"]]
        current = last.get(key)
        if current is None or _replay_order(version) > _replay_order(current):
            last[key] = version
    return last


def _replay_order(version: Version) -> tuple:
    return (version.seq is None, version.seq or 0, version.order)


def _seq_text(seq: int | None) -> str:
    return "" if seq is None else str(seq)  # as format('%s', NULL) writes it


def state_problems(history: Report, state_header: StateHeader, rows: Sequence[StateRow]) -> list[Problem]:
    """The rows ledger.verify reports after the history's chains: per key, in key text order (UTF-8
    octets; a NULL key, impossible but for the catalog, last), the table against the replay."""
    if history.header.table is not None and history.header.table != state_header.history:
        raise ExportError(f"the state export is of {state_header.table}, whose history is "
                          f"{state_header.history}, but the export is of {history.header.table}")
    last = replay(history.header, history.records)
    current = {row.key: row for row in rows}
    problems = []
    for key in sorted(set(last) | set(current), key=lambda k: (k is None, _utf8(k or ""))):
        version, row = last.get(key), current.get(key)
        if version is None:
            problems.append(Problem(key, None, "state_unrecorded", "the row has no version in the history"))
        elif version.op == "delete":
            if row is not None:
                problems.append(Problem(key, version.seq, "state_unrecorded",
                                        f"the history says the row was deleted (seq {_seq_text(version.seq)})"))
        elif row is None:
            problems.append(Problem(key, version.seq, "state_missing",
                                    f"the history's last version (seq {_seq_text(version.seq)}) is not in the table"))
        elif row.row != version.row:
            problems.append(Problem(key, version.seq, "state_mismatch",
                                    f"the row differs from the history's last version (seq {_seq_text(version.seq)})"))
    return problems


def check_state(history: Report, lines: Iterable[str]) -> Report:
    """The history's report with the tracked table's rows added as ledger.verify(tbl) orders them:
    the table's definition_changed first, then the history's problems, then the state check."""
    state_header, rows = read_state(lines)
    problems = []
    if state_header.definition is not None and state_header.definition_now is not None:
        changes = definition_differences(state_header.definition, state_header.definition_now)
        if changes is not None:
            problems.append(Problem(None, None, "definition_changed", f"since tracking began: {changes}"))
    problems += history.problems
    problems += state_problems(history, state_header, rows)
    return dataclasses.replace(history, problems=problems)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _tsv_field(value) -> str:
    """Escape like PostgreSQL's COPY text format, so a chain value with a tab or newline keeps the
    output one line per problem."""
    text = "" if value is None else str(value)
    return (text.replace("\\", "\\\\").replace("\t", "\\t")
            .replace("\n", "\\n").replace("\r", "\\r"))


def _tsv_line(*fields) -> str:
    return "\t".join(_tsv_field(field) for field in fields)


def _parse_arguments(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description="Verify a ledger export, a Merkle proof or a digest (docs/FORMAT.md) offline.",
        epilog="Exit status: 0 verified, 1 problems found or a check failed, 2 malformed input.")
    parser.add_argument("export", nargs="?", metavar="EXPORT",
                        help="export file (JSON lines from ledger.export), or - for stdin")
    parser.add_argument("--json", action="store_true",
                        help="print problems (and digest checks) as JSON")
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--digest", metavar="DIGEST_FILE",
                       help="also check that the export extends this digest (from ledger.digest)")
    modes.add_argument("--merkle-root", nargs=3, metavar=("CHAIN", "FROM", "TO"),
                       help="print the Merkle tree hash of records FROM..TO of CHAIN "
                            "(- for a single-chain table)")
    modes.add_argument("--inclusion", metavar="PROOF_FILE",
                       help="verify an inclusion proof (no EXPORT; needs --record-hash, --root)")
    modes.add_argument("--consistency", metavar="PROOF_FILE",
                       help="verify a consistency proof (no EXPORT)")
    parser.add_argument("--state", metavar="STATE_FILE",
                        help="EXPORT is a history ledger's: also check the tracked table's state "
                             "export (from ledger.export_state) against it")
    parser.add_argument("--public-key", metavar="BASE64",
                        help="with --digest: the Ed25519 public key the digest must carry")
    parser.add_argument("--allow-unsigned", action="store_true",
                        help="with --digest: accept an unsigned digest")
    parser.add_argument("--record-hash", metavar="HEX", help="with --inclusion: the record's hash")
    parser.add_argument("--root", metavar="HEX", help="with --inclusion: the tree's root")
    parser.add_argument("--tree-size", metavar="N",
                        help="with --inclusion: the number of records the root is of")
    parser.add_argument("--between", nargs=4, metavar=("OLD_SIZE", "OLD_ROOT", "NEW_SIZE", "NEW_ROOT"),
                        help="with --consistency: the trees the proof must be about")
    arguments = parser.parse_args(argv)

    proof_mode = arguments.inclusion is not None or arguments.consistency is not None
    if proof_mode and arguments.export is not None:
        parser.error("--inclusion and --consistency take no EXPORT")
    if not proof_mode and arguments.export is None:
        parser.error("EXPORT is required")
    if arguments.json and (proof_mode or arguments.merkle_root):
        parser.error("--json goes with plain verification or --digest only")
    if arguments.state is not None and (proof_mode or arguments.merkle_root):
        parser.error("--state goes with plain verification or --digest only")
    if arguments.state == "-" and arguments.export == "-":
        parser.error("EXPORT and --state cannot both be stdin")
    if arguments.digest is None and (arguments.public_key is not None or arguments.allow_unsigned):
        parser.error("--public-key and --allow-unsigned go with --digest only")
    if (arguments.inclusion is None) != (arguments.record_hash is None) or (
            arguments.inclusion is None) != (arguments.root is None):
        parser.error("--inclusion needs --record-hash and --root, and they go with it only")
    if arguments.tree_size is not None:
        if arguments.inclusion is None:
            parser.error("--tree-size goes with --inclusion only")
        arguments.tree_size = _size_argument(parser, arguments.tree_size, "--tree-size")
    if arguments.between is not None:
        if arguments.consistency is None:
            parser.error("--between goes with --consistency only")
        old_size, old_root, new_size, new_root = arguments.between
        arguments.between = (_size_argument(parser, old_size, "--between OLD_SIZE"), old_root,
                             _size_argument(parser, new_size, "--between NEW_SIZE"), new_root)
    if arguments.merkle_root:
        chain, first, last = arguments.merkle_root
        try:
            first, last = int(first), int(last)
        except ValueError:
            parser.error("--merkle-root FROM and TO must be integers")
        if not 1 <= first <= last + 1:  # FROM = TO + 1 asks for the empty tree
            parser.error("--merkle-root needs 1 <= FROM <= TO + 1")
        arguments.merkle_root = (chain, first, last)
    return parser, arguments


def _size_argument(parser: argparse.ArgumentParser, text: str, what: str) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", text):
        parser.error(f"{what} must be a non-negative integer")
    return int(text)


def _read_report(path: str) -> Report:
    if path == "-":
        return check_export(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"))
    with open(path, encoding="utf-8") as export:
        return check_export(export)


def _read_state(report: Report, path: str) -> Report:
    if path == "-":
        return check_state(report, io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"))
    with open(path, encoding="utf-8") as state:
        return check_state(report, state)


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _run_proof(arguments: argparse.Namespace) -> int:
    if arguments.inclusion is not None:
        record_hash = hash_octets(arguments.record_hash, "--record-hash")
        root = hash_octets(arguments.root, "--root")
        valid, description = check_inclusion_proof(_read_bytes(arguments.inclusion), record_hash, root,
                                                   arguments.tree_size)
        claim = "inclusion proof"
    else:
        between = None
        if arguments.between is not None:
            old_size, old_root, new_size, new_root = arguments.between
            between = (old_size, hash_octets(old_root, "--between OLD_ROOT"),
                       new_size, hash_octets(new_root, "--between NEW_ROOT"))
        valid, description = check_consistency_proof(_read_bytes(arguments.consistency), between)
        claim = "consistency proof"
    print(f"valid: {claim} verifies {description}" if valid
          else f"invalid: {claim} does not verify {description}")
    return 0 if valid else 1


def _run_merkle_root(report: Report, chain: str, first: int, last: int) -> int:
    if report.header.chain_by is None and chain != "-":
        raise MalformedInput(f"the export's table has a single chain: give - as CHAIN, not {chain!r}")
    chain_text = None if report.header.chain_by is None else chain
    print(merkle_tree_hash(chain_leaves(report.records, chain_text, first, last, report.pruned)).hex())
    return 0


def _run_verify(report: Report, arguments: argparse.Namespace) -> int:
    checks = None
    if arguments.digest is not None:
        expected_key = (None if arguments.public_key is None
                        else base64_octets(arguments.public_key, 32, "--public-key"))
        digest = parse_digest(_read_bytes(arguments.digest))
        checks = check_digest(digest, report, expected_key, arguments.allow_unsigned)

    problems = [problem.as_dict() for problem in report.problems]
    if arguments.json:
        print(json.dumps(problems if checks is None
                         else {"problems": problems, "digest": [check.as_dict() for check in checks]},
                         ensure_ascii=False))
    else:
        for problem in report.problems:
            print(_tsv_line(problem.chain, problem.seq, problem.problem, problem.detail))
        for check in checks or []:
            print(_tsv_line("digest", check.check, check.status, check.detail))
    pruned = f", with the kept hashes of {report.pruned_count} pruned records" if report.pruned else ""
    print(f"verified {report.record_count} records in {report.chain_count} chains{pruned}: "
          f"{len(report.problems)} problems", file=sys.stderr)
    failed = any(check.ok is False for check in checks or [])
    return 1 if report.problems or failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser, arguments = _parse_arguments(argv)
    try:
        if arguments.inclusion is not None or arguments.consistency is not None:
            return _run_proof(arguments)
        report = _read_report(arguments.export)
        if arguments.merkle_root:
            return _run_merkle_root(report, *arguments.merkle_root)
        if arguments.state is not None:
            report = _read_state(report, arguments.state)
        return _run_verify(report, arguments)
    except (MalformedInput, OSError, UnicodeDecodeError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except MissingRecord as error:  # --merkle-root over records the export does not have
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:
        print(f"{parser.prog}: error: checking a digest's signature needs the Python package "
              f"'cryptography' ({error})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
