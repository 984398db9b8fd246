"""The one narrow interface the bot hands work to.

The bot only ever sees :class:`ClassifyJobs`: ``start`` it, ``classify`` bytes, ``reload`` a model
directory, ``close``. ``start`` returns at once and the workers load the model in the background:
the bot connects to Discord meanwhile, and a clip that comes before the workers are ready waits
for them instead of being refused. Today the work runs in a local process pool
(:class:`ProcessJobs`); a distributed queue can replace it later without the bot noticing.
:class:`ThreadJobs` runs the same contract in threads, for tests with a stand-in classifier.

Why processes: decoding, feature extraction (librosa, numba) and inference hold the GIL for much of
their work, so threads would serialise on it and stall the bot's event loop; separate processes use
every core and leave the loop free.

Retraining also runs in its own process (:func:`retrain_in_subprocess`), so TensorFlow never loads
into the bot's process and a crash in training cannot take the bot down.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from genre_core import metrics
from genre_core.errors import GenreError, ModelError
from genre_core.result import Prediction
from genre_core.settings import Limits

log = logging.getLogger(__name__)


class BusyError(GenreError):
    """Every slot of the job queue is taken; the caller should retry shortly."""

    code = "busy"

    def __init__(
        self, message: str = "I'm busy with other clips right now. Please try again in a minute."
    ) -> None:
        super().__init__(message)


class WorkerCrashedError(GenreError):
    """The worker analysing the clip died; the pool has been rebuilt."""

    code = "worker_crashed"

    def __init__(
        self,
        message: str = "Something went wrong while analysing this clip "
        "(the analysis worker stopped). Please try again.",
    ) -> None:
        super().__init__(message)


class JobTimeoutError(GenreError):
    """Analysing one clip took longer than the job time limit; its worker was stopped."""

    code = "job_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"Analysing this clip took longer than {timeout_s:g} s, so I stopped. The file may "
            "be damaged or unusually complex; a shorter excerpt may work."
        )
        self.timeout_s = timeout_s


class TrainingError(GenreError):
    """Retraining failed or its process died."""

    code = "training"


class SupportsClassify(Protocol):
    """What a worker needs from a classifier (``genre_core.pipeline.Classifier`` or a stand-in)."""

    def classify(self, source: bytes | Path, filename: str | None = None) -> Prediction: ...

    def warm_up(self) -> None: ...

    @property
    def info(self) -> dict[str, Any]: ...


#: Loads a classifier from a model directory. Must be a module-level function: it is pickled by
#: reference into the worker processes.
ClassifierLoader = Callable[[Path, Limits], SupportsClassify]


@runtime_checkable
class ClassifyJobs(Protocol):
    """The interface the bot hands work to."""

    async def start(self) -> None:
        """Start loading the model and return at once; jobs submitted meanwhile wait for it."""
        ...

    async def ready(self) -> None:
        """Wait until a model serves; ``ModelError`` when none could be loaded."""
        ...

    async def classify(self, data: bytes, filename: str | None) -> Prediction:
        """Analyse one encoded clip; raises ``GenreError`` subclasses (``BusyError`` when full)."""
        ...

    async def reload(self, model_dir: Path) -> None:
        """Serve ``model_dir`` from now on; on failure the previous model keeps serving."""
        ...

    async def info(self) -> dict[str, Any]:
        """The serving model's ``Classifier.info`` (version, family, trained_at, metrics); while
        the workers still load, what its metadata says, with ``loading: True``."""
        ...

    async def close(self) -> None:
        """Stop accepting work and release the workers."""
        ...


def load_classifier(model_dir: Path, limits: Limits) -> SupportsClassify:
    """Load the real classifier (imported here: TensorFlow must not load in the bot's process).

    Parameters
    ----------
    model_dir : Path
        A complete model artifact.
    limits : Limits
        Audio limits the classifier enforces.

    Returns
    -------
    genre_core.pipeline.Classifier
    """
    from genre_core.pipeline import Classifier

    return Classifier.load(model_dir, limits=limits)


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Admission:
    """Counts jobs in flight and refuses new ones beyond ``max_pending`` (a bounded queue)."""

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self.pending = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """One job's place in the queue; also what the metrics see of it (both runners pass
        every clip through here): depth, seconds to the answer, errors by their code."""
        if self.pending >= self.max_pending:
            metrics.JOB_ERRORS.labels(reason=BusyError.code).inc()
            metrics.CLIPS.labels(outcome="failed").inc()
            raise BusyError()
        self.pending += 1
        metrics.QUEUE_DEPTH.inc()
        started = time.monotonic()
        try:
            yield
        except Exception as exc:
            metrics.JOB_ERRORS.labels(reason=getattr(exc, "code", "internal")).inc()
            metrics.CLIPS.labels(outcome="failed").inc()
            raise
        else:
            metrics.CLIPS.labels(outcome="answered").inc()
        finally:
            # A cancelled job (the bot shutting down) is neither answered nor failed, but it
            # leaves the queue all the same.
            self.pending -= 1
            metrics.QUEUE_DEPTH.dec()
            metrics.JOB_SECONDS.observe(time.monotonic() - started)


# --- process pool -------------------------------------------------------------------------------

#: The classifier of this worker process, set once by :func:`_worker_init`.
_worker_classifier: SupportsClassify | None = None


def _worker_init(loader: ClassifierLoader, model_dir: Path, limits: Limits, ready: Any) -> None:
    """Runs once in each worker: load and warm the classifier, then report on ``ready``."""
    global _worker_classifier
    # The parent handles Ctrl-C and shuts the pool down; workers must not die mid-job on it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # One thread per worker: the pool already uses every core; more threads only fight.
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        os.environ.setdefault(var, "1")
    try:
        classifier = loader(model_dir, limits)
        classifier.warm_up()
        _worker_classifier = classifier
        ready.put(("ok", os.getpid(), dict(classifier.info)))
    except Exception as exc:
        # Not re-raised: the parent reads the reason here and shuts this pool down cleanly.
        ready.put(("error", os.getpid(), str(exc) or type(exc).__name__))


def _worker_ping() -> int:
    return os.getpid()


def _worker_classify(data: bytes, filename: str | None) -> Prediction:
    if _worker_classifier is None:  # the initializer failed; the pool is broken anyway
        raise ModelError("The model is not loaded.")
    return _worker_classifier.classify(data, filename)


def _await_ready(ready: Any, count: int, timeout_s: float) -> dict[str, Any]:
    """Block until ``count`` workers reported ready; returns the model info they loaded."""
    deadline = time.monotonic() + timeout_s
    info: dict[str, Any] = {}
    for _ in range(count):
        remaining = deadline - time.monotonic()
        try:
            status, pid, payload = ready.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            raise ModelError(
                f"The analysis workers did not start within {timeout_s:.0f} s."
            ) from None
        if status != "ok":
            raise ModelError(f"Could not load the model: {payload}")
        log.debug("worker %s ready", pid)
        info = payload
    return info


def metadata_info(model_dir: Path) -> dict[str, Any]:
    """What a model's metadata says of it (version, family, date, metrics), read without loading
    it: TensorFlow stays out of this process."""
    try:
        meta = json.loads((Path(model_dir) / "metadata.json").read_text())
    except (OSError, ValueError):
        return {"path": str(model_dir)}
    keys = ("version", "family", "trained_at", "metrics", "calibration", "thresholds", "genres")
    return {**{key: meta.get(key) for key in keys}, "path": str(model_dir)}


class _JobsBase:
    """What both implementations share: starting in the background (with a fallback model),
    waiting for it, and the pending count."""

    model_dir: Path
    fallback_dir: Path | None
    _admission: _Admission
    _starting: asyncio.Future[None] | None = None

    @classmethod
    async def create(cls, model_dir: Path, **kwargs: Any) -> Self:
        """Build, :meth:`start` and wait until :meth:`ready`, for callers with nothing to do
        meanwhile."""
        jobs = cls(model_dir, **kwargs)  # type: ignore[call-arg]
        await jobs.start()
        await jobs.ready()
        return jobs

    async def start(self) -> None:
        """Start loading the model in the background and return at once."""
        self._starting = asyncio.get_running_loop().create_task(self._start_serving())
        # Read here, so that a failure nobody waited for is not reported twice by asyncio.
        self._starting.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def ready(self) -> None:
        """Wait until a model serves; ``ModelError`` when none could be loaded."""
        if self._starting is None:
            raise GenreError("The analyser is not running.")
        await asyncio.shield(self._starting)

    @property
    def is_ready(self) -> bool:
        task = self._starting
        return task is not None and task.done() and not task.cancelled() and not task.exception()

    async def _start_serving(self) -> None:
        try:
            await self._serve(self.model_dir)
        except ModelError:
            fallback = self.fallback_dir
            if fallback is None or Path(fallback) == self.model_dir:
                log.exception("no model could be loaded from %s", self.model_dir)
                raise
            # A published version that no longer loads must not keep the bot down.
            log.exception("model %s failed to load; serving the shipped model", self.model_dir)
            await self._serve(Path(fallback))
            self.model_dir = Path(fallback)

    async def _serve(self, model_dir: Path) -> None:
        """Load ``model_dir`` and make it the one that serves."""
        raise NotImplementedError

    async def _after_start(self) -> None:
        """Let a start under way finish (whatever its outcome) before a reload replaces it."""
        if self._starting is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._starting)

    def _served(self) -> None:
        """A reload succeeded: from now on the jobs are ready, whatever the start did."""
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        self._starting = done

    def _loading_info(self) -> dict[str, Any]:
        return {**metadata_info(self.model_dir), "loading": True}

    @property
    def pending(self) -> int:
        """Jobs accepted and not yet answered."""
        return self._admission.pending


class ProcessJobs(_JobsBase):
    """:class:`ClassifyJobs` on a local process pool.

    Each worker loads and warms the classifier once (librosa's numba compilation included), in the
    background after :meth:`start`; clips that come meanwhile wait for it. At most
    ``max_pending`` jobs are accepted at a time (running plus queued); beyond that
    :class:`BusyError`. Jobs wait here, not in the pool, so each one's clock starts when
    a worker takes it: one that runs past ``job_timeout_s`` fails with :class:`JobTimeoutError` and
    its worker is killed (ffmpeg has its own timeout, but a hostile file could hang anything).

    A worker that dies breaks the whole pool (``ProcessPoolExecutor`` fails every job in it). The
    job that was running fails with :class:`WorkerCrashedError` (it may be what killed the
    worker); jobs that were not yet in the pool, or whose worker was killed for another job's
    timeout, run again on the rebuilt pool.

    Parameters
    ----------
    model_dir : Path
        The model artifact to serve.
    workers : int, optional
        Worker processes; defaults to one per usable core.
    max_pending : int
        Jobs accepted at once, running and waiting.
    limits : Limits
        Audio limits, passed to the classifier.
    loader : callable
        Module-level ``loader(model_dir, limits)`` returning a classifier; the real one by default.
    start_timeout_s : float
        How long workers may take to load and warm up.
    job_timeout_s : float or None
        How long one job may run; None: no limit.
    fallback_dir : Path or None
        Served instead when ``model_dir`` cannot be loaded at start (the shipped model, when a
        published version was damaged while the bot was stopped).

    Examples
    --------
    >>> jobs = await ProcessJobs.create(Path("models/genre"))  # doctest: +SKIP
    >>> prediction = await jobs.classify(mp3_bytes, "song.mp3")  # doctest: +SKIP
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        workers: int | None = None,
        max_pending: int = 16,
        limits: Limits = Limits(),
        loader: ClassifierLoader = load_classifier,
        start_timeout_s: float = 300.0,
        job_timeout_s: float | None = None,
        fallback_dir: Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.fallback_dir = fallback_dir
        self.workers = workers or default_workers()
        self.limits = limits
        self.loader = loader
        self.start_timeout_s = start_timeout_s
        self.job_timeout_s = job_timeout_s
        self._admission = _Admission(max_pending)
        # One job per worker in the pool at a time: the rest queue here, off the clock.
        self._running = asyncio.Semaphore(self.workers)
        self._pool: ProcessPoolExecutor | None = None
        self._info: dict[str, Any] = {}
        self._generation = 0
        self._killed: set[int] = set()  # generations whose workers were killed on purpose
        self._background: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False

    async def _serve(self, model_dir: Path) -> None:
        self._pool, self._info = await self._spawn(model_dir)

    async def _spawn(self, model_dir: Path) -> tuple[ProcessPoolExecutor, dict[str, Any]]:
        # spawn, not fork: the parent runs threads and an event loop; fork copies them unsafely.
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(self.loader, Path(model_dir), self.limits, ready),
        )
        try:
            # Workers start on demand: one ping each, all at once, starts every one of them.
            pings = [pool.submit(_worker_ping) for _ in range(self.workers)]
            info = await asyncio.to_thread(_await_ready, ready, self.workers, self.start_timeout_s)
            await asyncio.gather(*(asyncio.wrap_future(p) for p in pings))
        except BaseException as exc:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
            if isinstance(exc, BrokenProcessPool):
                raise ModelError("The analysis workers could not start.") from exc
            raise
        finally:
            ready.close()
        metrics.WORKERS.set(self.workers)
        log.info(
            "%d analysis worker(s) ready with model %s (%s)",
            self.workers,
            model_dir,
            info.get("version", "?"),
        )
        return pool, info

    async def classify(self, data: bytes, filename: str | None) -> Prediction:
        """Analyse one encoded clip in a worker process.

        Parameters
        ----------
        data : bytes
            The encoded file.
        filename : str or None
            Its name, a hint for the decoder.

        Returns
        -------
        Prediction

        Raises
        ------
        BusyError
            The queue is full.
        JobTimeoutError
            The job ran past ``job_timeout_s``; its worker was killed and the pool is rebuilt.
        WorkerCrashedError
            The worker died; the pool is rebuilt for the next job.
        GenreError
            What the classifier raised (unreadable audio, too long, ...).
        """
        if self._closed:
            raise GenreError("The analyser is not running.")
        with self._admission.slot():
            await self.ready()  # a clip that comes while the workers load waits for them
            async with self._running:
                # Two tries at most, and a second only when this job did not break the pool.
                for _ in range(2):
                    outcome = await self._run_once(data, filename)
                    if isinstance(outcome, Prediction):
                        return outcome
                    if outcome == "crashed":
                        break
                raise WorkerCrashedError()

    async def _run_once(self, data: bytes, filename: str | None) -> Prediction | str:
        """One attempt: the prediction, ``"retry"`` (the pool broke under someone else's job) or
        ``"crashed"`` (the pool broke while this job ran)."""
        if self._closed or self._pool is None:
            raise GenreError("The analyser is not running.")
        generation, pool = self._generation, self._pool
        try:
            future = pool.submit(_worker_classify, data, filename)
        except BrokenProcessPool:
            await self._recover(generation)  # broken before this job reached it
            return "retry"
        wrapped = asyncio.wrap_future(future)
        done, _ = await asyncio.wait({wrapped}, timeout=self.job_timeout_s)
        if not done:
            wrapped.cancel()  # the worker is killed below; nobody reads this future's error
            log.error("a job ran past %s s; killing its worker", self.job_timeout_s)
            self._kill(generation, pool)
            raise JobTimeoutError(self.job_timeout_s or 0.0)
        try:
            return wrapped.result()
        except BrokenProcessPool:
            killed_on_purpose = generation in self._killed
            if not killed_on_purpose:
                log.error("an analysis worker died; rebuilding the pool")
            await self._recover(generation)
            return "retry" if killed_on_purpose else "crashed"

    def _kill(self, generation: int, pool: ProcessPoolExecutor) -> None:
        """Kill a pool's workers (one hung worker breaks the pool anyway) and rebuild it in the
        background, so the user whose job timed out is answered now."""
        self._killed.add(generation)
        # CPython detail: the executor keeps its worker processes here. Process.kill() only
        # signals a process that has not been reaped, so a recycled pid is never hit.
        processes: dict[int, Any] = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            with contextlib.suppress(Exception):
                process.kill()
        task = asyncio.get_running_loop().create_task(self._recover(generation))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recover(self, generation: int) -> None:
        async with self._lock:
            if self._closed or generation != self._generation:
                return  # another job already rebuilt it
            metrics.WORKERS.set(0)  # the broken pool serves nobody until the new one is up
            old = self._pool
            try:
                self._pool, self._info = await self._spawn(self.model_dir)
            except Exception:
                log.exception("could not rebuild the analysis pool")
                return
            self._generation += 1
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    async def reload(self, model_dir: Path) -> None:
        """Serve ``model_dir``: new workers load it first, then replace the old ones.

        Jobs already running finish on the old model. If the new model cannot be loaded,
        ``ModelError`` is raised and the old workers keep serving.
        """
        await self._after_start()
        async with self._lock:
            pool, info = await self._spawn(Path(model_dir))
            old, self._pool, self._info = self._pool, pool, info
            self.model_dir = Path(model_dir)
            self._generation += 1
            self._served()
        if old is not None:
            old.shutdown(wait=False)

    async def info(self) -> dict[str, Any]:
        """The serving model's info, as its workers reported it (while they load: its
        metadata's)."""
        return dict(self._info) if self.is_ready else self._loading_info()

    async def close(self) -> None:
        """Stop the workers (waits for them to exit)."""
        self._closed = True
        metrics.WORKERS.set(0)
        if self._starting is not None:
            self._starting.cancel()
        for task in list(self._background):
            task.cancel()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


