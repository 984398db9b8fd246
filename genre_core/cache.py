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
    """Return ``compute()`` for the file at ``path``, memoised by ``key``, the file's size and
    modification time."""
    return cached_arrays(key, path, lambda: {"value": np.asarray(compute())})["value"]


def cached_arrays(
    key: str, path: Path, compute: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Like :func:`cached`, for a dict of named arrays."""
    stat = path.stat()
    digest = hashlib.sha256(f"{key}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    target = cache_dir() / key / f"{digest.hexdigest()[:24]}.npz"
    if target.is_file():
        with np.load(target) as stored:
            return dict(stored)
    arrays = compute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, target)
    return arrays
