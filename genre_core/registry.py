"""Model versions on disk, published atomically.

Layout under the state directory::

    versions/<version>/   complete artifacts, never modified once published
    current               symlink to versions/<version>, switched last and atomically
    history.json          published versions, oldest first (for rollback)

A candidate is copied into ``versions/`` under a temporary name, flushed to disk and renamed;
only then does ``current`` move (a new symlink renamed over the old one). A ``kill -9`` at any
moment therefore leaves ``current`` pointing at a complete model. Without any published version
the shipped model in ``models/`` serves.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from genre_core.errors import ModelError, ModelMissingError
from genre_core.model import METADATA_FILE, MODEL_FILE


class ModelRegistry:
    def __init__(self, state_dir: Path, shipped_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.shipped_dir = Path(shipped_dir)
        self.versions_dir = self.state_dir / "versions"
        self.current_link = self.state_dir / "current"
        self.history_file = self.state_dir / "history.json"

    def current_dir(self) -> Path:
        """The artifact that should serve now: the published ``current``, else the shipped one."""
        if self.current_link.is_symlink():
            target = self.current_link.resolve()
            if is_complete(target):
                return target
        return self.shipped_dir

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.history_file.is_file():
            return []
        return list(json.loads(self.history_file.read_text()))

    def publish(self, candidate_dir: Path) -> str:
        """Copy a complete artifact in and make it current. Returns its version."""
        candidate_dir = Path(candidate_dir)
        if not is_complete(candidate_dir):
            raise ModelMissingError(f"{candidate_dir} is not a complete model artifact.")
        meta = json.loads((candidate_dir / METADATA_FILE).read_text())
        version = str(meta.get("version") or "unversioned")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        target = self.versions_dir / version
        if not target.exists():
            staging = self.versions_dir / f".{version}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(candidate_dir, staging)
            _fsync_tree(staging)
            os.replace(staging, target)
            _fsync_dir(self.versions_dir)
        self._point_current_at(target)
        history = [v for v in self.versions() if v != version] + [version]
        _write_atomically(self.history_file, json.dumps(history))
        return version

    def rollback(self) -> str:
        """Make the previously published version current again (the shipped model when there
        is none). Returns the version now serving."""
        history = self.versions()
        if not history:
            raise ModelError("There is no published model to roll back from.")
        history.pop()
        if history:
            self._point_current_at(self.versions_dir / history[-1])
            serving = history[-1]
        else:
            self.current_link.unlink(missing_ok=True)
            serving = "shipped"
        _write_atomically(self.history_file, json.dumps(history))
        return serving

    def _point_current_at(self, target: Path) -> None:
        temp_link = self.state_dir / f".current.{os.getpid()}.tmp"
        temp_link.unlink(missing_ok=True)
        temp_link.symlink_to(target.relative_to(self.state_dir))
        os.replace(temp_link, self.current_link)
        _fsync_dir(self.state_dir)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds both files of an artifact, with readable metadata."""
    try:
        json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (directory / MODEL_FILE).is_file()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
