"""Sharding: GenreBot is an ``AutoShardedBot``; ``GENRE_SHARD_IDS`` / ``GENRE_SHARD_COUNT`` let
several processes split the shards. Against the fake Discord, which routes every guild's events
to the shard ``(guild_id >> 22) % count`` only, as Discord does: two real bot processes (the
``python -m bot`` entry point, with the stand-in classifier), each answering only its guilds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from conftest import ROOT, StartBot, assert_clean, make_stub_artifact
from discord.ext import commands
from fake_discord import FakeDiscord

from bot.client import GenreBot, shard_options, use_endpoints
from bot.settings import BotSettings

# --- the settings reach AutoShardedBot ---------------------------------------------------------


def _bot_from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> GenreBot:
    for name in ("GENRE_SHARD_IDS", "GENRE_SHARD_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DISCORD_TOKEN", "not-a-real-token")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bot = GenreBot(BotSettings(_env_file=None))  # type: ignore[call-arg]
    # GenreBot points discord.py at the configured endpoints; put them back (it never started).
    use_endpoints(bot._previous_endpoints[0], str(bot._previous_endpoints[1]))
    return bot


def test_shard_settings_reach_auto_sharded_bot(monkeypatch: pytest.MonkeyPatch) -> None:
    bot = _bot_from_env(monkeypatch, GENRE_SHARD_IDS="3,1", GENRE_SHARD_COUNT="4")
    assert isinstance(bot, commands.AutoShardedBot)
    assert bot.shard_ids == [1, 3] and bot.shard_count == 4

    alone = _bot_from_env(monkeypatch, GENRE_SHARD_COUNT="2")
    assert alone.shard_ids is None and alone.shard_count == 2  # this process runs both

    # Unset: discord.py asks GET /gateway/bot for the count (see the next test).
    unset = _bot_from_env(monkeypatch)
    assert unset.shard_ids is None and unset.shard_count is None


@pytest.mark.parametrize(
    ("ids", "count", "message"),
    [("0,1", None, "needs GENRE_SHARD_COUNT"), ("2", 2, "must lie in 0..1"), ("[]", 2, "0..1")],
)
def test_bad_shard_settings_are_refused(ids: str, count: int | None, message: str) -> None:
    settings = BotSettings(  # type: ignore[call-arg]
        _env_file=None, token="x", shard_ids=ids, shard_count=count
    )
    with pytest.raises(ValueError, match=message):
        shard_options(settings)


async def test_unsharded_bot_asks_discord_for_the_shard_count(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    """Without shard settings: one process, one connection, as before sharding; the count is
    Discord's recommendation (GET /gateway/bot: 1 for a small bot)."""
    fake = fake_discord
    bot = await start_bot()
    assert [r.route for r in fake.requests if r.method == "GET"].count("/gateway/bot") == 1
    assert bot.shard_count == 1 and sorted(bot.shards) == [0]
    assert [c["shard"] for c in fake.gateway.connections if c["op"] == "IDENTIFY"] == [[0, 1]]
    assert bot.is_ready() and bot.get_guild(fake.guild_id) is not None
    assert bot.latency == bot.latencies[0][1]
    assert_clean(fake)


# --- two shard processes --------------------------------------------------------------------

# The real entry point (settings from the environment, logging, exit codes, Ctrl-C); only the
# classifier is the fast stand-in from conftest.
LAUNCHER = """
import functools, sys
import bot.__main__ as entry
from conftest import accuracy_not_lower, stub_retrain, thread_stub_jobs
entry.GenreBot = functools.partial(
    entry.GenreBot, jobs_factory=thread_stub_jobs, retrain_target=stub_retrain,
    compare_target=accuracy_not_lower,
)
sys.exit(entry.main())
"""

SHARDS = 2


@dataclass
class ShardProcess:
    """One bot process running one shard, its output collected."""

    shard_id: int
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task[None] | None = None

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))
            if "ready as" in self.lines[-1]:
                self.ready.set()


