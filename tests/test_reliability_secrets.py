"""The token: read from the environment, never logged, never echoed in an error.

The corpus module greps every log line of a whole session of bad inputs for it; these tests
cover start-up, where the token is handled most.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from fake_discord import FakeDiscord

from bot.__main__ import configure_logging
from bot.settings import BotSettings, load_settings

SETTING_PREFIXES = ("DISCORD_", "GENRE_")


def bot_env(fake: FakeDiscord, token: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(SETTING_PREFIXES)}
    env.update(
        {
            "DISCORD_TOKEN": token,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "GENRE_STATE_DIR": str(tmp_path / "var"),
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


async def test_a_refused_token_stops_the_bot_without_echoing_it(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    wrong = "MTIz.wrong-token-" + "x" * 40
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env=bot_env(fake_discord, wrong, tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    text = output.decode(errors="replace")
    assert process.returncode == 1, text
    assert "Discord refused the token in DISCORD_TOKEN" in text
    assert "Traceback" not in text
    assert wrong not in text and wrong[:20] not in text
    # It was really tried: the fake saw a login with it, and refused it.
    assert any(r.path == "/users/@me" and r.status == 401 for r in fake_discord.requests)


def test_a_bad_setting_is_named_without_echoing_the_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in [k for k in os.environ if k.startswith(SETTING_PREFIXES)]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    secret = "secret-token-value-1234567890"
    monkeypatch.setenv("DISCORD_TOKEN", secret)
    monkeypatch.setenv("GENRE_JOB_TIMEOUT_S", "-5")
    monkeypatch.setenv("GENRE_USER_RATE", "lots")
    with pytest.raises(SystemExit) as stop:
        load_settings()
    message = str(stop.value)
    assert "GENRE_JOB_TIMEOUT_S" in message and "GENRE_USER_RATE" in message
    assert secret not in message


def test_anything_logging_the_token_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    secret = "another-secret-token-0987654321"
    settings = BotSettings(_env_file=None, token=secret)  # type: ignore[call-arg]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(settings)
        logging.getLogger("some.library").error("login with %s failed", secret)
        try:
            raise RuntimeError(f"HTTP 401 for Authorization: Bot {secret}")
        except RuntimeError:
            logging.getLogger("bot").exception("unexpected")
        for handler in root.handlers:
            handler.flush()
    finally:
        root.handlers[:], root.level = saved
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "login with [redacted] failed" in out
    assert "RuntimeError: HTTP 401 for Authorization: Bot [redacted]" in out  # traceback kept
    assert secret not in out
