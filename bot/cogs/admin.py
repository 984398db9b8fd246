"""The model: ``/model info``, and for admins ``/retrain`` and ``/model rollback``.

Admin rights are enforced here, in code (:func:`admin_only`); Discord's default permissions only
hide the commands from members who lack them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord import app_commands
from discord.ext import commands

from bot.embeds import comparison_embed, model_embed
from bot.settings import BotSettings
from genre_core.errors import GenreError
from genre_core.jobs import retrain_in_subprocess
from genre_core.store.labels import write_examples

if TYPE_CHECKING:
    from bot.client import GenreBot

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between two edits of the progress message (Discord rate-limits webhook edits).
PROGRESS_EVERY_S = 2.0


class NotAdmin(app_commands.CheckFailure):
    """The user is not a bot admin under the configured policy."""


def is_admin(settings: BotSettings, interaction: discord.Interaction) -> bool:
    """Whether the user may retrain or roll back, under the admin policy in ``settings``.

    Parameters
    ----------
    settings : BotSettings
        ``admin_ids`` always qualify; otherwise ``admin_permission`` decides.
    interaction : discord.Interaction
        Carries the member's resolved permissions in the channel.

    Returns
    -------
    bool
    """
    if interaction.user.id in settings.admin_ids:
        return True
    if interaction.guild_id is None:
        return False
    permissions = interaction.permissions
    if settings.admin_permission == "administrator":
        return permissions.administrator
    if settings.admin_permission == "manage_guild":
        return permissions.administrator or permissions.manage_guild
    return False


def admin_only() -> Any:
    """An app-command check: only admins pass; others get a clear ephemeral refusal."""

    async def predicate(interaction: discord.Interaction) -> bool:
        bot: GenreBot = interaction.client  # type: ignore[assignment]
        if is_admin(bot.settings, interaction):
            return True
        raise NotAdmin("Only server admins can do that (Manage Server permission).")

    return app_commands.check(predicate)


class Progress:
    """Edits the command's message with the latest progress line, at most every few seconds."""

    def __init__(self, interaction: discord.Interaction, title: str) -> None:
        self.interaction = interaction
        self.title = title
        self.started = time.monotonic()
        self._line = "starting"
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retrain-progress")

    def update(self, line: str) -> None:
        self._line = line
        self._changed.set()

    def text(self) -> str:
        return f"{self.title}: {self._line} ({time.monotonic() - self.started:.0f} s)"

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            with contextlib.suppress(discord.HTTPException):
                await self.interaction.edit_original_response(content=self.text()[:2000])
            await asyncio.sleep(PROGRESS_EVERY_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Admin(commands.Cog):
    """Look after the genre model."""

    def __init__(self, bot: GenreBot) -> None:
        self.bot = bot
        self._model_lock = asyncio.Lock()  # one retrain or rollback at a time

    @property
    def candidates_dir(self) -> Path:
        """Where ``/retrain`` writes candidate models before publishing them."""
        return Path(self.bot.settings.state_dir) / "candidates"

    async def cog_load(self) -> None:
        # Candidates left by a bot that was killed mid-retrain: never published, never needed.
        # Only this bot writes here, and it has not started a retrain yet.
        if self.candidates_dir.is_dir():
            await asyncio.to_thread(shutil.rmtree, self.candidates_dir, True)

    async def _registry(self, method: Any, *args: Any) -> Any:
        # The registry does file I/O and fsyncs: keep it off the event loop.
        return await asyncio.to_thread(method, *args)

    # --- /retrain ------------------------------------------------------------------------------

    @app_commands.command(
        name="retrain", description="Retrain the genre model; swap it in if it is not worse"
    )
    @app_commands.describe(force="Swap the new model in even if it scores worse")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @admin_only()
    async def retrain(self, interaction: discord.Interaction, force: bool = False) -> None:
        if self._model_lock.locked():
            raise GenreError("A retrain or rollback is already running. Wait for it to finish.")
        async with self._model_lock:
            await interaction.response.send_message("🛠️ Retraining the genre model: starting")
            progress = Progress(interaction, "🛠️ Retraining the genre model")
            progress.start()
            try:
                embed = await self._retrain(force, progress)
            except Exception as exc:
                await progress.stop()
                reason = str(exc) if isinstance(exc, GenreError) else "an unexpected error"
                with contextlib.suppress(discord.HTTPException):
                    await interaction.edit_original_response(
                        content=f"❌ Retraining failed: {reason}"[:2000]
                    )
                raise
            await progress.stop()
            try:
                await interaction.edit_original_response(content=None, embed=embed)
            except discord.HTTPException:
                # The interaction token lasts 15 minutes; a longer retrain reports in the channel.
                if isinstance(interaction.channel, discord.abc.Messageable):
                    await interaction.channel.send(embed=embed)

    async def _retrain(self, force: bool, progress: Progress) -> discord.Embed:
        bot = self.bot
        current = await bot.jobs.info()
        current_metrics: dict[str, Any] = dict(current.get("metrics") or {})
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        out_dir = self.candidates_dir / f"{stamp}-{uuid.uuid4().hex[:8]}"
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            return await self._train_and_publish(out_dir, current_metrics, force, progress)
        finally:
            # Published versions were copied into the registry; the candidate is not needed.
            await asyncio.to_thread(shutil.rmtree, out_dir, True)
            community = out_dir.with_name(out_dir.name + "-community")
            await asyncio.to_thread(shutil.rmtree, community, True)

    async def _community_options(self, directory: Path) -> dict[str, Any]:
        """What the training process needs to learn the community's clips: the clips that
        count, written to ``directory``, the serving model to compare with, and the settings
        for new genres. Without a label store, the shared data alone."""
        bot = self.bot
        options: dict[str, Any] = {
            "current_dir": await self._registry(bot.registry.current_dir),
            "min_clips": bot.settings.new_genre_min_clips,
            "min_uploaders": bot.settings.new_genre_min_uploaders,
        }
        examples = await bot.labels.training_examples() if bot.labels is not None else []
        await asyncio.to_thread(write_examples, directory, examples)
        return options | {"community_dir": directory}

    async def _train_and_publish(
        self, out_dir: Path, current_metrics: dict[str, Any], force: bool, progress: Progress
    ) -> discord.Embed:
        bot = self.bot
        outcome = await retrain_in_subprocess(
            bot.settings.data_dir,
            out_dir,
            current_metrics=current_metrics or None,
            progress=progress.update,
            target=bot.retrain_target,
            compare=bot.compare_target,
            options=await self._community_options(out_dir.with_name(out_dir.name + "-community")),
        )
        log.info("retrain finished: %s (current %s)", outcome.metrics, current_metrics)

        if not (outcome.not_worse or force):
            verdict = (
                "The new model scores worse than the current one, so the current one "
                "keeps serving. Run `/retrain force:True` to swap it in anyway."
            )
            return comparison_embed(
                outcome.metrics, current_metrics, verdict=verdict, published=None
            )
        # Load first, switch last: the registry never points at a model the workers refused,
        # whenever the bot stops (kill -9 included).
        progress.update("loading the new model")
        version = await self._registry(bot.registry.stage, out_dir)
        try:
            await bot.jobs.reload(bot.registry.version_dir(version))
        except GenreError as exc:
            await self._registry(bot.registry.discard, version)
            raise GenreError(
                f"The new model ({version}) failed to load, so the current one keeps serving: {exc}"
            ) from exc
        progress.update("swapping the new model in")
        try:
            await self._registry(bot.registry.activate, version)
        except Exception:
            # Serve what the registry says serves, so a restart changes nothing.
            await bot.jobs.reload(await self._registry(bot.registry.current_dir))
            raise
        verdict = (
            "Forced: swapped in although it scores worse."
            if not outcome.not_worse
            else "It scores at least as well as the previous model, so it is now serving."
        )
        return comparison_embed(
            outcome.metrics, current_metrics, verdict=verdict, published=version
        )

    # --- /model ----------------------------------------------------------------------------------

    model = app_commands.Group(name="model", description="The genre model")

    @model.command(name="info", description="Which model is serving: version, date, metrics")
    async def model_info(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(embed=model_embed(await self.bot.jobs.info()))

    @model.command(name="rollback", description="Go back to the previous model version")
    @app_commands.guild_only()
    @admin_only()
    async def model_rollback(self, interaction: discord.Interaction) -> None:
        if self._model_lock.locked():
            raise GenreError("A retrain or rollback is already running. Wait for it to finish.")
        async with self._model_lock:
            bot = self.bot
            version, target = await self._registry(bot.registry.rollback_target)
            await interaction.response.defer(thinking=True)
            # Load first, switch last: a previous version that no longer loads changes nothing.
            try:
                await bot.jobs.reload(target)
            except GenreError as exc:
                raise GenreError(
                    f"Model {version} failed to load, so nothing changed and the current model "
                    f"keeps serving: {exc}"
                ) from exc
            await self._registry(bot.registry.rollback)
            info = await bot.jobs.info()
            await interaction.followup.send(
                f"↩️ Rolled back: model {version} is serving again.", embed=model_embed(info)
            )


async def setup(bot: GenreBot) -> None:
    await bot.add_cog(Admin(bot))
