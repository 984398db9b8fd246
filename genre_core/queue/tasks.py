"""What a ``genre-worker`` process runs: the classify task and the model it serves.

Each pool process loads the announced model once (in a background thread, so that the pool
starts at once; jobs wait for it), then keeps serving it. A thread checks the announcement every
second and loads a new version *fully, then swaps it in*; each job also checks it before it
starts, and takes one classifier for its whole run, so no job mixes two versions and no job
submitted after a reload completed runs on the old one. A version that fails to load is reported
(``genre:serving:*``) and the old one keeps serving.

Clips travel as base64 text in JSON and answers as JSON (see ``app``); errors the classifier
raises for the user (``GenreError``) come back as data, so the bot re-raises the same kind with
the same friendly sentence.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import importlib
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init

from genre_core import errors
from genre_core.jobs import (
    ClassifierLoader,
    JobTimeoutError,
    SupportsClassify,
    WorkerCrashedError,
    load_classifier,
)
from genre_core.queue import store
from genre_core.queue.app import RESULT_EXPIRES_S
from genre_core.result import Prediction, WindowPrediction
from genre_core.settings import Limits

log = logging.getLogger(__name__)

TASK_NAME = "genre.classify"
#: Runs of one job before it is answered "the worker stopped": a job is run again when its
#: worker dies, so a clip that kills every worker it reaches must not go round for ever.
MAX_ATTEMPTS = 3
ATTEMPTS_PREFIX = "genre:attempts:"


# --- what travels ---------------------------------------------------------------------------------


def encode_clip(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def limits_to_dict(limits: Limits) -> dict[str, Any]:
    return asdict(limits)


def limits_from_dict(data: dict[str, Any]) -> Limits:
    known = {f.name for f in dataclasses.fields(Limits)}
    return Limits(**{k: v for k, v in data.items() if k in known})


def prediction_to_dict(prediction: Prediction) -> dict[str, Any]:
    """Every field of the prediction as JSON-safe data (bytes as base64)."""
    data = {f.name: getattr(prediction, f.name) for f in dataclasses.fields(Prediction)}
    data["windows"] = [asdict(w) for w in prediction.windows]
    data["tags"] = [[tag, p] for tag, p in prediction.tags]
    for name in ("features", "audio"):
        value = data[name]
        data[name] = None if value is None else encode_clip(value)
    return data


def prediction_from_dict(data: dict[str, Any]) -> Prediction:
    data = dict(data)
    data["windows"] = [WindowPrediction(**w) for w in data.get("windows", [])]
    data["tags"] = [(str(t), float(p)) for t, p in data.get("tags", [])]
    for name in ("features", "audio"):
        if data.get(name) is not None:
            data[name] = base64.b64decode(data[name])
    known = {f.name for f in dataclasses.fields(Prediction)}
    return Prediction(**{k: v for k, v in data.items() if k in known})


def error_to_dict(exc: errors.GenreError) -> dict[str, Any]:
    cls = type(exc)
    return {"type": f"{cls.__module__}:{cls.__qualname__}", "code": exc.code, "message": str(exc)}


def error_from_dict(data: dict[str, Any]) -> errors.GenreError:
    """The same ``GenreError`` subclass with the same sentence (a plain ``GenreError`` with the
    same code when the class cannot be rebuilt here)."""
    module, _, name = str(data.get("type", "")).partition(":")
    message = str(data.get("message") or "Something went wrong while analysing this clip.")
    with contextlib.suppress(Exception):
        if module.startswith("genre_core."):  # only our own classes, never anything named
            cls = getattr(importlib.import_module(module), name)
            if isinstance(cls, type) and issubclass(cls, errors.GenreError):
                exc = cls.__new__(cls)
                Exception.__init__(exc, message)
                if cls is JobTimeoutError:
                    exc.timeout_s = float(data.get("timeout_s", 0.0))  # type: ignore[attr-defined]
                return exc
    exc = errors.GenreError(message)
    exc.code = str(data.get("code") or "error")
    return exc


# --- the model a worker process serves ------------------------------------------------------------


def resolve_loader(name: str | None) -> ClassifierLoader:
    """``"module:function"`` → the function; None → the real classifier."""
    if not name:
        return load_classifier
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass
class WorkerConfig:
    """Set by ``genre-worker`` before the pool forks; every pool process inherits it."""

    queue_url: str = ""
    loader: str | None = None
    model_dir: Path | None = None  # served when nothing was announced yet
    cache_dir: Path = Path(os.path.expanduser("~/.cache/genre-worker/models"))
    job_timeout_s: float = 120.0
    hostname: str = field(default_factory=socket.gethostname)


config = WorkerConfig()


class Serving:
    """This process's classifier, kept equal to the announced model."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.name = f"{cfg.hostname}:{os.getpid()}"
        self.redis = redis.Redis.from_url(
            cfg.queue_url, socket_timeout=10, socket_connect_timeout=5
        )
        self.loader = resolve_loader(cfg.loader)
        self.classifier: SupportsClassify | None = None
        self.model_id: str | None = None
        self.version: str | None = None
        self.failed: dict[str, str] = {}  # versions that would not load: not retried
        self.lock = threading.Lock()  # one load at a time
        self.loaded = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="genre-model-watch", daemon=True)
        self.thread.start()

    def _wanted(self) -> tuple[str, str, Path | None] | None:
        """(id, version, local dir or None) of the model this process should serve."""
        announcement = store.announced(self.redis)
        if announcement:
            return str(announcement["id"]), str(announcement.get("version", "?")), None
        if self.cfg.model_dir is not None:
            local = Path(self.cfg.model_dir)
            return f"local:{local}", store.read_version(local), local
        return None

    def refresh(self) -> None:
        """Load the announced model when it is not the one serving (load fully, then swap)."""
        wanted = self._wanted()
        if wanted is None or wanted[0] == self.model_id or wanted[0] in self.failed:
            return
        with self.lock:
            ident, version, local = wanted
            if ident == self.model_id:
                return  # another thread loaded it meanwhile
            try:
                path = local or store.fetch(self.redis, ident, self.cfg.cache_dir)
                limits = getattr(self.classifier, "limits", Limits())
                classifier = self.loader(path, limits)
                classifier.warm_up()
            except Exception as exc:
                log.exception(
                    "model %s (%s) failed to load; keeping %s", ident, version, self.version
                )
                self.failed[ident] = str(exc) or type(exc).__name__
                self._report()
                return
            self.classifier, self.model_id, self.version = classifier, ident, version
            self.loaded.set()
            log.info("serving model %s (%s)", version, ident)
            self._report()

    def _report(self) -> None:
        state = {
            "model": self.model_id,
            "version": self.version,
            "failed": dict(self.failed),
            "host": self.cfg.hostname,
            "pid": os.getpid(),
        }
        store.report(self.redis, self.name, state)

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                self.refresh()
                self._report()
            except Exception as exc:  # Redis away (restarting): keep serving, try again
                log.debug("model watch: %s", exc)
            self.stop.wait(1.0)

    def current(self, limits: Limits) -> SupportsClassify:
        """The classifier for one job: the announced model (waiting for its load), with the
        job's limits."""
        with contextlib.suppress(redis.RedisError):  # Redis away: serve what is loaded
            self.refresh()
        if not self.loaded.wait(timeout=max(self.cfg.job_timeout_s, 1.0)):
            raise errors.ModelError("The analysis worker could not load the model.")
        classifier = self.classifier
        assert classifier is not None
        if getattr(classifier, "limits", limits) != limits:
            classifier = copy.copy(classifier)  # shares the loaded model, not its limits
            classifier.limits = limits  # type: ignore[attr-defined]
        return classifier


