"""The label store: clips, votes, reviews, added genres.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clips",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("guild_id", sa.BigInteger, index=True),
        sa.Column("channel_id", sa.BigInteger),
        sa.Column("uploader_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("audio_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", TZ, nullable=False, index=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("model_family", sa.String(32), nullable=False),
        sa.Column("predicted", sa.String(40)),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("unsure", sa.Boolean, nullable=False),
        sa.Column("featurizer", sa.String(80)),
        sa.Column("features", sa.LargeBinary),
        sa.Column("audio", sa.LargeBinary),
        sa.Column("audio_s", sa.Float, nullable=False),
    )
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("clip_id", sa.Integer, sa.ForeignKey("clips.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("genre", sa.String(40)),
        sa.Column("admin", sa.Boolean, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False, index=True),
        sa.UniqueConstraint("clip_id", "user_id"),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("clip_id", sa.Integer, sa.ForeignKey("clips.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("genre", sa.String(40), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("admin_id", sa.BigInteger, nullable=False),
        sa.Column("decided_at", TZ, nullable=False),
        sa.UniqueConstraint("clip_id", "genre"),
    )
    op.create_table(
        "genres",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("added_by", sa.BigInteger, nullable=False),
        sa.Column("added_at", TZ, nullable=False),
    )
    op.create_table(
        "vote_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("at", TZ, nullable=False),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(40), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "vote_log", "genres", "reviews", "votes", "clips"):
        op.drop_table(table)
