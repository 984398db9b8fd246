"""Where the training and evaluation material lives, and how to read it.

Everything comes from ``../shared/data`` beside the project root (override with
``GENRE_DATA_DIR``); nothing is downloaded. Track ids are ``<genre>.<5 digits>``.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genre_core.errors import DataMissingError
from genre_core.features import FEATURE_NAMES
from genre_core.model import GENRES

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TABLE_FILE = "gtzan/features_30_sec.csv"
#: Folders of real GTZAN audio, and what kind of copy each holds.
AUDIO_FOLDERS = {"audio": "full", "audio_partial": "partial", "audio_8khz": "8khz"}
AUDIO_EXTENSIONS = {".mp3", ".wav", ".ogg", ".flac", ".au", ".m4a", ".opus"}


def default_data_dir() -> Path:
    return Path(os.environ.get("GENRE_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


def track_id(name: str) -> str:
    """``blues.00012.au`` or ``blues.00012.3.wav`` → ``blues.00012``."""
    genre, number = Path(name).name.split(".")[:2]
    return f"{genre}.{number}"


def genre_of(track: str) -> str:
    """``blues.00012`` → ``blues``."""
    return track.split(".")[0]


@dataclass(frozen=True)
class Table:
    """Feature rows with their genre index and track id."""

    X: np.ndarray
    y: np.ndarray
    tracks: np.ndarray
    sources: np.ndarray  # "table" or "audio": where each row's features came from


@dataclass(frozen=True)
class Clip:
    track: str
    genre: str
    path: Path
    kind: str  # "full", "partial" or "8khz"


def load_table(data_dir: Path) -> Table:
    """Read the published 30-s feature table."""
    path = Path(data_dir) / TABLE_FILE
    if not path.is_file():
        raise DataMissingError(f"The GTZAN feature table is missing: {path}.")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    X = np.array([[float(row[name]) for name in FEATURE_NAMES] for row in rows])
    y = np.array([GENRES.index(row["label"]) for row in rows])
    tracks = np.array([track_id(row["filename"]) for row in rows])
    return Table(X, y, tracks, np.full(len(rows), "table"))


def load_split(data_dir: Path, name: str) -> set[str]:
    """Track ids of the fault-filtered split ``name`` (train, valid or test)."""
    path = Path(data_dir) / "gtzan" / "splits" / f"{name}_filtered.txt"
    if not path.is_file():
        raise DataMissingError(f"The fault-filtered split is missing: {path}.")
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def audio_clips(data_dir: Path, kinds: tuple[str, ...] = ("full", "partial")) -> list[Clip]:
    """Every labelled GTZAN recording present, of the given kinds."""
    clips = []
    for folder, kind in AUDIO_FOLDERS.items():
        if kind not in kinds:
            continue
        for path in sorted((Path(data_dir) / "gtzan" / folder).glob("*")):
            if path.suffix.lower() in AUDIO_EXTENSIONS:
                track = track_id(path.name)
                clips.append(Clip(track, genre_of(track), path, kind))
    return clips


def fingerprint(paths: list[Path]) -> str:
    """A short digest of the training material: file names, sizes and the table's bytes."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(str(path.stat().st_size).encode())
        if path.suffix == ".csv":
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
