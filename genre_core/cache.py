"""An on-disk cache of what was computed from a file (feature vectors, network outputs), so
retraining does not re-extract audio."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genre_core.data import PROJECT_ROOT


def cache_dir() -> Path:
    return Path(os.environ.get("GENRE_CACHE_DIR", PROJECT_ROOT / ".cache"))


def cached(key: str, path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Return ``compute()`` for the file at ``path``, memoised by ``key``, the file's name and
    its content."""
    return cached_arrays(key, path, lambda: {"value": np.asarray(compute())})["value"]


def cached_arrays(
    key: str, path: Path, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Like :func:`cached`, for a dict of named arrays.

    Keyed by content (and name: an augmentation may be seeded by it), not by where the file is
    or when it was written: a re-copied data folder keeps its cache (the network's embeddings of
    every collection take about 40 minutes to rebuild on two cores).
    """
    with path.open("rb") as handle:
        content = hashlib.file_digest(handle, "sha256").hexdigest()
    target = _target(key, f"{path.name}|{content}")
    if not target.is_file():
        _adopt_stat_keyed(key, path, target)
    return _stored_or_computed(target, compute)


def cached_named(
    key: str, name: str, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Like :func:`cached_arrays`, for what is not one file (a synthesised sound, a mix): memoised
    by ``key`` and a ``name`` that says exactly how it is made."""
    return _stored_or_computed(_target(key, name), compute)


def _target(key: str, identity: str) -> Path:
    digest = hashlib.sha256(f"{key}|{identity}".encode())
    return cache_dir() / key / f"{digest.hexdigest()[:24]}.npz"


def _stored_or_computed(
    target: Path, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    if target.is_file():
        with np.load(target) as stored:
            return dict(stored)
    arrays = compute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, target)  # atomic: a reader never sees half an entry
    return arrays


def _adopt_stat_keyed(key: str, path: Path, target: Path) -> None:
    """Move an entry written under the old key (path, size and modification time) to its
    content key, so that existing caches are not rebuilt. (Remove once old caches are gone.)"""
    stat = path.stat()
    old = hashlib.sha256(f"{key}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    legacy = target.with_name(f"{old.hexdigest()[:24]}.npz")
    if legacy.is_file():
        os.replace(legacy, target)
