"""An on-disk cache of per-file feature vectors, so retraining does not re-extract audio."""

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
    stat = path.stat()
    digest = hashlib.sha256(f"{key}|{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    target = cache_dir() / key / f"{digest.hexdigest()[:24]}.npy"
    if target.is_file():
        return np.load(target)
    value = np.asarray(compute())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, value)
    os.replace(tmp, target)
    return value
