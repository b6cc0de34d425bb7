"""payments: a ledger with one chain per account

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Creating the extension needs a superuser; where it exists already this does nothing.
    op.execute("CREATE EXTENSION IF NOT EXISTS ledger")
    op.create_table(
        "payments",
        # A ledger needs a primary key: it chains the rows already there in key order.
        sa.Column("id", sa.BigInteger, primary_key=True),  # bigserial
        sa.Column("account", sa.Text, nullable=False),  # the chain key: one chain per account
        sa.Column("amount", sa.Numeric(12, 2), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Adds seq, prev_hash and hash, the unique (account, seq) index and the triggers that compute
    # them and refuse UPDATE, DELETE and TRUNCATE.
    op.execute("SELECT ledger.enable('payments', chain_by => 'account')")


def downgrade() -> None:
    # Refused on purpose. There is no way back from ledger.enable: keeping the records is the point
    # of a ledger, so the extension refuses DROP TABLE of a ledger, and dropping or disabling its
    # triggers, to every role but a superuser. A ledger that is no longer written is ended with
    # `SELECT * FROM ledger.retire('payments', 'why')` in a migration of its own, which keeps its rows
    # verifiable.
    raise RuntimeError("payments is a ledger: its migration cannot be undone (see ledger.retire)")
