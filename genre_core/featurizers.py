"""Featurizers turn one analysis window of audio into the vector a genre head reads.

A model family is a featurizer plus the same kind of MLP head; the artifact records its family,
and :func:`featurizer_for` rebuilds the matching featurizer, so pipeline stages stay swappable.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np

from genre_core import features


class Featurizer(Protocol):
    family: str
    #: Analysis window length in seconds.
    window_s: float

    @property
    def feature_names(self) -> list[str]: ...

    def transform(self, y: np.ndarray, sr: int) -> np.ndarray: ...


class TableFeaturizer:
    """The 57 GTZAN Kaggle features over 30-s windows (the published table's recipe)."""

    family = "table"
    window_s = 30.0

    @property
    def feature_names(self) -> list[str]:
        return features.FEATURE_NAMES

    def transform(self, y: np.ndarray, sr: int) -> np.ndarray:
        return features.extract(y, sr)


def featurizer_id(featurizer: Featurizer) -> str:
    """Names what a featurizer computes (family, window, feature names): stored rows with the
    same id can train the serving head as they are; others are re-made from the audio."""
    names = ",".join(featurizer.feature_names) + f"@{featurizer.window_s:g}"
    return f"{featurizer.family}:{hashlib.sha1(names.encode()).hexdigest()[:12]}"


def featurizer_for(family: str, settings: dict | None = None) -> Featurizer:
    """The featurizer of a model family, configured as the artifact's metadata says."""
    settings = settings or {}
    if family == "table":
        return TableFeaturizer()
    if family == "musicnn":
        from genre_core.musicnn import EMBEDDING_KEYS, MusicnnFeaturizer

        featurizer = MusicnnFeaturizer(groups=settings.get("groups", EMBEDDING_KEYS))
        featurizer.window_s = float(settings.get("window_s", 30.0))
        return featurizer
    from genre_core.errors import ModelMismatchError

    raise ModelMismatchError(f"The model is of an unknown family {family!r}.")
