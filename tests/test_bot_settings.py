"""Settings from the environment and .env, the start-up message, and the token kept secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import StartBot
from fake_discord import FakeDiscord

from bot.__main__ import RedactFilter, main
from bot.settings import BotSettings, load_settings

ENV_NAMES = (
    "DISCORD_TOKEN",
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "DISCORD_DEV_GUILD_ID",
    "GENRE_MODEL_DIR",
    "GENRE_STATE_DIR",
    "GENRE_DATA_DIR",
    "GENRE_MAX_BYTES",
    "GENRE_MAX_DURATION_S",
    "GENRE_DOWNLOAD_TIMEOUT_S",
    "GENRE_MAX_REDIRECTS",
    "GENRE_ALLOW_PRIVATE_URLS",
    "GENRE_DECODE_TIMEOUT_S",
    "GENRE_JOB_TIMEOUT_S",
    "GENRE_WORKERS",
    "GENRE_QUEUE_SIZE",
    "GENRE_USER_CONCURRENCY",
    "GENRE_USER_RATE",
    "GENRE_USER_RATE_WINDOW_S",
    "GENRE_ADMIN_PERMISSION",
    "GENRE_ADMIN_IDS",
    "GENRE_DATABASE_URL",
    "GENRE_VOTES_TO_ACCEPT",
    "GENRE_VOTE_RATE",
    "GENRE_VOTE_WINDOW_S",
    "GENRE_KEEP_DAYS",
    "GENRE_KEEP_AUDIO_S",
    "GENRE_NEW_GENRE_MIN_CLIPS",
    "GENRE_NEW_GENRE_MIN_UPLOADERS",
    "GENRE_QUEUE_URL",
    "GENRE_SHARD_IDS",
    "GENRE_SHARD_COUNT",
    "GENRE_METRICS_PORT",
)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No bot settings in the environment, and a working directory without .env."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_missing_token_stops_start_up_with_a_clear_message(clean_env: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        main()
    assert "DISCORD_TOKEN is not set" in str(stop.value)
    assert ".env.example" in str(stop.value)


def test_settings_come_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    monkeypatch.setenv("DISCORD_API_BASE", "http://127.0.0.1:9/api/v10")
    monkeypatch.setenv("DISCORD_DEV_GUILD_ID", "")  # empty means "not set"
    monkeypatch.setenv("GENRE_ADMIN_IDS", "11, 22")
    monkeypatch.setenv("GENRE_MAX_BYTES", "1000")
    settings = load_settings()
    assert settings.token.get_secret_value() == "secret-token"
    assert settings.api_base == "http://127.0.0.1:9/api/v10"
    assert settings.gateway_url == "wss://gateway.discord.gg/"  # Discord's, by default
    assert settings.dev_guild_id is None
    assert settings.admin_ids == {11, 22}
    assert settings.limits.max_bytes == 1000
    assert "secret-token" not in repr(settings) and "secret-token" not in str(settings)


def test_settings_come_from_dot_env(clean_env: Path) -> None:
    (clean_env / ".env").write_text("DISCORD_TOKEN=from-file\nGENRE_ADMIN_IDS=[5]\n")
    settings = load_settings()
    assert settings.token.get_secret_value() == "from-file"
    assert settings.admin_ids == {5}


def test_a_bad_value_names_the_setting(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "t")
    monkeypatch.setenv("GENRE_WORKERS", "many")
    with pytest.raises(SystemExit, match="GENRE_WORKERS"):
        load_settings()


def test_env_example_lists_every_setting() -> None:
    example = (ROOT / ".env.example").read_text()
    keys = {
        line.split("=", 1)[0] for line in example.splitlines() if line and not line.startswith("#")
    }
    aliases = {
        f.validation_alias.choices[0]  # type: ignore[union-attr]
        for f in BotSettings.model_fields.values()
    }
    assert keys == aliases == set(ENV_NAMES)


def test_redact_filter_hides_the_secret() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token is %s", ("abc123",), None)
    RedactFilter("abc123").filter(record)
    assert record.getMessage() == "token is [redacted]"


async def test_the_token_never_reaches_the_logs(
    fake_discord: FakeDiscord,
    start_bot: StartBot,
    caplog: pytest.LogCaptureFixture,
    mp3_clip: bytes,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = fake_discord
    await start_bot()
    user = fake.add_user("u")
    good = await fake.send_message(user, "", [fake.add_attachment(mp3_clip, "a.mp3", "audio/mpeg")])
    bad = await fake.send_message(user, "", [fake.add_attachment(b"junk", "b.mp3", None)])
    inter = await fake.invoke_slash(user, "genre")
    await fake.wait_for(lambda f: len(f.messages()) == 2 and f.interaction_responses(inter["id"]))
    assert good and bad
    assert len(caplog.records) > 20  # discord.py's debug logging was captured
    assert fake.token not in caplog.text
    assert all(fake.token not in r.getMessage() for r in caplog.records)
