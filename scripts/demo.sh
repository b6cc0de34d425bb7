#!/usr/bin/env bash
# The ledger in five minutes: builds and installs the extension into the local PostgreSQL 15, starts
# a throwaway cluster, appends records, shows an UPDATE refused, tampers as a superuser with the
# triggers disabled, and shows ledger.verify and the offline verifier both catching it; then deletes
# the newest record of a chain and shows a checkpoint's digest catching that.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building and installing the extension"
scripts/install.sh

dir=$(mktemp -d /tmp/ledger-demo-XXXXXX)
port=${LEDGER_DEMO_PORT:-55499}
trap 'scripts/cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
scripts/cluster.sh start "$dir" "$port"
run() { psql -X -q -h "$dir/socket" -p "$port" -U postgres -d postgres "$@"; }

echo "== a throwaway cluster is running on port $port; appending records"
run -e <<'SQL'
CREATE EXTENSION ledger;
INSERT INTO ledger.records (anchor_id, slot, kind, payload) VALUES
    ('a1111111-1111-4111-8111-111111111111', 'checkout', 'order.created', '{"order": 1001, "total": 25.90}'),
    ('a1111111-1111-4111-8111-111111111111', 'checkout', 'order.paid',    '{"order": 1001, "amount": 25.90}'),
    ('b2222222-2222-4222-8222-222222222222', 'billing',  'invoice.sent',  '{"invoice": "INV-7"}');
INSERT INTO ledger.records (anchor_id, slot, kind, payload)
    SELECT 'a1111111-1111-4111-8111-111111111111', 'checkout', 'order.shipped', jsonb_build_object('parcel', i)
    FROM generate_series(1, 3) i;
SELECT anchor_id, seq, kind, left(prev_hash, 16) AS prev_hash, left(hash, 16) AS hash
FROM ledger.records ORDER BY anchor_id, seq;
SQL

echo "== an UPDATE is refused, even with session_replication_role = replica"
run <<'SQL' || true
SET session_replication_role = replica;
UPDATE ledger.records SET payload = '{"order": 1001, "amount": 0}' WHERE kind = 'order.paid';
SQL

echo "== a table owner who is not a superuser can append, but not disable the triggers or drop the ledger"
run <<'SQL' || true
CREATE ROLE demo_owner;
GRANT CREATE ON SCHEMA public TO demo_owner;
SET ROLE demo_owner;
CREATE TABLE payments (id int PRIMARY KEY, account text NOT NULL, amount numeric NOT NULL);
SELECT ledger.enable('payments', 'account');
INSERT INTO payments VALUES (1, 'alice', 10), (2, 'bob', 5), (3, 'alice', 7.50);
ALTER TABLE payments DISABLE TRIGGER ALL;
DROP TABLE payments;
SELECT account, seq, left(hash, 16) AS hash FROM payments ORDER BY account, seq;
SQL

echo "== ledger.verify on the intact ledger (no rows: intact)"
run -c "SELECT * FROM ledger.verify()"

echo "== a superuser disables the triggers, rewrites a payment, and re-enables them the ordinary way"
run -e <<'SQL'
ALTER TABLE ledger.records DISABLE TRIGGER ALL;
UPDATE ledger.records SET payload = '{"order": 1001, "amount": 2.59}' WHERE kind = 'order.paid';
ALTER TABLE ledger.records ENABLE TRIGGER ALL;
SQL

echo "== ledger.verify names the record, and the triggers left ORIGIN instead of ALWAYS"
run -c "SELECT chain, seq, problem, left(detail, 60) || '...' AS detail FROM ledger.verify()"

echo "== the offline verifier, which shares no code with the extension, agrees"
run -At -c "SELECT * FROM ledger.export('ledger.records')" >"$dir/export.jsonl"
python3 scripts/verify_export.py "$dir/export.jsonl" || true

echo "== a checkpoint's digest, kept outside the database, catches what a chain alone cannot"
run -At -c "SELECT ledger.digest(cid) FROM ledger.checkpoint('payments', 'alice')" >"$dir/alice.digest"
cat "$dir/alice.digest"
echo "-- a superuser deletes alice's newest payment; the chain left behind is valid"
run -e <<'SQL'
ALTER TABLE payments DISABLE TRIGGER ALL;
DELETE FROM payments WHERE account = 'alice' AND seq = 2;
ALTER TABLE payments ENABLE ALWAYS TRIGGER zz_ledger_append, ENABLE ALWAYS TRIGGER ledger_refuse_change,
                     ENABLE ALWAYS TRIGGER ledger_refuse_truncate;
SQL
run -c "SELECT * FROM ledger.verify('payments')"
digest=$(cat "$dir/alice.digest"; printf x)  # the x keeps the digest's final newlines
run -v digest="${digest%x}" <<'SQL'
SELECT item, ok, left(detail, 70) AS detail FROM ledger.verify_digest(:'digest');
SQL
run -At -c "SELECT * FROM ledger.export('payments')" >"$dir/payments.jsonl"
python3 scripts/verify_export.py "$dir/payments.jsonl" --digest "$dir/alice.digest" --allow-unsigned || true
