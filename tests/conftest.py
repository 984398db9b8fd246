"""Shared test fixtures: the fake Discord, generated audio, stand-ins, and the bot wired to them.

The stand-ins live here (not in a test module) because the job runner's worker processes and
the retrain child import them by reference (``conftest.load_stub``): this directory is on
``sys.path`` in pytest and in every process it spawns.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import pytest_asyncio
from synth import encode, wav_bytes

from genre_core.audio import decode
from genre_core.errors import ModelMismatchError, ModelMissingError
from genre_core.jobs import ClassifyJobs, ThreadJobs
from genre_core.result import Prediction, WindowPrediction
from genre_core.settings import SAMPLE_RATE, Limits

if TYPE_CHECKING:
    from fake_discord import FakeDiscord

    from bot.client import GenreBot
    from bot.settings import BotSettings

# The fake's fixtures (``fake_discord``). Loaded as a plugin, not imported: worker processes
# import this module for the stand-ins below and need neither the fake nor discord.py.
pytest_plugins = ("fake_discord.fixtures",)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "genre"


def shipped_genres() -> list[str]:
    """The shipped model's classes (they come from its training data)."""
    return list(json.loads((SHIPPED_MODEL / "metadata.json").read_text())["genres"])

GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)


# --- generated audio ---------------------------------------------------------------------------


def music_like(seconds: float, *, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """A few seconds of chords over a beat: enough structure to decode and analyse."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    y = sum(0.2 * np.sin(2 * np.pi * root * ratio * t) for ratio in (1.0, 1.25, 1.5, 2.0))
    beat = (np.sin(2 * np.pi * 2.0 * t) > 0.95).astype(float) * rng.standard_normal(t.size) * 0.3
    return (y + beat).astype(np.float32) / 2.0


@pytest.fixture(scope="session")
def mp3_clip() -> bytes:
    """Eight seconds of music-like audio as mp3."""
    return encode(music_like(8.0), "mp3")


@pytest.fixture(scope="session")
def mp3_clip_2() -> bytes:
    """Another, different, clip."""
    return encode(music_like(6.0, seed=1), "mp3")


# --- stand-ins for the model ---------------------------------------------------------------------


#: The stand-in's "weights": :class:`StubClassifier` refuses a model file holding anything else.
STUB_WEIGHTS = b"stand-in weights"


def make_stub_artifact(directory: Path, version: str, accuracy: float) -> Path:
    """A directory the registry accepts as a complete artifact and :func:`load_stub` loads."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.keras").write_bytes(STUB_WEIGHTS)
    (directory / "metadata.json").write_text(
        json.dumps(
            {
                "version": version,
                "family": "stub",
                "genres": list(GENRES),
                "trained_at": "2025-01-01T00:00:00+00:00",
                "metrics": {"accuracy": accuracy, "macro_f1": accuracy - 0.01},
            }
        )
    )
    return directory


class StubClassifier:
    """Real decoding (``genre_core.audio.decode``, so bad files fail as in production), then
    deterministic made-up probabilities instead of a model: fast and TensorFlow-free.

    ``burn_per_audio_s`` spends that much CPU time per second of audio in pure Python, holding
    the GIL, like a slow feature extractor.
    """

    def __init__(self, model_dir: Path, limits: Limits, burn_per_audio_s: float = 0.0) -> None:
        try:
            self.meta = json.loads((Path(model_dir) / "metadata.json").read_text())
            weights = (Path(model_dir) / "model.keras").read_bytes()
        except (OSError, ValueError) as exc:
            raise ModelMissingError(f"No usable model in {model_dir}.") from exc
        if weights != STUB_WEIGHTS:  # what a half-written model file looks like to a loader
            raise ModelMismatchError(f"The model file in {model_dir} is damaged or incomplete.")
        self.model_dir = Path(model_dir)
        self.limits = limits
        self.burn_per_audio_s = burn_per_audio_s

    def warm_up(self) -> None:
        self.classify(wav_bytes(music_like(3.0)), "warm-up.wav")

    @property
    def info(self) -> dict[str, Any]:
        return {**self.meta, "path": str(self.model_dir)}

    def classify(self, source: bytes | Path, filename: str | None = None) -> Prediction:
        started = time.perf_counter()
        audio = decode(source, self.limits)
        burn_until = time.process_time() + self.burn_per_audio_s * audio.duration_s
        while time.process_time() < burn_until:
            sum(i * i for i in range(2000))
        seed = int(np.abs(audio.samples[: SAMPLE_RATE * 5]).mean() * 1e6)
        logits = np.random.default_rng(seed).normal(size=len(GENRES)) * 2
        p = np.exp(logits) / np.exp(logits).sum()
        probabilities = {g: float(x) for g, x in zip(GENRES, p, strict=True)}
        genre = max(probabilities, key=probabilities.__getitem__)
        analysed = min(audio.duration_s, 30.0)
        return Prediction(
            genre=genre,
            probabilities=probabilities,
            windows=[WindowPrediction(0.0, analysed, genre, probabilities)],
            duration_s=audio.duration_s,
            analysed_s=analysed,
            timings_ms={"total": (time.perf_counter() - started) * 1000},
            model_family="stub",
            model_version=str(self.meta["version"]),
        )


