"""The community label store: clips the bot answered, what people said of them, what counts.

A real database through SQLAlchemy 2 (async): a SQLite file by default, any server database by
changing one URL. The schema is versioned by Alembic and upgraded on open. Every write is one
transaction: once a method returns, what it wrote survives a ``kill -9`` (SQLite in WAL mode
with ``synchronous=FULL``).

What counts for training (:meth:`LabelStore.training_examples`), per clip, first that applies:

1. an admin's label (``/label``);
2. corrections an admin accepted (``/labels review``);
3. a genre that ``votes_to_accept`` different people gave it ("Right" counts for the genre the
   bot answered), unless an admin rejected it.

Votes name a genre the bot knows or an admin added; a person's own word ("something else")
counts only once an admin accepts it (which adds it as a genre).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import secrets
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import selectinload

from genre_core import metrics
from genre_core.errors import GenreError
from genre_core.store.schema import GENRE_CHARS, Clip, Genre, Meta, Review, Vote, VoteLog

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VOTE_KINDS = ("right", "genre", "not_music", "other")
#: The file listing the examples handed to the training process.
MANIFEST = "manifest.json"
#: The label a "not music" verdict carries in counts and exports.
NOT_MUSIC = "not music"
#: PostgreSQL: the longest any statement may run before the server cancels it.
STATEMENT_TIMEOUT_S = 30.0
#: PostgreSQL: the advisory lock held while the schema is upgraded (any fixed number).
MIGRATION_LOCK = 0x6E7265


class StoreError(GenreError):
    """The label database could not do what was asked; nothing was written."""

    code = "store"


class StoreBusyError(StoreError):
    code = "store_busy"


class StoreFullError(StoreError):
    code = "store_full"


class VoteError(GenreError):
    """A vote or label that cannot be taken (unknown clip, expired, unknown genre, too fast)."""

    code = "vote"


@dataclass(frozen=True)
class NewClip:
    """What is stored of an answered clip."""

    guild_id: int | None
    channel_id: int | None
    uploader_id: int
    source: str
    filename: str
    audio_sha256: str
    model_version: str
    model_family: str
    predicted: str | None
    probabilities: dict[str, float]
    unsure: bool = False
    featurizer: str | None = None
    features: bytes | None = None
    audio: bytes | None = None
    audio_s: float = 0.0


@dataclass(frozen=True)
class Example:
    """A clip that counts for training, with its right answers."""

    clip_id: int
    uploader_id: int
    genres: frozenset[str]
    reason: str  # admin, accepted, agreed
    featurizer: str | None
    features: bytes | None
    audio: bytes | None


@dataclass(frozen=True)
class Pending:
    """A correction waiting for an admin: ``voters`` people said clip ``clip_id`` is ``genre``."""

    clip_id: int
    genre: str
    voters: int
    predicted: str | None
    filename: str
    uploader_id: int


def normalise_genre(name: str) -> str:
    """How a genre name is stored: trimmed, lower case, single spaces."""
    return " ".join(name.strip().lower().split())[:GENRE_CHARS]


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; every one stored here is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class LabelStore:
    """The label database. Open with :meth:`open`; every method is one transaction.

    Parameters
    ----------
    engine : AsyncEngine
    votes_to_accept : int
        Different people who must give a clip the same genre before it counts.
    vote_rate, vote_window_s : int, float
        At most ``vote_rate`` votes per person per ``vote_window_s`` seconds.
    keep_days : float
        Clips that count for nothing are deleted this long after they were answered.
    """

    def __init__(self, engine: AsyncEngine, *, votes_to_accept: int = 2, vote_rate: int = 20,
                 vote_window_s: float = 600.0, keep_days: float = 90.0) -> None:
        self.engine = engine
        self.votes_to_accept = votes_to_accept
        self.vote_rate = vote_rate
        self.vote_window_s = vote_window_s
        self.keep_days = keep_days
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._key = b""

    @classmethod
    async def open(cls, url: str, *, busy_timeout_s: float = 5.0, **settings: Any) -> LabelStore:
        """Connect to ``url``, bring its schema up to date, and load the signing key.
        ``busy_timeout_s``: how long a write waits for another program's lock on a SQLite file
        before it is refused."""
        engine = create_engine(url, busy_timeout_s)
        store = cls(engine, **settings)
        # One transaction: on PostgreSQL the migration's lock covers making the key too, so
        # bots starting together on one new database agree on it.
        async with store._errors(), engine.begin() as connection:
            await connection.run_sync(upgrade_schema)
            store._key = (await store._signing_key(connection)).encode()
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    # --- component ids -------------------------------------------------------------------------

    def sign(self, *parts: object) -> str:
        """A short signature of ``parts``: component ids carry it, so that a forged id (another
        clip's number typed in) is refused."""
        text = ":".join(str(p) for p in parts).encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:12]

    def verify(self, signature: str, *parts: object) -> bool:
        return hmac.compare_digest(self.sign(*parts), signature)

    # --- clips and votes ----------------------------------------------------------------------

    async def add_clip(self, new: NewClip) -> int:
        """Store an answered clip; returns its id."""
        async with self._session() as session:
            clip = Clip(**new.__dict__, created_at=_now())
            session.add(clip)
            await session.flush()
            return clip.id

    async def get_clip(self, clip_id: int) -> Clip | None:
        async with self._session() as session:
            return await session.get(Clip, clip_id)

    async def vote(self, clip_id: int, user_id: int, kind: str, genre: str | None = None,
                   *, known_genres: Iterable[str] = (), admin: bool = False) -> bool:
        """Record (or change) ``user_id``'s word on a clip. Returns whether it replaced an
        earlier vote.

        ``genre`` must be one of ``known_genres`` or an added genre for ``kind="genre"``; for
        ``"other"`` it is the person's own word (an admin may add it as a genre later).
        """
        if kind not in VOTE_KINDS:
            raise VoteError(f"Unknown kind of vote {kind!r}.")
        async with self._session() as session:
            clip = await self._live_clip(session, clip_id)
            genre = await self._checked_genre(session, kind, genre, clip, known_genres)
            if not admin:
                await self._check_rate(session, user_id)
            now = _now()
            vote = await session.scalar(
                select(Vote).where(Vote.clip_id == clip_id, Vote.user_id == user_id)
            )
            changed = vote is not None
            if vote is None:
                vote = Vote(clip_id=clip_id, user_id=user_id, created_at=now)
                session.add(vote)
            vote.kind, vote.genre, vote.admin = kind, genre, admin or bool(vote.admin)
            vote.model_version, vote.updated_at = clip.model_version, now
        metrics.LABEL_VOTES.labels(kind=kind).inc()  # here: only once it is committed
        return changed

    async def _live_clip(self, session: AsyncSession, clip_id: int) -> Clip:
        clip = await session.get(Clip, clip_id)
        if clip is None:
            raise VoteError("That clip is no longer stored (it was deleted or has expired).")
        if _aware(clip.created_at) < _now() - timedelta(days=self.keep_days) and not (
            await self._examples(session, [clip.id])
        ):
            raise VoteError("That clip has expired: votes are taken for "
                            f"{self.keep_days:g} days after the answer.")
        return clip

    async def _checked_genre(self, session: AsyncSession, kind: str, genre: str | None,
                             clip: Clip, known: Iterable[str]) -> str | None:
        if kind == "right":
            return clip.predicted
        if kind == "not_music":
            return None
        name = normalise_genre(genre or "")
        if not name:
            raise VoteError("Name the genre.")
        return await self._known(session, name, known) if kind == "genre" else name

    async def _check_rate(self, session: AsyncSession, user_id: int) -> None:
        """Refuse a vote beyond ``vote_rate`` per window (changes count), else log it."""
        now = _now()
        since = now - timedelta(seconds=self.vote_window_s)
        await session.execute(delete(VoteLog).where(VoteLog.user_id == user_id,
                                                    VoteLog.at < since))
        recent = await session.scalar(
            select(func.count()).select_from(VoteLog).where(VoteLog.user_id == user_id)
        )
        if (recent or 0) >= self.vote_rate:
            minutes = max(1, round(self.vote_window_s / 60))
            raise VoteError(f"That's a lot of votes: at most {self.vote_rate} every {minutes} "
                            "minutes. Try again a little later.")
        session.add(VoteLog(user_id=user_id, at=now))

    async def check_genre(self, genre: str, known_genres: Iterable[str]) -> str:
        """``genre`` as stored, if it is one of ``known_genres`` or an added genre."""
        async with self._session() as session:
            return await self._known(session, genre, known_genres)

    async def _known(self, session: AsyncSession, genre: str, known: Iterable[str]) -> str:
        name = normalise_genre(genre)
        if name not in set(known) | set(await self._added(session)):
            raise VoteError(f"I don't know the genre {name!r}. Use one of the bot's genres, or "
                            "ask an admin to add it (`/labels genre-add`).")
        return name

    async def label(self, new: NewClip, admin_id: int, genre: str,
                    known_genres: Iterable[str]) -> int:
        """An admin's labelled clip: stored with the admin's label in one transaction."""
        async with self._session() as session:
            name = await self._known(session, genre, known_genres)
            now = _now()
            clip = Clip(**new.__dict__, created_at=now)
            session.add(clip)
            await session.flush()
            session.add(Vote(clip_id=clip.id, user_id=admin_id, kind="genre", genre=name,
                             admin=True, model_version=new.model_version, created_at=now,
                             updated_at=now))
            return clip.id

    # --- admins ---------------------------------------------------------------------------------

    async def add_genre(self, name: str, admin_id: int) -> str:
        name = normalise_genre(name)
        if not name or not all(c.isalnum() or c in " -&'/" for c in name):
            raise VoteError("A genre name is letters, digits, spaces, and - & ' / only.")
        async with self._session() as session:
            if await session.get(Genre, name) is None:
                session.add(Genre(name=name, added_by=admin_id, added_at=_now()))
            return name

    async def added_genres(self) -> list[str]:
        async with self._session() as session:
            return await self._added(session)

    async def _added(self, session: AsyncSession) -> list[str]:
        return list(await session.scalars(select(Genre.name).order_by(Genre.name)))

    async def review(self, clip_id: int, genre: str, accept: bool, admin_id: int) -> None:
        """Accept or reject "clip ``clip_id`` is ``genre``" (a later decision replaces one)."""
        async with self._session() as session:
            if await session.get(Clip, clip_id) is None:
                raise VoteError("That clip is no longer stored.")
            genre = normalise_genre(genre)
            review = await session.scalar(
                select(Review).where(Review.clip_id == clip_id, Review.genre == genre)
            )
            if review is None:
                review = Review(clip_id=clip_id, genre=genre)
                session.add(review)
            review.state = "accepted" if accept else "rejected"
            review.admin_id, review.decided_at = admin_id, _now()

    async def pending(self, guild_id: int | None, limit: int = 10) -> list[Pending]:
        """Corrections nobody reviewed yet that do not count by themselves, most voted first."""
        async with self._session() as session:
            clips = await self._clips(session, guild_id)
            counted = {e.clip_id for e in self._rules(clips)}
            out = []
            for clip in clips:
                if clip.id in counted:
                    continue
                decided = {r.genre for r in clip.reviews}
                tally = Counter(v.genre for v in clip.votes
                                if v.kind in ("genre", "other") and v.genre != clip.predicted)
                out += [Pending(clip.id, genre, n, clip.predicted, clip.filename,
                                clip.uploader_id)
                        for genre, n in tally.items() if genre and genre not in decided]
            return sorted(out, key=lambda p: (-p.voters, p.clip_id))[:limit]

    async def counts(self, guild_id: int | None) -> dict[str, Counter[str]]:
        """Clips per state (``admin``, ``accepted``, ``agreed``, ``pending``, ``rejected``,
        ``unlabelled``) and genre."""
        async with self._session() as session:
            clips = await self._clips(session, guild_id)
            examples = {e.clip_id: e for e in self._rules(clips)}
            out: dict[str, Counter[str]] = defaultdict(Counter)
            for clip in clips:
                if clip.id in examples:
                    example = examples[clip.id]
                    for genre in example.genres or {NOT_MUSIC}:
                        out[example.reason][genre] += 1
                    continue
                rejected = {r.genre for r in clip.reviews if r.state == "rejected"}
                voted = {v.genre or NOT_MUSIC for v in clip.votes} - rejected
                for genre in voted:
                    out["pending"][genre] += 1
                for genre in rejected:
                    out["rejected"][genre] += 1
                if not clip.votes:
                    out["unlabelled"][clip.predicted or NOT_MUSIC] += 1
            return dict(out)

    async def training_examples(self, guild_id: int | None = None) -> list[Example]:
        """Every clip that counts for training (see the module's rules); ``not music`` ones have
        an empty genre set."""
        async with self._session() as session:
            clips = await self._clips(session, guild_id)
            return self._rules(clips)

    async def _examples(self, session: AsyncSession, clip_ids: list[int]) -> list[Example]:
        clips = list(await session.scalars(
            select(Clip).where(Clip.id.in_(clip_ids))
            .options(selectinload(Clip.votes), selectinload(Clip.reviews))
        ))
        return self._rules(clips)

    def _rules(self, clips: Iterable[Clip]) -> list[Example]:
        out = []
        for clip in clips:
            genres, reason = self._label_of(clip)
            if reason:
                out.append(Example(clip.id, clip.uploader_id, frozenset(genres), reason,
                                   clip.featurizer, clip.features, clip.audio))
        return out

    def _label_of(self, clip: Clip) -> tuple[set[str], str | None]:
        admin = [v for v in clip.votes if v.admin]
        if admin:
            latest = max(admin, key=lambda v: _aware(v.updated_at))
            return ({latest.genre} if latest.genre else set()), "admin"
        accepted = {r.genre for r in clip.reviews if r.state == "accepted"}
        if accepted:
            return accepted - {NOT_MUSIC}, "accepted"
        rejected = {r.genre for r in clip.reviews if r.state == "rejected"}
        tally = Counter(v.genre or NOT_MUSIC for v in clip.votes
                        if v.kind in ("right", "genre", "not_music"))
        agreed = {g for g, n in tally.items() if n >= self.votes_to_accept} - rejected
        if agreed:
            return agreed - {NOT_MUSIC}, "agreed"
        return set(), None

    async def _clips(self, session: AsyncSession, guild_id: int | None) -> list[Clip]:
        query = select(Clip).options(selectinload(Clip.votes), selectinload(Clip.reviews))
        if guild_id is not None:
            query = query.where(Clip.guild_id == guild_id)
        return list(await session.scalars(query.order_by(Clip.id)))

    # --- export and deletion ---------------------------------------------------------------------

    async def export(self, guild_id: int | None) -> list[dict[str, Any]]:
        """One record per clip: what the bot said, every vote, reviews, and what counts."""
        async with self._session() as session:
            clips = await self._clips(session, guild_id)
            examples = {e.clip_id: e for e in self._rules(clips)}
            return [{
                "clip_id": c.id, "guild_id": c.guild_id, "uploader_id": c.uploader_id,
                "source": c.source, "filename": c.filename,
                "created_at": _aware(c.created_at).isoformat(timespec="seconds"),
                "model_version": c.model_version, "predicted": c.predicted,
                "probabilities": c.probabilities,
                "label": sorted(examples[c.id].genres or {NOT_MUSIC}) if c.id in examples else [],
                "label_reason": examples[c.id].reason if c.id in examples else None,
                "votes": [{"user_id": v.user_id, "kind": v.kind, "genre": v.genre,
                           "admin": v.admin, "model_version": v.model_version,
                           "at": _aware(v.updated_at).isoformat(timespec="seconds")}
                          for v in c.votes],
                "reviews": [{"genre": r.genre, "state": r.state, "admin_id": r.admin_id}
                            for r in c.reviews],
            } for c in clips]

    async def delete_clip(self, clip_id: int, guild_id: int | None) -> bool:
        async with self._session() as session:
            query = delete(Clip).where(Clip.id == clip_id)
            if guild_id is not None:
                query = query.where(Clip.guild_id == guild_id)
            return bool((await session.execute(query)).rowcount)

    async def delete_user(self, user_id: int, guild_id: int | None = None) -> tuple[int, int]:
        """Delete a person's votes and the clips they uploaded (in ``guild_id``, or
        everywhere). Returns (votes, clips) deleted."""
        async with self._session() as session:
            in_guild = select(Clip.id)
            if guild_id is not None:
                in_guild = in_guild.where(Clip.guild_id == guild_id)
            votes = (await session.execute(
                delete(Vote).where(Vote.user_id == user_id, Vote.clip_id.in_(in_guild))
            )).rowcount
            uploads = delete(Clip).where(Clip.uploader_id == user_id)
            if guild_id is not None:
                uploads = uploads.where(Clip.guild_id == guild_id)
            clips = (await session.execute(uploads)).rowcount
            return int(votes or 0), int(clips or 0)

    async def purge_expired(self) -> int:
        """Delete clips older than ``keep_days`` that count for nothing; returns how many."""
        cutoff = _now() - timedelta(days=self.keep_days)
        async with self._session() as session:
            old = list(await session.scalars(
                select(Clip).where(Clip.created_at < cutoff)
                .options(selectinload(Clip.votes), selectinload(Clip.reviews))
            ))
            keep = {e.clip_id for e in self._rules(old)}
            doomed = [c.id for c in old if c.id not in keep]
            if doomed:
                await session.execute(delete(Clip).where(Clip.id.in_(doomed)))
            return len(doomed)

    # --- plumbing ---------------------------------------------------------------------------

    async def _signing_key(self, connection: AsyncConnection) -> str:
        """The key, made on first open, in ``connection``'s transaction."""
        async with AsyncSession(bind=connection) as session:
            row = await session.get(Meta, "signing_key")
            if row is None:
                row = Meta(key="signing_key", value=secrets.token_hex(32))
                session.add(row)
                await session.flush()
            return row.value

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        async with self._errors(), self._sessions.begin() as session:
            yield session

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Database failures as answers a person can read; nothing half-written."""
        try:
            yield
        except IntegrityError as exc:
            metrics.LABEL_STORE_ERRORS.labels(reason=StoreBusyError.code).inc()
            raise StoreBusyError("Someone else changed this at the same moment. Try again.") \
                from exc
        except DBAPIError as exc:
            error = _translate(exc)
            metrics.LABEL_STORE_ERRORS.labels(reason=error.code).inc()
            raise error from exc
        except OSError as exc:  # a server that cannot be reached (refused, timed out)
            metrics.LABEL_STORE_ERRORS.labels(reason=StoreError.code).inc()
            raise StoreError("The label database cannot be reached, so nothing was recorded. "
                             "An admin can find the reason in the bot's log.") from exc


#: PostgreSQL's error codes (SQLSTATE) that mean "try again in a moment": a lock not granted
#: within ``lock_timeout``, a statement cancelled by ``statement_timeout``, a serialization
#: failure or deadlock (the transaction was rolled back whole), too many connections.
PG_BUSY = {"55P03", "57014", "40001", "40P01", "53300"}
#: ... and those that mean the server ran out of room: disk full, out of memory, other
#: "insufficient resources".
PG_FULL = {"53100", "53200", "53000"}


def _translate(exc: DBAPIError) -> StoreError:
    """The friendly error for a driver's error: SQLite says it in words, PostgreSQL in codes."""
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    text = str(exc.orig).lower()
    if state in PG_BUSY or (state is None and ("locked" in text or "busy" in text)):
        return StoreBusyError("The label database is busy (locked by another program), so "
                              "nothing was recorded. Try again in a moment.")
    if state in PG_FULL or (state is None and ("full" in text or "no space" in text)):
        return StoreFullError("The label database's disk is full, so nothing was recorded. "
                              "An admin needs to free some space.")
    return StoreError("The label database failed, so nothing was recorded. "
                      "An admin can find the reason in the bot's log.")


