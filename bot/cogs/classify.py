"""Classifying clips: audio dropped in a channel, ``/genre``, and the "Classify genre" Apps menu.

Each turns attachments (or a link) into bytes with a size cap, hands them to the job runner and
formats the :class:`Prediction` it returns. No signal processing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.client import deliver, deliver_reply
from bot.download import fetch_attachment, fetch_url, too_large
from bot.embeds import error_embed, pack, prediction_embed
from bot.feedback import feedback_view, remember
from bot.limits import CooldownError, RedisUserLimiter, UserBusyError, UserLimiter
from genre_core.errors import GenreError
from genre_core.result import Prediction

if TYPE_CHECKING:
    from bot.client import GenreBot

log = logging.getLogger(__name__)

HOURGLASS = "⏳"

#: Extensions worth trying when Discord gives no audio/video content type. Video containers are
#: included: their soundtrack is what gets classified.
AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".wav",
        ".wave",
        ".ogg",
        ".oga",
        ".opus",
        ".flac",
        ".m4a",
        ".aac",
        ".wma",
        ".aif",
        ".aiff",
        ".au",
        ".snd",
        ".mka",
        ".amr",
        ".mp4",
        ".m4v",
        ".webm",
        ".mov",
        ".mkv",
        ".3gp",
    }
)


#: Content types that are certainly not audio, in words, for ``/genre`` with such a file.
NOT_AUDIO_TYPES = {
    "application/zip": "an archive",
    "application/x-zip-compressed": "an archive",
    "application/x-7z-compressed": "an archive",
    "application/x-rar-compressed": "an archive",
    "application/vnd.rar": "an archive",
    "application/x-tar": "an archive",
    "application/gzip": "an archive",
    "application/x-gzip": "an archive",
    "application/pdf": "a PDF document",
    "application/json": "a text file",
    "application/x-msdownload": "a program",
    "application/x-executable": "a program",
}


@dataclass(frozen=True)
class Answer:
    """A clip's prediction, and its number in the label store (``None``: not stored)."""

    prediction: Prediction
    clip_id: int | None


class UsageError(GenreError):
    """The command was used in a way it cannot answer (no file, two inputs...)."""

    code = "usage"


def is_audio(attachment: discord.Attachment) -> bool:
    """Whether an attachment looks like audio (or video with a soundtrack) worth analysing.

    Parameters
    ----------
    attachment : discord.Attachment

    Returns
    -------
    bool
        By content type first, else by file extension.
    """
    content_type = (attachment.content_type or "").split(";", 1)[0].strip().lower()
    if content_type.startswith(("audio/", "video/")):
        return True
    return PurePosixPath(attachment.filename).suffix.lower() in AUDIO_EXTENSIONS


def not_audio(attachment: discord.Attachment) -> str | None:
    """What an attachment certainly is when it is not audio (``"an image"``...), else ``None``.

    Only a content type Discord gave and that names no sound counts; an unknown type, or an
    audio file extension, is left for the decoder to judge.

    Parameters
    ----------
    attachment : discord.Attachment

    Returns
    -------
    str or None
    """
    if is_audio(attachment):
        return None
    content_type = (attachment.content_type or "").split(";", 1)[0].strip().lower()
    if content_type in NOT_AUDIO_TYPES:
        return NOT_AUDIO_TYPES[content_type]
    family = content_type.split("/", 1)[0]
    return {"image": "an image", "text": "a text file", "font": "a font"}.get(family)


def check_input(file: discord.Attachment | None, url: str | None) -> None:
    """Refuse anything but exactly one attachment that may be audio, or one link."""
    if (file is None) == (url is None):
        raise UsageError("Attach one audio file or give one link (not both).")
    if file is not None and (kind := not_audio(file)):
        raise UsageError(
            f"`{file.filename}` is {kind}, not audio. Attach an audio file: mp3, wav, ogg, "
            "flac, m4a..."
        )


