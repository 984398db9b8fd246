"""The bot: start-up and wiring only. Everything a user can do lives in a cog (``bot/cogs``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from discord.gateway import DiscordWebSocket

from bot.download import url_session
from bot.settings import BotSettings
from genre_core import metrics
from genre_core.errors import GenreError
from genre_core.jobs import (
    ClassifyJobs,
    CompareTarget,
    ProcessJobs,
    RetrainTarget,
    default_workers,
)
from genre_core.registry import ModelRegistry
from genre_core.store.labels import LabelStore

log = logging.getLogger(__name__)

T = TypeVar("T")

EXTENSIONS = ("bot.cogs.classify", "bot.cogs.admin", "bot.cogs.labels")

#: Builds and starts the job runner for a model directory, without waiting for its workers: they
#: load while the bot connects (see ``ClassifyJobs.start``).
JobsFactory = Callable[[Path, BotSettings], Awaitable[ClassifyJobs]]

GENERIC_ERROR = "Something went wrong on my side. Please try again in a moment."
#: On shutdown, requests already accepted get this long to be answered.
SHUTDOWN_GRACE_S = 30.0
#: Tries at delivering one answer when Discord fails with a server error, and the first pause.
DELIVERY_ATTEMPTS = 3
DELIVERY_BACKOFF_S = 1.0


async def process_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    """The production job runner: a process pool sized to the machine, its workers starting."""
    workers = settings.workers or default_workers()
    # Bound: one job running per worker plus ``queue_size`` waiting; beyond that, "busy".
    jobs = ProcessJobs(
        model_dir,
        workers=workers,
        limits=settings.limits,
        max_pending=workers + settings.queue_size,
        job_timeout_s=settings.job_timeout_s,
        fallback_dir=settings.model_dir,
    )
    await jobs.start()
    return jobs


async def deliver(
    send: Callable[[], Awaitable[T]],
    *,
    attempts: int = DELIVERY_ATTEMPTS,
    backoff_s: float = DELIVERY_BACKOFF_S,
) -> T:
    """Send an answer, trying again when Discord fails with a server error or the connection
    drops.

    discord.py already waits out 429s and retries a 500/502/504 a few times; this covers what it
    gives up on (a 503, a 5xx that persists, a reset connection), so an answer that took seconds
    of analysis is not lost to one bad moment. 4xx answers are not retried: they would fail
    again. For a channel reply use :func:`deliver_reply`, which also keeps a retry from posting
    twice.

    Parameters
    ----------
    send : callable
        Makes the request, e.g. ``lambda: message.reply(...)``; called once per try.
    attempts : int
        Tries in all.
    backoff_s : float
        Pause before the second try; it doubles after each failure.

    Returns
    -------
    Any
        What ``send`` returned.
    """
    for attempt in range(attempts):
        try:
            return await send()
        except (discord.DiscordServerError, aiohttp.ClientError, OSError) as exc:
            if attempt == attempts - 1:
                raise
            delay = backoff_s * 2**attempt
            log.warning(
                "Discord did not take an answer (%s); trying again in %.0f s",
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


async def deliver_reply(
    message: discord.Message,
    content: str | None = None,
    *,
    embeds: list[discord.Embed] | None = None,
    view: discord.ui.View | None = None,
) -> discord.Message:
    """Reply to ``message`` in its channel through :func:`deliver`.

    The reply carries a nonce, which discord.py sends with ``enforce_nonce``: when Discord stored
    the message but its answer was lost, the retry returns that message instead of posting a
    second one (interaction follow-ups are webhooks, which take no nonce). It is posted even
    when ``message`` was deleted meanwhile, then without the link.
    """
    reference = message.to_reference(fail_if_not_exists=False)
    nonce = secrets.token_hex(12)  # 24 characters; Discord takes at most 25
    return await deliver(
        lambda: message.channel.send(
            content, embeds=embeds, reference=reference, mention_author=False, nonce=nonce,
            **({"view": view} if view is not None else {}),
        )
    )


#: How long a label-store write waits for another program's lock before it is refused.
LABELS_BUSY_TIMEOUT_S = 1.5


async def open_label_store(settings: BotSettings) -> LabelStore | None:
    """The community label store, or ``None`` (logged) when it cannot be opened: the bot still
    answers clips, without feedback controls, and says so to whoever asks for labels."""
    try:
        store = await LabelStore.open(
            settings.label_database_url,
            # A vote is answered within Discord's 3 s: a lock held longer is refused in words.
            busy_timeout_s=LABELS_BUSY_TIMEOUT_S,
            votes_to_accept=settings.votes_to_accept,
            vote_rate=settings.vote_rate,
            vote_window_s=settings.vote_window_s,
            keep_days=settings.keep_days,
        )
    except Exception:
        log.exception("the label database could not be opened: votes and labels are off")
        return None
    return store


def use_endpoints(api_base: str, gateway_url: str) -> tuple[str, yarl.URL]:
    """Point discord.py at a Discord-compatible server; returns the previous endpoints.

    discord.py builds every REST URL (webhooks and interaction follow-ups included) from
    ``Route.BASE``. With a shard count set, each shard opens its first connection at
    ``DiscordWebSocket.DEFAULT_GATEWAY``; without one, the gateway URL comes from
    ``GET /gateway/bot`` (on ``Route.BASE``). Resumes go to READY's ``resume_gateway_url``. Both
    are class attributes, so they apply to the whole process.
    """
    previous = (discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
    discord.http.Route.BASE = api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    return previous


def error_message(error: Exception) -> str:
    """What to tell the user about an app-command error (logs the unexpected ones)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original  # what the command raised
    if isinstance(error, GenreError):
        return str(error)
    if isinstance(error, app_commands.CommandOnCooldown):
        return f"Slow down a little: try again in {error.retry_after:.0f} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "That command only works in a server."
    if isinstance(error, app_commands.MissingPermissions):
        return "You don't have permission to do that."
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You can't use that command here."
    log.error("unexpected error in an app command", exc_info=error)
    return GENERIC_ERROR


