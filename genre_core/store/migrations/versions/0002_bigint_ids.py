"""64-bit row ids on every server database.

SQLite's ``INTEGER PRIMARY KEY`` is already its 64-bit rowid; PostgreSQL's ``integer`` (and the
sequence behind it) stops at 2,147,483,647, which a fleet's rate-limit log (a row per vote) could
reach. Ids and the columns pointing at them become ``bigint``, sequences included.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

IDS = ("clips", "votes", "reviews", "vote_log")
REFERENCES = (("votes", "clip_id"), ("reviews", "clip_id"))


def _change(to: type[sa.types.TypeEngine], sequence_type: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        return
    for table in IDS:
        op.alter_column(table, "id", type_=to, existing_nullable=False)
        if bind.dialect.name == "postgresql":
            sequence = bind.scalar(sa.text(f"SELECT pg_get_serial_sequence('{table}', 'id')"))
            if sequence:
                op.execute(f"ALTER SEQUENCE {sequence} AS {sequence_type}")
    for table, column in REFERENCES:
        op.alter_column(table, column, type_=to, existing_nullable=False)


def upgrade() -> None:
    _change(sa.BigInteger, "bigint")


def downgrade() -> None:
    _change(sa.Integer, "integer")
