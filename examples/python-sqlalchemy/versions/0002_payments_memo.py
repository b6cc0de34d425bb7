"""payments: a memo on each payment

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain column addition, as the table's owner may make it on a ledger: records appended from
    # now on cover the memo in their hash wherever they have one; the records already there verify
    # as before. No server_default: PostgreSQL would show it on the old records, which were hashed
    # without it, so the ledger refuses that (set a default in a later step if one is wanted).
    op.add_column("payments", sa.Column("memo", sa.Text(), nullable=True))


def downgrade() -> None:
    # Dropping a hashed column would leave every record that has a memo unverifiable: the ledger
    # refuses it (see 0001's downgrade for ending a ledger instead).
    raise RuntimeError("payments is a ledger: its memo column cannot be undone (records hash it)")
