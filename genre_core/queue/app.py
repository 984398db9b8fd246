"""The Celery app, built from one Redis URL (broker and result backend both).

Why these settings:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a job is acknowledged only once it has
  run. A pool child killed mid-job is noticed by its worker, which puts the job back at once; a
  whole worker (or machine) killed leaves the job "unacked" in Redis, and another worker restores
  it after ``visibility_timeout``. Either way the job runs again elsewhere and nothing is lost.
- ``visibility_timeout`` is the job time limit plus a margin: shorter, and a slow but healthy job
  would be handed to a second worker while the first still works on it.
- ``worker_prefetch_multiplier=1``: a worker holds no more jobs than it runs, so a burst spreads
  over the fleet instead of piling up behind one busy worker (and a dying worker strands at most
  the jobs it runs).
- JSON, with the clip as base64 text (``tasks.encode_clip``), not pickle: a worker must never
  unpickle what anyone able to write to Redis put there (pickle runs code on load). The cost,
  a third more bytes for a clip of at most a few MB, is small next to decoding it.
- The time limits come from ``job_timeout_s``: the soft one raises inside the job (answered as
  ``JobTimeoutError``), the hard one, a few seconds later, kills a job stuck in native code.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

#: The queue every classify job goes to.
QUEUE = "genre"
#: Seconds a result waits in Redis for the bot to read it (a restarted bot's are never read).
RESULT_EXPIRES_S = 3600
#: Seconds between a hard-killed worker's job and its redelivery, beyond the job time limit.
REDELIVERY_MARGIN_S = 5.0


def transport_options(job_timeout_s: float) -> dict[str, Any]:
    """Redis transport settings shared by the bot and the workers (the restore sweep runs in
    whichever worker is alive, with its own copy of these)."""
    return {
        "visibility_timeout": job_timeout_s + REDELIVERY_MARGIN_S,
        # Sweep for abandoned jobs every 2 s instead of every 100 s.
        "unacked_restore_interval": 2,
        "unacked_restore_throttle": 1,
        # A Redis that vanishes without closing the socket must not hang a publish forever.
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
    }


def make_app(queue_url: str, *, job_timeout_s: float = 120.0) -> Celery:
    """The Celery app for ``queue_url`` (``redis://host:port/db``).

    Parameters
    ----------
    queue_url : str
        Redis URL: broker and result backend.
    job_timeout_s : float
        How long one job may run (soft limit); the hard limit and the redelivery delay follow.
    """
    app = Celery("genre", broker=queue_url, backend=queue_url, include=["genre_core.queue.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_soft_time_limit=job_timeout_s,
        task_time_limit=job_timeout_s + REDELIVERY_MARGIN_S - 1,
        broker_transport_options=transport_options(job_timeout_s),
        # A worker that finishes a job while Redis restarts keeps its answer and retries storing
        # it (about a minute), instead of turning it into a failure.
        result_backend_always_retry=True,
        result_backend_max_retries=40,
        result_backend_max_sleep_between_retries_ms=2000,
        result_expires=RESULT_EXPIRES_S,
        # The result names the worker that answered (tests and logs read it).
        result_extended=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a Redis restart must not end a worker
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
    )
    return app
