"""The label store's tables: answered clips, votes on them, admins' reviews, added genres.

What is kept is what lets a clip be learned from and analysed again (its windows' feature rows,
the analysed audio compressed), and who said what and when. Never message text or tokens.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Longest genre name (ours, an admin's, or a user's "something else").
GENRE_CHARS = 40
#: Row ids: 64-bit everywhere (migration 0002); on SQLite an INTEGER primary key, which is its
#: 64-bit rowid and the only type it numbers by itself.
ID = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class Clip(Base):
    """One answered clip: what the model said, and what lets it be learned from later."""

    __tablename__ = "clips"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    uploader_id: Mapped[int] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(String(16))  # drop, slash, menu, label
    filename: Mapped[str] = mapped_column(String(200))
    audio_sha256: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_version: Mapped[str] = mapped_column(String(64))
    model_family: Mapped[str] = mapped_column(String(32))
    predicted: Mapped[str | None] = mapped_column(String(GENRE_CHARS))  # None: "not music"
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    unsure: Mapped[bool] = mapped_column(Boolean, default=False)
    # The serving family's feature rows of the analysed windows (``numpy.save`` bytes), and
    # which featurizer made them: rows of another featurizer are re-made from the audio.
    featurizer: Mapped[str | None] = mapped_column(String(80))
    features: Mapped[bytes | None] = mapped_column(LargeBinary)
    audio: Mapped[bytes | None] = mapped_column(LargeBinary)  # Ogg/Opus of the analysed windows
    audio_s: Mapped[float] = mapped_column(Float, default=0.0)

    votes: Mapped[list[Vote]] = relationship(
        back_populates="clip", cascade="all, delete-orphan", passive_deletes=True
    )
    reviews: Mapped[list[Review]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class Vote(Base):
    """One person's word on one clip (one per person; changing it replaces it)."""

    __tablename__ = "votes"
    __table_args__ = (UniqueConstraint("clip_id", "user_id"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    clip_id: Mapped[int] = mapped_column(ID, ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    # right: the answer was right; genre: it is ``genre``; not_music; other: ``genre`` is the
    # user's own word ("something else").
    kind: Mapped[str] = mapped_column(String(16))
    genre: Mapped[str | None] = mapped_column(String(GENRE_CHARS))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)  # an admin's /label
    model_version: Mapped[str] = mapped_column(String(64))  # the model whose answer was judged
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

    clip: Mapped[Clip] = relationship(back_populates="votes")


class Review(Base):
    """An admin's decision on a correction: ``accepted`` or ``rejected``."""

    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("clip_id", "genre"),)

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    clip_id: Mapped[int] = mapped_column(ID, ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    genre: Mapped[str] = mapped_column(String(GENRE_CHARS))
    state: Mapped[str] = mapped_column(String(16))
    admin_id: Mapped[int] = mapped_column(BigInteger)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Genre(Base):
    """A genre name an admin added: it can be voted for, and joins the model once enough clips
    from enough uploaders carry it."""

    __tablename__ = "genres"

    name: Mapped[str] = mapped_column(String(GENRE_CHARS), primary_key=True)
    added_by: Mapped[int] = mapped_column(BigInteger)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VoteLog(Base):
    """When each person voted (a change counts too): the rate limit reads it; rows older than
    the limit's window are dropped as new ones come."""

    __tablename__ = "vote_log"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Meta(Base):
    """Settings the store keeps for itself (the key that signs component ids)."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))
