"""The controls people teach the bot with: "Right" / "Wrong…" under every answer, the genre
select and "something else" modal behind "Wrong…", and admins' Accept / Reject.

Every control is persistent: its custom id carries the clip's number and a signature
(:meth:`LabelStore.sign`), and discord.py's dynamic items rebuild it from the id alone, so the
buttons under an answer keep working after a restart. A "something else" modal is answered by
its custom id as well. An id that is not ours any more (a deleted clip, a wrong signature, an
older format) gets a clear private answer, never silence.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.client import answer_ephemerally, error_message
from bot.cogs.admin import is_admin
from bot.embeds import clip
from genre_core.errors import GenreError
from genre_core.result import Prediction, display_name
from genre_core.store.labels import NOT_MUSIC, LabelStore, NewClip, StoreError

if TYPE_CHECKING:
    from bot.client import GenreBot

log = logging.getLogger(__name__)

PREFIX = "gv:"
SIG = r"(?P<sig>[0-9a-f]{12})"
#: Discord allows 25 options in a select; two are "not music" and "something else".
MAX_GENRE_OPTIONS = 23
NOT_OURS = (
    "This control no longer works (the clip was deleted, or the message is from an older "
    "version of the bot). Drop the clip again to vote on it."
)
THANKS = "Thanks, recorded"


class LabelsUnavailable(GenreError):
    code = "labels_unavailable"

    def __init__(self) -> None:
        super().__init__(
            "Votes and labels are switched off right now: the label database could not be "
            "opened. An admin can find the reason in the bot's log."
        )


def store_of(interaction: discord.Interaction) -> LabelStore:
    store = getattr(interaction.client, "labels", None)
    if store is None:
        raise LabelsUnavailable()
    return store


async def answered(interaction: discord.Interaction, work: Callable[[], Awaitable[Any]]) -> None:
    """Run a control's work; any failure becomes a private answer, so nobody sees "This
    interaction failed" and nothing half-done is claimed."""
    try:
        await work()
    except Exception as exc:  # every failure gets an answer; unexpected ones are logged
        await answer_ephemerally(interaction, error_message(exc))


def checked(store: LabelStore, signature: str, *parts: object) -> None:
    if not store.verify(signature, *parts):
        raise GenreError(NOT_OURS)


async def known_genres(bot: GenreBot) -> list[str]:
    """The serving model's genres (from its training data): what a vote may name, with the
    genres admins added."""
    return list((await bot.jobs.info()).get("genres") or [])


async def votable_genres(bot: GenreBot, store: LabelStore) -> list[str]:
    """What people may pick: the model's genres, then those admins added."""
    genres = await known_genres(bot)
    return genres + [g for g in await store.added_genres() if g not in genres]


def spoken(genre: str | None) -> str:
    return NOT_MUSIC if genre is None else display_name(genre)


# --- the controls under an answer ----------------------------------------------------------------


class RightButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"gv:ok:(?P<clip>[0-9]+):{SIG}"
):
    """ "Right": the answer was right."""

    def __init__(self, clip_id: int, signature: str, label: str = "Right") -> None:
        super().__init__(discord.ui.Button(
            label=label, emoji="✅", style=discord.ButtonStyle.secondary,
            custom_id=f"gv:ok:{clip_id}:{signature}",
        ))
        self.clip_id, self.signature = clip_id, signature

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> RightButton:
        return cls(int(match["clip"]), match["sig"], item.label or "Right")

    async def callback(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            store = store_of(interaction)
            checked(store, self.signature, "ok", self.clip_id)
            changed = await store.vote(self.clip_id, interaction.user.id, "right")
            stored = await store.get_clip(self.clip_id)
            said = spoken(stored.predicted if stored else None)
            verb = "changed your vote" if changed else "recorded"
            await interaction.response.send_message(
                f"Thanks, {verb}: you said **{said}** is right for clip #{self.clip_id}.",
                ephemeral=True,
            )

        await answered(interaction, work)


class WrongButton(
    discord.ui.DynamicItem[discord.ui.Button], template=rf"gv:no:(?P<clip>[0-9]+):{SIG}"
):
    """ "Wrong…": asks privately what it is."""

    def __init__(self, clip_id: int, signature: str, label: str = "Wrong…") -> None:
        super().__init__(discord.ui.Button(
            label=label, emoji="✏️", style=discord.ButtonStyle.secondary,
            custom_id=f"gv:no:{clip_id}:{signature}",
        ))
        self.clip_id, self.signature = clip_id, signature

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> WrongButton:
        return cls(int(match["clip"]), match["sig"], item.label or "Wrong…")

    async def callback(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            store = store_of(interaction)
            checked(store, self.signature, "no", self.clip_id)
            if await store.get_clip(self.clip_id) is None:
                raise GenreError(NOT_OURS)
            genres = await votable_genres(interaction.client, store)  # type: ignore[arg-type]
            view = discord.ui.View(timeout=None)
            view.add_item(GenreSelect.build(store, self.clip_id, genres))
            await interaction.response.send_message(
                f"What is clip #{self.clip_id}? Your answer helps the bot learn at the next "
                "`/retrain`.", view=view, ephemeral=True,
            )

        await answered(interaction, work)


class GenreSelect(
    discord.ui.DynamicItem[discord.ui.Select], template=rf"gv:pick:(?P<clip>[0-9]+):{SIG}"
):
    """The right genre, "not music", or "something else" (typed in a modal)."""

    def __init__(self, clip_id: int, signature: str, select: discord.ui.Select) -> None:
        super().__init__(select)
        self.clip_id, self.signature = clip_id, signature

    @classmethod
    def build(cls, store: LabelStore, clip_id: int, genres: list[str]) -> GenreSelect:
        signature = store.sign("pick", clip_id)
        options = [discord.SelectOption(label=display_name(g), value=f"g:{g}")
                   for g in genres[:MAX_GENRE_OPTIONS]]
        options += [
            discord.SelectOption(label="Not music", value="not_music", emoji="🔇"),
            discord.SelectOption(label="Something else…", value="other", emoji="✍️"),
        ]
        select = discord.ui.Select(custom_id=f"gv:pick:{clip_id}:{signature}",
                                   placeholder="The right genre is…", options=options)
        return cls(clip_id, signature, select)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Select,
                             match: re.Match[str]) -> GenreSelect:
        return cls(int(match["clip"]), match["sig"], item)

    async def callback(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            store = store_of(interaction)
            checked(store, self.signature, "pick", self.clip_id)
            choice = self.item.values[0]
            if choice == "other":
                await interaction.response.send_modal(OtherGenreModal(store, self.clip_id))
                return
            kind, genre = ("not_music", None) if choice == "not_music" else ("genre", choice[2:])
            bot: GenreBot = interaction.client  # type: ignore[assignment]
            changed = await store.vote(self.clip_id, interaction.user.id, kind, genre,
                                       known_genres=await known_genres(bot))
            verb = "changed your vote" if changed else "recorded"
            await interaction.response.edit_message(
                content=f"Thanks, {verb}: clip #{self.clip_id} is **{spoken(genre)}**.",
                view=None,
            )

        await answered(interaction, work)


class OtherGenreModal(discord.ui.Modal):
    """ "Something else": the genre in the user's words. Its submission is answered by custom
    id in :meth:`bot.cogs.labels.Labels.on_interaction` (so it is answered after a restart too)."""

    genre: discord.ui.TextInput[OtherGenreModal] = discord.ui.TextInput(
        label="Genre", placeholder="e.g. drum and bass", min_length=2, max_length=40,
        custom_id="genre",
    )

    def __init__(self, store: LabelStore, clip_id: int) -> None:
        signature = store.sign("other", clip_id)
        super().__init__(title="What genre is it?", timeout=600,
                         custom_id=f"gv:other:{clip_id}:{signature}")


def feedback_view(store: LabelStore, clip_ids: list[int | None]) -> discord.ui.View | None:
    """One row of "Right" / "Wrong…" per stored clip of a message (numbered when several)."""
    view = discord.ui.View(timeout=None)
    numbered = sum(c is not None for c in clip_ids) > 1
    for index, clip_id in enumerate(clip_ids, start=1):
        if clip_id is None:
            continue
        suffix = f" #{index}" if numbered else ""
        right = RightButton(clip_id, store.sign("ok", clip_id), f"Right{suffix}")
        wrong = WrongButton(clip_id, store.sign("no", clip_id), f"Wrong…{suffix}")
        row = len(view.children) // 2
        right.item.row = wrong.item.row = row
        view.add_item(right).add_item(wrong)
    return view if view.children else None


async def remember(
    bot: GenreBot, prediction: Prediction, data: bytes, *, filename: str, source: str,
    uploader_id: int, guild_id: int | None, channel_id: int | None,
) -> int | None:
    """Store an answered clip so that people can correct it; ``None`` (and the answer goes out
    without controls) when the label store is off or failing."""
    store = bot.labels
    if store is None:
        return None
    try:
        return await store.add_clip(new_clip(prediction, data, filename=filename, source=source,
                                             uploader_id=uploader_id, guild_id=guild_id,
                                             channel_id=channel_id))
    except StoreError:
        log.warning("could not store clip %s; answered without feedback controls", filename,
                    exc_info=True)
        return None


def new_clip(prediction: Prediction, data: bytes, *, filename: str, source: str,
             uploader_id: int, guild_id: int | None, channel_id: int | None) -> NewClip:
    return NewClip(
        guild_id=guild_id, channel_id=channel_id, uploader_id=uploader_id, source=source,
        filename=filename[:200], audio_sha256=hashlib.sha256(data).hexdigest(),
        model_version=prediction.model_version or "unknown",
        model_family=prediction.model_family or "unknown",
        predicted=prediction.genre if prediction.music else None,
        probabilities=prediction.probabilities, unsure=prediction.unsure,
        featurizer=prediction.featurizer or None, features=prediction.features,
        audio=prediction.audio, audio_s=prediction.audio_s,
    )


# --- admins' review -----------------------------------------------------------------------


class ReviewButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=rf"gv:rv:(?P<clip>[0-9]+):(?P<verdict>[ar]):(?P<genre>[^:]+):{SIG}",
):
    """Accept or reject one pending correction, then show the next."""

    def __init__(self, clip_id: int, verdict: str, genre: str, signature: str) -> None:
        accept = verdict == "a"
        super().__init__(discord.ui.Button(
            label="Accept" if accept else "Reject",
            style=discord.ButtonStyle.success if accept else discord.ButtonStyle.danger,
            custom_id=f"gv:rv:{clip_id}:{verdict}:{genre}:{signature}",
        ))
        self.clip_id, self.verdict, self.genre, self.signature = (
            clip_id, verdict, genre, signature)

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> ReviewButton:
        return cls(int(match["clip"]), match["verdict"], match["genre"], match["sig"])

    async def callback(self, interaction: discord.Interaction) -> None:
        async def work() -> None:
            bot: GenreBot = interaction.client  # type: ignore[assignment]
            if not is_admin(bot.settings, interaction):
                raise GenreError("Only server admins can review corrections.")
            store = store_of(interaction)
            checked(store, self.signature, "rv", self.clip_id, self.genre)
            accept = self.verdict == "a"
            if accept and self.genre not in await known_genres(bot):
                await store.add_genre(self.genre, interaction.user.id)  # accepting names it
            await store.review(self.clip_id, self.genre, accept, interaction.user.id)
            done = f"{'Accepted' if accept else 'Rejected'}: clip #{self.clip_id} is " \
                   f"**{spoken(self.genre)}**."
            content, view = await review_page(store, interaction.guild_id)
            await interaction.response.edit_message(content=f"{done}\n\n{content}", view=view)

        await answered(interaction, work)


async def review_page(store: LabelStore, guild_id: int | None) -> tuple[str, discord.ui.View]:
    """The next pending correction, with Accept / Reject."""
    view = discord.ui.View(timeout=None)
    pending = await store.pending(guild_id, limit=1)
    if not pending:
        return "Nothing left to review.", view
    p = pending[0]
    people = "person says" if p.voters == 1 else "people say"
    text = (f"Clip #{p.clip_id} (`{clip(p.filename, 80)}`, uploaded by <@{p.uploader_id}>): "
            f"the bot said **{spoken(p.predicted)}**; {p.voters} {people} it is "
            f"**{spoken(p.genre)}**.")
    signature = store.sign("rv", p.clip_id, p.genre)
    for verdict in ("a", "r"):
        view.add_item(ReviewButton(p.clip_id, verdict, p.genre, signature))
    return text, view


def text_inputs(data: dict[str, Any]) -> dict[str, str]:
    """A modal submission's values by custom id, in action rows or labels alike."""
    out: dict[str, str] = {}
    stack = list(data.get("components") or [])
    while stack:
        component = stack.pop()
        if component.get("type") == 4:
            out[str(component.get("custom_id"))] = str(component.get("value") or "")
        stack += component.get("components") or []
        if "component" in component:
            stack.append(component["component"])
    return out


DYNAMIC_ITEMS = (RightButton, WrongButton, GenreSelect, ReviewButton)