def load_stub(model_dir: Path, limits: Limits) -> StubClassifier:
    """Loader for the job runners (module level: worker processes import it by name)."""
    return StubClassifier(model_dir, limits)


def load_burning_stub(model_dir: Path, limits: Limits) -> StubClassifier:
    """A stand-in that holds the GIL for 20 ms of CPU per second of audio."""
    return StubClassifier(model_dir, limits, burn_per_audio_s=0.02)


class CrashingStub(StubClassifier):
    """Kills its worker process when asked to classify a file named ``crash.wav``."""

    def classify(self, source: bytes | Path, filename: str | None = None) -> Prediction:
        if filename == "crash.wav":
            os._exit(70)
        return super().classify(source, filename)


def load_crashing_stub(model_dir: Path, limits: Limits) -> StubClassifier:
    return CrashingStub(model_dir, limits)


class HangingStub(StubClassifier):
    """Never finishes a file named ``hang.wav``: what a worker stuck in native code looks like
    from outside (it sleeps, so it costs no CPU). Writes its pid to the file named by
    ``GENRE_TEST_HANG_PID_FILE`` first, when set. ``slow.wav`` takes ``SLOW_S`` seconds."""

    SLOW_S = 3.0

    def classify(self, source: bytes | Path, filename: str | None = None) -> Prediction:
        if filename == "hang.wav":
            if pid_file := os.environ.get("GENRE_TEST_HANG_PID_FILE"):
                Path(pid_file).write_text(str(os.getpid()))
            time.sleep(3600)
        if filename == "slow.wav":
            time.sleep(self.SLOW_S)
        return super().classify(source, filename)


def load_hanging_stub(model_dir: Path, limits: Limits) -> StubClassifier:
    return HangingStub(model_dir, limits)


def stub_retrain(
    data_dir: Path, out_dir: Path, *, seed: int = 0,
    progress: Callable[[str], None] | None = None, **_community: Any,
) -> dict[str, Any]:
    """Stand-in for ``genre_core.training.retrain``: writes a stub artifact.

    ``data_dir/stub_training.json`` sets ``accuracy`` and ``delay_s`` (time between the first
    progress line and the result); ``fail`` raises, ``die`` kills the process, ``corrupt``
    writes an artifact that looks complete but whose model file is cut short.
    """
    config_file = Path(data_dir) / "stub_training.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    say = progress or (lambda line: None)
    say("reading the training data")
    if config.get("fail"):
        raise ValueError("the feature table is unreadable")
    if config.get("die"):
        os._exit(9)
    time.sleep(float(config.get("delay_s", 0.0)))
    say("training")
    accuracy = float(config.get("accuracy", 0.8))
    make_stub_artifact(Path(out_dir), f"stub-{uuid.uuid4().hex[:8]}", accuracy)
    if config.get("corrupt"):
        (Path(out_dir) / "model.keras").write_bytes(STUB_WEIGHTS[:5])
    return {"accuracy": accuracy, "macro_f1": accuracy - 0.01}