async def answer_ephemerally(interaction: discord.Interaction, text: str) -> None:
    """Tell only the user who invoked the command, whatever state the interaction is in.

    After a public deferral Discord turns the first follow-up into the "thinking..." message,
    public whatever its flags. So that placeholder is completed and deleted first; the
    follow-up after it is a new message, and ephemeral.
    """
    try:
        if not interaction.response.is_done():
            await interaction.response.send_message(text, ephemeral=True)
            return
        if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
            # Already gone, or the token expired: the follow-up below still reaches the user.
            with contextlib.suppress(discord.HTTPException):
                await interaction.edit_original_response(content="⚠️")
                await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not deliver an error message to %s", interaction.user.id, exc_info=True)


class Inflight:
    """Counts requests being answered, so that shutdown can let them finish first."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __enter__(self) -> None:
        self.count += 1
        self._idle.clear()

    def __exit__(self, *exc: object) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight; ``False`` if that took longer than ``timeout_s``."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class GenreTree(app_commands.CommandTree):
    """The command tree, with the one error handler every app command shares."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        await answer_ephemerally(interaction, error_message(error))


async def default_jobs(model_dir: Path, settings: BotSettings) -> ClassifyJobs:
    """The in-process pool, or the fleet's Celery workers when ``GENRE_QUEUE_URL`` is set: the
    one setting that switches, the bot does not change."""
    if not settings.queue_url:
        return await process_jobs(model_dir, settings)
    from genre_core.queue.jobs import CeleryJobs

    jobs = CeleryJobs(
        model_dir,
        queue_url=settings.queue_url,
        limits=settings.limits,
        max_pending=settings.queue_size,
        job_timeout_s=settings.job_timeout_s,
        fallback_dir=settings.model_dir,
    )
    await jobs.start()
    return jobs


def shard_options(settings: BotSettings) -> dict[str, Any]:
    """``AutoShardedBot``'s shard arguments from ``GENRE_SHARD_IDS`` / ``GENRE_SHARD_COUNT``.

    Neither set: ``shard_count=None``, so discord.py asks ``GET /gateway/bot`` for Discord's
    recommended count and runs every shard in this one process. That is what a production bot
    should do rather than pin 1: Discord refuses a shard holding 2,500 guilds (close 4011), and
    the recommendation grows with the bot before that happens; below ~1,000 guilds it is 1, which
    is exactly today's single connection. A count alone: this process runs all those shards. Ids
    and a count: only those shards, so that several processes split them.

    Raises
    ------
    ValueError
        Shard ids without a count, or an id outside ``0 .. count - 1``.
    """
    ids, count = settings.shard_ids, settings.shard_count
    if ids is None:
        return {"shard_count": count}
    if count is None:
        raise ValueError("GENRE_SHARD_IDS needs GENRE_SHARD_COUNT (the fleet's total)")
    if not ids or not all(0 <= i < count for i in ids):
        raise ValueError(f"GENRE_SHARD_IDS must lie in 0..{count - 1} (GENRE_SHARD_COUNT={count})")
    return {"shard_ids": sorted(ids), "shard_count": count}


