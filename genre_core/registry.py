"""Model versions on disk, published atomically.

Layout under the state directory::

    versions/<version>/   complete artifacts, never modified once published
    current               symlink to versions/<version>, switched last and atomically
    history.json          activated versions, oldest first (for rollback)

Publishing is two steps, so a caller can load a candidate before it serves
(:meth:`ModelRegistry.stage`, then :meth:`ModelRegistry.activate`):

1. *stage*: the candidate is copied into ``versions/`` under a temporary name, flushed to disk
   and renamed; ``current`` does not move.
2. *activate*: ``history.json`` gains the version, then ``current`` moves (a new symlink renamed
   over the old one).

``current`` is the truth about what serves; ``history.json`` may run one step ahead of it after a
crash (it is extended before ``current`` moves forward and shortened only after ``current`` moves
back), and readers cut it at ``current``. A ``kill -9`` at any moment therefore leaves ``current``
pointing at a complete model and a rollback that goes where it should. Without any published
version the shipped model in ``models/`` serves.

One process writes a state directory at a time (the bot serialises retrains and rollbacks).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from genre_core.errors import ModelError, ModelMissingError
from genre_core.model import METADATA_FILE, MODEL_FILE

#: What :meth:`ModelRegistry.rollback` returns when the shipped model serves again.
SHIPPED = "shipped"


class ModelRegistry:
    """Published model versions under ``state_dir``; ``shipped_dir`` serves when there are none.

    Parameters
    ----------
    state_dir : Path
        Where versions, the ``current`` pointer and the history live (created on first publish).
    shipped_dir : Path
        The artifact shipped with the code.
    """

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

    def version_dir(self, version: str) -> Path:
        """Where a staged or published version lives."""
        return self.versions_dir / version

    def versions(self) -> list[str]:
        """Activated versions, oldest first; the last one is ``current`` (none: shipped serves)."""
        pointer = self._pointer()
        history = self._history()
        if pointer is None or pointer not in history:
            return []
        # Entries after the pointer were never switched to, or were rolled back (a crash
        # between the two steps of activate or rollback).
        return history[: history.index(pointer) + 1]

    def publish(self, candidate_dir: Path) -> str:
        """Copy a complete artifact in and make it current (:meth:`stage` + :meth:`activate`).

        Returns
        -------
        str
            The version now serving.
        """
        version = self.stage(candidate_dir)
        self.activate(version)
        return version

    def stage(self, candidate_dir: Path) -> str:
        """Copy a complete artifact into ``versions/`` without making it current.

        Parameters
        ----------
        candidate_dir : Path
            A complete artifact (model file and readable metadata with a ``version``).

        Returns
        -------
        str
            Its version; :meth:`version_dir` gives where it now lives.

        Raises
        ------
        ModelMissingError
            The candidate is incomplete.
        """
        candidate_dir = Path(candidate_dir)
        if not is_complete(candidate_dir):
            raise ModelMissingError(f"{candidate_dir} is not a complete model artifact.")
        meta = json.loads((candidate_dir / METADATA_FILE).read_text())
        version = str(meta.get("version") or "unversioned")
        if version in ("", ".", "..", SHIPPED) or "/" in version or version.startswith("."):
            raise ModelError(f"{version!r} cannot name a model version.")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        target = self.version_dir(version)
        if target.exists() and not is_complete(target):
            # Damaged after publishing (a disk fault, a person): replace it with the good copy.
            _remove(target)
        if not target.exists():
            staging = self.versions_dir / f".{version}.{os.getpid()}.tmp"
            _remove(staging)
            shutil.copytree(candidate_dir, staging)
            _fsync_tree(staging)
            os.replace(staging, target)
            _fsync_dir(self.versions_dir)
        return version

    def activate(self, version: str) -> None:
        """Make a staged version current.

        Raises
        ------
        ModelMissingError
            The version is not staged, or not complete.
        """
        target = self.version_dir(version)
        if not is_complete(target):
            raise ModelMissingError(f"Model version {version} is not staged or not complete.")
        history = [v for v in self.versions() if v != version] + [version]
        _write_atomically(self.history_file, json.dumps(history))  # first: see the module doc
        self._point_current_at(target)

    def discard(self, version: str) -> None:
        """Delete a staged version that never served (e.g. one that failed to load); a version
        in the history is kept."""
        if version not in self.versions():
            _remove(self.version_dir(version))

    def rollback_target(self) -> tuple[str, Path]:
        """What :meth:`rollback` would serve, without changing anything.

        Returns
        -------
        tuple of (str, Path)
            The version (``"shipped"`` for the shipped model) and its directory.

        Raises
        ------
        ModelError
            Nothing has been published, so there is nothing to roll back from.
        """
        history = self.versions()
        if not history:
            raise ModelError("There is no published model to roll back from.")
        if len(history) >= 2:
            return history[-2], self.version_dir(history[-2])
        return SHIPPED, self.shipped_dir

    def rollback(self) -> str:
        """Make the previously activated version current again (the shipped model when there is
        none). Returns the version now serving (``"shipped"`` for the shipped model)."""
        version, target = self.rollback_target()
        history = self.versions()[:-1]
        if history:
            self._point_current_at(target)
        else:
            self.current_link.unlink(missing_ok=True)
            _fsync_dir(self.state_dir)
        _write_atomically(self.history_file, json.dumps(history))  # last: see the module doc
        return version

    def _pointer(self) -> str | None:
        if not self.current_link.is_symlink():
            return None
        return Path(os.readlink(self.current_link)).name

    def _history(self) -> list[str]:
        try:
            return [str(v) for v in json.loads(self.history_file.read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _point_current_at(self, target: Path) -> None:
        temp_link = self.state_dir / f".current.{os.getpid()}.tmp"
        temp_link.unlink(missing_ok=True)
        temp_link.symlink_to(target.relative_to(self.state_dir))
        os.replace(temp_link, self.current_link)
        _fsync_dir(self.state_dir)

    def _remove_leftovers(self) -> None:
        # What a process killed mid-publish left: staging copies and temporary links. Nothing
        # points at them, and only one process writes here at a time.
        for folder in (self.versions_dir, self.state_dir):
            for path in folder.glob(".*.tmp"):
                _remove(path)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds both files of an artifact, with readable metadata."""
    try:
        json.loads((directory / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (directory / MODEL_FILE).is_file()


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):  # files and sub-folders before parents
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)
    _fsync_dir(root)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
