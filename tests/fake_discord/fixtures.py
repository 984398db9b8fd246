"""Pytest fixtures for the fake Discord (import them from ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from .client import point_discord_py_at
from .server import FakeDiscord
from .spec import SPEC_PATH, SpecUnavailable


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started :class:`FakeDiscord` with discord.py pointed at it.

    Heartbeats every second so heartbeat-related tests do not wait long. Skips the test
    when Discord's OpenAPI spec (``../shared/data/discord/openapi.json``) is absent, since
    the fake validates every request body against it.

    Yields
    ------
    FakeDiscord
        The running fake; stopped (and discord.py's endpoints restored) afterwards.
    """
    fake = FakeDiscord(heartbeat_interval_ms=1000)
    try:
        await fake.start()
    except SpecUnavailable:
        pytest.skip(f"Discord OpenAPI spec not found at {SPEC_PATH} (../shared/data absent)")
    try:
        with point_discord_py_at(fake):
            yield fake
    finally:
        await fake.stop()
