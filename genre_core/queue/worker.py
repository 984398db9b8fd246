"""``genre-worker``: a Celery prefork worker that analyses clips from the fleet's Redis queue.

    genre-worker redis://queue-host:6379/0 --concurrency 4 --metrics-port 9101

Each pool process loads the model announced in Redis (``genre_core.queue.store``) and follows
every reload the bot announces; a worker needs the code and ``models/musicnn`` locally, nothing
else (artifacts come through Redis and are unpacked under ``--cache-dir``).

Metrics: ``--metrics-port`` serves this worker's main process's registry (per process, no
Prometheus multiprocess mode): ``genre_workers`` is its pool size once it is ready. Job timings
and errors are counted where a job is seen end to end, in the bot (``GENRE_METRICS_PORT``).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any

from genre_core import metrics
from genre_core.jobs import default_workers
from genre_core.queue import tasks
from genre_core.queue.app import QUEUE, make_app

_THREAD_VARS = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="genre-worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "queue_url", nargs="?", default=os.environ.get("GENRE_QUEUE_URL", ""),
        help="Redis URL of the queue (default: $GENRE_QUEUE_URL)",
    )
    parser.add_argument("--concurrency", "-c", type=int, default=default_workers(),
                        help="pool processes (default: one per usable core)")
    parser.add_argument("--loader", default=os.environ.get("GENRE_WORKER_LOADER"),
                        help='"module:function" that loads a classifier (default: the real one)')
    parser.add_argument("--model-dir", type=Path,
                        default=Path(os.environ.get("GENRE_MODEL_DIR", "models/genre")),
                        help="served until a bot announces a model")
    parser.add_argument("--cache-dir", type=Path, default=tasks.config.cache_dir,
                        help="where artifacts from the store are unpacked")
    parser.add_argument("--job-timeout", type=float,
                        default=float(os.environ.get("GENRE_JOB_TIMEOUT_S", "120")),
                        help="seconds one job may run (match the bot's GENRE_JOB_TIMEOUT_S)")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}",
                        help="this worker's name in the fleet (unique)")
    parser.add_argument("--metrics-port", type=int,
                        default=int(os.environ.get("GENRE_WORKER_METRICS_PORT", "0")),
                        help="serve Prometheus /metrics on this port (0: don't)")
    parser.add_argument("--loglevel", default="INFO")
    args = parser.parse_args(argv)
    if not args.queue_url:
        parser.error("give the queue's Redis URL (or set GENRE_QUEUE_URL)")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # One thread per pool process: the pool already uses the cores; more threads only fight.
    for var in _THREAD_VARS:
        os.environ.setdefault(var, "1")
    # Set before the pool forks: every pool process inherits it.
    tasks.config.queue_url = args.queue_url
    tasks.config.loader = args.loader
    tasks.config.model_dir = args.model_dir
    tasks.config.cache_dir = args.cache_dir
    tasks.config.job_timeout_s = args.job_timeout
    tasks.config.hostname = args.name
    tasks.resolve_loader(args.loader)  # a wrong name fails here, not in every job
    app = make_app(args.queue_url, job_timeout_s=args.job_timeout)

    from celery.signals import worker_ready

    @worker_ready.connect
    def _ready(**_: Any) -> None:
        metrics.WORKERS.set(args.concurrency)

    metrics.serve(args.metrics_port)
    app.worker_main([
        "worker", "--pool=prefork", f"--concurrency={args.concurrency}",
        f"--hostname=genre@{args.name}", f"--queues={QUEUE}", f"--loglevel={args.loglevel}",
        # No gossip or mingle: workers need nothing from each other, and start faster.
        "--without-gossip", "--without-mingle",
    ])


if __name__ == "__main__":
    sys.exit(main())
