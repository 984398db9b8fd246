"""The whole chain in one place: decode → windows → features → model → aggregate → verdict.

The CLI and the bot both call :class:`Classifier`; they format its :class:`Prediction` and never
recompute it.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.audio import Audio, analysis_windows, decode, encode_opus
from genre_core.data import PROJECT_ROOT
from genre_core.errors import GenreError
from genre_core.featurizers import Featurizer, featurizer_for, featurizer_id
from genre_core.model import GenreModel
from genre_core.result import Prediction, WindowPrediction, display_name
from genre_core.settings import SAMPLE_RATE, Limits

DEFAULT_MODEL_DIR = PROJECT_ROOT / "models" / "genre"
DEFAULT_DETECTOR_DIR = PROJECT_ROOT / "models" / "detector"
#: A window's top genre must be at least this likely to count in "starts as X, turns into Y".
WINDOW_CONFIDENT = 0.5
#: Style tags shown with a learned-family answer.
TOP_TAGS = 5
#: In a confident answer, a second genre at least this likely is named too ("jazz, with Latin").
ALSO_STRONG = 0.15


class Classifier:
    """A loaded model with its featurizer, music detector and limits.

    Parameters
    ----------
    model : GenreModel
        The genre head (its artifact's thresholds are read from its metadata).
    featurizer : Featurizer
        The matching featurizer (same family as the model).
    limits : Limits
        What input is accepted.
    detector : MusicDetector, optional
        Says whether a clip is music at all; without it every clip is taken as music.
    """

    def __init__(
        self, model: GenreModel, featurizer: Featurizer, limits: Limits = Limits(),
        detector: Any | None = None, model_dir: Path | None = None,
    ) -> None:
        self.model = model
        self.featurizer = featurizer
        self.limits = limits
        self.detector = detector
        self.model_dir = model_dir
        thresholds = model.metadata_.get("thresholds", {})
        self.min_probability = float(thresholds.get("min_probability", 0.0))
        self.min_margin = float(thresholds.get("min_margin", 0.0))

    @classmethod
    def load(
        cls, model_dir: Path | None = None, limits: Limits = Limits(),
        detector_dir: Path | None = None,
    ) -> Classifier:
        """Load the model in ``model_dir`` (default: ``GENRE_MODEL_DIR`` or the shipped one)
        and the music detector beside it."""
        model_dir = Path(model_dir or os.environ.get("GENRE_MODEL_DIR") or DEFAULT_MODEL_DIR)
        model = GenreModel.load(model_dir)
        featurizer = featurizer_for(model.family, model.metadata_.get("featurizer"))
        if list(featurizer.feature_names) != list(model.feature_names):
            from genre_core.errors import ModelMismatchError

            raise ModelMismatchError(
                f"The model in {model_dir} expects other features than the {model.family} "
                "featurizer computes. Retrain it with `genre train`."
            )
        detector_dir = Path(detector_dir or DEFAULT_DETECTOR_DIR)
        detector = None
        if (detector_dir / "detector.json").is_file():
            from genre_core.musicness import MusicDetector

            detector = MusicDetector.load(detector_dir)
        return cls(model, featurizer, limits, detector, model_dir)

    @property
    def info(self) -> dict[str, Any]:
        """What ``/model`` and ``genre info`` show: version, family, date, metrics."""
        meta = self.model.metadata_
        return {
            "version": meta.get("version", "unknown"),
            "family": self.model.family,
            "trained_at": meta.get("trained_at"),
            "metrics": meta.get("metrics", {}),
            "calibration": meta.get("calibration", {}),
            "thresholds": meta.get("thresholds", {}),
            "path": str(self.model_dir) if self.model_dir else None,
            "detector": self.detector is not None,
            "genres": list(self.model.genres),
        }

    def warm_up(self) -> None:
        """Run every stage once on a synthetic clip, so numba compilation and TensorFlow's
        graph tracing happen now rather than on a user's first request."""
        t = np.arange(int(5 * SAMPLE_RATE)) / SAMPLE_RATE
        rng = np.random.default_rng(0)
        y = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size))
        self.classify_audio(Audio(y.astype(np.float32)))

    def classify(self, source: bytes | str | Path, filename: str | None = None) -> Prediction:
        """Decode ``source`` (bytes or a path) and classify it.

        ``filename`` is only used in messages; the format is detected from the content.
        """
        started = time.perf_counter()
        audio = decode(source, self.limits)
        decoded = time.perf_counter()
        return self.classify_audio(audio, {"decode": (decoded - started) * 1000})

    def classify_audio(self, audio: Audio, timings: dict[str, float] | None = None) -> Prediction:
        timings = dict(timings or {})
        windows = analysis_windows(audio, self.featurizer.window_s, self.limits.max_windows)
        clock = time.perf_counter()
        X, tags = self._featurize([w for _, w in windows], audio.sr)
        timings["features"] = _since(clock)

        clock = time.perf_counter()
        window_probs = self.model.predict_proba(X)
        timings["inference"] = _since(clock)

        music, music_probability, sounds_like = True, 1.0, None
        window_music = np.ones(len(windows))
        if self.detector is not None:
            clock = time.perf_counter()
            assessment = self.detector.assess(
                [w for _, w in windows], audio.sr, network_rows=X,
                network_names=self.featurizer.feature_names)
            music, music_probability = assessment.music, assessment.music_probability
            sounds_like, window_music = assessment.sounds_like, assessment.window_probabilities
            timings["music_check"] = _since(clock)
        timings["total"] = sum(timings.values())

        genres = self.model.genres
        probs = aggregate(window_probs)
        per_window = [
            WindowPrediction(
                start_s=round(start, 2),
                end_s=round(start + len(w) / audio.sr, 2),
                genre=genres[int(p.argmax())],
                probabilities=_as_dict(genres, p),
                music_probability=round(float(m), 4),
            )
            for (start, w), p, m in zip(windows, window_probs, window_music, strict=True)
        ]
        ranked = np.argsort(probs)[::-1]
        top, second = probs[ranked[0]], probs[ranked[1]]
        unsure = bool(top < self.min_probability or top - second < self.min_margin)
        candidates = [genres[i] for i in ranked[:2]] if unsure else [genres[ranked[0]]]
        genre = genres[ranked[0]] if music else None
        also = genres[ranked[1]] if music and not unsure and second >= ALSO_STRONG else None
        return Prediction(
            genre=genre,
            probabilities=_as_dict(genres, probs),
            windows=per_window,
            duration_s=round(audio.duration_s, 2),
            analysed_s=round(sum(len(w) for _, w in windows) / audio.sr, 2),
            timings_ms={k: round(v, 1) for k, v in timings.items()},
            music=music,
            music_probability=round(music_probability, 4),
            sounds_like=sounds_like,
            unsure=unsure and music,
            candidates=candidates if music else [],
            summary=describe(music, sounds_like, unsure, candidates, per_window, also),
            tags=tags if music else [],
            model_family=self.model.family,
            model_version=str(self.model.metadata_.get("version", "")),
            also=also,
            features=_npy(X),
            featurizer=featurizer_id(self.featurizer),
            **self._kept_audio([w for _, w in windows], audio.sr),
        )

    def _kept_audio(self, windows: list[np.ndarray], sr: int) -> dict[str, Any]:
        """The analysed windows, up to ``limits.keep_audio_s``, as Ogg/Opus (or nothing: the
        answer never waits on, or fails for, what is kept for later)."""
        keep = int(self.limits.keep_audio_s * sr)
        if keep <= 0:
            return {}
        samples = np.concatenate(windows)[:keep]
        try:
            return {"audio": encode_opus(samples, sr, self.limits), "audio_s": len(samples) / sr}
        except GenreError:
            return {}


    def _featurize(
        self, windows: list[np.ndarray], sr: int
    ) -> tuple[np.ndarray, list[tuple[str, float]]]:
        """Feature rows of the windows, and style tags where the featurizer is a network that
        gives them (from the same network call)."""
        embed_many = getattr(self.featurizer, "embed_many", None)
        if embed_many is None:
            return np.stack([self.featurizer.transform(w, sr) for w in windows]), []
        embeddings = embed_many(windows, sr)  # one network pass for the whole song
        X = np.stack([self.featurizer.featurize(e) for e in embeddings])
        every_patch = {"tags": np.concatenate([e["tags"] for e in embeddings])}
        tags = self.featurizer.top_tags_from(every_patch, k=TOP_TAGS)
        # musicnn spells its tags as last.fm users did ("Hip-Hop", "Mellow"): show them alike.
        return X, [(tag.lower(), round(p, 3)) for tag, p in tags]


