"""Faults: a worker that dies or hangs, a decoder that hangs, the gateway dropping, Discord
answering 429 and 5xx. Each time the user gets an answer, nothing is lost, and the bot goes on.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    StartBot,
    StubClassifier,
    assert_clean,
    hold_classifications,
    load_crashing_stub,
    load_hanging_stub,
    make_stub_artifact,
    music_like,
    replies_to,
)
from fake_discord import FakeDiscord
from synth import encode, wav_bytes

from bot.settings import BotSettings
from genre_core.jobs import ClassifyJobs, JobTimeoutError, ProcessJobs, ThreadJobs

MESSAGES = r"/channels/\d+/messages"
PREDICTION = ("🎵", "🤔", "🔇")


def good_clip() -> bytes:
    return wav_bytes(music_like(3.5))


async def reply_to_drop(
    fake: FakeDiscord, user: int, data: bytes, name: str, timeout: float = 60
) -> dict[str, Any]:
    message = await fake.send_message(user, "", [fake.add_attachment(data, name, "audio/wav")])
    [reply] = await fake.wait_for(lambda f: replies_to(f, message), timeout=timeout)
    return reply


def title(reply: dict[str, Any]) -> str:
    return reply["embeds"][0]["title"]


def description(reply: dict[str, Any]) -> str:
    return reply["embeds"][0].get("description", "")


# --- workers ------------------------------------------------------------------------------------


async def crashing_process_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    return await ProcessJobs.create(
        model_dir, workers=1, max_pending=4, limits=settings.limits, loader=load_crashing_stub
    )


async def hanging_process_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    return await ProcessJobs.create(
        model_dir,
        workers=2,
        max_pending=6,
        limits=settings.limits,
        loader=load_hanging_stub,
        job_timeout_s=settings.job_timeout_s,
    )


async def test_a_worker_that_dies_mid_job_is_answered_and_the_pool_recovers(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    await start_bot(jobs_factory=crashing_process_jobs)
    user = fake.add_user("unlucky")
    crashed = await reply_to_drop(fake, user, good_clip(), "crash.wav")
    assert title(crashed) == "⚠️ Couldn't analyse crash.wav"
    assert "the analysis worker stopped" in description(crashed)
    after = await reply_to_drop(fake, user, good_clip(), "after.wav")
    assert title(after).startswith(PREDICTION)
    assert_clean(fake)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # dead, not yet reaped


async def test_a_hung_worker_is_stopped_and_nobody_else_loses_an_answer(
    fake_discord: FakeDiscord,
    start_bot: StartBot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    pid_file = tmp_path / "hung.pid"
    monkeypatch.setenv("GENRE_TEST_HANG_PID_FILE", str(pid_file))  # inherited by the workers
    await start_bot(jobs_factory=hanging_process_jobs, job_timeout_s=5.0)
    stuck, bystander = fake.add_user("stuck"), fake.add_user("bystander")

    hung = asyncio.create_task(reply_to_drop(fake, stuck, good_clip(), "hang.wav"))
    await fake.wait_for(lambda f: pid_file.is_file() and pid_file.read_text().strip())
    await asyncio.sleep(2.5)
    # Another user's clip (3 s of work, within the limit) is in the other worker when the hung
    # one is killed, 2.5 s later. That breaks the whole pool: it must run again, not fail.
    other = asyncio.create_task(reply_to_drop(fake, bystander, good_clip(), "slow.wav"))
    reply = await hung
    assert title(reply) == "⚠️ Couldn't analyse hang.wav"
    assert "took longer than 5 s, so I stopped" in description(reply)
    assert not other.done()
    assert title(await other).startswith(PREDICTION)
    assert caplog.text.count("ran past") == 1  # the bystander ran again, within the limit
    assert "an analysis worker died" not in caplog.text  # the kill was on purpose
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 20
    while not pid_gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert pid_gone(pid), "the hung worker was killed"
    # The pool was rebuilt: the next clips are analysed.
    for name in ("next-1.wav", "next-2.wav"):
        assert title(await reply_to_drop(fake, stuck, good_clip(), name)).startswith(PREDICTION)
    assert_clean(fake)


# --- a decoder that hangs -------------------------------------------------------------------------


def hanging_tools(folder: Path, hang: str) -> Path:
    """A folder of ``ffmpeg``/``ffprobe`` stand-ins: ``hang`` sleeps for ten minutes, the other
    runs the real one. Each records its pid, to check that it was killed."""
    folder.mkdir()
    for tool in ("ffmpeg", "ffprobe"):
        real = next(
            str(Path(p) / tool)
            for p in os.environ["PATH"].split(os.pathsep)
            if (Path(p) / tool).is_file()
        )
        action = "exec sleep 600" if tool == hang else f'exec {real} "$@"'
        script = folder / tool
        script.write_text(f"#!/bin/sh\necho $$ >> {folder}/pids\n{action}\n")
        script.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    ("hang", "clip", "name"),
    [
        ("ffprobe", lambda: good_clip(), "probe-hangs.wav"),
        # libsndfile cannot read m4a, so ffmpeg decodes it: the decoder itself hangs.
        ("ffmpeg", lambda: encode(music_like(3.5), "m4a"), "decoder-hangs.m4a"),
    ],
    ids=["ffprobe", "ffmpeg"],
)
async def test_a_hanging_decoder_is_stopped_with_a_clear_answer(
    fake_discord: FakeDiscord,
    start_bot: StartBot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hang: str,
    clip: Callable[[], bytes],
    name: str,
) -> None:
    fake = fake_discord
    data = clip()  # made with the real ffmpeg, before the stand-ins go on the PATH
    await start_bot(decode_timeout_s=2.0)
    tools = hanging_tools(tmp_path / "bin", hang)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    user = fake.add_user("patient")
    reply = await reply_to_drop(fake, user, data, name)
    assert title(reply) == f"⚠️ Couldn't analyse {name}"
    assert "Decoding took longer than 2 s and was stopped" in description(reply)
    hung = [int(line) for line in (tools / "pids").read_text().split()]
    assert hung and all(pid_gone(pid) for pid in hung), "no decoder is left running"
    monkeypatch.undo()  # the real decoder is back
    after = await reply_to_drop(fake, user, good_clip(), "after.wav")
    assert title(after).startswith(PREDICTION)


# --- the gateway ----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["abort", "close-4000", "reconnect"])
async def test_answers_survive_the_gateway_dropping(
    fake_discord: FakeDiscord, start_bot: StartBot, how: str
) -> None:
    fake = fake_discord
    bot = await start_bot()
    user = fake.add_user("listener")
    gate = hold_classifications(bot)
    pending = await fake.send_message(
        user, "", [fake.add_attachment(good_clip(), "pending.wav", "audio/wav")]
    )
    await fake.wait_for(lambda f: f.reactions.on(pending["id"]))  # accepted, being analysed
    resumes = fake.resumes
    if how == "reconnect":
        await fake.request_reconnect()
    else:
        await fake.drop_connection(None if how == "abort" else 4000)
    # Posted while the bot is away: Discord replays it when the session resumes.
    missed = await fake.send_message(
        fake.add_user("late"), "", [fake.add_attachment(good_clip(), "missed.wav", "audio/wav")]
    )
    await fake.wait_for(lambda f: f.resumes > resumes and f.connected, timeout=60)
    gate.set()
    for message in (pending, missed):
        [reply] = await fake.wait_for(lambda f, m=message: replies_to(f, m), timeout=60)
        assert title(reply).startswith(PREDICTION)
    after = await reply_to_drop(fake, user, good_clip(), "after.wav")
    assert title(after).startswith(PREDICTION)
    assert_clean(fake)


# --- Discord's answers: 429 and 5xx ---------------------------------------------------------------


def attempts(fake: FakeDiscord, method: str, path: str, since: int) -> list[tuple[int, float]]:
    """``(status, time)`` of each request to a route since request number ``since``."""
    pattern = re.compile(path)
    return [
        (r.status, r.at)
        for r in fake.requests[since:]
        if r.method == method and pattern.fullmatch(r.path)
    ]


@pytest.mark.parametrize("global_", [False, True], ids=["route", "global"])
async def test_a_429_is_waited_out_as_discord_asks(
    fake_discord: FakeDiscord, start_bot: StartBot, global_: bool
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    since = len(fake.requests)
    fake.rate_limit("POST", MESSAGES, retry_after=1.0, global_=global_)
    reply = await reply_to_drop(fake, user, good_clip(), "limited.wav")
    assert title(reply).startswith(PREDICTION)
    tries = attempts(fake, "POST", MESSAGES, since)
    assert [status for status, _ in tries] == [429, 200]  # retried once, not hammered
    assert tries[1][1] - tries[0][1] >= 0.9  # after the Retry-After, not before
    assert len(replies_to(fake, {"id": reply["message_reference"]["message_id"]})) == 1


async def test_a_429_on_an_interaction_follow_up_is_waited_out(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("slasher")
    since = len(fake.requests)
    fake.rate_limit("POST", r"/webhooks/\d+/[^/]+", retry_after=1.0)
    clip = fake.add_attachment(good_clip(), "limited.wav", "audio/wav")
    inter = await fake.invoke_slash(user, "genre", attachments={"file": clip})
    final = await fake.wait_for(
        lambda f: [
            r
            for r in f.interaction_responses(inter["id"])
            if r["kind"] == "followup" and r["message"]
        ]
    )
    assert final[0]["message"]["embeds"][0]["title"].startswith(PREDICTION)
    tries = attempts(fake, "POST", r"/webhooks/\d+/[^/]+", since)
    assert [status for status, _ in tries] == [429, 200]
    assert tries[1][1] - tries[0][1] >= 0.9


@pytest.mark.parametrize(
    ("status", "count", "retried_by", "stored"),
    [
        (500, 1, "discord.py", False),
        (502, 2, "discord.py", False),
        (503, 1, "the bot", False),
        (503, 2, "the bot", False),
        (503, 1, "the bot", True),
    ],
)
async def test_a_5xx_does_not_lose_the_answer(
    fake_discord: FakeDiscord, start_bot: StartBot, status: int, count: int, retried_by: str,
    stored: bool,
) -> None:
    """discord.py retries 500/502/504 itself; a 503 (or a 5xx that outlasts it) is retried by
    the bot's own ``deliver``. Either way: one answer, not two, even when Discord ``stored``
    the message before failing (the retry carries the same enforced nonce)."""
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    since = len(fake.requests)
    fake.fail("POST", MESSAGES, status=status, count=count, after_handling=stored)
    reply = await reply_to_drop(fake, user, good_clip(), "flaky.wav")
    assert title(reply).startswith(PREDICTION)
    # A stored message shows up before the bot has retried: wait for every try.
    tries = await fake.wait_for(
        lambda f: (found := attempts(f, "POST", MESSAGES, since)) and found[-1][0] == 200 and found
    )
    assert [s for s, _ in tries] == [status] * count + [200]
    await asyncio.sleep(0.5)
    assert len(replies_to(fake, {"id": reply["message_reference"]["message_id"]})) == 1


async def test_a_5xx_that_never_ends_is_logged_and_the_bot_goes_on(
    fake_discord: FakeDiscord, start_bot: StartBot, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    fake.fail("POST", MESSAGES, status=503, count=3)  # every try the bot makes
    lost = await fake.send_message(
        user, "", [fake.add_attachment(good_clip(), "lost.wav", "audio/wav")]
    )
    await fake.wait_for(
        lambda f: (
            len([r for r in f.requests if r.status == 503]) == 3 and not f.reactions.on(lost["id"])
        ),
        timeout=30,
    )
    assert replies_to(fake, lost) == []
    assert "Discord did not take an answer (DiscordServerError)" in caplog.text
    after = await reply_to_drop(fake, user, good_clip(), "after.wav")
    assert title(after).startswith(PREDICTION)


class SlowStub(StubClassifier):
    def classify(self, source: bytes | Path, filename: str | None = None) -> Any:
        if filename == "slow.wav":
            time.sleep(1.5)
        return super().classify(source, filename)


async def test_the_thread_runner_also_answers_a_job_that_runs_too_long(tmp_path: Path) -> None:
    """The stand-in runner keeps the same contract (its stuck thread cannot be killed)."""
    model = make_stub_artifact(tmp_path / "m", "m", 0.5)
    jobs = await ThreadJobs.create(
        model, loader=lambda d, limits: SlowStub(d, limits), workers=2, job_timeout_s=0.5
    )
    try:
        started = time.monotonic()
        with pytest.raises(JobTimeoutError, match="took longer than 0.5 s"):
            await jobs.classify(good_clip(), "slow.wav")
        assert time.monotonic() - started < 1.4  # answered at the limit, not when it finished
        assert (await jobs.classify(good_clip(), "fine.wav")).model_version == "m"
        assert jobs.pending == 0
    finally:
        await jobs.close()
