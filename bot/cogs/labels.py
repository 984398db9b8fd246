"""Community labels: ``/label`` and ``/labels`` for admins, ``/forget-me`` for everyone, and
the answers to the feedback controls that no dynamic item takes (modal submissions, stale ids).

The controls themselves live in :mod:`bot.feedback`.
"""

from __future__ import annotations

import io
import logging
import re
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands, tasks

from bot.client import answer_ephemerally
from bot.cogs.admin import admin_only
from bot.cogs.classify import check_input
from bot.embeds import COLOUR_INFO, clip, prediction_embed
from bot.feedback import (
    DYNAMIC_ITEMS,
    NOT_OURS,
    PREFIX,
    SIG,
    answered,
    checked,
    known_genres,
    new_clip,
    review_page,
    spoken,
    store_of,
    text_inputs,
    votable_genres,
)
from genre_core.errors import GenreError
from genre_core.result import display_name
from genre_core.store.labels import NOT_MUSIC, to_csv, to_jsonl

if TYPE_CHECKING:
    from bot.client import GenreBot

log = logging.getLogger(__name__)


class Labels(commands.Cog):
    """Votes under answers, ``/label``, ``/labels`` and ``/forget-me``."""

    def __init__(self, bot: GenreBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*DYNAMIC_ITEMS)
        self.purge_expired.start()

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*DYNAMIC_ITEMS)
        self.purge_expired.cancel()

    @tasks.loop(hours=24)
    async def purge_expired(self) -> None:
        """Delete clips past ``GENRE_KEEP_DAYS`` that count for nothing: at start, then daily."""
        if self.bot.labels is None:
            return
        try:
            purged = await self.bot.labels.purge_expired()
        except GenreError:
            log.warning("could not delete expired clips; trying again tomorrow", exc_info=True)
            return
        if purged:
            log.info("deleted %d clip(s) past GENRE_KEEP_DAYS that counted for nothing", purged)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """Modal submissions of "something else", and our controls no template knows."""
        data: dict[str, Any] = interaction.data or {}  # type: ignore[assignment]
        custom_id = str(data.get("custom_id", ""))
        if not custom_id.startswith(PREFIX):
            return
        if interaction.type is discord.InteractionType.modal_submit:
            await answered(interaction, lambda: self._something_else(interaction, custom_id))
        elif interaction.type is discord.InteractionType.component and not any(
            item.__discord_ui_compiled_template__.fullmatch(custom_id) for item in DYNAMIC_ITEMS
        ):
            await answer_ephemerally(interaction, NOT_OURS)

    async def _something_else(self, interaction: discord.Interaction, custom_id: str) -> None:
        match = re.fullmatch(rf"gv:other:(?P<clip>[0-9]+):{SIG}", custom_id)
        if match is None:
            raise GenreError(NOT_OURS)
        store = store_of(interaction)
        clip_id = int(match["clip"])
        checked(store, match["sig"], "other", clip_id)
        typed = text_inputs(interaction.data or {}).get("genre", "")  # type: ignore[arg-type]
        changed = await store.vote(clip_id, interaction.user.id, "other", typed)
        verb = "changed your vote" if changed else "recorded"
        text = (f"Thanks, {verb}: clip #{clip_id} is **{typed.strip()}** in your words. An "
                "admin reviews new genre names before the bot learns them.")
        if interaction.message is not None:
            await interaction.response.edit_message(content=text, view=None)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    # --- /label ---------------------------------------------------------------------------------

    @app_commands.command(name="label", description="Add a clip with its genre for training")
    @app_commands.describe(genre="The clip's genre", file="An audio file",
                           url="A direct link to an audio file")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.guild_only()
    @admin_only()
    async def label(self, interaction: discord.Interaction, genre: str,
                    file: discord.Attachment | None = None, url: str | None = None) -> None:
        store = store_of(interaction)
        known = await known_genres(self.bot)
        genre = await store.check_genre(genre, known)  # refused before any download
        check_input(file, url)
        classify = self.bot.get_cog("Classify")
        assert classify is not None
        await interaction.response.defer(ephemeral=True, thinking=True)  # the answer is private
        try:
            data, name = await classify.fetch(file, url)  # type: ignore[attr-defined]
            prediction = await self.bot.jobs.classify(data, name)
        except GenreError as exc:
            await interaction.edit_original_response(
                content=f"This clip could not be analysed, so nothing was labelled: {exc}")
            return
        new = new_clip(prediction, data, filename=name or "clip", source="label",
                       uploader_id=interaction.user.id, guild_id=interaction.guild_id,
                       channel_id=interaction.channel_id)
        try:
            clip_id = await store.label(new, interaction.user.id, genre, known)
        except GenreError as exc:
            await interaction.edit_original_response(content=str(exc))
            return
        await interaction.edit_original_response(
            content=f"Labelled clip #{clip_id} as **{spoken(genre)}**; it counts at the next "
            "`/retrain`. What the bot says of it now:",
            embed=prediction_embed(prediction, name, clip_id),
        )

    @label.autocomplete("genre")
    async def _genre_choices(self, interaction: discord.Interaction,
                             current: str) -> list[app_commands.Choice[str]]:
        store = self.bot.labels
        genres = (await votable_genres(self.bot, store) if store is not None
                  else await known_genres(self.bot))
        typed = current.strip().lower()
        return [app_commands.Choice(name=display_name(g), value=g)
                for g in genres if typed in g][:25]

    # --- /labels ----------------------------------------------------------------------------------

    labels = app_commands.Group(
        name="labels", description="The community's labels: counts, review, export, delete",
        default_permissions=discord.Permissions(manage_guild=True), guild_only=True,
    )

    @labels.command(name="counts", description="Clips per genre and state")
    @admin_only()
    async def labels_counts(self, interaction: discord.Interaction) -> None:
        counts = await store_of(interaction).counts(interaction.guild_id)
        embed = discord.Embed(title="🏷️ Community labels", colour=COLOUR_INFO)
        described = {
            "admin": "Labelled by admins", "accepted": "Accepted corrections",
            "agreed": "Agreed by enough people", "pending": "Waiting (votes or review)",
            "rejected": "Rejected", "unlabelled": "Answered, no votes yet",
        }
        for state, title in described.items():
            if counts.get(state):
                lines = [f"{spoken(g) if g != NOT_MUSIC else NOT_MUSIC}: {n}"
                         for g, n in counts[state].most_common()]
                embed.add_field(name=title, value=clip("\n".join(lines), 1024), inline=True)
        if not embed.fields:
            embed.description = "No clips yet: answers, votes and labels will show here."
        embed.set_footer(text="Admin labels, accepted corrections and agreed votes count for "
                              "training at the next /retrain.")
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @labels.command(name="review", description="Accept or reject pending corrections")
    @admin_only()
    async def labels_review(self, interaction: discord.Interaction) -> None:
        content, view = await review_page(store_of(interaction), interaction.guild_id)
        await interaction.response.send_message(content, view=view, ephemeral=True)

    @labels.command(name="export", description="Every clip, vote and label as a file")
    @app_commands.describe(format="csv: one row per vote; jsonl: one line per clip")
    @admin_only()
    async def labels_export(self, interaction: discord.Interaction,
                            format: Literal["csv", "jsonl"] = "csv") -> None:
        records = await store_of(interaction).export(interaction.guild_id)
        data = to_csv(records) if format == "csv" else to_jsonl(records)
        name = f"genre-labels-{interaction.guild_id}.{format}"
        await interaction.response.send_message(
            f"{len(records)} clip(s).", file=discord.File(io.BytesIO(data), filename=name),
            ephemeral=True,
        )

    @labels.command(name="delete", description="Delete one clip, or everything from one user")
    @app_commands.describe(clip="A clip's number (shown under its answer)",
                           user="Delete this user's votes and uploads in this server")
    @admin_only()
    async def labels_delete(self, interaction: discord.Interaction, clip: int | None = None,
                            user: discord.User | None = None) -> None:
        store = store_of(interaction)
        if (clip is None) == (user is None):
            raise GenreError("Give a clip number or a user (one of them).")
        if clip is not None:
            if not await store.delete_clip(clip, interaction.guild_id):
                raise GenreError(f"There is no clip #{clip} in this server.")
            text = f"Deleted clip #{clip} with its votes."
        else:
            assert user is not None
            votes, clips = await store.delete_user(user.id, interaction.guild_id)
            text = f"Deleted {votes} vote(s) and {clips} uploaded clip(s) of {user.mention}."
        await interaction.response.send_message(text, ephemeral=True)

    @labels.command(name="genre-add", description="Add a genre people can vote for")
    @app_commands.describe(name="The genre's name, e.g. drum and bass")
    @admin_only()
    async def labels_genre_add(self, interaction: discord.Interaction, name: str) -> None:
        bot = self.bot
        genre = await store_of(interaction).add_genre(name, interaction.user.id)
        await interaction.response.send_message(
            f"Added **{genre}**. People can now pick it under answers; it joins the model at "
            f"`/retrain` once {bot.settings.new_genre_min_clips} clips from "
            f"{bot.settings.new_genre_min_uploaders} different uploaders count.", ephemeral=True,
        )

    # --- /forget-me -------------------------------------------------------------------------------

    @app_commands.command(name="forget-me",
                          description="Erase your votes and the clips you uploaded, everywhere")
    async def forget_me(self, interaction: discord.Interaction) -> None:
        votes, clips = await store_of(interaction).delete_user(interaction.user.id)
        await interaction.response.send_message(
            f"Done: erased {votes} vote(s) and {clips} clip(s) you uploaded, in every server. "
            "Answers already posted stay in their channels; delete those messages yourself.",
            ephemeral=True,
        )


async def setup(bot: GenreBot) -> None:
    await bot.add_cog(Labels(bot))