def aggregate(window_probs: np.ndarray) -> np.ndarray:
    """A song's genre probabilities from its windows': the normalised geometric mean (mean
    log-probability), so one confident window cannot outvote several that agree."""
    log_mean = np.log(np.clip(window_probs, 1e-12, 1.0)).mean(axis=0)
    probs = np.exp(log_mean - log_mean.max())
    return probs / probs.sum()


def describe(
    music: bool, sounds_like: str | None, unsure: bool, candidates: list[str],
    windows: list[WindowPrediction], also: str | None = None,
) -> str:
    """One sentence a person reads first."""
    if not music:
        detail = f" (mostly {sounds_like})" if sounds_like else ""
        return f"This doesn't sound like music{detail}."
    confident = [w.genre for w in windows if w.probabilities[w.genre] >= WINDOW_CONFIDENT]
    if len(windows) >= 2 and len(confident) >= 2 and confident[0] != confident[-1]:
        return f"Starts as {confident[0]}, turns into {confident[-1]}."
    first, *rest = [display_name(c, capital=False) for c in candidates]
    if unsure:
        return f"Not sure — {first} or {rest[0]}."
    if also:
        return f"Sounds like {first}, with {display_name(also, capital=False)}."
    return f"Sounds like {first}."


def _npy(X: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(X, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _as_dict(genres: list[str], probs: np.ndarray) -> dict[str, float]:
    return {g: round(float(p), 4) for g, p in zip(genres, probs, strict=True)}


def _since(clock: float) -> float:
    return (time.perf_counter() - clock) * 1000
