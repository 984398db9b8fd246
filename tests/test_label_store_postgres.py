"""The label store on a real PostgreSQL server: what test_label_store.py checks on SQLite files
(a lock held by another program, a writer killed mid-write, a full disk), the server's way; bots
starting together on one new database; and the real bot voting and exporting through it.

The server is started once for the session by ``fleet_servers``; each test gets a fresh
database. The rules themselves run on both backends in test_label_store.py.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

import asyncpg
import pytest
from conftest import assert_clean
from test_community_labels import answer_text, controls, drop, fetch, private_message
from test_label_store import KNOWN, ROOT, WRITER, new_clip

from genre_core.store import labels
from genre_core.store.labels import LabelStore, StoreBusyError, StoreError, StoreFullError

if TYPE_CHECKING:
    from conftest import StartBot
    from fake_discord import FakeDiscord
    from fleet_servers import NewDatabase

pytest_plugins = ("fleet_servers",)


def dsn(url: str) -> str:
    """asyncpg's own form of a store URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def test_a_table_locked_by_another_session_is_refused_in_words_within_the_timeout(
    new_postgres_database: NewDatabase,
) -> None:
    url = await new_postgres_database()
    store = await LabelStore.open(url, busy_timeout_s=1.5)
    clip = await store.add_clip(new_clip())
    holder = await asyncpg.connect(dsn(url))
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE votes IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(StoreBusyError, match="busy"):
                await store.vote(clip, 20, "right")
            waited = time.monotonic() - started
    finally:
        await holder.close()
    # It waited for the lock (lock_timeout), then gave up: neither at once nor hanging.
    assert 1.0 <= waited < 5.0, waited
    assert not await store.vote(clip, 20, "right")  # works again; the refused one left nothing
    [record] = await store.export(None)
    assert len(record["votes"]) == 1
    await store.close()


async def test_a_runaway_statement_is_cancelled_and_refused_as_busy(
    new_postgres_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await new_postgres_database()
    monkeypatch.setattr(labels, "STATEMENT_TIMEOUT_S", 0.5)  # read when the engine is made
    store = await LabelStore.open(url)
    connection = await asyncpg.connect(dsn(url))
    await connection.execute("""
        CREATE FUNCTION slow() RETURNS trigger AS $$
        BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$ LANGUAGE plpgsql;
        CREATE TRIGGER slow BEFORE INSERT ON clips FOR EACH ROW EXECUTE FUNCTION slow();
    """)
    started = time.monotonic()
    with pytest.raises(StoreBusyError):
        await store.add_clip(new_clip())
    assert time.monotonic() - started < 5.0
    await connection.execute("DROP TRIGGER slow ON clips")
    await connection.close()
    assert await store.add_clip(new_clip()) > 0
    await store.close()


@pytest.mark.parametrize(("condition", "error", "words"), [
    ("disk_full", StoreFullError, "disk is full"),
    ("insufficient_resources", StoreFullError, "disk is full"),
    ("serialization_failure", StoreBusyError, "busy"),
    ("deadlock_detected", StoreBusyError, "busy"),
    ("lock_not_available", StoreBusyError, "busy"),
    ("division_by_zero", StoreError, "failed"),
])
async def test_server_errors_are_answered_in_words_and_leave_nothing_half_written(
    new_postgres_database: NewDatabase, condition: str, error: type[StoreError], words: str
) -> None:
    # PostgreSQL has no SQLite's max_page_count to fill a database on demand, and filling a real
    # disk needs a filesystem of its own. The server itself raises each condition instead (a
    # trigger on the votes table), so the real driver carries the real SQLSTATE to the store.
    # An admin's label writes its clip, then its vote: the failing vote takes the clip back.
    url = await new_postgres_database()
    store = await LabelStore.open(url)
    kept = await store.add_clip(new_clip())
    await store.vote(kept, 20, "right")
    connection = await asyncpg.connect(dsn(url))
    await connection.execute(f"""
        CREATE FUNCTION fail() RETURNS trigger AS $$
        BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{condition}'; END $$
        LANGUAGE plpgsql;
        CREATE TRIGGER fail BEFORE INSERT ON votes FOR EACH ROW EXECUTE FUNCTION fail();
    """)
    with pytest.raises(error, match=words) as raised:
        await store.label(new_clip(audio=os.urandom(50_000)), 99, "jazz", KNOWN)
    assert type(raised.value) is error
    await connection.close()
    [record] = await store.export(None)  # the labelled clip went with its failed vote
    assert record["clip_id"] == kept and len(record["votes"]) == 1
    await store.close()


async def test_kill_9_mid_write_loses_nothing_acknowledged(
    new_postgres_database: NewDatabase,
) -> None:
    url = await new_postgres_database()
    for stop_after in (5, 40):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, url, stdout=asyncio.subprocess.PIPE, cwd=ROOT)
        assert child.stdout is not None
        acknowledged = [int(await asyncio.wait_for(child.stdout.readline(), 60))
                        for _ in range(stop_after)]
        os.kill(child.pid, signal.SIGKILL)  # mid-write: it is always writing
        await child.wait()
        connection = await asyncpg.connect(dsn(url))
        clips = {r[0] for r in await connection.fetch("SELECT id FROM clips")}
        voted = {r[0] for r in await connection.fetch("SELECT clip_id FROM votes")}
        orphans = await connection.fetchval(
            "SELECT count(*) FROM votes LEFT JOIN clips ON clips.id = votes.clip_id "
            "WHERE clips.id IS NULL")
        await connection.close()
        assert set(acknowledged) <= clips and set(acknowledged) <= voted
        assert orphans == 0


