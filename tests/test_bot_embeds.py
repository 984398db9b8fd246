"""Prediction → embed: what is shown for music, unsure and not-music, within Discord's limits."""

from __future__ import annotations

import discord
import pytest
from conftest import GENRES

from bot.embeds import (
    comparison_embed,
    confidence_bar,
    error_embed,
    model_embed,
    pack,
    prediction_embed,
)
from genre_core.result import Prediction, display_name


def prediction(**overrides: object) -> Prediction:
    weights = dict(zip(GENRES, range(1, 11), strict=True))  # rock most likely, blues least
    total = sum(weights.values())
    values: dict[str, object] = {
        "genre": "rock",
        "probabilities": {g: w / total for g, w in weights.items()},
        "windows": [],
        "duration_s": 192.4,
        "analysed_s": 90.0,
        "timings_ms": {"decode": 300.0, "features": 900.0, "inference": 12.0},
        "model_version": "20250101-000000",
    }
    values.update(overrides)
    return Prediction(**values)  # type: ignore[arg-type]


def within_limits(embed: discord.Embed) -> None:
    data = embed.to_dict()
    assert len(data.get("title", "")) <= 256
    assert len(data.get("description", "")) <= 4096
    assert len(data.get("fields", [])) <= 25
    for f in data.get("fields", []):
        assert 0 < len(f["name"]) <= 256 and 0 < len(f["value"]) <= 1024
    assert len(data.get("footer", {}).get("text", "")) <= 2048
    assert len(embed) <= 6000


def bar_lines(embed: discord.Embed) -> list[str]:
    field = next(f for f in embed.fields if f.name == "Confidence")
    return [line for line in (field.value or "").strip("`\n").splitlines() if line]


def test_music_shows_the_genre_and_a_bar_for_every_genre_most_likely_first() -> None:
    embed = prediction_embed(prediction(), "mix.mp3")
    assert embed.title == "🎵 Rock"
    lines = bar_lines(embed)
    assert [line.split()[0] for line in lines] == [display_name(g) for g in reversed(GENRES)]
    assert lines[0].endswith("18%") and lines[-1].endswith("2%")
    footer = embed.footer.text or ""
    assert footer.startswith("mix.mp3")
    assert "Analysed 1:30 of 3:12" in footer and "took 1.2 s" in footer
    assert "model 20250101-000000" in footer
    within_limits(embed)


def test_not_music_says_so_without_genre_bars() -> None:
    embed = prediction_embed(prediction(music=False, genre=None, sounds_like="speech"))
    assert embed.title == "🔇 This doesn't sound like music"
    assert "speech" in (embed.description or "")
    assert all(f.name != "Confidence" for f in embed.fields)
    within_limits(embed)


def test_unsure_names_the_candidates() -> None:
    embed = prediction_embed(prediction(unsure=True, candidates=["rock", "metal"]))
    assert embed.title == "🤔 Hard to say: Rock or Metal"
    assert "**Rock**" in (embed.description or "") and "**Metal**" in (embed.description or "")
    assert len(bar_lines(embed)) == 10


def test_summary_and_tags_are_shown() -> None:
    embed = prediction_embed(
        prediction(
            summary="Starts as jazz, turns into rock.", tags=[("guitar", 0.8), ("drums", 0.61)]
        )
    )
    assert "Starts as jazz" in (embed.description or "")
    tags = next(f for f in embed.fields if f.name == "Tags")
    assert tags.value == "guitar (80%), drums (61%)"


def test_extreme_inputs_stay_within_discord_limits() -> None:
    embed = prediction_embed(
        prediction(
            summary="la " * 5000,
            tags=[(f"tag{i}" * 20, 0.5) for i in range(300)],
            unsure=True,
            candidates=[g * 40 for g in GENRES],
        ),
        "n" * 5000,
    )
    within_limits(embed)
    within_limits(error_embed("why " * 3000, "f" * 500))
    within_limits(
        model_embed({"version": "v" * 400, "metrics": {f"m{i}": 0.5 for i in range(500)}})
    )


def test_confidence_bar() -> None:
    assert confidence_bar(0.0) == "░" * 12
    assert confidence_bar(1.0) == "█" * 12
    assert confidence_bar(0.5, width=10) == "█████░░░░░"
    assert confidence_bar(7.0) == "█" * 12  # clamped


@pytest.mark.parametrize("count", [1, 9, 10, 11, 25])
def test_pack_respects_the_per_message_limits(count: int) -> None:
    embeds = [prediction_embed(prediction(summary="x" * 900), f"{i}.mp3") for i in range(count)]
    groups = pack(embeds)
    assert [e for g in groups for e in g] == embeds  # all of them, in order
    for group in groups:
        assert 1 <= len(group) <= 10
        assert sum(len(e) for e in group) <= 6000


def test_comparison_shows_new_next_to_current() -> None:
    embed = comparison_embed(
        {"accuracy": 0.8123, "macro_f1": 0.8, "protocols": {}},
        {"accuracy": 0.79, "macro_f1": 0.78},
        verdict="ok",
        published="v2",
    )
    table = embed.fields[0].value or ""
    assert "0.812" in table and "0.790" in table and "protocols" not in table
    assert embed.title == "✅ Model v2 is now serving"
    within_limits(embed)


def test_the_model_s_own_genres_are_shown_with_a_strong_second_one() -> None:
    # A model with genres beyond GTZAN's ten: the bars follow its list, named for people.
    probabilities = {"jazz": 0.78, "latin": 0.17, "rnb": 0.03, "electronic": 0.02}
    embed = prediction_embed(prediction(genre="jazz", also="latin", probabilities=probabilities))
    assert embed.title == "🎵 Jazz, with Latin"
    assert [line.split()[0] for line in bar_lines(embed)] == ["Jazz", "Latin", "R&B", "Electronic"]
    within_limits(embed)
