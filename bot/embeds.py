"""Results as Discord embeds. Formats a :class:`Prediction`; never recomputes it.

Every builder stays inside Discord's embed limits (title 256, description 4096, 25 fields of
256/1024, footer 2048, 6000 characters per message, 10 embeds per message).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import discord

from genre_core.result import Prediction, display_name

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
MESSAGE_EMBED_CHARS = 6000
MESSAGE_EMBEDS = 10
MESSAGE_ROWS = 5  # action rows of components in one message

BAR_WIDTH = 12
#: File names are shown, not read: a 5,000-character name is cut here.
FILENAME_MAX = 100

COLOUR_MUSIC = discord.Colour.green()
COLOUR_UNSURE = discord.Colour.gold()
COLOUR_NOT_MUSIC = discord.Colour.light_grey()
COLOUR_ERROR = discord.Colour.red()
COLOUR_INFO = discord.Colour.blurple()


def clip(text: str, limit: int) -> str:
    """Shorten ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit(embed: discord.Embed) -> discord.Embed:
    """Shorten the description, then the footer, until the embed fits in 6000 characters."""
    excess = len(embed) - MESSAGE_EMBED_CHARS
    if excess > 0 and embed.description:
        keep = max(len(embed.description) - excess, 0)
        embed.description = clip(embed.description, keep) if keep > 1 else None
        excess = len(embed) - MESSAGE_EMBED_CHARS
    if excess > 0 and embed.footer.text:
        embed.set_footer(text=clip(embed.footer.text, max(len(embed.footer.text) - excess, 2)))
    return embed


def confidence_bar(probability: float, width: int = BAR_WIDTH) -> str:
    """A text bar: ``████░░░░`` filled in proportion to ``probability``.

    Parameters
    ----------
    probability : float
        In [0, 1]; values outside are clamped.
    width : int
        Characters in the bar.

    Returns
    -------
    str
    """
    filled = round(min(max(probability, 0.0), 1.0) * width)
    return "█" * filled + "░" * (width - filled)


def _bars(ranked: Iterable[tuple[str, float]]) -> str:
    items = [(display_name(name), p) for name, p in ranked]
    pad = max((len(name) for name, _ in items), default=0)
    lines = [f"{name:<{pad}} {confidence_bar(p)} {p:>4.0%}" for name, p in items]
    return clip("```\n" + "\n".join(lines) + "\n```", FIELD_VALUE_MAX)


