"""The on-disk cache follows a file's content: a copied data folder keeps its entries, a changed
file is computed again, and entries written under the old key are adopted, not rebuilt."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from genre_core import cache


@pytest.fixture(autouse=True)
def scratch_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENRE_CACHE_DIR", str(tmp_path / "cache"))


def counting(value: float) -> tuple[list[int], Callable[[], np.ndarray]]:
    calls: list[int] = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.array([value])

    return calls, compute


def test_a_copied_folder_hits_and_a_changed_file_misses(tmp_path: Path) -> None:
    original = tmp_path / "a" / "clip.wav"
    original.parent.mkdir()
    original.write_bytes(b"RIFF-one")
    calls, compute = counting(1.0)
    assert cache.cached("k", original, compute)[0] == 1.0
    copy = tmp_path / "b" / "clip.wav"
    copy.parent.mkdir()
    shutil.copy(original, copy)  # another folder, a new modification time
    os.utime(copy, ns=(0, 0))
    assert cache.cached("k", copy, compute)[0] == 1.0
    assert len(calls) == 1
    copy.write_bytes(b"RIFF-two")
    assert cache.cached("k", copy, counting(2.0)[1])[0] == 2.0


def test_an_entry_under_the_old_key_is_adopted(tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    stat = clip.stat()
    old = hashlib.sha256(f"k|{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    legacy = cache.cache_dir() / "k" / f"{old.hexdigest()[:24]}.npz"
    legacy.parent.mkdir(parents=True)
    np.savez(legacy, value=np.array([7.0]))
    calls, compute = counting(0.0)
    assert cache.cached("k", clip, compute)[0] == 7.0
    assert not calls and not legacy.exists()
