-- Every supported type hashes the stored value, whatever the session settings say.
CREATE DOMAIN short_text AS text CHECK (length(VALUE) < 100);
CREATE TABLE typed (
    id   int PRIMARY KEY,
    b    boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, n numeric,
    t    text, vc varchar(10), c char(5), by bytea, u uuid, j jsonb,
    d    date, tm time, ts timestamp, tz timestamptz, iv interval, dom short_text
);
SELECT ledger.enable('typed');
SELECT column_types FROM ledger.ledgers WHERE tbl = 'typed'::regclass;

CREATE TABLE typed_copy (LIKE typed);
ALTER TABLE typed_copy ADD PRIMARY KEY (id);
SELECT ledger.enable('typed_copy');

-- The same values, written in two differently configured sessions.
SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1;
INSERT INTO typed VALUES
    (1, true, -1, 2, 3, 1.5, '-0', 1.50, 'ab', 'c', 'x', '\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '{"b": [1.0, 2.50], "a": {"z": null, "é": "ü"}}', '2000-01-01', '12:34:56.789', '2026-05-06 07:08:09',
     '2026-05-06 07:08:09+02', '1 year 2 mons -3 days 04:05:06.5', 'domain'),
    (2, null, null, null, null, 'NaN', 'Infinity', 'NaN', '', null, null, '', null, 'null', '-infinity', null,
     'infinity', '0044-03-15 12:00:00+00 BC', '-1 mons', null);
SET TimeZone = 'Pacific/Chatham'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = -10;
SET lc_numeric = 'C'; SET search_path = pg_catalog, public;
INSERT INTO typed_copy VALUES
    (1, 't', '-1', '2', '3', '1.5', '-0', '1.50', 'ab', 'c', 'x     ', '\xDEADBEEF', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11',
     '{"a": {"é": "ü", "z": null}, "b": [1, 2.5]}', '01/01/2000', '12:34:56.789', '06/05/2026 07:08:09',
     '2026-05-06 18:08:09+13', 'P1Y2M-3DT4H5M6.5S', 'domain'),
    (2, null, null, null, null, 'nan', 'infinity', 'nan', '', null, null, '\x', null, 'null', '-infinity', null,
     'infinity', '15/03/0044 12:00:00+00 BC', 'P-1M', null);
RESET ALL;

SELECT a.id, a.hash = b.hash AS same_hash
FROM typed a JOIN typed_copy b USING (id) ORDER BY id;
SELECT encode(ledger.canonical_bytes('typed', null, 1), 'hex');

-- Values that differ only in ways text can hide still hash differently.
INSERT INTO typed (id, n, f8, t) VALUES (3, 1.5, '0', 'ab'), (4, 1.50, '-0', 'ab ');
SELECT count(DISTINCT ledger.sha3_256(substr(ledger.canonical_bytes('typed', null, seq), 1))) AS distinct_encodings
FROM typed WHERE id IN (3, 4);
SELECT * FROM ledger.verify('typed');