def create_engine(url: str, busy_timeout_s: float = 5.0) -> AsyncEngine:
    """An async engine for ``url``; SQLite files get their folder, WAL, full sync and foreign
    keys (SQLite leaves those off)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "asyncpg":
        # A write waits at most ``busy_timeout_s`` for a lock another session holds (as SQLite's
        # busy timeout), and no statement runs away with a connection; the server cancels
        # either with a code that _translate reads as "busy". Connecting gets the same bound
        # twice over, so a vote on an unreachable server is answered in words, not hung.
        settings = {"lock_timeout": str(int(busy_timeout_s * 1000)),
                    "statement_timeout": str(int(STATEMENT_TIMEOUT_S * 1000))}
        return create_async_engine(url, pool_pre_ping=True, connect_args={
            "server_settings": settings, "timeout": max(2 * busy_timeout_s, 3.0)})
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return engine


def upgrade_schema(connection: Any) -> None:
    """Run Alembic's migrations up to the newest on a (sync) connection."""
    from alembic import command
    from alembic.config import Config

    if connection.dialect.name == "postgresql":
        # Several bots may start at once on one database: one upgrades, the others wait for
        # it (the lock ends with the transaction) and then find nothing to do.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def to_jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


def to_csv(records: list[dict[str, Any]]) -> bytes:
    """One row per vote (a clip without votes gets one row with empty vote columns)."""
    columns = ["clip_id", "guild_id", "uploader_id", "source", "filename", "created_at",
               "model_version", "predicted", "label", "label_reason", "voter_id", "vote",
               "vote_genre", "admin", "voted_at"]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns)
    writer.writeheader()
    for r in records:
        base = {k: r[k] for k in columns[:8]} | {"label": ";".join(r["label"]),
                                                 "label_reason": r["label_reason"] or ""}
        for v in r["votes"] or [None]:
            vote = {} if v is None else {"voter_id": v["user_id"], "vote": v["kind"],
                                         "vote_genre": v["genre"] or "", "admin": v["admin"],
                                         "voted_at": v["at"]}
            writer.writerow(base | vote)
    return out.getvalue().encode()


def write_examples(directory: Path, examples: Iterable[Example]) -> int:
    """Write :class:`Example` s for the training process (which reads them with
    :func:`genre_core.training.community.read_examples`): ``manifest.json``, and per clip its
    feature rows (``<id>.npy``) and kept audio (``<id>.ogg``). Returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    manifest = []
    for example in examples:
        entry = {"clip_id": example.clip_id, "uploader_id": example.uploader_id,
                 "genres": sorted(example.genres), "reason": example.reason,
                 "featurizer": example.featurizer}
        if example.features:
            (directory / f"{example.clip_id}.npy").write_bytes(example.features)
        if example.audio:
            (directory / f"{example.clip_id}.ogg").write_bytes(example.audio)
        manifest.append(entry)
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return len(manifest)