class GenreBot(commands.AutoShardedBot):
    """genre-bot: connects at once while its workers load the model, then serves the cogs.

    Sharded (``AutoShardedBot``): one gateway connection per shard it runs (see
    :func:`shard_options`); ``on_ready`` comes once all of them are ready, ``latency`` is their
    average.

    Parameters
    ----------
    settings : BotSettings
        Read once at start-up.
    jobs_factory : callable
        Builds the job runner; the process pool by default (tests pass stand-ins).
    retrain_target, compare_target : callable or str
        What ``/retrain`` runs in its child process; ``genre_core.training`` by default.
    """

    def __init__(
        self,
        settings: BotSettings,
        *,
        jobs_factory: JobsFactory = default_jobs,
        retrain_target: RetrainTarget = "genre_core.training:retrain",
        compare_target: CompareTarget = "genre_core.training:is_not_worse",
    ) -> None:
        # The bot never joins voice: don't warn at start-up that voice libraries are missing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: attachments arrive only with it
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            tree_cls=GenreTree,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            **shard_options(settings),
        )
        self.settings = settings
        self.jobs_factory = jobs_factory
        self.retrain_target = retrain_target
        self.compare_target = compare_target
        self._previous_endpoints = use_endpoints(settings.api_base, settings.gateway_url)
        self.inflight = Inflight()
        self.closing = False
        # Set in setup_hook:
        self.jobs: ClassifyJobs
        self.session: aiohttp.ClientSession
        self.url_session: aiohttp.ClientSession
        self.registry: ModelRegistry
        self.labels: LabelStore | None = None
        self.metrics_server: metrics.MetricsServer | None = None

    async def setup_hook(self) -> None:
        # Runs after login and before the gateway connects: READY waits for this, but not for
        # the workers, which load the model meanwhile (clips that come first wait for them).
        self.metrics_server = metrics.serve(self.settings.metrics_port)
        timeout = aiohttp.ClientTimeout(total=self.settings.download_timeout_s)
        self.session = aiohttp.ClientSession(timeout=timeout)
        self.url_session = url_session(
            allow_private=self.settings.allow_private_urls,
            timeout_s=self.settings.download_timeout_s,
        )
        self.registry = ModelRegistry(self.settings.state_dir, self.settings.model_dir)
        model_dir = self.registry.current_dir()
        log.info("loading and warming up the model in %s", model_dir)
        self.jobs = await self.jobs_factory(model_dir, self.settings)
        self._workers_ready = asyncio.create_task(self._report_workers_ready())
        self.labels = await open_label_store(self.settings)
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        await self.sync_commands()

    async def _report_workers_ready(self) -> None:
        started = time.monotonic()
        try:
            await self.jobs.ready()
        except GenreError:
            log.error("no model could be loaded: every clip is answered with the reason")
            return
        log.info("analysis ready in %.1f s", time.monotonic() - started)

    async def sync_commands(self) -> None:
        """Sync slash commands: to the development guild when one is set, else globally.

        In a fleet only the process running shard 0 syncs: commands belong to the application,
        not to a shard, and N identical overwrites would only spend rate limit.
        """
        if self.shard_ids is not None and 0 not in self.shard_ids:
            log.info("application commands are synced by the process running shard 0")
            return
        if self.settings.dev_guild_id:
            guild = discord.Object(id=self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d application commands", len(synced))

    async def on_shard_ready(self, shard_id: int) -> None:
        log.info("shard %d/%s ready", shard_id, self.shard_count)

    async def on_ready(self) -> None:
        # Once per process, after every shard it runs is ready.
        log.info(
            "ready as %s (%s) in %d guild(s), shards %s of %s",
            self.user,
            getattr(self.user, "id", "?"),
            len(self.guilds),
            sorted(self.shards),
            self.shard_count,
        )

    async def close(self) -> None:
        # Answer what was accepted before closing the connections those answers need.
        self.closing = True
        if self.inflight.count and not await self.inflight.wait_idle(SHUTDOWN_GRACE_S):
            log.warning("closing with %d request(s) unanswered", self.inflight.count)
        await super().close()
        for name in ("session", "url_session"):
            session = getattr(self, name, None)
            if session is not None and not session.closed:
                await session.close()
        ready_report = getattr(self, "_workers_ready", None)
        if ready_report is not None:
            ready_report.cancel()
        jobs = getattr(self, "jobs", None)
        if jobs is not None:
            await jobs.close()
        if self.labels is not None:
            await self.labels.close()
        if self.metrics_server is not None:
            # Last: whoever scrapes sees the shutdown's final figures until the very end.
            self.metrics_server.close()
            self.metrics_server = None
        use_endpoints(self._previous_endpoints[0], str(self._previous_endpoints[1]))
