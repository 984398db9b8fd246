"""Point a real discord.py client at a :class:`FakeDiscord` and run it for a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import discord
import discord.gateway
import discord.http
import yarl

if TYPE_CHECKING:
    from .server import FakeDiscord


@contextlib.contextmanager
def point_discord_py_at(fake: FakeDiscord) -> Iterator[None]:
    """Redirect discord.py's REST and gateway endpoints to the fake, restoring them after.

    Parameters
    ----------
    fake : FakeDiscord
        A started fake.

    Yields
    ------
    None
        While the overrides are active.
    """
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = fake.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE = old_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@contextlib.asynccontextmanager
async def running(
    client: discord.Client,
    fake: FakeDiscord,
    *,
    timeout: float = 15.0,
    guild_ready_timeout: float | None = 0.05,
) -> AsyncIterator[discord.Client]:
    """Start ``client`` against ``fake``, wait until it is ready, close it on exit.

    Parameters
    ----------
    client : discord.Client
        Any client or ``commands.Bot`` (not yet started).
    fake : FakeDiscord
        A started fake; the endpoint overrides are applied for the duration.
    timeout : float
        Seconds to wait for ``on_ready``.
    guild_ready_timeout : float or None
        discord.py waits this long after the last GUILD_CREATE before READY (default 2 s);
        the fake sends its one guild at once, so a short wait keeps tests fast. None keeps
        the client's own setting.

    Yields
    ------
    discord.Client
        The ready client.
    """
    if guild_ready_timeout is not None:
        client._connection.guild_ready_timeout = guild_ready_timeout
    with point_discord_py_at(fake):
        task: asyncio.Task[None] | None = None
        try:
            # login() first: it sets up what wait_until_ready() needs (and setup_hook runs).
            await client.login(fake.token)
            task = asyncio.create_task(client.connect(), name="fake-discord-client")
            ready = asyncio.create_task(client.wait_until_ready())
            done, _ = await asyncio.wait(
                {task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if ready not in done:
                ready.cancel()
                if task in done:
                    task.result()  # re-raise the start-up failure
                raise TimeoutError(f"client not ready within {timeout}s")
            yield client
        finally:
            await client.close()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout)
