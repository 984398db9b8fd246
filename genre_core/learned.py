"""The learned family: a genre head over the frozen musicnn network's outputs.

Training material is every labelled GTZAN clip with audio (full and partial). The 8 kHz copies
are kept out of training: they are all classical, so a head trained on them would learn "muffled
means classical"; they only measure robustness. Augmentation suits music and costs little: each
clip is embedded once per audio variant (original; 4 % slower and 9 dB quieter; 4 % faster and
re-encoded as 48 kbps mp3) and cached; random crops of consecutive 3-s patches are then drawn
from the cached embeddings without running the network again.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.audio import decode
from genre_core.cache import cached_arrays
from genre_core.data import Clip, audio_clips, fingerprint
from genre_core.model import GENRES, GenreModel

Progress = Callable[[str], None]
VARIANTS = ("original", "slower_quieter", "faster_mp3")
#: Bump when the embedding of a variant changes.
EMBEDDING_KEY = "musicnn-embeddings-v1"
#: Random crops drawn per clip and variant, each 3-10 consecutive patches (9-30 s).
CROPS = 4
#: Default feature groups of the head (see genre_core.musicnn.feature_names_for).
DEFAULT_GROUPS = ("tags", "penultimate")
HEAD = {"hidden": (128,), "dropout": 0.5, "l2": 1e-3, "epochs": 60, "batch_size": 64}


def variant_audio(y: np.ndarray, sr: int, variant: str) -> np.ndarray:
    """One augmented copy of ``y`` (see :data:`VARIANTS`)."""
    if variant == "original":
        return y
    if variant == "slower_quieter":
        return _speed(y, sr, 1 / 1.04) * np.float32(10 ** (-9 / 20))
    if variant == "faster_mp3":
        return _mp3(_speed(y, sr, 1.04), sr, "48k")
    raise ValueError(f"unknown variant {variant!r}")


def _speed(y: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Played ``factor`` times faster: tempo and pitch move together, like a turntable."""
    import librosa

    return librosa.resample(y, orig_sr=sr, target_sr=int(sr / factor)).astype(np.float32)


def _mp3(y: np.ndarray, sr: int, bitrate: str) -> np.ndarray:
    """A lossy round trip through an mp3 encoder."""
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    mp3 = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "s16le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
         "-b:a", bitrate, "-f", "mp3", "pipe:1"],
        input=pcm, capture_output=True, check=True, timeout=60,
    ).stdout
    return decode(mp3).samples


def clip_embedding(clip: Clip, variant: str, embedder: Any) -> dict[str, np.ndarray]:
    """The network's per-patch outputs for one clip variant, cached on disk."""

    def compute() -> dict[str, np.ndarray]:
        audio = decode(clip.path)
        return embedder.embed(variant_audio(audio.samples, audio.sr, variant), audio.sr)

    return cached_arrays(f"{EMBEDDING_KEY}-{variant}", clip.path, compute)


@dataclass
class ClipSet:
    """One row per (clip, variant, crop): feature vectors with what they came from."""

    X: np.ndarray
    y: np.ndarray
    tracks: np.ndarray
    kinds: np.ndarray
    original: np.ndarray  # True for the un-augmented whole-clip row of each clip


def build_clip_set(
    clips: Sequence[Clip], featurizer: Any, *, variants: Sequence[str] = VARIANTS,
    crops: int = CROPS, seed: int = 0, progress: Progress | None = None,
) -> ClipSet:
    """Feature rows of ``clips``: the whole clip per variant plus ``crops`` random crops."""
    rng = np.random.default_rng(seed)
    rows, labels, tracks, kinds, original = [], [], [], [], []
    for n, clip in enumerate(clips, start=1):
        if progress and n % 20 == 0:
            progress(f"embedding clips: {n}/{len(clips)}")
        for variant in variants:
            embedding = clip_embedding(clip, variant, featurizer.embedder)
            n_patches = len(embedding["tags"])
            spans = [(0, n_patches)]
            for _ in range(crops if n_patches > 3 else 0):
                length = int(rng.integers(3, min(10, n_patches) + 1))
                start = int(rng.integers(0, n_patches - length + 1))
                spans.append((start, start + length))
            for i, (start, end) in enumerate(spans):
                part = {key: value[start:end] for key, value in embedding.items()}
                rows.append(featurizer.featurize(part))
                labels.append(GENRES.index(clip.genre))
                tracks.append(clip.track)
                kinds.append(clip.kind)
                original.append(variant == "original" and i == 0)
    return ClipSet(np.stack(rows), np.array(labels), np.array(tracks), np.array(kinds),
                   np.array(original))


def track_block(track: str, size: int = 5) -> str:
    """GTZAN numbers an artist's tracks consecutively: blocks of ``size`` ids keep most of an
    artist's neighbouring tracks together when grouping folds."""
    genre, number = track.split(".")
    return f"{genre}.{int(number) // size}"


def make_head(feature_names: list[str], seed: int) -> GenreModel:
    return GenreModel(list(feature_names), family="musicnn", seed=seed, **HEAD)


def train_musicnn(
    data_dir: Path, out_dir: Path, *, seed: int = 0, groups: Sequence[str] = DEFAULT_GROUPS,
    progress: Progress | None = None, comparison: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the head on every labelled clip (with augmentation) and save the artifact.

    ``comparison``, when given, is the report of :func:`genre_core.comparison.compare` for these
    groups: its musicnn figures become the stored metrics.
    """
    from genre_core.evaluation import choose_unsure_thresholds
    from genre_core.musicnn import MusicnnFeaturizer

    say = progress or (lambda message: None)
    started = time.monotonic()
    featurizer = MusicnnFeaturizer(groups=groups)
    clips = audio_clips(data_dir, kinds=("full", "partial"))
    data = build_clip_set(clips, featurizer, seed=seed, progress=say)
    say("training the head on every clip")
    model = make_head(featurizer.feature_names, seed).fit(data.X, data.y)
    metrics: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    thresholds: dict[str, Any] = {}
    if comparison is not None:
        report = comparison["families"]["musicnn"]
        metrics = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                   "protocols": {comparison["protocol"]: report}}
        calibration = comparison["calibration"]["musicnn"]
        model.temperature_ = calibration["temperature"]
        thresholds = choose_unsure_thresholds(
            np.asarray(comparison["oof"]["musicnn"]["probs"]),
            np.asarray(comparison["oof"]["musicnn"]["y"]),
        )
    model.save(out_dir, metadata={
        "version": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "featurizer": {"groups": list(groups), "window_s": 30.0},
        "training": {
            "data_fingerprint": fingerprint([c.path for c in clips]),
            "n_clips": len(clips), "n_rows": int(len(data.y)),
            "variants": list(VARIANTS), "crops_per_variant": CROPS,
            "clip_kinds": sorted({c.kind for c in clips}),
            "seconds": round(time.monotonic() - started, 1),
        },
        "calibration": calibration,
        "thresholds": thresholds,
        "metrics": metrics,
    })
    return metrics
