"""Retrain safety: publishing survives ``kill -9`` at any moment, a model that does not load never
serves, rollback restores the previous version, and only admins can do either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SHIPPED_MODEL, STUB_WEIGHTS, StartBot, make_stub_artifact, replies_to
from fake_discord import FakeDiscord
from synth import music_like, wav_bytes

from genre_core.errors import ModelError
from genre_core.registry import ModelRegistry, is_complete

# --- kill -9 while publishing ---------------------------------------------------------------------

#: Publishes copies of a real artifact (and now and then rolls back) until it is killed.
PUBLISHER = """
import json, random, shutil, sys, uuid
from pathlib import Path
from genre_core.registry import ModelRegistry

state, shipped, source, scratch = (Path(a) for a in sys.argv[1:5])
rng = random.Random(int(sys.argv[5]))
registry = ModelRegistry(state, shipped)
print("ready", flush=True)
while True:
    if registry.versions() and rng.random() < 0.25:
        registry.rollback()
        continue
    version = f"v-{uuid.uuid4().hex[:12]}"
    candidate = scratch / version
    shutil.copytree(source, candidate)
    meta = json.loads((candidate / "metadata.json").read_text())
    meta["version"] = version
    (candidate / "metadata.json").write_text(json.dumps(meta))
    registry.publish(candidate)
    shutil.rmtree(candidate)
    # Keep the disk small: versions nothing refers to any more (this is the test's doing).
    keep = set(registry.versions())
    for folder in (state / "versions").iterdir():
        if not folder.name.startswith(".") and folder.name not in keep:
            shutil.rmtree(folder)