def small_shared_retrain(data_dir: Path, out_dir: Path, **options: Any) -> dict[str, Any]:
    """The real ``/retrain`` on a handful of shared tracks: a genre with 5 counts (the shipped
    rule asks for 20, which no quick test can embed)."""
    from genre_core.training import retrain

    return retrain(data_dir, out_dir, shared_min_clips=5, **options)


async def thread_real_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    """The real classifier (shipped network, LiteRT) in one thread."""
    from genre_core.jobs import load_classifier

    return await ThreadJobs.create(
        model_dir, loader=load_classifier, workers=1, max_pending=2 + settings.queue_size,
        limits=settings.limits, job_timeout_s=settings.job_timeout_s,
        fallback_dir=settings.model_dir,
    )


async def thread_stub_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    """Job runner for most bot tests: the stand-in classifier in two threads."""
    return await ThreadJobs.create(
        model_dir,
        loader=load_stub,
        workers=2,
        max_pending=2 + settings.queue_size,
        limits=settings.limits,
        job_timeout_s=settings.job_timeout_s,
        fallback_dir=settings.model_dir,
    )


# --- the bot against the fake ------------------------------------------------------------------


def replies_to(fake: FakeDiscord, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Bot messages that reply to ``message``."""
    return [
        m
        for m in fake.messages()
        if (m.get("message_reference") or {}).get("message_id") == message["id"]
    ]


def assert_clean(fake: FakeDiscord) -> None:
    """Discord would have accepted every request the bot made."""
    assert fake.unknown_requests == []
    assert fake.invalid_requests == []


StartBot = Callable[..., Awaitable["GenreBot"]]


def hold_classifications(bot: GenreBot) -> asyncio.Event:
    """Make the bot's classifications wait until the returned event is set."""
    gate = asyncio.Event()
    classify = bot.jobs.classify

    async def held(data: bytes, filename: str | None) -> Any:
        await gate.wait()
        return await classify(data, filename)

    bot.jobs.classify = held  # type: ignore[method-assign]
    return gate


def accuracy_not_lower(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Stand-in for ``is_not_worse`` (same rule) that spares the retrain child importing
    ``genre_core.training``; the real one runs in test_bot_jobs and test_bot_admin."""
    return float(new["accuracy"]) >= float(old["accuracy"])


@pytest_asyncio.fixture
async def start_bot(fake_discord: FakeDiscord, tmp_path: Path) -> AsyncIterator[StartBot]:
    """Start the real :class:`GenreBot` against the fake; it is closed after the test.

    Call ``await start_bot(jobs_factory=..., **settings)``. By default: the stand-in
    classifier in threads, a stand-in shipped model (version ``shipped-1``, accuracy 0.5),
    state in ``tmp_path/var``, stand-in training and comparison, private URLs allowed (the
    fake's CDN is on 127.0.0.1).
    """
    stack = AsyncExitStack()
    shipped = make_stub_artifact(tmp_path / "models" / "genre", "shipped-1", 0.5)
    data_dir = tmp_path / "data"
    data_dir.mkdir()

    from fake_discord import running

    from bot.client import GenreBot
    from bot.settings import BotSettings

    async def start(
        *,
        jobs_factory: Any = thread_stub_jobs,
        retrain_target: Any = stub_retrain,
        compare_target: Any = accuracy_not_lower,
        **overrides: Any,
    ) -> GenreBot:
        values: dict[str, Any] = {
            "token": fake_discord.token,
            "api_base": fake_discord.api_base,
            "gateway_url": fake_discord.gateway_url,
            "model_dir": shipped,
            "state_dir": tmp_path / "var",
            "data_dir": data_dir,
            "allow_private_urls": True,
        }
        values.update(overrides)
        settings = BotSettings(_env_file=None, **values)  # type: ignore[call-arg]
        bot = GenreBot(
            settings,
            jobs_factory=jobs_factory,
            retrain_target=retrain_target,
            compare_target=compare_target,
        )
        await stack.enter_async_context(running(bot, fake_discord, timeout=120))
        return bot

    try:
        yield start
    finally:
        await stack.aclose()
