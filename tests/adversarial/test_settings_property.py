"""Property: a record's hash does not depend on the writing session's settings. Seeded random rows are
appended twice, to two identical ledgers, each time by a session with its own random TimeZone,
DateStyle, IntervalStyle, extra_float_digits, lc_numeric, client_encoding and search_path; every pair
of records must hash alike, and both ledgers verify (also offline).

LEDGER_PROPERTY_SEED and LEDGER_PROPERTY_CASES (default 60 rows) change the run."""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from decimal import Decimal

from psycopg.types.json import Jsonb

from ledgertest import offline_verify

SEED = int(os.environ.get("LEDGER_PROPERTY_SEED", "20261122"))
CASES = int(os.environ.get("LEDGER_PROPERTY_CASES", "60"))

COLUMNS = """(id integer PRIMARY KEY, n numeric, f8 double precision, f4 real, tstz timestamptz,
              ts timestamp, d date, iv interval, b bytea, t text, j jsonb, u uuid)"""

SETTINGS = {
    "TimeZone": ["UTC", "Asia/Kathmandu", "America/St_Johns", "Pacific/Chatham", "Europe/Berlin", "-13:45"],
    "DateStyle": ["ISO, MDY", "SQL, DMY", "Postgres, MDY", "German, DMY", "ISO, YMD"],
    "IntervalStyle": ["postgres", "postgres_verbose", "sql_standard", "iso_8601"],
    "extra_float_digits": [str(d) for d in range(-15, 4)],
    "lc_numeric": ["C", "C.utf8", "de_DE.UTF-8"],  # the last writes 1,5 (scripts/setup.sh makes it)
    "client_encoding": ["UTF8", "LATIN1", "WIN1252"],
    "search_path": ["public", "pg_catalog, public", '"$user", public'],
}


def random_settings(rng: random.Random) -> dict:
    return {name: rng.choice(values) for name, values in SETTINGS.items()}


def random_text(rng: random.Random) -> str:
    # Characters every client encoding above can carry, plus quoting and escape hazards.
    return "".join(rng.choice("aZ09 ,.;'\"\\\t\n-é£ÿ") for _ in range(rng.randint(0, 12)))


def random_row(rng: random.Random, i: int) -> tuple:
    def maybe(value):
        return None if rng.random() < 0.15 else value

    return (
        i,
        maybe(Decimal(rng.choice(["0", "-0.0", "1.10", "123456789.000000001", "-1e-20", "NaN", "Infinity"]))),
        maybe(rng.choice([0.0, -0.0, 0.1, 1e308, -2.5e-310, float("inf"), float("nan"), rng.uniform(-1e6, 1e6)])),
        maybe(rng.choice([0.1, 3.4e38, -1.5, float("-inf")])),
        maybe(dt.datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999),
                          tzinfo=dt.timezone(dt.timedelta(minutes=rng.randint(-900, 900))))),
        maybe(dt.datetime(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23))),
        maybe(dt.date(rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28))),
        maybe(dt.timedelta(days=rng.randint(-5000, 5000), seconds=rng.randint(0, 86399),
                           microseconds=rng.randint(0, 999999))),
        maybe(bytes(rng.randrange(256) for _ in range(rng.randint(0, 16)))),
        maybe(random_text(rng)),
        maybe(Jsonb({random_text(rng): rng.choice([1, 1.5, -0.0, None, True, random_text(rng), [1, {"a": 2}]])
                     for _ in range(rng.randint(0, 4))})),
        maybe(uuid.UUID(int=rng.getrandbits(128))),
    )


def test_hashes_do_not_depend_on_session_settings(db):
    rng = random.Random(SEED)
    for name in ("left_ledger", "right_ledger"):
        db.execute(f"CREATE TABLE public.{name} {COLUMNS}")
        db.execute(f"SELECT ledger.enable('public.{name}')")
    used = []
    for i in range(1, CASES + 1):
        row = random_row(rng, i)
        for name in ("left_ledger", "right_ledger"):
            settings = random_settings(rng)
            used.append(settings)
            with db.connect(autocommit=True, settings=settings) as conn:
                conn.execute(f"INSERT INTO public.{name} VALUES ({', '.join(['%s'] * len(row))})", row)
    left = db.fetchall("SELECT seq, hash FROM public.left_ledger ORDER BY seq")
    right = db.fetchall("SELECT seq, hash FROM public.right_ledger ORDER BY seq")
    assert len(left) == CASES
    for (seq, a), (_, b) in zip(left, right):
        assert a == b, f"seq {seq} hashes differently (seed {SEED}); settings used: {used[2 * seq - 2:2 * seq]}"
    # Both sides really varied: every setting took several values.
    for name in SETTINGS:
        assert len({s[name] for s in used}) > 1, name
    for name in ("public.left_ledger", "public.right_ledger"):
        assert db.verify(name) == []
        assert offline_verify(db.export_lines(name)) == []
