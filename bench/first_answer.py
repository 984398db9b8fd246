"""How long a user waits after the bot starts: ``python -m bot`` as a user runs it, against the
local fake Discord, with a clip posted the moment the bot's gateway session is up.

Reports the seconds from the process start to the gateway connection (``bot_connected_s``) and
to the answer of that first clip (``bot_first_answer_s``): what "ready" means to a user.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.clips import Clip

ROOT = Path(__file__).resolve().parents[1]


def measure(clip: Clip, workers: int = 2) -> dict[str, float]:
    """Start the bot process, post ``clip`` as soon as it connects, time the answer."""
    tests_dir = str(ROOT / "tests")
    if tests_dir not in sys.path:
        sys.path.insert(0, tests_dir)  # fake_discord lives with the tests, imported as theirs
    return asyncio.run(_measure(clip, workers))


async def _measure(clip: Clip, workers: int) -> dict[str, float]:
    from fake_discord import FakeDiscord

    fake = FakeDiscord(heartbeat_interval_ms=1000)
    await fake.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "GENRE_"))}
            env |= {
                "DISCORD_TOKEN": fake.token, "DISCORD_API_BASE": fake.api_base,
                "DISCORD_GATEWAY_URL": fake.gateway_url, "DISCORD_DEV_GUILD_ID": str(fake.guild_id),
                "GENRE_STATE_DIR": str(Path(tmp) / "var"), "GENRE_WORKERS": str(workers),
                "PYTHONPATH": str(ROOT),
            }
            started = time.perf_counter()
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await fake.wait_for(lambda f: f.connected, timeout=120)
                connected = time.perf_counter() - started
                user = fake.add_user("first-listener")
                message = await fake.send_message(
                    user, "", [fake.add_attachment(clip.data, clip.path.name, "audio/mpeg")]
                )
                await fake.wait_for(lambda f: _reply(f, message["id"]), timeout=300)
                answered = time.perf_counter() - started
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGINT)
                await asyncio.wait_for(process.wait(), timeout=60)
    finally:
        await fake.stop()
    return {"bot_connected_s": round(connected, 3), "bot_first_answer_s": round(answered, 3)}


def _reply(fake: Any, message_id: str) -> bool:
    return any(
        (m.get("message_reference") or {}).get("message_id") == message_id
        for m in fake.messages()
    )