async def test_bots_starting_together_on_a_new_database_agree(
    new_postgres_database: NewDatabase,
) -> None:
    url = await new_postgres_database()
    stores = await asyncio.gather(*(LabelStore.open(url) for _ in range(4)))
    signature = stores[0].sign("ok", 1)
    assert all(s.verify(signature, "ok", 1) for s in stores)  # one key, made once
    connection = await asyncpg.connect(dsn(url))
    assert await connection.fetchval("SELECT count(*) FROM alembic_version") == 1
    assert await connection.fetchval("SELECT count(*) FROM meta") == 1
    await connection.close()
    for store in stores:
        await store.close()


async def test_an_unreachable_server_is_answered_in_words() -> None:
    from bench.servers import free_port

    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    started = time.monotonic()
    with pytest.raises(StoreError, match="label database"):
        await LabelStore.open(url, busy_timeout_s=1.0)
    assert time.monotonic() - started < 10.0


async def test_the_bot_records_and_exports_votes_in_postgres(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes,
    new_postgres_database: NewDatabase,
) -> None:
    fake = fake_discord
    url = await new_postgres_database()
    bot = await start_bot(database_url=url)
    assert bot.labels is not None and bot.labels.engine.dialect.name == "postgresql"
    admin, uploader, ann = (fake.add_user("admin", admin=True), fake.add_user("uploader"),
                            fake.add_user("ann"))
    reply = await drop(fake, uploader, mp3_clip)
    right = await fake.click_button(ann, reply, controls(reply)["Right"])
    assert "Thanks, recorded" in await answer_text(fake, right)

    export = await fake.invoke_slash(admin, "labels export", {"format": "csv"})
    message = await fake.wait_for(lambda f: private_message(f, export))
    [attached] = message["attachments"]
    [row] = list(csv.DictReader(io.StringIO((await fetch(attached["url"])).decode())))
    assert row["uploader_id"] == str(uploader) and row["voter_id"] == str(ann)
    assert row["vote"] == "right" and row["vote_genre"] == row["predicted"]
    # It is in the server, not in a file of the bot's: another connection reads it.
    connection = await asyncpg.connect(dsn(url))
    assert await connection.fetchval("SELECT count(*) FROM votes WHERE user_id = $1", ann) == 1
    await connection.close()
    assert_clean(fake)
