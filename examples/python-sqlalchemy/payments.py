"""Payments in the ledger table that the Alembic migration made, appended by several sessions at
once with SQLAlchemy's asyncio ORM over asyncpg.

The program adds plain ORM objects and computes no hash: the ledger's trigger gives every record its
seq, prev_hash and hash, and the ORM reads them back from the INSERT. It then checks what the ledger
promises and exits 0 only if all of it held: each chain is dense (seq 1..n) and linked (prev_hash =
the previous record's hash), an UPDATE is refused with SQLSTATE 23001, and ledger.verify finds nothing.

Run `alembic -c alembic.ini upgrade head` first. Connects from PGHOST, PGPORT, PGUSER, PGDATABASE
(and PGPASSWORD), which asyncpg reads as libpq does.
"""

import asyncio
import sys
from datetime import datetime
from decimal import Decimal

from sqlalchemy import CHAR, BigInteger, DateTime, FetchedValue, Numeric, Text, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

WORKERS = 4
APPENDS_PER_CHAIN = 10  # by each worker, to the shared chain and to its own
SHARED_CHAIN = "shared"


class Base(DeclarativeBase):
    pass


class Payment(Base):
    __tablename__ = "payments"
    # Fetch what the server fills in with the INSERT itself (RETURNING), not with a later SELECT.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    account: Mapped[str] = mapped_column(Text)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    paid_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=FetchedValue())
    # Set by the ledger's trigger on INSERT; FetchedValue tells the ORM to leave them to the server.
    seq: Mapped[int] = mapped_column(BigInteger, server_default=FetchedValue())
    prev_hash: Mapped[str | None] = mapped_column(CHAR(64), server_default=FetchedValue())
    hash: Mapped[str] = mapped_column(CHAR(64), server_default=FetchedValue())


async def append_payments(sessions: async_sessionmaker, worker: int, appended: list) -> None:
    """Appends to the shared chain and to this worker's own chain, alternately."""
    for i in range(APPENDS_PER_CHAIN):
        for account in (SHARED_CHAIN, f"worker-{worker}"):
            # One transaction per append, so the workers' appends to the shared chain interleave;
            # the ledger serialises them per chain, never across chains.
            async with sessions.begin() as session:
                payment = Payment(account=account, amount=Decimal(f"{worker}.{i:02d}"))
                session.add(payment)
            appended.append((payment.account, payment.seq, payment.prev_hash, payment.hash))


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


async def update_is_refused(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        try:
            await conn.execute(update(Payment).where(Payment.account == SHARED_CHAIN, Payment.seq == 1)
                               .values(amount=0))
        except DBAPIError as error:
            # error.orig is SQLAlchemy's DB-API wrapper, carrying the SQLSTATE; its cause is asyncpg's
            # own exception, with the server's message, detail and hint apart.
            print(f"UPDATE refused: SQLSTATE {error.orig.sqlstate}: {error.orig.__cause__.message}")
            return error.orig.sqlstate == "23001"
        print("UPDATE was accepted: the ledger did not protect its records")
        return False


async def main() -> int:
    engine = create_async_engine("postgresql+asyncpg://", pool_size=WORKERS)
    # expire_on_commit=False: the appended objects keep the seq and hash the INSERT returned.
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        appended: list = []
        await asyncio.gather(*(append_payments(sessions, n, appended) for n in range(1, WORKERS + 1)))
        print(f"appended {len(appended)} records from {WORKERS} concurrent connections")
        held = chains_are_dense_and_linked(appended)
        held = len(appended) == WORKERS * APPENDS_PER_CHAIN * 2 and held

        held = await update_is_refused(engine) and held

        async with engine.connect() as conn:
            problems = (await conn.execute(text("SELECT * FROM ledger.verify('payments')"))).all()
        print(f"ledger.verify('payments'): {len(problems)} problems")
        for problem in problems:
            print(f"  {tuple(problem)}")
        held = held and not problems
    finally:
        await engine.dispose()

    print("every claim held" if held else "a claim did not hold")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