async def start_shard(
    fake: FakeDiscord, tmp_path: Path, shard_id: int, *, count: int = SHARDS
) -> ShardProcess:
    model = tmp_path / "models" / "genre"
    if not model.is_dir():
        make_stub_artifact(model, "shipped-1", 0.5)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GENRE_"))}
    env.update(
        {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "GENRE_SHARD_IDS": str(shard_id),
            "GENRE_SHARD_COUNT": str(count),
            "GENRE_MODEL_DIR": str(model),
            "GENRE_STATE_DIR": str(tmp_path / f"var-{shard_id}"),
            "GENRE_ALLOW_PRIVATE_URLS": "true",  # the fake's CDN is on 127.0.0.1
            # conftest (the stand-in) and its imports live in tests/.
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        }
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER,
        cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    shard = ShardProcess(shard_id, process)
    shard.reader = asyncio.create_task(shard.read())
    return shard


async def stop_shard(shard: ShardProcess) -> int:
    if shard.process.returncode is None:
        shard.process.send_signal(signal.SIGCONT)  # in case a test left it paused
        shard.process.send_signal(signal.SIGINT)  # Ctrl-C
    try:
        code = await asyncio.wait_for(shard.process.wait(), timeout=60)
    except TimeoutError:
        shard.process.kill()
        code = await shard.process.wait()
    if shard.reader is not None:
        await shard.reader
    return code


@pytest_asyncio.fixture
async def shard_processes(
    fake_discord: FakeDiscord, tmp_path: Path
) -> AsyncIterator[tuple[list[int], list[ShardProcess]]]:
    """A guild on each of 2 shards, and 2 bot processes (shard 0 and shard 1), both ready."""
    fake = fake_discord
    guilds = [fake.add_guild(f"guild on shard {i}", shard=(i, SHARDS)) for i in range(SHARDS)]
    shards = [await start_shard(fake, tmp_path, i) for i in range(SHARDS)]
    try:
        for shard in shards:
            await asyncio.wait_for(shard.ready.wait(), timeout=180)
        yield guilds, shards
    finally:
        codes = [await stop_shard(shard) for shard in shards]
    for shard, code in zip(shards, codes, strict=True):
        assert code == 0, shard.output[-3000:]
        assert "Traceback" not in shard.output, shard.output[-3000:]
        assert fake.token not in shard.output


def answers(fake: FakeDiscord, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The bot's replies to ``message``, in its channel."""
    return [
        m
        for m in fake.messages(int(message["channel_id"]))
        if (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


def delivered_to(fake: FakeDiscord, shard_id: int, event: str, event_id: str) -> bool:
    """Whether the fake sent that event (by its ``id``) to the session of ``shard_id``."""
    session = fake.gateway.session_of(shard_id)
    return any(e["t"] == event and e["d"].get("id") == event_id for e in session.events)


async def drop_file(fake: FakeDiscord, user: int, guild_id: int, clip: bytes) -> dict[str, Any]:
    attachment = fake.add_attachment(clip, "song.mp3", "audio/mpeg")
    return await fake.send_message(user, "", [attachment], guild_id=guild_id)


async def answered(fake: FakeDiscord, message: dict[str, Any]) -> dict[str, Any]:
    [reply] = await fake.wait_for(lambda f: answers(f, message), timeout=60)
    return reply


async def test_two_shard_processes_each_answer_only_their_guilds(
    fake_discord: FakeDiscord,
    shard_processes: tuple[list[int], list[ShardProcess]],
    mp3_clip: bytes,
) -> None:
    fake = fake_discord
    guilds, shards = shard_processes
    user = fake.add_user("listener")

    # Each process identified as its own shard; READY named only that shard's guilds.
    identified = sorted(c["shard"] for c in fake.gateway.connections if c["op"] == "IDENTIFY")
    assert identified == [[0, 2], [1, 2]]
    for shard_id, guild in enumerate(guilds):
        ready = fake.gateway.session_of(shard_id).events[0]
        assert ready["t"] == "READY" and ready["d"]["shard"] == [shard_id, SHARDS]
        ready_guilds = {g["id"] for g in ready["d"]["guilds"]}
        assert str(guild) in ready_guilds and str(guilds[1 - shard_id]) not in ready_guilds
    # Commands belong to the application: synced once, by the process running shard 0.
    assert len(fake.commands.syncs) == 1
    assert "synced by the process running shard 0" in shards[1].output

    # A file dropped in each guild: delivered to the owning shard only, answered once.
    for shard_id, guild in enumerate(guilds):
        message = await drop_file(fake, user, guild, mp3_clip)
        reply = await answered(fake, message)
        assert reply["embeds"] and not reply["embeds"][0]["title"].startswith("⚠️")
        assert delivered_to(fake, shard_id, "MESSAGE_CREATE", message["id"])
        assert not delivered_to(fake, 1 - shard_id, "MESSAGE_CREATE", message["id"])

    # A file sent in a DM: Discord sends DMs to shard 0 only, so its process answers.
    attachment = fake.add_attachment(mp3_clip, "song.mp3", "audio/mpeg")
    dm = await fake.send_message(user, "", [attachment], dm=True)
    await answered(fake, dm)
    assert delivered_to(fake, 0, "MESSAGE_CREATE", dm["id"])
    assert not delivered_to(fake, 1, "MESSAGE_CREATE", dm["id"])

    # /genre in each guild: one process acknowledges it (a second one would get 40060).
    for shard_id, guild in enumerate(guilds):
        attachment = fake.add_attachment(mp3_clip, "song.mp3", "audio/mpeg")
        inter = await fake.invoke_slash(user, "genre", attachments={"file": attachment},
                                        guild_id=guild)
        responses = await fake.wait_for(
            lambda f, i=inter: (r := f.interaction_responses(i["id"]))
            and r[-1]["kind"] == "followup" and r,
            timeout=60,
        )
        assert [r["kind"] for r in responses] == ["callback", "followup"]
        assert all(r["status"] < 400 for r in responses)
        assert responses[-1]["body"]["embeds"]
        assert delivered_to(fake, shard_id, "INTERACTION_CREATE", inter["id"])
        assert not delivered_to(fake, 1 - shard_id, "INTERACTION_CREATE", inter["id"])

    # Which process answers: freeze one (SIGSTOP). The other keeps answering its own guild, and
    # the frozen one's guild waits for it: nobody else answers there.
    for frozen, other in ((0, 1), (1, 0)):
        shards[frozen].process.send_signal(signal.SIGSTOP)
        try:
            waiting = await drop_file(fake, user, guilds[frozen], mp3_clip)
            served = await drop_file(fake, user, guilds[other], mp3_clip)
            await answered(fake, served)
            assert answers(fake, waiting) == []
        finally:
            shards[frozen].process.send_signal(signal.SIGCONT)
        await answered(fake, waiting)  # once it runs again, exactly one answer
    assert_clean(fake)


@pytest.mark.parametrize("how", ["abort", "close 4000"])
async def test_one_shard_resumes_without_disturbing_the_other(
    fake_discord: FakeDiscord,
    shard_processes: tuple[list[int], list[ShardProcess]],
    mp3_clip: bytes,
    how: str,
) -> None:
    fake = fake_discord
    guilds, _ = shard_processes
    user = fake.add_user("listener")
    session_0, session_1 = fake.gateway.session_of(0), fake.gateway.session_of(1)
    connection_1 = session_1.connection
    connections = len(fake.gateway.connections)

    await fake.drop_connection(None if how == "abort" else 4000, shard_id=0)
    # While shard 0 is away: its guild's file waits in its session, shard 1 answers at once.
    missed = await drop_file(fake, user, guilds[0], mp3_clip)
    served = await drop_file(fake, user, guilds[1], mp3_clip)
    await answered(fake, served)
    # Shard 0 resumes its own session, gets the missed message replayed and answers it once.
    await fake.wait_for(lambda f: f.resumes == 1 and f.gateway.shard_connected(0), timeout=60)
    await answered(fake, missed)
    assert fake.gateway.session_of(0) is session_0
    new = fake.gateway.connections[connections:]
    assert [c["op"] for c in new] == ["RESUME"] and new[0]["path"] == "/gateway/resume"
    # Shard 1 never noticed: the same connection throughout, nothing replayed, no RESUMED.
    assert fake.gateway.session_of(1) is session_1 and session_1.connection is connection_1
    assert not any(e["t"] == "RESUMED" for e in session_1.events)
    # Both shards keep serving.
    for guild in guilds:
        await answered(fake, await drop_file(fake, user, guild, mp3_clip))
    assert_clean(fake)


async def test_invalid_shard_settings_stop_python_m_bot_with_a_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GENRE_"))}
    env.update(
        {"DISCORD_TOKEN": "x", "GENRE_SHARD_IDS": "2", "GENRE_SHARD_COUNT": "2",
         "PYTHONPATH": str(ROOT)}
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 1
    assert b"genre-bot cannot start: GENRE_SHARD_IDS must lie in 0..1" in out
    assert b"Traceback" not in out



async def test_discord_refusing_the_shard_count_stops_the_bot_with_advice(tmp_path: Path) -> None:
    """Close 4011 (Sharding required): too many guilds for GENRE_SHARD_COUNT. The process says
    what to change and exits 1, instead of a traceback."""
    fake = FakeDiscord(max_guilds_per_shard=1)
    await fake.start()
    try:
        fake.add_guild("one more")  # two guilds on the one shard of GENRE_SHARD_COUNT=1
        shard = await start_shard(fake, tmp_path, 0, count=1)
        code = await asyncio.wait_for(shard.process.wait(), timeout=120)
        assert shard.reader is not None
        await shard.reader
    finally:
        await fake.stop()
    assert code == 1, shard.output[-3000:]
    assert "Discord requires more shards" in shard.output
    assert "Traceback" not in shard.output, shard.output[-3000:]