_serving: Serving | None = None
_serving_lock = threading.Lock()


def serving() -> Serving:
    """This process's :class:`Serving` (made on first use, after the fork)."""
    global _serving
    with _serving_lock:
        if _serving is None or _serving.name != f"{config.hostname}:{os.getpid()}":
            _serving = Serving(config)
        return _serving


@shared_task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
def classify(clip: str, filename: str | None, limits: dict[str, Any]) -> dict[str, Any]:
    """Analyse one clip; ``{"prediction": ...}`` or ``{"error": ...}`` (a user's error is an
    answer, not a task failure: it is neither retried nor logged as a crash)."""
    started = time.monotonic()
    state = serving()
    if _attempt(state, classify.request.id) > MAX_ATTEMPTS:
        log.error("job %s killed its worker %d times; not running it again",
                  classify.request.id, MAX_ATTEMPTS)
        return {"error": error_to_dict(WorkerCrashedError())}
    try:
        classifier = state.current(limits_from_dict(limits))
        prediction = classifier.classify(base64.b64decode(clip), filename)
    except SoftTimeLimitExceeded:
        return {"error": {**error_to_dict(JobTimeoutError(config.job_timeout_s)),
                          "timeout_s": config.job_timeout_s}}
    except errors.GenreError as exc:
        return {"error": error_to_dict(exc)}
    log.debug("classified %s in %.2f s", filename, time.monotonic() - started)
    return {"prediction": prediction_to_dict(prediction), "worker": state.name}


def _attempt(state: Serving, task_id: str | None) -> int:
    """This job's run count, kept in Redis across workers (1 when Redis cannot say)."""
    if not task_id:
        return 1
    key = ATTEMPTS_PREFIX + task_id
    try:
        count = int(state.redis.incr(key))
        state.redis.expire(key, RESULT_EXPIRES_S)
    except redis.RedisError:
        return 1
    return count


@worker_process_init.connect
def _load_at_fork(**_: Any) -> None:
    """Start loading the model as soon as a pool process exists (in the background: a pool
    process must report alive within seconds, and a model takes a few to load)."""
    if config.queue_url:
        serving()
