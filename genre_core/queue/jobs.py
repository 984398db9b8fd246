"""``CeleryJobs``: :class:`~genre_core.jobs.ClassifyJobs` on ``genre-worker`` processes through
Redis (Celery broker and result backend), for a fleet of bots and workers.

- ``start`` publishes the model to the store in Redis (``store``) and returns at once;
  ``ready`` waits until a worker answers Celery's ping and one of its processes serves that model.
- ``classify`` is admitted against a fleet-wide bound first: a sorted set in Redis holds every
  bot's jobs in flight (scored by their deadline, so the jobs of a bot that died expire instead of
  filling the queue for ever); beyond ``max_pending`` it raises ``BusyError``. The job then goes to
  Celery and its result is read from the result backend by one poller task for all jobs (one
  ``MGET`` every 50 ms), so the event loop never blocks and no thread waits per job.
- While Redis is unreachable (restarting), admission and submission are retried for
  ``redis_grace_s``; the jobs already in Redis survive a restart when Redis persists them
  (``appendonly yes``, see README), and the workers go on with them once it is back. A job that
  Redis lost anyway (taken off the queue by a worker at the moment Redis stopped) is found
  missing after the restart and sent again.
- ``reload`` publishes a new model and waits until every live worker process reports it; a
  worker that cannot load it reverts the whole fleet to the previous model (``ModelError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aredis
from kombu.exceptions import OperationalError

from genre_core import metrics
from genre_core.errors import GenreError, ModelError
from genre_core.jobs import (
    BusyError,
    JobTimeoutError,
    WorkerCrashedError,
    _Admission,
    _JobsBase,
    metadata_info,
)
from genre_core.queue import store
from genre_core.queue.app import QUEUE, make_app
from genre_core.queue.tasks import (
    TASK_NAME,
    encode_clip,
    error_from_dict,
    limits_to_dict,
    prediction_from_dict,
)
from genre_core.result import Prediction
from genre_core.settings import Limits

log = logging.getLogger(__name__)

#: Every bot's jobs in flight, scored by their deadline (Redis server time, seconds).
PENDING_KEY = "genre:pending"
# Drop expired entries, count, admit below the bound: atomically, for every bot at once.
_ADMIT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then return -1 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return n + 1
"""
POLL_S = 0.05
#: Failures of the queue itself, not of the clip: worth one more run.
_INFRASTRUCTURE = {"ConnectionError", "TimeoutError", "OperationalError", "WorkerLostError"}


def _infrastructure_failure(meta: dict[str, Any]) -> bool:
    result = meta.get("result")
    return (
        meta.get("status") == "FAILURE"
        and isinstance(result, dict)
        and str(result.get("exc_type", "")) in _INFRASTRUCTURE
    )