"""
KILLS = 10


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(
    not (SHIPPED_MODEL / "model.keras").is_file(), reason="no shipped model in models/genre"
)
def test_kill_9_at_any_moment_of_publishing_leaves_a_complete_model(tmp_path: Path) -> None:
    state, scratch = tmp_path / "state", tmp_path / "scratch"
    scratch.mkdir()
    registry = ModelRegistry(state, SHIPPED_MODEL)
    weights = sha256(SHIPPED_MODEL / "model.keras")
    rng = random.Random(5)
    for run in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, str(state), str(SHIPPED_MODEL)]
            + [str(SHIPPED_MODEL), str(scratch), str(run)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None and child.stdout.readline() == b"ready\n"
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=rng.uniform(0.05, 0.5))
            assert child.poll() is None, "the publisher should still be running"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        # What the next start sees.
        assert_consistent(registry)
        assert sha256(registry.current_dir() / "model.keras") == weights, "the model file is whole"
        for entry in scratch.iterdir():  # half-made candidates: not the registry's concern
            shutil.rmtree(entry)
    # The registry still works after all that, and its current model really loads.
    registry.publish(make_copy(SHIPPED_MODEL, tmp_path / "final", "v-final"))
    assert registry.current_dir().name == "v-final"
    assert not list(state.glob("versions/.*.tmp")) and not list(state.glob(".*.tmp"))
    from genre_core.model import GenreModel

    model = GenreModel.load(registry.current_dir())
    assert model.metadata_["version"] == "v-final"


def assert_consistent(registry: ModelRegistry) -> None:
    """What a restarted bot relies on: ``current`` is complete, the history ends at it, and a
    rollback would go to a complete model."""
    current = registry.current_dir()
    assert is_complete(current)
    versions = registry.versions()
    if current == registry.shipped_dir:
        assert versions == []
    else:
        assert json.loads((current / "metadata.json").read_text())["version"] == current.name
        assert versions[-1] == current.name
    if versions:
        _, previous = registry.rollback_target()
        assert is_complete(previous)


class Crash(BaseException):
    """The process dies here (BaseException: nothing in the registry may catch it)."""


def make_copy(source: Path, target: Path, version: str) -> Path:
    """A copy of an artifact under another version."""
    shutil.copytree(source, target)
    meta = json.loads((target / "metadata.json").read_text())
    meta["version"] = version
    (target / "metadata.json").write_text(json.dumps(meta))
    return target


def snapshot(registry: ModelRegistry) -> tuple[str, list[str]]:
    """What serves and what a rollback walks back through."""
    return registry.current_dir().name, registry.versions()


@pytest.mark.parametrize(
    ("published", "operation"),
    [
        ([], "publish"),
        (["v1"], "publish"),
        (["v1", "v2"], "publish"),
        (["v1"], "rollback"),
        (["v1", "v2"], "rollback"),
    ],
)
def test_a_crash_at_any_step_leaves_the_registry_before_or_after_never_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, published: list[str], operation: str
) -> None:
    """Random kills rarely land in the short steps (a rename, a link). Here the process "dies"
    before each file-system step of a publish or a rollback in turn: whatever the step, a
    restarted registry is in the state before the operation or after it, and consistent."""
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped", 0.5)
    base = ModelRegistry(tmp_path / "base", shipped)
    base.state_dir.mkdir()
    for version in published:
        base.publish(make_stub_artifact(tmp_path / "candidates" / version, version, 0.5))
    candidate = make_stub_artifact(tmp_path / "candidates" / "v-new", "v-new", 0.5)
    before = snapshot(base)

    steps = {"count": 0, "crash_at": 0}
    real = {name: getattr(os, name) for name in ("replace", "fsync", "symlink", "unlink")}

    def step(name: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            steps["count"] += 1
            if steps["count"] == steps["crash_at"]:
                raise Crash(name)
            return real[name](*args, **kwargs)

        return wrapper

    outcomes = set()
    for crash_at in range(1, 200):
        work = tmp_path / f"run{crash_at}"
        shutil.copytree(base.state_dir, work, symlinks=True)
        registry = ModelRegistry(work, shipped)
        steps.update(count=0, crash_at=crash_at)
        for name in real:
            monkeypatch.setattr(os, name, step(name))
        try:
            registry.publish(candidate) if operation == "publish" else registry.rollback()
            finished = True
        except Crash:
            finished = False
        finally:
            monkeypatch.undo()
        restarted = ModelRegistry(work, shipped)
        assert_consistent(restarted)
        outcomes.add(state := (snapshot(restarted)[0], tuple(snapshot(restarted)[1])))
        if finished:
            break
    else:
        pytest.fail(f"{operation} never finished")
    after = state
    assert outcomes <= {(before[0], tuple(before[1])), after}, outcomes
    assert after != (before[0], tuple(before[1]))
    assert crash_at > 3, f"{operation} should take several steps, each one tried"
    # The next publish cleans up whatever the crashes left.
    restarted.publish(make_stub_artifact(tmp_path / "candidates" / "v-last", "v-last", 0.5))
    assert not list(restarted.state_dir.glob("**/.*.tmp"))


@pytest.mark.skipif(
    not (SHIPPED_MODEL / "model.keras").is_file(), reason="no shipped model in models/genre"
)
def test_a_half_written_real_model_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    from genre_core.model import GenreModel

    damaged = make_copy(SHIPPED_MODEL, tmp_path / "damaged", "v-damaged")
    weights = (damaged / "model.keras").read_bytes()
    (damaged / "model.keras").write_bytes(weights[: len(weights) // 2])
    assert is_complete(damaged)  # both files are there: only loading tells
    with pytest.raises(ModelError, match="could not be read.*damaged"):
        GenreModel.load(damaged)


# --- through the bot ------------------------------------------------------------------------------


def configure_training(data_dir: Path, **config: Any) -> None:
    (data_dir / "stub_training.json").write_text(json.dumps(config))


def final_embed(fake: FakeDiscord, inter: dict[str, Any]) -> dict[str, Any] | None:
    for entry in reversed(fake.interaction_responses(inter["id"])):
        message = entry.get("message") or {}
        if entry["status"] == 200 and message.get("embeds"):
            return message["embeds"][0]
    return None


def failure(fake: FakeDiscord, inter: dict[str, Any]) -> str | None:
    """The ❌ line a failed /retrain leaves, or an ephemeral refusal."""
    for entry in fake.interaction_responses(inter["id"]):
        content = (entry.get("message") or {}).get("content") or ""
        if entry["status"] in (200, 204) and (content.startswith("❌") or entry["ephemeral"]):
            return content
    return None


async def retrain(fake: FakeDiscord, admin: int, **options: Any) -> dict[str, Any]:
    inter = await fake.invoke_slash(admin, "retrain", options=options or None)
    return await fake.wait_for(lambda f: final_embed(f, inter), timeout=90)


async def version_in_answers(fake: FakeDiscord, user: int) -> str:
    """The model version a dropped clip's answer names."""
    message = await fake.send_message(
        user, "", [fake.add_attachment(wav_bytes(music_like(3.5)), "probe.wav", "audio/wav")]
    )
    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    return reply["embeds"][0]["footer"]["text"].rsplit("model ", 1)[1]


