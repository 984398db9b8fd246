"""What a fleet's operator watches, for Prometheus (its official client library).

One place for every metric, so the bot, the in-process pool and the Celery workers report the
same names. Each process serves its own ``/metrics`` (``GENRE_METRICS_PORT`` for the bot,
``genre-worker --metrics-port`` for a worker).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Clips accepted and not yet answered, by this process's view of the queue.
QUEUE_DEPTH = Gauge("genre_queue_depth", "Clips waiting for or in analysis")
#: Seconds from a clip's submission to its answer (queue wait included).
JOB_SECONDS = Histogram(
    "genre_job_seconds", "Seconds from submitting a clip to its answer",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
#: Clips that ended without an answer, by reason (the error's code: busy, timeout, crashed...).
JOB_ERRORS = Counter("genre_job_errors_total", "Clips that failed, by reason", ["reason"])
#: Analysis workers ready to take clips.
WORKERS = Gauge("genre_workers", "Analysis workers ready")


def serve(port: int) -> None:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a background thread; 0: don't."""
    if port:
        start_http_server(port)
