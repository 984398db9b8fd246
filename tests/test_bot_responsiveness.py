"""While a long clip is analysed, the bot keeps its gateway alive and answers other commands.

The job runner here is the production one (a process pool); only the classifier is a stand-in
that holds the GIL for 20 ms of CPU per second of audio, like a slow feature extractor. Were the
work done on the event loop's thread, heartbeats and commands would stall for seconds.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from conftest import StartBot, load_burning_stub, music_like
from fake_discord import FakeDiscord
from synth import wav_bytes

from bot.client import GenreBot
from bot.settings import BotSettings
from genre_core.jobs import ClassifyJobs, ProcessJobs

LONG_CLIP_S = 180.0  # 3.6 s of GIL-holding CPU in the stand-in
LAG_BOUND_S = 1.0  # generous: the loop's own work is milliseconds; a blocked loop is seconds


async def burning_process_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    return await ProcessJobs.create(
        model_dir, workers=2, max_pending=4, limits=settings.limits, loader=load_burning_stub
    )


class LagMonitor:
    """Measures how late the event loop wakes a task that sleeps in short steps, and counts
    heartbeat ACKs (each one updates ``bot.latency``)."""

    def __init__(self, bot: GenreBot, step_s: float = 0.02) -> None:
        self.bot = bot
        self.step_s = step_s
        self.worst_s = 0.0
        self.acks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        latency = self.bot.latency
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.step_s)
            self.worst_s = max(self.worst_s, time.perf_counter() - before - self.step_s)
            if self.bot.latency != latency:
                latency = self.bot.latency
                self.acks += 1

    def __enter__(self) -> LagMonitor:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def reply_to(fake: FakeDiscord, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m
        for m in fake.messages()
        if (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


async def test_heartbeats_and_commands_go_on_during_a_long_clip(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot(jobs_factory=burning_process_jobs)
    user = fake.add_user("dj")
    long_clip = wav_bytes(music_like(LONG_CLIP_S, sr=8000), sr=8000)

    with LagMonitor(bot) as lag:
        started = time.monotonic()
        message = await fake.send_message(
            user, "", [fake.add_attachment(long_clip, "long-mix.wav", "audio/wav")]
        )
        await fake.wait_for(lambda f: f.reactions.on(message["id"]))  # accepted, working

        # Another user's command is answered while the long clip is still being analysed.
        other = fake.add_user("other")
        info = await fake.invoke_slash(other, "model info")
        await fake.wait_for(
            lambda f: any(
                e["kind"] == "callback" and e["status"] == 200
                for e in f.interaction_responses(info["id"])
            )
        )
        clip = fake.add_attachment(mp3_clip, "short.mp3", "audio/mpeg")
        genre = await fake.invoke_slash(other, "genre", attachments={"file": clip})
        await fake.wait_for(
            lambda f: any(
                e["kind"] == "followup" and e["status"] in (200, 204)
                for e in f.interaction_responses(genre["id"])
            ),
            timeout=60,
        )
        assert not reply_to(fake, message), "the long clip should still be in progress"

        [reply] = await fake.wait_for(lambda f: reply_to(f, message), timeout=180)
        finished = time.monotonic()

    assert reply["embeds"][0]["title"].startswith("🎵")
    assert finished - started > 2.0  # it really was long
    assert lag.worst_s < LAG_BOUND_S, f"event loop stalled for {lag.worst_s:.2f} s"
    # Heartbeats kept their 1-s pace through the whole analysis, were acknowledged (every ACK
    # updates bot.latency), and the session never had to resume.
    beats = [t for t in fake.heartbeats if started <= t <= finished]
    gaps = [b - a for a, b in zip([started, *beats], [*beats, finished], strict=True)]
    assert len(beats) >= int(finished - started) - 1
    assert max(gaps) < 2.5
    assert lag.acks >= len(beats) - 1
    assert fake.resumes == 0
