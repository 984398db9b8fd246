"""The bot connects while its workers load the model; clips that come first wait, not fail.

The workers' loader is gated on a file: until the test creates ``GO`` in the model directory,
every worker is still "loading", however slow or fast the machine is. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import StartBot, StubClassifier, make_stub_artifact, music_like, replies_to
from fake_discord import FakeDiscord
from synth import wav_bytes

from bot.settings import BotSettings
from genre_core.errors import ModelError
from genre_core.jobs import ClassifyJobs, ProcessJobs
from genre_core.settings import Limits

GATE = "GO"


def load_gated_stub(model_dir: Path, limits: Limits) -> StubClassifier:
    """A loader that waits for ``model_dir/GO`` (module level: workers import it by name)."""
    deadline = time.monotonic() + 300
    while not (Path(model_dir) / GATE).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return StubClassifier(model_dir, limits)


async def gated_process_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    """The production runner's shape (started, not awaited) over the gated loader."""
    jobs = ProcessJobs(model_dir, workers=1, loader=load_gated_stub,
                       max_pending=1 + settings.queue_size, fallback_dir=settings.model_dir)
    await jobs.start()
    return jobs


def clip() -> bytes:
    return wav_bytes(music_like(3.5))


async def test_start_returns_before_the_workers_are_ready_and_early_clips_wait(
    tmp_path: Path,
) -> None:
    model = make_stub_artifact(tmp_path / "model", "v1", 0.5)
    jobs = ProcessJobs(model, workers=1, loader=load_gated_stub, max_pending=4)
    await jobs.start()
    try:
        assert not jobs.is_ready
        loading = await jobs.info()  # from the metadata, without the workers
        assert loading["loading"] is True and loading["version"] == "v1"

        early = asyncio.create_task(jobs.classify(clip(), "early.wav"))
        await asyncio.sleep(0.5)
        assert not early.done() and jobs.pending == 1  # queued, not refused

        (model / GATE).touch()
        prediction = await asyncio.wait_for(early, timeout=120)
        assert prediction.model_version == "v1"
        assert jobs.is_ready and "loading" not in await jobs.info()
    finally:
        await jobs.close()


async def test_a_model_that_cannot_load_fails_each_clip_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metadata.json").write_text("{}")  # no weights: the stub's loader refuses it
    (broken / GATE).touch()
    jobs = ProcessJobs(broken, workers=1, loader=load_gated_stub)
    await jobs.start()
    try:
        with pytest.raises(ModelError, match="Could not load the model"):
            await asyncio.wait_for(jobs.classify(clip(), "a.wav"), timeout=120)
        assert not jobs.is_ready
    finally:
        await jobs.close()


async def test_a_broken_start_falls_back_to_the_shipped_model(tmp_path: Path) -> None:
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped-1", 0.5)
    (shipped / GATE).touch()
    damaged = make_stub_artifact(tmp_path / "published", "v2", 0.9)
    (damaged / "model.keras").unlink()
    (damaged / GATE).touch()
    jobs = ProcessJobs(damaged, workers=1, loader=load_gated_stub, fallback_dir=shipped)
    await jobs.start()
    try:
        await asyncio.wait_for(jobs.ready(), timeout=120)
        assert (await jobs.info())["version"] == "shipped-1"
        assert (await jobs.classify(clip(), "a.wav")).model_version == "shipped-1"
    finally:
        await jobs.close()


async def test_the_bot_is_ready_before_its_workers_and_answers_a_clip_that_came_early(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    bot = await start_bot(jobs_factory=gated_process_jobs)  # returns once READY
    assert not bot.jobs.is_ready  # type: ignore[attr-defined]
    assert fake.commands.scope(None), "slash commands were registered while the workers load"

    user = fake.add_user("early-bird")
    message = await fake.send_message(
        user, "", [fake.add_attachment(clip(), "early.wav", "audio/wav")]
    )
    await fake.wait_for(lambda f: f.reactions.on(message["id"]))  # accepted, waiting
    await asyncio.sleep(0.5)
    assert not replies_to(fake, message)

    (bot.settings.model_dir / GATE).touch()
    [reply] = await fake.wait_for(lambda f: replies_to(f, message), timeout=120)
    assert reply["embeds"][0]["title"].startswith(("🎵", "🤔"))
    assert "shipped-1" in reply["embeds"][0]["footer"]["text"]
