"""The shared model store: model artifacts travel to the workers through Redis itself.

Why Redis and not a shared directory: a worker on another machine already needs Redis and
nothing else, and an artifact is small (the shipped one is about 1 MB; Redis takes values up to
512 MB). A shared filesystem would be one more thing to mount, keep consistent and secure on
every machine. What is not in the artifact (the music network in ``models/musicnn``) ships with
the code on every machine.

Keys (all under ``genre:``):

- ``genre:model``: JSON ``{"id", "version", "source"}``, the model every worker must serve.
  ``id`` is a hash of the artifact's packed bytes, so publishing the same model again changes
  nothing and restarting the bot reloads no worker.
- ``genre:artifact:<id>``: the artifact directory as a deterministic ``.tar.gz``.
- ``genre:serving:<host>:<pid>``: each worker process's report, refreshed every second and
  expiring after :data:`REPORT_TTL_S`: ``{"model", "version", "error", "failed"}``. A dead
  process's report disappears on its own.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import redis

MODEL_KEY = "genre:model"
ARTIFACT_PREFIX = "genre:artifact:"
SERVING_PREFIX = "genre:serving:"
#: Seconds a worker process's report lives without a refresh.
REPORT_TTL_S = 5
#: Largest artifact accepted (a mistake, not a model, beyond this).
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024


def pack(model_dir: Path) -> bytes:
    """The artifact directory as ``.tar.gz`` bytes that depend on its contents only (sorted
    names, no dates or owners), so the same model always gets the same id."""
    model_dir = Path(model_dir)
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise FileNotFoundError(f"No model files in {model_dir}.")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tarfile.TarInfo(path.relative_to(model_dir).as_posix())
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # gzip's header holds a date unless mtime is fixed.
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    packed = out.getvalue()
    if len(packed) > MAX_ARTIFACT_BYTES:
        raise ValueError(f"The model in {model_dir} is too large to publish ({len(packed)} B).")
    return packed


def artifact_id(packed: bytes) -> str:
    return hashlib.sha256(packed).hexdigest()[:20]


def read_version(model_dir: Path) -> str:
    try:
        return str(json.loads((Path(model_dir) / "metadata.json").read_text()).get("version", "?"))
    except (OSError, ValueError):
        return "?"


def publish(client: redis.Redis, model_dir: Path) -> dict[str, Any]:
    """Store ``model_dir``'s artifact in Redis (not yet announced); returns its announcement."""
    packed = pack(model_dir)
    ident = artifact_id(packed)
    client.set(ARTIFACT_PREFIX + ident, packed)
    return {"id": ident, "version": read_version(model_dir), "source": str(model_dir)}


def announce(client: redis.Redis, announcement: dict[str, Any]) -> None:
    """Make ``announcement`` the model every worker serves; old artifacts other than the
    one it replaces are dropped (that one stays, for a revert)."""
    previous = announced(client)
    client.set(MODEL_KEY, json.dumps(announcement))
    keep = {announcement["id"], (previous or {}).get("id")}
    for key in client.scan_iter(ARTIFACT_PREFIX + "*"):
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name.removeprefix(ARTIFACT_PREFIX) not in keep:
            client.delete(name)


def announced(client: redis.Redis) -> dict[str, Any] | None:
    """The announced model, or None when nobody published one."""
    raw = client.get(MODEL_KEY)
    return json.loads(raw) if raw else None


def fetch(client: redis.Redis, ident: str, cache_dir: Path) -> Path:
    """The artifact ``ident`` unpacked under ``cache_dir`` (once: later calls reuse it)."""
    target = Path(cache_dir) / ident
    if (target / ".complete").is_file():
        return target
    packed = client.get(ARTIFACT_PREFIX + ident)
    if packed is None:
        raise FileNotFoundError(f"Model {ident} is not in the store.")
    if artifact_id(packed) != ident:
        raise ValueError(f"Model {ident} in the store is damaged (checksum differs).")
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # Unpack beside the target, then rename: another process never sees half a model.
    scratch = Path(tempfile.mkdtemp(prefix=f".{ident}-", dir=cache_dir))
    try:
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r:gz") as tar:
            tar.extractall(scratch, filter="data")  # refuses absolute paths, "..", devices
        (scratch / ".complete").touch()
        try:
            os.rename(scratch, target)
        except OSError:  # another process of this machine got there first
            if not (target / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def report(client: redis.Redis, worker: str, state: dict[str, Any]) -> None:
    client.set(SERVING_PREFIX + worker, json.dumps(state), ex=REPORT_TTL_S)


def reports(client: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every live worker process's report, by ``host:pid``."""
    keys = [
        k.decode() if isinstance(k, bytes) else k for k in client.scan_iter(SERVING_PREFIX + "*")
    ]
    if not keys:
        return {}
    values = client.mget(keys)
    return {
        key.removeprefix(SERVING_PREFIX): json.loads(value)
        for key, value in zip(keys, values, strict=True)
        if value
    }
