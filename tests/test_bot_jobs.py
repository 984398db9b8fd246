"""The job interface (genre_core.jobs): bounded queue, dead workers, reloads, retrain child.

Worker processes run the conftest stand-in classifier (real decoding, no TensorFlow), so the
pool, its bounds and its recovery are tested without the model's start-up cost.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest import (
    StubClassifier,
    load_crashing_stub,
    load_stub,
    make_stub_artifact,
    music_like,
    stub_retrain,
)
from synth import wav_bytes

from genre_core.errors import AudioError, ModelError
from genre_core.jobs import (
    BusyError,
    ClassifyJobs,
    ProcessJobs,
    ThreadJobs,
    TrainingError,
    WorkerCrashedError,
    retrain_in_subprocess,
)
from genre_core.settings import Limits


@pytest.fixture(scope="module")
def clip() -> bytes:
    return wav_bytes(music_like(4.0))


async def test_process_pool_classifies_recovers_from_a_dead_worker_and_reloads(
    tmp_path: Path, clip: bytes
) -> None:
    v1 = make_stub_artifact(tmp_path / "v1", "v1", 0.5)
    v2 = make_stub_artifact(tmp_path / "v2", "v2", 0.6)
    broken = tmp_path / "broken"
    broken.mkdir()
    jobs = await ProcessJobs.create(v1, workers=1, max_pending=4, loader=load_crashing_stub)
    try:
        assert isinstance(jobs, ClassifyJobs)
        assert (await jobs.info())["version"] == "v1"
        prediction = await jobs.classify(clip, "a.wav")
        assert prediction.model_version == "v1"
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-6
        # The classifier's own errors come back as they were raised.
        with pytest.raises(AudioError):
            await jobs.classify(b"no audio in here", "x.mp3")

        # A worker dies mid-job: that job gets an error, the pool is rebuilt, work goes on.
        with pytest.raises(WorkerCrashedError):
            await jobs.classify(clip, "crash.wav")
        assert (await jobs.classify(clip, "b.wav")).model_version == "v1"

        # A model that cannot load is refused; the old one keeps serving.
        with pytest.raises(ModelError, match="No usable model"):
            await jobs.reload(broken)
        assert (await jobs.classify(clip, "c.wav")).model_version == "v1"

        await jobs.reload(v2)
        assert (await jobs.info())["version"] == "v2"
        assert (await jobs.classify(clip, "d.wav")).model_version == "v2"
        assert jobs.pending == 0
    finally:
        await jobs.close()
    with pytest.raises(Exception, match="not running"):
        await jobs.classify(clip, "e.wav")


async def test_a_full_queue_says_busy(tmp_path: Path, clip: bytes) -> None:
    model = make_stub_artifact(tmp_path / "m", "m", 0.5)
    gate = asyncio.Event()

    class Gated(StubClassifier):
        def warm_up(self) -> None:
            pass

        def classify(self, source: bytes | Path, filename: str | None = None):  # type: ignore[override]
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
            return super().classify(source, filename)

    loop = asyncio.get_running_loop()
    jobs = await ThreadJobs.create(
        model, loader=lambda d, limits: Gated(d, limits), workers=1, max_pending=2
    )
    try:
        running = [asyncio.create_task(jobs.classify(clip, f"{i}.wav")) for i in range(2)]
        await asyncio.sleep(0)  # let both be admitted
        assert jobs.pending == 2
        with pytest.raises(BusyError) as busy:
            await jobs.classify(clip, "third.wav")
        assert "try again" in str(busy.value)
        gate.set()
        assert len(await asyncio.gather(*running)) == 2
        assert jobs.pending == 0
        assert (await jobs.classify(clip, "fourth.wav")).model_version == "m"
    finally:
        gate.set()
        await jobs.close()


async def test_thread_jobs_reload_keeps_the_old_model_on_failure(
    tmp_path: Path, clip: bytes
) -> None:
    jobs = await ThreadJobs.create(
        make_stub_artifact(tmp_path / "a", "a", 0.5), loader=load_stub, limits=Limits()
    )
    try:
        with pytest.raises(ModelError):
            await jobs.reload(tmp_path / "missing")
        assert (await jobs.info())["version"] == "a"
        await jobs.reload(make_stub_artifact(tmp_path / "b", "b", 0.5))
        assert (await jobs.classify(clip, "x.wav")).model_version == "b"
    finally:
        await jobs.close()


async def test_retrain_runs_in_a_child_and_reports_progress_and_failures(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    lines: list[str] = []
    outcome = await retrain_in_subprocess(
        data,
        tmp_path / "out",
        current_metrics={"accuracy": 0.9},
        progress=lines.append,
        target=stub_retrain,
    )
    assert lines == ["reading the training data", "training"]
    assert outcome.metrics["accuracy"] == 0.8
    assert outcome.not_worse is False  # the real is_not_worse: 0.8 < 0.9
    assert (tmp_path / "out" / "metadata.json").is_file()

    (data / "stub_training.json").write_text(json.dumps({"fail": True}))
    with pytest.raises(TrainingError, match="feature table is unreadable"):
        await retrain_in_subprocess(
            data, tmp_path / "out2", current_metrics=None, target=stub_retrain
        )
    (data / "stub_training.json").write_text(json.dumps({"die": True}))
    with pytest.raises(TrainingError, match="stopped unexpectedly"):
        await retrain_in_subprocess(
            data, tmp_path / "out3", current_metrics=None, target=stub_retrain
        )
