"""The bot's event-loop lag while clips are analysed, driven through the local fake Discord.

The real :class:`bot.client.GenreBot` with its production job runner (a process pool of real
classifiers) connects to ``tests/fake_discord``; ``n_clips`` users each post the clip at once. A
sampler task sleeps in 5-ms steps and records how late the loop wakes it. The fake runs in the
same event loop (as Discord's network would not), so its own request handling is counted in the
lag too: the figure is an upper bound on the bot's.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.clips import Clip

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 0.005


class LoopLag:
    """Samples how late the running loop wakes a task that sleeps ``step_s`` at a time."""

    def __init__(self, step_s: float = STEP_S) -> None:
        self.step_s = step_s
        self.lags_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.step_s)
            self.lags_ms.append(max(time.perf_counter() - before - self.step_s, 0.0) * 1000)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def measure(clip: Clip, n_clips: int = 20, workers: int = 2) -> dict[str, float]:
    """Start the bot against the fake Discord, post ``n_clips`` clips at once, and report the
    event-loop lag (p50/p99/max) while they are analysed, the time until all are answered, and
    how long the bot took from start to ready. ``{}`` when the fake or the bot is unavailable
    (e.g. without ``../shared/data/discord/openapi.json``)."""
    try:
        return asyncio.run(_measure(clip, n_clips, workers))
    except _Unavailable as exc:
        print(f"bot event-loop lag skipped: {exc}", file=sys.stderr)
        return {}


class _Unavailable(Exception):
    pass


async def _measure(clip: Clip, n_clips: int, workers: int) -> dict[str, float]:
    tests_dir = str(ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)  # fake_discord lives with the tests, imported as theirs
    try:
        from fake_discord import FakeDiscord, point_discord_py_at, running
        from fake_discord.spec import SpecUnavailable

        from bot.client import GenreBot
        from bot.settings import BotSettings
        from genre_core.pipeline import DEFAULT_MODEL_DIR
    except ImportError as exc:
        raise _Unavailable(f"cannot import the bot or the fake Discord ({exc})") from exc

    fake = FakeDiscord(heartbeat_interval_ms=1000)
    try:
        await fake.start()
    except SpecUnavailable as exc:
        raise _Unavailable(str(exc)) from exc
    try:
        with point_discord_py_at(fake), tempfile.TemporaryDirectory() as tmp:
            settings = BotSettings(  # type: ignore[call-arg]
                _env_file=None, token=fake.token, api_base=fake.api_base,
                gateway_url=fake.gateway_url, model_dir=DEFAULT_MODEL_DIR,
                state_dir=Path(tmp) / "var", data_dir=Path(tmp), allow_private_urls=True,
                workers=workers, queue_size=n_clips,
            )
            started = time.perf_counter()
            bot = GenreBot(settings)
            async with running(bot, fake, timeout=180):
                ready_s = time.perf_counter() - started
                # The burst measures analysis at full speed: the workers have loaded first
                # (start-up is bench.first_answer's figure).
                await bot.jobs.ready()
                workers_s = time.perf_counter() - started
                return {"bot_ready_s": round(ready_s, 3),
                        "bot_workers_ready_s": round(workers_s, 3),
                        **await _post_clips(fake, clip, n_clips)}
    finally:
        await fake.stop()


async def _post_clips(fake: Any, clip: Clip, n_clips: int) -> dict[str, float]:
    data = clip.data
    users = [fake.add_user(f"listener{i}") for i in range(n_clips)]  # one clip per user
    idle = LoopLag()
    idle.start()
    await asyncio.sleep(1.0)
    await idle.stop()

    lag = LoopLag()
    lag.start()
    started = time.perf_counter()
    messages = await asyncio.gather(*(
        fake.send_message(user, "", [fake.add_attachment(data, clip.path.name, "audio/mpeg")])
        for user in users
    ))
    ids = {m["id"] for m in messages}

    def answered(f: Any) -> bool:
        replied = {
            (m.get("message_reference") or {}).get("message_id") for m in f.messages()
        }
        return ids <= replied

    await fake.wait_for(answered, timeout=300)
    wall = time.perf_counter() - started
    await lag.stop()
    replies = [m for m in fake.messages() if (m.get("message_reference") or {}).get("message_id")
               in ids]
    genres = sum(1 for m in replies if m.get("embeds") and m["embeds"][0]["title"].startswith("🎵"))
    busy, quiet = np.asarray(lag.lags_ms), np.asarray(idle.lags_ms)
    return {
        "bot_clips_in_flight": n_clips,
        "bot_clips_answered_with_genre": genres,
        "bot_clips_wall_s": round(wall, 3),
        "bot_throughput_clips_per_s": round(n_clips / wall, 3),
        "bot_loop_lag_ms_p50": round(float(np.percentile(busy, 50)), 2),
        "bot_loop_lag_ms_p99": round(float(np.percentile(busy, 99)), 2),
        "bot_loop_lag_ms_max": round(float(busy.max()), 2),
        "bot_loop_lag_idle_ms_p99": round(float(np.percentile(quiet, 99)), 2),
    }