class CeleryJobs(_JobsBase):
    """:class:`~genre_core.jobs.ClassifyJobs` on a Celery fleet over Redis.

    Parameters
    ----------
    model_dir : Path
        The model artifact to serve; published to the workers through Redis.
    queue_url : str
        Redis URL (``redis://host:port/db``), broker and result backend.
    limits : Limits
        Audio limits, sent with every job.
    max_pending : int
        Jobs in flight across the whole fleet (every bot sharing ``queue_url``); beyond it
        ``BusyError``.
    job_timeout_s : float
        How long one job may run on a worker.
    wait_timeout_s : float or None
        How long a job may take from submission to answer, queue included (default: four job
        time limits, at least a minute).
    start_timeout_s : float
        How long ``ready`` and ``reload`` wait for workers.
    redis_grace_s : float
        How long an unreachable Redis is retried before a job fails.
    fallback_dir : Path or None
        Served instead when ``model_dir`` cannot be loaded by the workers at start.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        queue_url: str,
        limits: Limits = Limits(),
        max_pending: int = 16,
        job_timeout_s: float = 120.0,
        wait_timeout_s: float | None = None,
        start_timeout_s: float = 300.0,
        redis_grace_s: float = 60.0,
        fallback_dir: Path | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.fallback_dir = fallback_dir
        self.queue_url = queue_url
        self.limits = limits
        self.max_pending = max_pending
        self.job_timeout_s = job_timeout_s
        self.wait_timeout_s = wait_timeout_s or max(4 * job_timeout_s, 60.0)
        self.start_timeout_s = start_timeout_s
        self.redis_grace_s = redis_grace_s
        self._admission = _Admission(max_pending)  # this bot's share; the fleet's is in Redis
        self.app = make_app(queue_url, job_timeout_s=job_timeout_s)
        self._redis = redis.Redis.from_url(queue_url, socket_timeout=10, socket_connect_timeout=5)
        self._aredis = aredis.Redis.from_url(queue_url, socket_timeout=10, socket_connect_timeout=5)
        self._admit = self._aredis.register_script(_ADMIT)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        # What a job lost with Redis needs to be sent again: when it was sent, and its clip.
        self._sent: dict[str, float] = {}
        self._payloads: dict[str, tuple[bytes, str | None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._model: dict[str, Any] = {}
        self._closed = False
        #: Workers (``host:pid``) that answered, for logs and tests.
        self.answered_by: Counter[str] = Counter()

    # --- the model ---------------------------------------------------------------------------

    async def _serve(self, model_dir: Path) -> None:
        while True:
            try:
                announcement = await self._publish(model_dir)
                await self._announce_and_wait(announcement, every=False)
                break
            except ModelError:
                raise
            except GenreError:
                # Redis unreachable at start: a bot must not stay broken until restarted.
                log.warning("the queue is unreachable; trying again in 5 s")
                await asyncio.sleep(5.0)
        self._model = announcement
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._count_workers())

    async def _count_workers(self) -> None:
        """Keep ``genre_workers`` at the number of worker processes serving this model."""
        while not self._closed:
            with contextlib.suppress(Exception):
                reports = await asyncio.to_thread(store.reports, self._redis)
                ident = self._model.get("id")
                metrics.WORKERS.set(sum(1 for r in reports.values() if r.get("model") == ident))
            await asyncio.sleep(5.0)

    async def _publish(self, model_dir: Path) -> dict[str, Any]:
        try:
            return await self._retrying(asyncio.to_thread, store.publish, self._redis, model_dir)
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not publish the model in {model_dir}: {exc}") from exc

    async def _announce_and_wait(self, announcement: dict[str, Any], *, every: bool) -> None:
        """Announce a model and wait until one worker process (``every``: every live one)
        serves it. A worker that fails to load it, or no worker in time: ``ModelError``, with
        the previous announcement restored."""
        previous = await self._retrying(asyncio.to_thread, store.announced, self._redis)
        ident, version = announcement["id"], announcement["version"]
        await self._retrying(asyncio.to_thread, store.announce, self._redis, announcement)
        deadline = time.monotonic() + self.start_timeout_s
        next_warning = time.monotonic() + 30.0
        try:
            while True:
                hosts = await asyncio.to_thread(self._ping)
                reports = await self._retrying(asyncio.to_thread, store.reports, self._redis)
                live = {k: r for k, r in reports.items() if r.get("host") in hosts}
                metrics.WORKERS.set(len(live))
                failures = [
                    r["failed"][ident] for r in live.values() if ident in r.get("failed", {})
                ]
                if failures:
                    raise ModelError(f"A worker could not load model {version}: {failures[0]}")
                serving = [k for k, r in live.items() if r.get("model") == ident]
                if serving and (not every or len(serving) == len(live)):
                    log.info("model %s served by %d worker process(es)", version, len(serving))
                    return
                if not live and not every:
                    # A fleet may start its bots before its workers: at start, wait for one
                    # however long it takes (clips meanwhile are told after wait_timeout_s).
                    if time.monotonic() > next_warning:
                        log.warning("no genre-worker answers on the queue yet; waiting")
                        next_warning = time.monotonic() + 60.0
                    deadline = time.monotonic() + self.start_timeout_s
                elif time.monotonic() > deadline:
                    waiting = sorted(set(live) - set(serving)) if live else "no worker answered"
                    raise ModelError(
                        f"The analysis workers did not load model {version} within "
                        f"{self.start_timeout_s:g} s (waiting for: {waiting}). Is genre-worker "
                        "running against the same queue?"
                    )
                await asyncio.sleep(0.2)
        except BaseException:
            if previous and previous.get("id") != ident:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(store.announce, self._redis, previous)
            raise

    def _ping(self) -> set[str]:
        """Hostnames of the workers answering Celery's ping (``celery@host`` → ``host``)."""
        try:
            replies = self.app.control.ping(timeout=0.5) or []
        except Exception as exc:  # Redis away: nobody answers
            log.debug("ping: %s", exc)
            return set()
        return {name.partition("@")[2] or name for reply in replies for name in reply}

    async def reload(self, model_dir: Path) -> None:
        """Serve ``model_dir`` on every worker: published through Redis, then awaited until
        every live worker process reports it. On failure the previous model keeps serving."""
        await self._after_start()
        announcement = await self._publish(Path(model_dir))
        await self._announce_and_wait(announcement, every=True)
        self._model = announcement
        self.model_dir = Path(model_dir)
        self._served()

    async def info(self) -> dict[str, Any]:
        """The serving model's metadata (version, family, metrics, genres)."""
        if not self.is_ready:
            return self._loading_info()
        return {**metadata_info(self.model_dir), "artifact": self._model.get("id")}

    # --- jobs --------------------------------------------------------------------------------

    async def _retrying(self, call: Any, *args: Any) -> Any:
        """``await call(*args)``, retried while Redis is unreachable, up to ``redis_grace_s``."""
        deadline = time.monotonic() + self.redis_grace_s
        delay = 0.1
        while True:
            try:
                return await call(*args)
            except (redis.ConnectionError, redis.TimeoutError, OSError, OperationalError) as exc:
                if self._closed or time.monotonic() > deadline:
                    raise GenreError(
                        "The analysis queue is unreachable right now. Please try again in a "
                        "minute."
                    ) from exc
                log.warning("Redis unreachable (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def classify(self, data: bytes, filename: str | None) -> Prediction:
        """Analyse one clip on a worker; see :meth:`genre_core.jobs.ClassifyJobs.classify`.

        Raises
        ------
        BusyError
            The fleet's queue is full.
        JobTimeoutError
            The job ran past the limit on its worker, or got no answer in ``wait_timeout_s``.
        WorkerCrashedError
            The job failed on its worker for a reason that is not the clip's.
        GenreError
            What the classifier raised (the same class and sentence), or Redis stayed away.
        """
        if self._closed:
            raise GenreError("The analyser is not running.")
        # The slot is where every runner's clips are counted for the metrics (depth, seconds,
        # errors by code, the fleet's BusyError included): not counted again here.
        with self._admission.slot():
            try:
                await asyncio.wait_for(self.ready(), self.wait_timeout_s)
            except TimeoutError:
                raise GenreError(
                    "No analysis worker is running right now, so I can't analyse clips. "
                    "Please try again later."
                ) from None
            return await self._run(data, filename)

    async def _run(self, data: bytes, filename: str | None) -> Prediction:
        # A job lost to the infrastructure (Redis gone longer than the worker could wait to
        # store its answer) runs once more; one that failed because of the clip does not.
        for attempt in range(2):
            meta = await self._run_once(data, filename)
            if attempt == 0 and _infrastructure_failure(meta):
                log.warning("job failed on the queue (%s); running it again", meta.get("result"))
                continue
            break
        return self._outcome(meta)

    async def _run_once(self, data: bytes, filename: str | None) -> dict[str, Any]:
        task_id = uuid.uuid4().hex
        depth = await self._retrying(
            self._admit, [PENDING_KEY], [int(self.wait_timeout_s) + 1, task_id, self.max_pending]
        )
        if depth < 0:
            raise BusyError()
        answer = asyncio.get_running_loop().create_future()
        self._waiting[task_id] = answer
        self._payloads[task_id] = (data, filename)
        try:
            await self._retrying(asyncio.to_thread, self._send, task_id, data, filename)
            self._sent[task_id] = time.monotonic()
            self._ensure_poller()
            try:
                meta = await asyncio.wait_for(asyncio.shield(answer), self.wait_timeout_s)
            except TimeoutError:
                raise JobTimeoutError(self.job_timeout_s) from None
        finally:
            self._waiting.pop(task_id, None)
            self._sent.pop(task_id, None)
            self._payloads.pop(task_id, None)
            with contextlib.suppress(Exception):
                await self._aredis.zrem(PENDING_KEY, task_id)
        return meta

    def _send(self, task_id: str, data: bytes, filename: str | None) -> None:
        self.app.send_task(
            TASK_NAME,
            args=[encode_clip(data), filename, limits_to_dict(self.limits)],
            task_id=task_id,
            queue=QUEUE,
            expires=self.wait_timeout_s,  # a worker skips a job nobody waits for any more
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
        )

    def _outcome(self, meta: dict[str, Any]) -> Prediction:
        status, result = meta.get("status"), meta.get("result")
        if status == "SUCCESS" and isinstance(result, dict):
            if "error" in result:
                raise error_from_dict(result["error"])
            self.answered_by[str(result.get("worker", "?"))] += 1
            return prediction_from_dict(result["prediction"])
        kind = (result or {}).get("exc_type", "") if isinstance(result, dict) else ""
        if kind in ("TimeLimitExceeded", "SoftTimeLimitExceeded"):
            raise JobTimeoutError(self.job_timeout_s)
        log.error("job failed on its worker: %s %s", status, result)
        raise WorkerCrashedError()

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            loop = asyncio.get_running_loop()
            self._poller = loop.create_task(self._poll(), name="genre-results")

    async def _poll(self) -> None:
        """Read finished jobs' results from the backend, all of them in one ``MGET``."""
        backend = self.app.backend
        outage_since: float | None = None
        while self._waiting and not self._closed:
            ids = list(self._waiting)
            try:
                values = await self._aredis.mget([backend.get_key_for_task(i) for i in ids])
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("reading results: Redis unreachable (%s)", exc)
                outage_since = outage_since or time.monotonic()
                await asyncio.sleep(0.5)
                continue
            if outage_since is not None:
                outage_since = None
                self._spawn(self._recover_lost(time.monotonic()))
            for task_id, value in zip(ids, values, strict=True):
                if value is None:
                    continue
                meta = backend.decode_result(value)
                if meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED"):
                    future = self._waiting.pop(task_id, None)
                    if future is not None and not future.done():
                        future.set_result(meta)
            await asyncio.sleep(POLL_S)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recover_lost(self, outage_end: float) -> None:
        """After Redis came back: send again the jobs it lost. A worker takes a job off the
        queue (BRPOP) and then records it as unacknowledged, in two steps; Redis stopping
        between them loses the job. One that is neither queued, nor held by a worker, nor
        answered is sent again (same id: whoever answers first is read)."""
        await asyncio.sleep(3.0)  # workers reconnect and settle their deliveries
        lost_candidates = [i for i, sent in self._sent.items() if sent < outage_end]
        if not lost_candidates or self._closed:
            return
        for attempt in range(10):  # the pool's connections from before the restart fail first
            try:
                known = await self._known_ids(lost_candidates)
                break
            except (redis.RedisError, OSError) as exc:
                if attempt == 9 or self._closed:
                    log.warning("could not check for lost jobs: %s", exc)
                    return
                await asyncio.sleep(1.0)
        for task_id in lost_candidates:
            payload = self._payloads.get(task_id)
            if task_id in known or payload is None or task_id not in self._waiting:
                continue
            log.warning("job %s was lost with Redis; sending it again", task_id)
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._send, task_id, *payload)

    async def _known_ids(self, ids: list[str]) -> set[str]:
        """Which of ``ids`` Redis knows: answered, queued or held by a worker."""
        backend = self.app.backend
        metas = await self._aredis.mget([backend.get_key_for_task(i) for i in ids])
        known = {i for i, meta in zip(ids, metas, strict=True) if meta is not None}
        # The queue's lists (one per priority step) and the transport's unacknowledged jobs.
        blobs: list[bytes] = []
        keys = [QUEUE] + [k async for k in self._aredis.scan_iter(match=QUEUE + "\x06\x16*")]
        for key in keys:
            blobs += await self._aredis.lrange(key, 0, -1)
        blobs += await self._aredis.hvals("unacked")
        for task_id in set(ids) - known:
            needle = task_id.encode()
            if any(needle in blob for blob in blobs):
                known.add(task_id)
        return known

    async def workers(self) -> dict[str, dict[str, Any]]:
        """Every live worker process's report (``host:pid`` → model it serves)."""
        return await asyncio.to_thread(store.reports, self._redis)

    async def close(self) -> None:
        """Stop submitting and reading; the jobs already queued stay in Redis for the workers."""
        self._closed = True
        metrics.WORKERS.set(0)
        if self._starting is not None:
            self._starting.cancel()
        for task in (self._poller, self._watch, *self._background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        for future in self._waiting.values():
            if not future.done():
                future.cancel()
        await self._aredis.aclose()
        await asyncio.to_thread(self._redis.close)
        await asyncio.to_thread(self.app.close)