def _length(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _elapsed(timings_ms: Mapping[str, float]) -> float:
    if "total" in timings_ms:
        return float(timings_ms["total"])
    return float(sum(timings_ms.values()))




def prediction_embed(
    prediction: Prediction, filename: str | None = None, clip_id: int | None = None
) -> discord.Embed:
    """The answer for one clip.

    Music: the genre and a confidence bar for every genre. Unsure: the candidates, then the bars.
    Not music: says so plainly (and what it sounds like, when known), without genre bars.

    Parameters
    ----------
    prediction : Prediction
        The classifier's answer.
    filename : str, optional
        The clip's name, shown in the footer.
    clip_id : int, optional
        The label store's number for the clip (admins review and delete by it).

    Returns
    -------
    discord.Embed
    """
    if not prediction.music:
        title = "🔇 This doesn't sound like music"
        description = (
            f"It sounds more like **{prediction.sounds_like}**."
            if prediction.sounds_like
            else "I couldn't hear music in this clip."
        )
        colour = COLOUR_NOT_MUSIC
    elif prediction.unsure and prediction.candidates:
        names = [display_name(c) for c in prediction.candidates]
        title = "🤔 Hard to say: " + (
            " or ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " or " + names[-1]
        )
        description = "It's a close call between " + ", ".join(f"**{n}**" for n in names) + "."
        colour = COLOUR_UNSURE
    else:
        title = f"🎵 {display_name(prediction.genre or prediction.ranked[0][0])}"
        if prediction.also:
            title += f", with {display_name(prediction.also)}"
        description = ""
        colour = COLOUR_MUSIC
    if prediction.summary:
        description = f"{description}\n{prediction.summary}".strip()

    embed = discord.Embed(
        title=clip(title, TITLE_MAX),
        description=clip(description, DESCRIPTION_MAX) or None,
        colour=colour,
    )
    if prediction.music:
        embed.add_field(name="Confidence", value=_bars(prediction.ranked), inline=False)
    if prediction.tags:
        tags = ", ".join(f"{tag} ({p:.0%})" for tag, p in prediction.tags)
        embed.add_field(name="Tags", value=clip(tags, FIELD_VALUE_MAX), inline=False)

    footer = [
        f"Analysed {_length(prediction.analysed_s)} of {_length(prediction.duration_s)}",
        f"took {_elapsed(prediction.timings_ms) / 1000:.1f} s",
    ]
    if clip_id is not None:
        footer.append(f"clip #{clip_id}")
    if prediction.model_version:
        footer.append(f"model {prediction.model_version}")
    if filename:
        footer.insert(0, clip(filename, FILENAME_MAX))
    embed.set_footer(text=clip(" · ".join(footer), FOOTER_MAX))
    return fit(embed)


def error_embed(message: str, filename: str | None = None) -> discord.Embed:
    """A friendly explanation of why a clip could not be analysed."""
    title = (
        f"⚠️ Couldn't analyse {clip(filename, FILENAME_MAX)}"
        if filename
        else "⚠️ Couldn't analyse that"
    )
    return discord.Embed(
        title=clip(title, TITLE_MAX),
        description=clip(message, DESCRIPTION_MAX),
        colour=COLOUR_ERROR,
    )


def _metric(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _metric_lines(metrics: Mapping[str, Any]) -> str:
    lines = [f"{k}: {_metric(v)}" for k, v in metrics.items() if isinstance(v, int | float | str)]
    return clip("\n".join(lines) or "none recorded", FIELD_VALUE_MAX)


def model_embed(info: Mapping[str, Any]) -> discord.Embed:
    """The serving model: version, family, training date, metrics."""
    embed = discord.Embed(
        title=clip(f"🧠 Model {info.get('version', '?')}", TITLE_MAX), colour=COLOUR_INFO
    )
    if info.get("family"):
        embed.add_field(name="Family", value=clip(str(info["family"]), FIELD_VALUE_MAX))
    if info.get("trained_at"):
        embed.add_field(name="Trained", value=clip(str(info["trained_at"]), FIELD_VALUE_MAX))
    metrics = info.get("metrics") or {}
    embed.add_field(name="Metrics", value=_metric_lines(metrics), inline=False)
    return fit(embed)


COMPARED = ("accuracy", "macro_f1")


def comparison_embed(
    new: Mapping[str, Any], current: Mapping[str, Any], *, verdict: str, published: str | None
) -> discord.Embed:
    """A retrain's result: the candidate's honest metrics next to the serving model's.

    When the retrain measured both models on the same held-out clips (``old_accuracy``), those
    figures are compared, overall and per genre, with what the community's clips added.

    Parameters
    ----------
    new, current : mapping
        Metrics of the candidate and of the serving model.
    verdict : str
        One sentence: kept, swapped in, forced.
    published : str or None
        The new version when it was swapped in.

    Returns
    -------
    discord.Embed
    """
    same_clips = new.get("old_accuracy") is not None
    if same_clips:
        current = {k[len("old_"):]: v for k, v in new.items() if k.startswith("old_")}
    keys = [k for k in COMPARED if k in new or k in current]
    keys += [k for k in new if k not in keys and not k.startswith(("old_", "n_"))
             and k != "seconds" and isinstance(new[k], int | float)
             and not isinstance(new[k], bool)]
    pad = max((len(k) for k in keys), default=0)
    rows = [f"{'':<{pad}}  {'new':>7}  {'current':>7}"]
    for key in keys:
        rows.append(
            f"{key:<{pad}}  {_metric(new.get(key, '-')):>7}  {_metric(current.get(key, '-')):>7}"
        )
    table = clip("```\n" + "\n".join(rows) + "\n```", FIELD_VALUE_MAX)
    title = f"✅ Model {published} is now serving" if published else "↩️ Kept the current model"
    embed = discord.Embed(
        title=clip(title, TITLE_MAX),
        description=clip(verdict, DESCRIPTION_MAX),
        colour=COLOUR_MUSIC if published else COLOUR_UNSURE,
    )
    name = "Both models on the same held-out clips" if same_clips else "Honest metrics"
    embed.add_field(name=name, value=table, inline=False)
    if new.get("per_genre"):
        embed.add_field(name="Per genre (held-out clips)", value=_per_genre(new["per_genre"]),
                        inline=False)
    if new.get("community"):
        embed.add_field(name="From your servers", value=_community(new["community"]),
                        inline=False)
    return fit(embed)


def _per_genre(per_genre: Mapping[str, Mapping[str, Any]]) -> str:
    names = {g: display_name(g) for g in per_genre}
    pad = max(len(n) for n in names.values())
    rows = [f"{'':<{pad}}  {'clips':>5}  {'before':>6}  {'after':>6}"]
    for genre, entry in sorted(per_genre.items()):
        before = _metric(entry["before"]) if "before" in entry else "new"
        rows.append(f"{names[genre]:<{pad}}  {entry['n']:>5}  {before:>6}  "
                    f"{_metric(entry.get('after', '-')):>6}")
    return clip("```\n" + "\n".join(rows) + "\n```", FIELD_VALUE_MAX)


def _community(community: Mapping[str, Any]) -> str:
    lines = [f"{community.get('clips_used', 0)} community clip(s) trained on, "
             f"{community.get('clips_held_out', 0)} held out to measure."]
    if community.get("new_genres"):
        lines.append("New genres: " + ", ".join(display_name(g) for g in community["new_genres"]))
    for genre, need in (community.get("waiting") or {}).items():
        lines.append(f"Not yet: {display_name(genre)} ({need})")
    left_out = community.get("left_out") or {}
    if left_out.get("not_music"):
        lines.append(f"{left_out['not_music']} clip(s) marked not music (not used for genres)")
    if left_out.get("unusable"):
        lines.append(f"{left_out['unusable']} clip(s) with neither features nor audio kept")
    return clip("\n".join(lines), FIELD_VALUE_MAX)


def pack(
    embeds: list[discord.Embed], rows: list[int] | None = None
) -> list[list[discord.Embed]]:
    """Group embeds into messages of at most 10 embeds and 6000 characters each, and at most 5
    rows of controls when ``rows`` says how many each embed's answer carries."""
    rows = rows or [0] * len(embeds)
    messages: list[list[discord.Embed]] = []
    size = used_rows = 0
    for embed, own_rows in zip(embeds, rows, strict=True):
        if (
            not messages
            or len(messages[-1]) == MESSAGE_EMBEDS
            or size + len(embed) > MESSAGE_EMBED_CHARS
            or used_rows + own_rows > MESSAGE_ROWS
        ):
            messages.append([])
            size = used_rows = 0
        messages[-1].append(embed)
        size += len(embed)
        used_rows += own_rows
    return messages
