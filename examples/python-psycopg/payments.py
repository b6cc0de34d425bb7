"""Payments in a ledger table, appended by several connections at once with psycopg 3.

The program writes plain INSERTs and computes no hash: the ledger's trigger gives every record its
seq, prev_hash and hash. It then checks what the ledger promises and exits 0 only if all of it held:
each chain is dense (seq 1..n) and linked (prev_hash = the previous record's hash), an UPDATE is
refused with SQLSTATE 23001, and ledger.verify finds nothing.

Connects as libpq does, from PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD), to a database
without a payments table, as a role that may create the extension (or with it already created).
"""

import sys
import threading
from decimal import Decimal

import psycopg

WORKERS = 4
APPENDS_PER_CHAIN = 10  # by each worker, to the shared chain and to its own
SHARED_CHAIN = "shared"

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS ledger;
CREATE TABLE payments (
    id bigserial PRIMARY KEY,
    account text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    paid_at timestamptz NOT NULL DEFAULT now()
);
SELECT ledger.enable('payments', chain_by => 'account');
"""


def append_payments(worker: int, appended: list) -> None:
    """Appends to the shared chain and to this worker's own chain, alternately."""
    own_chain = f"worker-{worker}"
    # Autocommit: each INSERT is a transaction of its own, so the workers' appends to the shared
    # chain interleave; the ledger serialises them per chain, never across chains.
    with psycopg.connect(autocommit=True) as conn:
        for i in range(APPENDS_PER_CHAIN):
            for account in (SHARED_CHAIN, own_chain):
                appended.append(conn.execute(
                    "INSERT INTO payments (account, amount) VALUES (%s, %s)"
                    " RETURNING account, seq, prev_hash, hash",
                    (account, Decimal(f"{worker}.{i:02d}"))).fetchone())


def chains_are_dense_and_linked(appended: list) -> bool:
    chains: dict[str, list] = {}
    for account, seq, prev_hash, hash_ in appended:
        chains.setdefault(account, []).append((seq, prev_hash, hash_))
    intact = True
    for account, links in sorted(chains.items()):
        links.sort()
        seqs = [seq for seq, _, _ in links]
        if seqs != list(range(1, len(links) + 1)):
            print(f"chain {account}: seqs are not 1..{len(links)}: {seqs}")
            intact = False
            continue
        previous_hash = None  # the first record of a chain links to nothing
        for seq, prev_hash, hash_ in links:
            if prev_hash != previous_hash:
                print(f"chain {account}: seq {seq} links to {prev_hash}, not to {previous_hash}")
                intact = False
                break
            previous_hash = hash_
        else:
            print(f"chain {account}: seq 1..{len(links)}, linked, head {previous_hash}")
    return intact


def main() -> int:
    with psycopg.connect() as conn:
        conn.execute(SCHEMA)
        conn.commit()

    appended: list = []
    workers = [threading.Thread(target=append_payments, args=(n, appended))
               for n in range(1, WORKERS + 1)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    print(f"appended {len(appended)} records from {WORKERS} concurrent connections")
    held = chains_are_dense_and_linked(appended)
    held = len(appended) == WORKERS * APPENDS_PER_CHAIN * 2 and held

    with psycopg.connect(autocommit=True) as conn:
        try:
            conn.execute("UPDATE payments SET amount = 0 WHERE account = %s AND seq = 1",
                         (SHARED_CHAIN,))
            print("UPDATE was accepted: the ledger did not protect its records")
            held = False
        except psycopg.Error as error:
            print(f"UPDATE refused: SQLSTATE {error.sqlstate}: {error.diag.message_primary}")
            held = held and error.sqlstate == "23001"

        problems = conn.execute("SELECT * FROM ledger.verify('payments')").fetchall()
        print(f"ledger.verify('payments'): {len(problems)} problems")
        for problem in problems:
            print(f"  {problem}")
        held = held and not problems

    print("every claim held" if held else "a claim did not hold")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
