"""The learned family's building blocks: the frozen musicnn network's outputs for a clip,
cached on disk, its augmented variants, and random crops of them.

Each clip is embedded once per audio variant and cached; random crops of consecutive 3-s
patches are then drawn from the cached embeddings without running the network again. The GTZAN
clip-level comparison (:mod:`genre_core.comparison`) uses the original, slower-and-quieter and
faster-mp3 variants; the shipped head (:mod:`genre_core.crosscollection`) the original and the
"shifted" one, which imitates what differs between collections.
"""

from __future__ import annotations

import subprocess
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.audio import decode
from genre_core.cache import cached_arrays
from genre_core.data import Clip
from genre_core.model import GENRES, GenreModel

Progress = Callable[[str], None]
VARIANTS = ("original", "slower_quieter", "faster_mp3")
#: What differs between collections, drawn anew per clip: level, spectral tilt, bandwidth,
#: codec and bitrate (see :func:`shifted`).
SHIFTED = "shifted"
#: Bump when the embedding of a variant changes.
EMBEDDING_KEY = "musicnn-embeddings-v1"
#: Random crops drawn per clip and variant, each 3-10 consecutive patches (9-30 s).
CROPS = 4
#: Default feature groups of the head (see genre_core.musicnn.feature_names_for).
DEFAULT_GROUPS = ("tags", "penultimate")
HEAD = {"hidden": (128,), "dropout": 0.5, "l2": 1e-3, "epochs": 60, "batch_size": 64}


def variant_audio(y: np.ndarray, sr: int, variant: str, seed: int = 0) -> np.ndarray:
    """One augmented copy of ``y`` (see :data:`VARIANTS` and :data:`SHIFTED`)."""
    if variant == "original":
        return y
    if variant == SHIFTED:
        return shifted(y, sr, seed)
    if variant == "slower_quieter":
        return _speed(y, sr, 1 / 1.04) * np.float32(10 ** (-9 / 20))
    if variant == "faster_mp3":
        return _mp3(_speed(y, sr, 1.04), sr, "48k")
    raise ValueError(f"unknown variant {variant!r}")


def shifted(y: np.ndarray, sr: int, seed: int) -> np.ndarray:
    """``y`` as another collection might hold it: 0-15 dB quieter, tilted by up to 6 dB between
    bass and treble either way, band-limited to 11-22 kHz sampling, through mp3 or Opus at a
    low to middling bitrate. ``seed`` makes each clip's draw repeatable."""
    rng = np.random.default_rng(seed)
    gain, tilt = rng.uniform(-15, 0), rng.uniform(-6, 6)
    rate = int(rng.choice([11_025, 16_000, 22_050]))
    codec, bitrate, container = [("libmp3lame", "48k", "mp3"), ("libmp3lame", "96k", "mp3"),
                                 ("libopus", "24k", "ogg"), ("libopus", "48k", "ogg")][
        int(rng.integers(4))]
    if codec == "libopus":
        rate = 48_000  # Opus encodes at 48 kHz only; its bitrate limits the band instead
    return _reencoded(
        y, sr, "-af", f"volume={gain:.1f}dB,bass=g={-tilt / 2:.1f},treble=g={tilt / 2:.1f}",
        "-ar", str(rate), "-c:a", codec, "-b:a", bitrate, "-f", container, timeout_s=120)


def _speed(y: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Played ``factor`` times faster: tempo and pitch move together, like a turntable."""
    import librosa

    return librosa.resample(y, orig_sr=sr, target_sr=int(sr / factor)).astype(np.float32)


def _mp3(y: np.ndarray, sr: int, bitrate: str) -> np.ndarray:
    """A lossy round trip through an mp3 encoder."""
    return _reencoded(y, sr, "-b:a", bitrate, "-f", "mp3", timeout_s=60)


def _reencoded(y: np.ndarray, sr: int, *output_args: str, timeout_s: float) -> np.ndarray:
    """``y`` encoded by ffmpeg with ``output_args`` (filters, codec, container), decoded back."""
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    encoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "s16le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
         *output_args, "pipe:1"],
        input=pcm, capture_output=True, check=True, timeout=timeout_s,
    ).stdout
    return decode(encoded).samples


def clip_embedding(clip: Any, variant: str, embedder: Any) -> dict[str, np.ndarray]:
    """The network's per-patch outputs for one clip (anything with a ``path``) variant, cached
    on disk."""

    def compute() -> dict[str, np.ndarray]:
        audio = decode(clip.path)
        seed = zlib.crc32(clip.path.name.encode())
        return embedder.embed(variant_audio(audio.samples, audio.sr, variant, seed), audio.sr)

    return cached_arrays(f"{EMBEDDING_KEY}-{variant}", clip.path, compute)


def cache_embeddings(
    jobs: Sequence[tuple[Path, str]], workers: int = 1, progress: Progress | None = None
) -> None:
    """Fill the embedding cache for ``(clip path, variant)`` pairs in ``workers`` processes
    (each loads the network once); what is cached already is skipped."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    shares = [[(str(path), variant) for path, variant in jobs[i::workers]]
              for i in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for done in pool.map(_cache_part, shares):
            if progress:
                progress(f"embedded {done} clip variants")


def _cache_part(share: list[tuple[str, str]]) -> int:
    """One worker's share of :func:`cache_embeddings`."""
    import os

    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    from genre_core.musicnn import MusicnnEmbedder

    embedder = MusicnnEmbedder.load()
    for path, variant in share:
        clip_embedding(_PathOnly(Path(path)), variant, embedder)
    return len(share)


@dataclass(frozen=True)
class _PathOnly:
    path: Path


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
            for i, (start, end) in enumerate(crop_spans(len(embedding["tags"]), crops, rng)):
                part = {key: value[start:end] for key, value in embedding.items()}
                rows.append(featurizer.featurize(part))
                labels.append(GENRES.index(clip.genre))
                tracks.append(clip.track)
                kinds.append(clip.kind)
                original.append(variant == "original" and i == 0)
    return ClipSet(np.stack(rows), np.array(labels), np.array(tracks), np.array(kinds),
                   np.array(original))


def crop_spans(n_patches: int, crops: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """The whole clip, then ``crops`` random runs of 3-10 consecutive patches (9-30 s): short
    excerpts like the ones users post, drawn from cached embeddings without the network."""
    spans = [(0, n_patches)]
    for _ in range(crops if n_patches > 3 else 0):
        length = int(rng.integers(3, min(10, n_patches) + 1))
        start = int(rng.integers(0, n_patches - length + 1))
        spans.append((start, start + length))
    return spans


def track_block(track: str, size: int = 5) -> str:
    """GTZAN numbers an artist's tracks consecutively: blocks of ``size`` ids keep most of an
    artist's neighbouring tracks together when grouping folds."""
    genre, number = track.split(".")
    return f"{genre}.{int(number) // size}"


def make_head(feature_names: list[str], seed: int) -> GenreModel:
    return GenreModel(list(feature_names), family="musicnn", seed=seed, **HEAD)
