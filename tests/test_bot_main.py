"""``python -m bot`` as a user starts it: settings from the environment, the shipped model, the
fake Discord's endpoints, a dropped song answered, a clean stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHIPPED_MODEL, shipped_genres
from fake_discord import FakeDiscord
from synth import DATA_DIR

from genre_core.result import display_name


@pytest.mark.shared_data
async def test_python_m_bot_serves_the_fake_and_stops_cleanly(
    fake_discord: FakeDiscord, tmp_path: Path
) -> None:
    song = DATA_DIR / "gtzan" / "audio" / "jazz.00000.mp3"
    if not (SHIPPED_MODEL / "metadata.json").is_file():
        pytest.skip(f"no shipped model in {SHIPPED_MODEL} yet (train it with `genre train`)")
    if not song.is_file():
        pytest.skip(f"{song} not found (../shared/data absent)")
    fake = fake_discord
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GENRE_"))}
    env.update(
        {
            "DISCORD_TOKEN": fake.token,
            "DISCORD_API_BASE": fake.api_base,
            "DISCORD_GATEWAY_URL": fake.gateway_url,
            "DISCORD_DEV_GUILD_ID": str(fake.guild_id),
            "GENRE_MODEL_DIR": str(SHIPPED_MODEL),
            "GENRE_STATE_DIR": str(tmp_path / "var"),
            "GENRE_WORKERS": "1",
        }
    )
    lines: list[str] = []
    ready = asyncio.Event()

    async def read_output(stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            lines.append(raw.decode(errors="replace"))
            if "ready as" in lines[-1]:
                ready.set()

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    reader = asyncio.create_task(read_output(process.stdout))
    try:
        # The gateway connects and commands sync while the workers load the model.
        await fake.wait_for(lambda f: f.connected and f.commands.syncs, timeout=240)
        assert {"genre", "retrain", "model", "Classify genre"} <= set(
            fake.commands.names(fake.guild_id)
        )
        await asyncio.wait_for(ready.wait(), timeout=60)
        user = fake.add_user("listener")
        message = await fake.send_message(
            user, "", [fake.add_attachment(song.read_bytes(), song.name, "audio/mpeg")]
        )
        [reply] = await fake.wait_for(
            lambda f: [
                m
                for m in f.messages()
                if (m.get("message_reference") or {}).get("message_id") == message["id"]
            ],
            timeout=120,
        )
        title = reply["embeds"][0]["title"]
        assert not title.startswith("⚠️"), reply["embeds"][0]
        if not title.startswith("🔇"):
            assert any(display_name(g) in title for g in shipped_genres())
    finally:
        if process.returncode is None:
            # What docker stop and systemd send (the shard tests stop theirs with Ctrl-C).
            process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=60)
        await reader
    output = "".join(lines)
    assert code == 0, output[-3000:]
    assert "stopped" in output.splitlines()[-1], output[-3000:]  # the last line: nothing after
    assert "Traceback" not in output and "Unclosed" not in output, output[-3000:]
    assert fake.token not in output
