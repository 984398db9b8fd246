"""The label store on a real SQLite file and a real PostgreSQL server: its rules and migrations
on both; what survives a crash, a lock held by another program, and a full disk on SQLite (their
PostgreSQL counterparts are in test_label_store_postgres.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import LargeBinary, event, inspect, update

from genre_core.store.labels import (
    LabelStore,
    NewClip,
    StoreBusyError,
    StoreFullError,
    VoteError,
)
from genre_core.store.schema import Clip

if TYPE_CHECKING:  # imported by pytest as a plugin (below), not here: its asserts get rewritten
    from fleet_servers import PostgresServer

pytest_plugins = ("fleet_servers",)

KNOWN = ["jazz", "rock", "pop"]
ROOT = Path(__file__).resolve().parents[1]

#: ``await database(name)``: the URL of this test's database ``name``, empty the first time.
Database = Callable[..., Awaitable[str]]


def url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def new_clip(uploader: int = 10, guild: int = 1, predicted: str | None = "jazz",
             audio: bytes | None = None) -> NewClip:
    return NewClip(guild_id=guild, channel_id=2, uploader_id=uploader, source="drop",
                   filename="a.mp3", audio_sha256="0" * 64, model_version="v1",
                   model_family="musicnn", predicted=predicted,
                   probabilities={"jazz": 0.7, "rock": 0.2, "pop": 0.1}, audio=audio)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """The same tests on a SQLite file and on a PostgreSQL server (a fresh database per name)."""
    if request.param == "sqlite":
        async def sqlite_file(name: str = "labels") -> str:
            return url(tmp_path / f"{name}.db")

        return sqlite_file
    server: PostgresServer = request.getfixturevalue("postgres_server")
    made: dict[str, str] = {}

    async def postgres_database(name: str = "labels") -> str:
        if name not in made:
            made[name] = server.url(await server.create_database())
        return made[name]

    return postgres_database


@pytest.fixture
async def store(database: Database):  # type: ignore[no-untyped-def]
    opened = await LabelStore.open(await database(), votes_to_accept=2)
    yield opened
    await opened.close()


async def test_what_counts_for_training_follows_the_rules(store: LabelStore) -> None:
    agreed, lonely, admin_over_votes, rejected, accepted = [
        await store.add_clip(new_clip()) for _ in range(5)]
    for user in (20, 21):
        await store.vote(agreed, user, "genre", "rock", known_genres=KNOWN)
        await store.vote(admin_over_votes, user, "genre", "rock", known_genres=KNOWN)
        await store.vote(rejected, user, "genre", "pop", known_genres=KNOWN)
    await store.vote(lonely, 20, "genre", "rock", known_genres=KNOWN)
    await store.vote(accepted, 20, "genre", "pop", known_genres=KNOWN)
    await store.vote(admin_over_votes, 99, "genre", "jazz", known_genres=KNOWN, admin=True)
    await store.review(rejected, "pop", accept=False, admin_id=99)
    await store.review(accepted, "pop", accept=True, admin_id=99)

    examples = {e.clip_id: (set(e.genres), e.reason) for e in await store.training_examples()}
    assert examples == {agreed: ({"rock"}, "agreed"), admin_over_votes: ({"jazz"}, "admin"),
                        accepted: ({"pop"}, "accepted")}
    pending = await store.pending(1)
    assert [(p.clip_id, p.genre, p.voters) for p in pending] == [(lonely, "rock", 1)]
    counts = await store.counts(1)
    assert counts["agreed"]["rock"] == 1 and counts["rejected"]["pop"] == 1
    assert counts["pending"]["rock"] == 1


async def test_right_counts_for_the_answer_and_one_person_has_one_vote(store: LabelStore) -> None:
    clip = await store.add_clip(new_clip(predicted="jazz"))
    assert await store.vote(clip, 20, "right") is False
    assert await store.vote(clip, 20, "genre", "rock", known_genres=KNOWN) is True  # changed
    await store.vote(clip, 21, "right")
    assert await store.training_examples() == []  # jazz 1, rock 1: no agreement
    await store.vote(clip, 20, "right")
    [example] = await store.training_examples()
    assert example.genres == {"jazz"}


async def test_bad_votes_are_refused_with_a_reason(database: Database) -> None:
    store = await LabelStore.open(await database(), vote_rate=3, vote_window_s=60)
    clip = await store.add_clip(new_clip())
    with pytest.raises(VoteError, match="don't know the genre"):
        await store.vote(clip, 20, "genre", "polka", known_genres=KNOWN)
    with pytest.raises(VoteError, match="no longer stored"):
        await store.vote(clip + 100, 20, "right")
    for _ in range(3):
        await store.vote(clip, 20, "right")
    with pytest.raises(VoteError, match="a lot of votes"):
        await store.vote(clip, 20, "right")
    await store.vote(clip, 21, "right")  # another person is not held back
    # A name an admin added can be voted for; a person's own word is kept as "other".
    await store.add_genre(" Polka ", admin_id=99)
    await store.vote(clip, 22, "genre", "polka", known_genres=KNOWN)
    await store.vote(clip, 23, "other", "Gabber House")
    kinds = {v["user_id"]: (v["kind"], v["genre"]) for v in (await store.export(1))[0]["votes"]}
    assert kinds[22] == ("genre", "polka") and kinds[23] == ("other", "gabber house")
    await store.close()


async def test_expired_clips_are_refused_and_purged_unless_they_count(database: Database
                                                                      ) -> None:
    store = await LabelStore.open(await database(), keep_days=30)
    useful, useless = await store.add_clip(new_clip()), await store.add_clip(new_clip())
    await store.vote(useful, 99, "genre", "rock", known_genres=KNOWN, admin=True)
    old = datetime.now(UTC) - timedelta(days=31)
    async with store.engine.begin() as connection:
        await connection.execute(update(Clip).values(created_at=old))
    with pytest.raises(VoteError, match="expired"):
        await store.vote(useless, 20, "right")
    assert await store.purge_expired() == 1
    assert await store.get_clip(useless) is None and await store.get_clip(useful) is not None
    await store.close()


async def test_deleting_a_person_is_scoped_and_erasing_oneself_is_everywhere(
    store: LabelStore,
) -> None:
    here, there = await store.add_clip(new_clip(guild=1)), await store.add_clip(new_clip(guild=2))
    mine = await store.add_clip(new_clip(uploader=20, guild=2))
    for clip in (here, there):
        await store.vote(clip, 20, "right")
    assert await store.delete_user(20, guild_id=1) == (1, 0)
    assert await store.delete_user(20) == (1, 1)
    assert await store.get_clip(mine) is None and await store.get_clip(there) is not None
    assert all(not r["votes"] for r in await store.export(None))
    assert await store.delete_clip(there, guild_id=1) is False  # not this server's clip
    assert await store.delete_clip(there, guild_id=2) is True


async def test_signatures_are_stable_across_opens_and_refuse_other_ids(database: Database
                                                                       ) -> None:
    first = await LabelStore.open(await database())
    signature = first.sign("ok", 7)
    await first.close()
    again = await LabelStore.open(await database())
    assert again.verify(signature, "ok", 7)
    assert not again.verify(signature, "ok", 8) and not again.verify(signature, "no", 7)
    await again.close()
    other = await LabelStore.open(await database("other"))  # another database: another key
    assert not other.verify(signature, "ok", 7)
    await other.close()


async def test_the_schema_is_versioned_by_alembic(database: Database) -> None:
    store = await LabelStore.open(await database())
    await store.close()
    again = await LabelStore.open(await database())  # an up-to-date schema is left alone
    async with again.engine.connect() as connection:
        version = (await connection.exec_driver_sql(
            "SELECT version_num FROM alembic_version")).scalar_one()
        tables, clips = await connection.run_sync(
            lambda sync: (set(inspect(sync).get_table_names()),
                          {c["name"]: c["type"] for c in inspect(sync).get_columns("clips")}))
        dialect = connection.dialect.name
    await again.close()
    assert version == "0002"
    assert {"clips", "votes", "reviews", "genres", "vote_log", "meta"} <= tables
    if dialect == "postgresql":  # the server's own types, not text stand-ins
        assert str(clips["id"]) == "BIGINT"
        assert isinstance(clips["audio"], LargeBinary)  # bytea
        assert str(clips["guild_id"]) == "BIGINT" and str(clips["probabilities"]) == "JSON"
        assert clips["created_at"].timezone is True  # timestamptz


async def test_values_come_back_as_they_went_in(store: LabelStore) -> None:
    # Discord ids need 64 bits; audio is arbitrary bytes; times are UTC-aware.
    snowflake = 1_234_567_890_123_456_789
    audio = bytes(range(256)) * 4
    clip_id = await store.add_clip(new_clip(uploader=snowflake, guild=snowflake, audio=audio))
    await store.vote(clip_id, snowflake + 1, "right")
    clip = await store.get_clip(clip_id)
    assert clip is not None and clip.audio == audio and clip.uploader_id == snowflake
    assert clip.probabilities == {"jazz": 0.7, "rock": 0.2, "pop": 0.1}
    [record] = await store.export(snowflake)
    assert record["votes"][0]["user_id"] == snowflake + 1
    created = datetime.fromisoformat(record["created_at"])
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created) < timedelta(minutes=5)


async def test_row_ids_go_past_32_bits(store: LabelStore) -> None:
    # A fleet's rate-limit log takes a row per vote: ids must not stop at 2**31 - 1.
    first = await store.add_clip(new_clip())
    async with store.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            for table in ("clips", "vote_log", "votes"):
                await connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 3000000000)")
        else:  # SQLite numbers new rows past the largest rowid
            await connection.execute(update(Clip).where(Clip.id == first).values(id=3_000_000_000))
    big = await store.add_clip(new_clip())
    assert big > 2**31
    await store.vote(big, 20, "right")
    await store.vote(big, 21, "right")
    [example] = await store.training_examples()
    assert example.clip_id == big


async def test_a_database_locked_by_another_program_is_refused_in_words(tmp_path: Path) -> None:
    store = await LabelStore.open(url(tmp_path / "l.db"), busy_timeout_s=0.2)
    clip = await store.add_clip(new_clip())
    holder = sqlite3.connect(tmp_path / "l.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreBusyError, match="busy"):
            await store.vote(clip, 20, "right")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.vote(clip, 20, "right")  # works again once the lock is gone
    await store.close()


async def test_a_full_disk_is_refused_in_words_and_loses_nothing_written(tmp_path: Path) -> None:
    store = await LabelStore.open(url(tmp_path / "l.db"))
    kept = await store.add_clip(new_clip())
    await store.vote(kept, 20, "right")
    await store.engine.dispose()

    # SQLite's max_page_count makes the file "full" exactly as a full disk does (SQLITE_FULL).
    @event.listens_for(store.engine.sync_engine, "connect")
    def _cap(connection, _record):  # type: ignore[no-untyped-def]
        cursor = connection.cursor()
        cursor.execute("PRAGMA page_count")
        cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0]}")

    with pytest.raises(StoreFullError, match="full"):
        await store.add_clip(new_clip(audio=os.urandom(200_000)))
    await store.close()
    again = await LabelStore.open(url(tmp_path / "l.db"))
    [record] = await again.export(None)
    assert record["clip_id"] == kept and len(record["votes"]) == 1
    await again.close()


WRITER = textwrap.dedent("""
    import asyncio, sys
    from genre_core.store.labels import LabelStore, NewClip

    async def main():
        store = await LabelStore.open(sys.argv[1], vote_rate=10**9)
        clip = NewClip(1, 2, 10, "drop", "a.mp3", "0" * 64, "v1", "musicnn", "jazz",
                       {"jazz": 1.0}, audio=b"x" * 30000)
        i = 0
        while True:
            clip_id = await store.add_clip(clip)
            await store.vote(clip_id, i, "right")
            print(clip_id, flush=True)  # acknowledged: both writes returned
            i += 1

    asyncio.run(main())
""")


def test_kill_9_mid_write_loses_nothing_acknowledged(tmp_path: Path) -> None:
    database = tmp_path / "l.db"
    for stop_after in (5, 40):
        child = subprocess.Popen([sys.executable, "-c", WRITER, url(database)],
                                 stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert child.stdout is not None
        acknowledged = [int(child.stdout.readline()) for _ in range(stop_after)]
        os.kill(child.pid, signal.SIGKILL)  # mid-write: it is always writing
        child.wait()
        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            clips = {r[0] for r in db.execute("SELECT id FROM clips")}
            voted = {r[0] for r in db.execute("SELECT clip_id FROM votes")}
        assert set(acknowledged) <= clips and set(acknowledged) <= voted


async def test_two_stores_on_one_database_see_each_others_writes(database: Database) -> None:
    one = await LabelStore.open(await database())
    two = await LabelStore.open(await database())
    clip = await one.add_clip(new_clip())
    await asyncio.gather(two.vote(clip, 20, "right"), one.vote(clip, 21, "right"))
    assert len(await one.training_examples()) == 1
    await one.close()
    await two.close()
