"""/retrain and /model end to end: admin checks, a new version published and swapped in.

Training is the stand-in from conftest (it writes a small artifact in a child process), but the
registry, the job runner's reload and the whole Discord path are real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import StartBot
from fake_discord import FakeDiscord

from genre_core.registry import ModelRegistry


def responses(fake: FakeDiscord, inter: dict[str, Any]) -> list[dict[str, Any]]:
    return fake.interaction_responses(inter["id"])


def final_embed(fake: FakeDiscord, inter: dict[str, Any]) -> dict[str, Any] | None:
    """The embed the command ended with (its original message, edited), once there."""
    for entry in reversed(responses(fake, inter)):
        message = entry.get("message") or {}
        if entry["status"] == 200 and message.get("embeds"):
            return message["embeds"][0]
    return None


def ephemeral_text(fake: FakeDiscord, inter: dict[str, Any]) -> str | None:
    for entry in responses(fake, inter):
        if entry["ephemeral"] and entry["status"] in (200, 204) and entry.get("message"):
            return entry["message"]["content"]
    return None


def configure_training(data_dir: Path, **config: Any) -> None:
    (data_dir / "stub_training.json").write_text(json.dumps(config))


async def test_retrain_is_refused_for_a_non_admin(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    member = fake.add_user("member")
    # Discord hides the command from members without Manage Server...
    with pytest.raises(PermissionError):
        await fake.invoke_slash(member, "retrain")
    # ...but a server may grant it to everyone (Server Settings > Integrations): the bot's own
    # check must still refuse.
    for command in fake.commands.scope(None):
        if command["name"] == "retrain":
            command["default_member_permissions"] = None
    inter = await fake.invoke_slash(member, "retrain")
    text = await fake.wait_for(lambda f: ephemeral_text(f, inter))
    assert "Only server admins" in text
    assert ModelRegistry(bot.settings.state_dir, bot.settings.model_dir).versions() == []
    assert (await bot.jobs.info())["version"] == "shipped-1"
    assert not (tmp_path / "var" / "candidates").exists()


async def test_retrain_by_an_admin_publishes_a_new_version_and_swaps_it_in(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    configure_training(tmp_path / "data", accuracy=0.9, delay_s=0.5)
    admin = fake.add_user("admin", admin=True)
    inter = await fake.invoke_slash(admin, "retrain")

    embed = await fake.wait_for(lambda f: final_embed(f, inter), timeout=90)
    registry = ModelRegistry(bot.settings.state_dir, bot.settings.model_dir)
    [version] = registry.versions()
    assert embed["title"] == f"✅ Model {version} is now serving"
    table = embed["fields"][0]["value"]
    assert "0.900" in table and "0.500" in table  # new next to current
    entries = responses(fake, inter)
    assert entries[0]["kind"] == "callback" and entries[0]["type"] == 4
    progress = [
        e["message"]["content"]
        for e in entries
        if e["kind"] == "edit_original" and e["message"] and e["message"]["content"]
    ]
    assert any("Retraining" in line for line in progress)
    # Swapped in: the workers serve it, and answers say so.
    assert (await bot.jobs.info())["version"] == version
    assert registry.current_dir().name == version
    user = fake.add_user("listener")
    message = await fake.send_message(
        user, "", [fake.add_attachment(mp3_clip, "after.mp3", "audio/mpeg")]
    )
    reply = await fake.wait_for(
        lambda f: [
            m
            for m in f.messages()
            if (m.get("message_reference") or {}).get("message_id") == message["id"]
        ]
    )
    assert f"model {version}" in reply[0]["embeds"][0]["footer"]["text"]
    # The candidate was copied into the registry and cleaned up.
    assert list((tmp_path / "var" / "candidates").iterdir()) == []


async def test_a_worse_model_is_kept_out_unless_forced(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot(compare_target="genre_core.training:is_not_worse")  # the real rule
    configure_training(tmp_path / "data", accuracy=0.3)
    admin = fake.add_user("admin", admin=True)

    inter = await fake.invoke_slash(admin, "retrain")
    embed = await fake.wait_for(lambda f: final_embed(f, inter), timeout=90)
    assert embed["title"] == "↩️ Kept the current model"
    assert "force" in embed["description"]
    assert (await bot.jobs.info())["version"] == "shipped-1"

    forced = await fake.invoke_slash(admin, "retrain", options={"force": True})
    embed = await fake.wait_for(lambda f: final_embed(f, forced), timeout=90)
    [version] = ModelRegistry(bot.settings.state_dir, bot.settings.model_dir).versions()
    assert embed["title"] == f"✅ Model {version} is now serving"
    assert "Forced" in embed["description"]
    assert (await bot.jobs.info())["version"] == version


async def test_one_retrain_at_a_time(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    configure_training(tmp_path / "data", accuracy=0.9, delay_s=2.0)
    admin = fake.add_user("admin", admin=True)
    first = await fake.invoke_slash(admin, "retrain")
    await fake.wait_for(lambda f: any(e["kind"] == "callback" for e in responses(f, first)))
    second = await fake.invoke_slash(admin, "retrain")
    text = await fake.wait_for(lambda f: ephemeral_text(f, second))
    assert "already running" in text
    await fake.wait_for(lambda f: final_embed(f, first), timeout=90)
    assert len(ModelRegistry(bot.settings.state_dir, bot.settings.model_dir).versions()) == 1


async def test_model_info_and_rollback(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    configure_training(tmp_path / "data", accuracy=0.9)
    admin, member = fake.add_user("admin", admin=True), fake.add_user("member")

    info = await fake.invoke_slash(member, "model info")
    embed = await fake.wait_for(lambda f: final_embed(f, info))
    assert embed["title"] == "🧠 Model shipped-1"
    assert "accuracy: 0.500" in embed["fields"][-1]["value"]

    retrain = await fake.invoke_slash(admin, "retrain")
    await fake.wait_for(lambda f: final_embed(f, retrain), timeout=90)
    new_version = (await bot.jobs.info())["version"]
    assert new_version != "shipped-1"

    refused = await fake.invoke_slash(member, "model rollback")
    assert "Only server admins" in await fake.wait_for(lambda f: ephemeral_text(f, refused))
    assert (await bot.jobs.info())["version"] == new_version

    rollback = await fake.invoke_slash(admin, "model rollback")
    embed = await fake.wait_for(lambda f: final_embed(f, rollback))
    assert embed["title"] == "🧠 Model shipped-1"
    assert (await bot.jobs.info())["version"] == "shipped-1"


async def test_a_failed_retrain_says_why_and_changes_nothing(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot()
    configure_training(tmp_path / "data", fail=True)
    admin = fake.add_user("admin", admin=True)
    inter = await fake.invoke_slash(admin, "retrain")

    def failed(f: FakeDiscord) -> str | None:
        for entry in responses(f, inter):
            content = (entry.get("message") or {}).get("content") or ""
            if entry["kind"] == "edit_original" and content.startswith("❌"):
                return content
        return None

    text = await fake.wait_for(failed, timeout=90)
    assert "feature table is unreadable" in text
    assert (await bot.jobs.info())["version"] == "shipped-1"
    assert ModelRegistry(bot.settings.state_dir, bot.settings.model_dir).versions() == []
    assert list((tmp_path / "var" / "candidates").iterdir()) == []
