"""The one result type that travels from the core to every face (CLI table, JSON, Discord embed).

Faces format a :class:`Prediction`; they never recompute it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: How a genre is written in a sentence where its id is not how people write it.
SPOKEN = {"hiphop": "hip-hop", "rnb": "R&B"}


def display_name(genre: str, capital: bool = True) -> str:
    """``hiphop`` → ``Hip-hop``, ``rnb`` → ``R&B``, ``jazz`` → ``Jazz``; with
    ``capital=False`` as written mid-sentence (``hip-hop``, ``R&B``, ``jazz``)."""
    spoken = SPOKEN.get(genre, genre)
    return spoken[:1].upper() + spoken[1:] if capital else spoken


@dataclass(frozen=True)
class WindowPrediction:
    """What the model heard in one analysis window of the clip."""

    start_s: float
    end_s: float
    genre: str
    probabilities: dict[str, float]
    music_probability: float = 1.0


@dataclass(frozen=True)
class Prediction:
    """A whole clip's answer.

    ``genre`` is ``None`` when the clip is not music. ``probabilities`` covers every genre of
    the model (its classes come from its training data), is calibrated and sums to 1. ``unsure``
    marks a close call between ``candidates``; ``also`` is a second genre that is strong too in
    a confident answer ("jazz, with Latin").
    """

    genre: str | None
    probabilities: dict[str, float]
    windows: list[WindowPrediction]
    duration_s: float
    analysed_s: float
    timings_ms: dict[str, float]
    music: bool = True
    music_probability: float = 1.0
    sounds_like: str | None = None
    unsure: bool = False
    candidates: list[str] = field(default_factory=list)
    summary: str = ""
    tags: list[tuple[str, float]] = field(default_factory=list)
    model_family: str = ""
    model_version: str = ""
    also: str | None = None
    # What lets the clip be learned from later (kept by the label store, never shown): the
    # windows' feature rows (``numpy.save`` bytes), which featurizer made them, and the analysed
    # audio as Ogg/Opus (``Limits.keep_audio_s``; ``None`` when not kept).
    features: bytes | None = field(default=None, repr=False, compare=False)
    featurizer: str = ""
    audio: bytes | None = field(default=None, repr=False, compare=False)
    audio_s: float = 0.0

    @property
    def ranked(self) -> list[tuple[str, float]]:
        """Genres from most to least likely."""
        return sorted(self.probabilities.items(), key=lambda kv: kv[1], reverse=True)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for private in ("features", "featurizer", "audio", "audio_s"):
            del data[private]
        data["tags"] = [{"tag": t, "probability": p} for t, p in self.tags]
        return data