async def test_a_retrained_model_that_does_not_load_never_serves(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    registry = ModelRegistry(bot.settings.state_dir, bot.settings.model_dir)
    configure_training(tmp_path / "data", accuracy=0.9, corrupt=True)  # complete, half-written
    admin, user = fake.add_user("admin", admin=True), fake.add_user("listener")
    inter = await fake.invoke_slash(admin, "retrain")
    text = await fake.wait_for(lambda f: failure(f, inter), timeout=90)
    assert re.search(r"The new model \(stub-\w+\) failed to load, so the current one", text)
    assert "damaged or incomplete" in text
    assert registry.versions() == [] and registry.current_dir() == bot.settings.model_dir
    assert not [p for p in registry.versions_dir.iterdir()], "the refused version was removed"
    assert await version_in_answers(fake, user) == "shipped-1"


async def test_rollback_restores_the_previous_version_and_refuses_one_that_no_longer_loads(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    registry = ModelRegistry(bot.settings.state_dir, bot.settings.model_dir)
    admin, user = fake.add_user("admin", admin=True), fake.add_user("listener")
    configure_training(tmp_path / "data", accuracy=0.9)
    await retrain(fake, admin)
    configure_training(tmp_path / "data", accuracy=0.95)
    await retrain(fake, admin)
    first, second = registry.versions()
    assert await version_in_answers(fake, user) == second

    # The previous version's model file was damaged on disk since: rolling back to it must
    # change nothing.
    (registry.version_dir(first) / "model.keras").write_bytes(STUB_WEIGHTS[:3])
    refused = await fake.invoke_slash(admin, "model rollback")
    text = await fake.wait_for(lambda f: failure(f, refused))
    assert f"Model {first} failed to load, so nothing changed" in text
    assert registry.versions() == [first, second] and registry.current_dir().name == second
    assert await version_in_answers(fake, user) == second

    # Repaired: the rollback goes through, and answers come from the previous version.
    (registry.version_dir(first) / "model.keras").write_bytes(STUB_WEIGHTS)
    done = await fake.invoke_slash(admin, "model rollback")
    embed = await fake.wait_for(lambda f: final_embed(f, done))
    assert embed["title"] == f"🧠 Model {first}"
    assert registry.versions() == [first] and registry.current_dir().name == first
    assert await version_in_answers(fake, user) == first


async def test_only_admins_can_retrain_or_roll_back(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    registry = ModelRegistry(bot.settings.state_dir, bot.settings.model_dir)
    admin = fake.add_user("admin", admin=True)
    configure_training(tmp_path / "data", accuracy=0.9)
    await retrain(fake, admin)
    [version] = registry.versions()
    # The server lets everyone see the commands (Server Settings > Integrations), so only the
    # bot's own check stands between a member and the model.
    for scope in (None, fake.guild_id):
        for command in fake.commands.scope(scope):
            command["default_member_permissions"] = None
    member = fake.add_user("member")
    for command in ("retrain", "model rollback"):
        inter = await fake.invoke_slash(member, command)
        text = await fake.wait_for(lambda f, i=inter: failure(f, i))
        assert "Only server admins can do that" in text
    await asyncio.sleep(0.5)  # were anything started, it would show by now
    assert registry.versions() == [version] and registry.current_dir().name == version
    assert (await bot.jobs.info())["version"] == version


async def test_a_damaged_current_model_at_start_up_falls_back_with_a_clear_log(
    fake_discord: FakeDiscord,
    start_bot: StartBot,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shipped = tmp_path / "models" / "genre"
    registry = ModelRegistry(tmp_path / "var", shipped)
    registry.publish(make_stub_artifact(tmp_path / "candidate", "v-published", 0.9))
    (registry.current_dir() / "model.keras").write_bytes(b"half")  # damaged while stopped
    bot = await start_bot()
    assert (await bot.jobs.info())["version"] == "shipped-1"
    assert "failed to load; serving the shipped model" in caplog.text
    assert "damaged or incomplete" in caplog.text
    user = fake_discord.add_user("listener")
    assert await version_in_answers(fake_discord, user) == "shipped-1"


async def test_candidates_left_by_a_killed_retrain_are_cleared_at_start_up(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    # What a bot killed mid-/retrain leaves: the training child's half-written candidate.
    leftover = tmp_path / "var" / "candidates" / "20250101T000000-deadbeef"
    make_stub_artifact(leftover, "never-published", 0.9)
    (leftover / "model.keras").write_bytes(b"half")
    bot = await start_bot()
    assert not leftover.exists()
    assert ModelRegistry(bot.settings.state_dir, bot.settings.model_dir).versions() == []
    assert (await bot.jobs.info())["version"] == "shipped-1"