# --- threads (tests, stand-ins) -------------------------------------------------------------------


class ThreadJobs(_JobsBase):
    """:class:`ClassifyJobs` in threads of this process, for tests and stand-in classifiers.

    Same contract as :class:`ProcessJobs` (bounded, ``BusyError``), but the classifier runs in a
    thread pool, so a GIL-heavy classifier would slow the event loop: not for production.

    Parameters
    ----------
    model_dir : Path
        The model artifact to serve.
    loader : callable
        ``loader(model_dir, limits)`` returning a classifier.
    workers : int
        Threads.
    max_pending : int
        Jobs accepted at once, running and waiting.
    limits : Limits
        Audio limits, passed to the classifier.
    job_timeout_s : float or None
        How long one job may run before :class:`JobTimeoutError`. A thread cannot be killed:
        the stuck one keeps its thread until it returns.
    fallback_dir : Path or None
        Served instead when ``model_dir`` cannot be loaded at start.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        loader: ClassifierLoader = load_classifier,
        workers: int = 1,
        max_pending: int = 16,
        limits: Limits = Limits(),
        job_timeout_s: float | None = None,
        fallback_dir: Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.fallback_dir = fallback_dir
        self.loader = loader
        self.limits = limits
        self.job_timeout_s = job_timeout_s
        self.workers = workers
        self._admission = _Admission(max_pending)
        self._executor: Executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="genre-job"
        )
        self._classifier: SupportsClassify | None = None

    async def _load(self, model_dir: Path) -> SupportsClassify:
        loop = asyncio.get_running_loop()
        classifier = await loop.run_in_executor(self._executor, self.loader, model_dir, self.limits)
        await loop.run_in_executor(self._executor, classifier.warm_up)
        return classifier

    async def _serve(self, model_dir: Path) -> None:
        self._classifier = await self._load(model_dir)
        metrics.WORKERS.set(self.workers)

    async def classify(self, data: bytes, filename: str | None) -> Prediction:
        """Analyse one clip in a thread; see :meth:`ProcessJobs.classify`."""
        with self._admission.slot():
            await self.ready()
            if self._classifier is None:
                raise GenreError("The analyser is not running.")
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(self._executor, self._classifier.classify, data, filename)
            done, _ = await asyncio.wait({job}, timeout=self.job_timeout_s)
            if not done:
                job.cancel()  # the answer goes out now; the thread finishes on its own
                raise JobTimeoutError(self.job_timeout_s or 0.0)
            return job.result()

    async def reload(self, model_dir: Path) -> None:
        """Load ``model_dir``, then swap it in; on failure the old classifier keeps serving."""
        await self._after_start()
        self._classifier = await self._load(Path(model_dir))
        self.model_dir = Path(model_dir)
        self._served()

    async def info(self) -> dict[str, Any]:
        """The serving classifier's info (while it loads: its metadata's)."""
        if self.is_ready and self._classifier is not None:
            return dict(self._classifier.info)
        return self._loading_info()

    async def close(self) -> None:
        """Stop the threads."""
        if self._starting is not None:
            self._starting.cancel()
        self._classifier = None
        metrics.WORKERS.set(0)
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)


# --- retraining in a child process ----------------------------------------------------------------

#: ``retrain(data_dir, out_dir, *, seed, progress) -> metrics``, or its "module:function" name.
RetrainTarget = Callable[..., dict[str, Any]] | str
#: ``is_not_worse(new_metrics, old_metrics) -> bool``, or its "module:function" name.
CompareTarget = Callable[[dict[str, Any], dict[str, Any]], bool] | str


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain produced: the candidate's honest metrics and whether it is not worse."""

    out_dir: Path
    metrics: dict[str, Any]
    not_worse: bool


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _retrain_child(
    target: RetrainTarget,
    compare: CompareTarget,
    data_dir: Path,
    out_dir: Path,
    seed: int,
    current: dict[str, Any] | None,
    messages: Any,
    options: dict[str, Any],
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:

        def progress(text: str) -> None:
            messages.put(("progress", str(text), None))

        metrics = _resolve(target)(data_dir, out_dir, seed=seed, progress=progress, **options)
        not_worse = True if not current else bool(_resolve(compare)(metrics, current))
        messages.put(("done", metrics, not_worse))
    except BaseException as exc:
        messages.put(("error", str(exc) or type(exc).__name__, None))
        raise


async def retrain_in_subprocess(
    data_dir: Path,
    out_dir: Path,
    *,
    current_metrics: dict[str, Any] | None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    target: RetrainTarget = "genre_core.training:retrain",
    compare: CompareTarget = "genre_core.training:is_not_worse",
    options: dict[str, Any] | None = None,
) -> RetrainOutcome:
    """Run ``retrain`` in a child process and compare its metrics with the current model's.

    The child writes a complete artifact to ``out_dir``; nothing is published here. Cancelling
    the awaiting task terminates the child.

    Parameters
    ----------
    data_dir : Path
        Training data.
    out_dir : Path
        Where the candidate artifact is written.
    current_metrics : dict or None
        The serving model's metrics; ``None`` counts the candidate as not worse.
    seed : int
        Training seed.
    progress : callable, optional
        Called in the event loop's thread with each progress line.
    target, compare : callable or str
        The training and comparison functions (module-level, or "module:function").
    options : dict, optional
        More keyword arguments for ``target`` (the community's clips, the current model).

    Returns
    -------
    RetrainOutcome

    Raises
    ------
    TrainingError
        Training raised, or its process died.
    """
    ctx = multiprocessing.get_context("spawn")
    messages = ctx.Queue()
    child = ctx.Process(
        target=_retrain_child,
        args=(target, compare, Path(data_dir), Path(out_dir), seed, current_metrics, messages,
              dict(options or {})),
        name="genre-retrain",
        daemon=True,
    )
    await asyncio.to_thread(child.start)
    finished = False
    try:
        while True:
            try:
                kind, payload, verdict = await asyncio.to_thread(messages.get, True, 0.5)
            except queue.Empty:
                if not child.is_alive():
                    raise TrainingError(
                        f"The training process stopped unexpectedly (exit code {child.exitcode})."
                    ) from None
                continue
            if kind == "progress":
                if progress is not None:
                    progress(payload)
            elif kind == "done":
                finished = True
                return RetrainOutcome(Path(out_dir), dict(payload), bool(verdict))
            else:
                raise TrainingError(f"Training failed: {payload}")
    finally:
        # A child that reported "done" is only flushing its queue: let it exit on its own.
        await asyncio.to_thread(child.join, 10 if finished else 0)
        if child.is_alive():
            child.terminate()
            await asyncio.to_thread(child.join, 10)
        messages.close()