class Classify(commands.Cog):
    """Name the genre of audio files and links."""

    def __init__(self, bot: GenreBot) -> None:
        self.bot = bot
        settings = bot.settings
        # In a fleet the limits are counted in the queue's Redis, so they hold across processes.
        limits = (settings.user_concurrency, settings.user_rate, settings.user_rate_window_s)
        self.limiter: UserLimiter | RedisUserLimiter = (
            RedisUserLimiter(settings.queue_url, *limits, hold_s=2 * settings.job_timeout_s)
            if settings.queue_url else UserLimiter(*limits)
        )
        # Context menus cannot live in a cog's class body; discord.py's documented pattern.
        self.menu = app_commands.ContextMenu(name="Classify genre", callback=self.classify_message)
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        if isinstance(self.limiter, RedisUserLimiter):
            await self.limiter.close()

    # --- shared steps ---------------------------------------------------------------------------

    async def download(self, attachment: discord.Attachment) -> bytes:
        """An attachment's bytes, size-capped; raises ``GenreError``."""
        settings = self.bot.settings
        if attachment.size > settings.max_bytes:  # refuse before downloading a byte
            raise too_large(attachment.size, settings.max_bytes, attachment.filename)
        return await fetch_attachment(
            self.bot.session,
            attachment.url,
            max_bytes=settings.max_bytes,
            timeout_s=settings.download_timeout_s,
            name=attachment.filename,
        )

    async def fetch(
        self, file: discord.Attachment | None, url: str | None
    ) -> tuple[bytes, str | None]:
        """The bytes and name of one attachment or one link (exactly one of them)."""
        check_input(file, url)
        if file is not None:
            return await self.download(file), file.filename
        settings = self.bot.settings
        download = await fetch_url(
            self.bot.url_session,
            url or "",
            max_bytes=settings.max_bytes,
            max_redirects=settings.max_redirects,
            allow_private=settings.allow_private_urls,
        )
        return download.data, download.filename

    async def answer(self, data: bytes, name: str | None, *, source: str, uploader_id: int,
                     guild_id: int | None, channel_id: int | None) -> Answer:
        """Classify, and keep the clip so that people can correct the answer."""
        prediction = await self.bot.jobs.classify(data, name)
        clip_id = await remember(
            self.bot, prediction, data, filename=name or "clip", source=source,
            uploader_id=uploader_id, guild_id=guild_id, channel_id=channel_id,
        )
        return Answer(prediction, clip_id)

    async def outcome(
        self, attachment: discord.Attachment, *, source: str, uploader_id: int,
        guild_id: int | None, channel_id: int | None,
    ) -> Answer | GenreError:
        """Download and answer one attachment, any failure turned into an answer instead of an
        exception."""
        try:
            data = await self.download(attachment)
            return await self.answer(data, attachment.filename, source=source,
                                     uploader_id=uploader_id, guild_id=guild_id,
                                     channel_id=channel_id)
        except GenreError as exc:
            return exc
        except Exception:
            log.exception("failed to analyse %s", attachment.filename)
            return GenreError(
                "Something went wrong on my side while analysing this clip. Please try again."
            )

    def replies(
        self, attachments: list[discord.Attachment], outcomes: list[Answer | GenreError]
    ) -> list[tuple[list[discord.Embed], discord.ui.View | None]]:
        """Messages answering ``attachments`` in order: embeds (an answer, or why a clip could
        not be analysed) and the "Right" / "Wrong…" rows of their stored clips: one row each,
        so at most five stored clips a message."""
        embeds = [
            error_embed(str(o), a.filename)
            if isinstance(o, GenreError)
            else prediction_embed(o.prediction, a.filename, o.clip_id)
            for a, o in zip(attachments, outcomes, strict=True)
        ]
        clip_ids = [None if isinstance(o, GenreError) else o.clip_id for o in outcomes]
        out = []
        start = 0
        for group in pack(embeds, rows=[int(c is not None) for c in clip_ids]):
            ids = clip_ids[start : start + len(group)]
            start += len(group)
            store = self.bot.labels
            out.append((group, feedback_view(store, ids) if store is not None else None))
        return out

    # --- a file dropped in a channel ------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not message.attachments or self.bot.closing:
            return
        audio = [a for a in message.attachments if is_audio(a)]
        if not audio:
            return  # not ours: stay silent
        try:
            with self.bot.inflight:
                async with self.limiter.admitted(message.author.id):
                    await self._answer_message(message, audio)
        except (UserBusyError, CooldownError) as exc:
            await deliver_reply(message, str(exc))

    async def _answer_message(
        self, message: discord.Message, audio: list[discord.Attachment]
    ) -> None:
        reacted = await self._react(message)
        where = {"uploader_id": message.author.id, "guild_id": message.guild and message.guild.id,
                 "channel_id": message.channel.id}
        try:
            outcomes = await asyncio.gather(
                *(self.outcome(a, source="drop", **where) for a in audio)
            )
            for embeds, view in self.replies(audio, outcomes):
                await deliver_reply(message, embeds=embeds, view=view)
        finally:
            if reacted:
                with contextlib.suppress(discord.HTTPException, aiohttp.ClientError, OSError):
                    await message.remove_reaction(HOURGLASS, self.bot.user)  # type: ignore[arg-type]

    async def _react(self, message: discord.Message) -> bool:
        try:
            await message.add_reaction(HOURGLASS)
            return True
        except discord.HTTPException:  # no permission to react: the reply still comes
            return False

    # --- /genre --------------------------------------------------------------------------------

    @app_commands.command(name="genre", description="Name the music genre of an audio file or link")
    @app_commands.describe(
        file="An audio file: mp3, wav, ogg, flac, m4a...", url="A direct link to an audio file"
    )
    async def genre(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        url: str | None = None,
    ) -> None:
        check_input(file, url)  # before deferring: a usage error is answered privately
        with self.bot.inflight:
            async with self.limiter.admitted(interaction.user.id):
                await interaction.response.defer(thinking=True)
                data, name = await self.fetch(file, url)
                answer = await self.answer(
                    data, name, source="slash", uploader_id=interaction.user.id,
                    guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                )
                embed = prediction_embed(answer.prediction, name, answer.clip_id)
                store = self.bot.labels
                view = feedback_view(store, [answer.clip_id]) if store is not None else None
                await deliver(lambda: interaction.followup.send(embed=embed, **_view_kw(view)))

    # --- Apps menu: "Classify genre" -----------------------------------------------------------

    async def classify_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        audio = [a for a in message.attachments if is_audio(a)]
        if not audio:
            raise UsageError("That message has no audio attachments.")
        with self.bot.inflight:
            async with self.limiter.admitted(interaction.user.id):
                await interaction.response.defer(thinking=True)
                where = {"uploader_id": message.author.id, "guild_id": interaction.guild_id,
                         "channel_id": message.channel.id}
                outcomes = await asyncio.gather(
                    *(self.outcome(a, source="menu", **where) for a in audio)
                )
                if all(isinstance(o, GenreError) for o in outcomes) and len(outcomes) == 1:
                    raise outcomes[0]  # type: ignore[misc]  # one failure: answered ephemerally
                for embeds, view in self.replies(audio, outcomes):
                    await deliver(
                        lambda embeds=embeds, view=view: interaction.followup.send(
                            embeds=embeds, **_view_kw(view)
                        )
                    )


def _view_kw(view: discord.ui.View | None) -> dict[str, discord.ui.View]:
    # discord.py's send() takes a view or nothing (``view=None`` is refused by followups).
    return {"view": view} if view is not None else {}


async def setup(bot: GenreBot) -> None:
    await bot.add_cog(Classify(bot))
