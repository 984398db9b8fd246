"""Metrics for Prometheus, as a scraper sees them: the real bot serving ``/metrics`` on
``GENRE_METRICS_PORT``, scraped over HTTP while clips are dropped through the fake Discord; the
job runner's queue depth, latency and errors by reason; the endpoint freeing its port on close.

prometheus_client's registry is one per process and the tests share it, so every check compares
a scrape before with one after (the worker gauge, which each runner sets, excepted).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from conftest import assert_clean, load_hanging_stub, load_stub, make_stub_artifact, music_like
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from synth import wav_bytes
from test_community_labels import answer_text, controls, drop

from bench.servers import free_port
from genre_core import metrics
from genre_core.jobs import BusyError, JobTimeoutError, ProcessJobs, ThreadJobs

if TYPE_CHECKING:
    from conftest import StartBot
    from fake_discord import FakeDiscord

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(port: int) -> Samples:
    """Every sample ``/metrics`` serves, by name and labels."""
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/metrics"
    ) as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def test_the_bot_serves_metrics_that_move_with_clips_votes_and_errors(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    port = free_port()
    bot = await start_bot(metrics_port=port)
    await bot.jobs.ready()
    before = await scrape(port)
    assert before[("genre_workers", ())] == 2  # thread_stub_jobs: two threads, ready

    uploader, ann = fake.add_user("uploader"), fake.add_user("ann")
    reply = await drop(fake, uploader, mp3_clip)
    right = await fake.click_button(ann, reply, controls(reply)["Right"])
    assert "Thanks, recorded" in await answer_text(fake, right)
    # Named and typed as audio, but not audio: the analysis fails with the decoder's reason.
    junk = await drop(fake, uploader, b"\x00garbage, not an mp3" * 200, "broken.mp3")
    assert junk["content"] or junk["embeds"]
    after = await scrape(port)

    assert moved(before, after, "genre_clips_total", outcome="answered") == 1
    assert moved(before, after, "genre_clips_total", outcome="failed") == 1
    assert moved(before, after, "genre_job_seconds_count") == 2
    assert moved(before, after, "genre_job_seconds_sum") > 0
    assert moved(before, after, "genre_job_seconds_bucket", le="+Inf") == 2
    errors = {dict(key[1])["reason"]: after[key] - before.get(key, 0.0)
              for key in after if key[0] == "genre_job_errors_total"}
    failed = {reason: n for reason, n in errors.items() if n}
    assert len(failed) == 1 and set(failed.values()) == {1}, failed
    [reason] = failed
    assert reason not in ("internal", "error", "busy")  # the decoder's own code
    assert moved(before, after, "genre_label_votes_total", kind="right") == 1
    assert after[("genre_queue_depth", ())] == before[("genre_queue_depth", ())]
    assert_clean(fake)


async def test_queue_depth_busy_and_timeouts_are_counted(tmp_path: Path) -> None:
    model = make_stub_artifact(tmp_path / "model", "m1", 0.5)
    jobs = await ThreadJobs.create(model, loader=load_hanging_stub, workers=1, max_pending=1,
                                   job_timeout_s=1.0)
    clip = wav_bytes(music_like(2.0))

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    depth = value("genre_queue_depth")
    busy, timeouts = (value("genre_job_errors_total", reason=r) for r in ("busy", "job_timeout"))
    assert value("genre_workers") == 1
    slow = asyncio.create_task(jobs.classify(clip, "slow.wav"))  # 3 s
    await asyncio.sleep(0.2)
    assert value("genre_queue_depth") == depth + 1  # taken, not answered
    with pytest.raises(BusyError):
        await jobs.classify(clip, "ok.wav")  # the one place is taken
    with pytest.raises(JobTimeoutError):
        await slow
    assert value("genre_queue_depth") == depth
    assert value("genre_job_errors_total", reason="busy") == busy + 1
    assert value("genre_job_errors_total", reason="job_timeout") == timeouts + 1
    await jobs.close()
    assert value("genre_workers") == 0


async def test_the_process_pool_reports_its_workers_and_answers(tmp_path: Path) -> None:
    model = make_stub_artifact(tmp_path / "model", "m1", 0.5)
    answered = REGISTRY.get_sample_value("genre_clips_total", {"outcome": "answered"}) or 0.0
    jobs = await ProcessJobs.create(model, loader=load_stub, workers=1, max_pending=2)
    try:
        assert REGISTRY.get_sample_value("genre_workers") == 1
        await jobs.classify(wav_bytes(music_like(4.0)), "a.wav")
        assert REGISTRY.get_sample_value("genre_clips_total", {"outcome": "answered"}) == (
            answered + 1)
    finally:
        await jobs.close()
    assert REGISTRY.get_sample_value("genre_workers") == 0


async def test_the_endpoint_frees_its_port_when_closed() -> None:
    port = free_port()
    server = metrics.serve(port, "127.0.0.1")
    assert server is not None and server.port == port
    assert ("genre_queue_depth", ()) in await scrape(port)
    assert metrics.serve(port, "127.0.0.1") is None  # taken: logged, the caller goes on
    await asyncio.to_thread(server.close)
    with pytest.raises(aiohttp.ClientConnectionError):
        await scrape(port)
    again = metrics.serve(port, "127.0.0.1")  # a bot restarted in the same process binds again
    assert again is not None
    await asyncio.to_thread(again.close)
    assert metrics.serve(0) is None  # 0: no endpoint

