"""What a fleet's operator watches, for Prometheus (its official client library).

One place for every metric, so the bot, the in-process pool and the Celery workers report the
same names. Each process serves its own ``/metrics`` (``GENRE_METRICS_PORT`` for the bot,
``genre-worker --metrics-port`` for a worker) through :func:`serve`.

The metrics live in prometheus_client's process-wide registry: several job runners or bots in
one process (tests) add to the same series, so readers compare before and after.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Clips accepted and not yet answered, by this process's view of the queue.
QUEUE_DEPTH = Gauge("genre_queue_depth", "Clips waiting for or in analysis")
#: Seconds from a clip's submission to its answer (queue wait included), whatever the answer.
JOB_SECONDS = Histogram(
    "genre_job_seconds", "Seconds from submitting a clip to its answer",
    buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
#: Clips that ended without an answer, by reason (the error's code: busy, timeout, crashed...).
JOB_ERRORS = Counter("genre_job_errors_total", "Clips that failed, by reason", ["reason"])
#: Clips analysed, by outcome: ``answered`` (a prediction) or ``failed``.
CLIPS = Counter("genre_clips_total", "Clips whose analysis ended, by outcome", ["outcome"])
#: Analysis workers ready to take clips.
WORKERS = Gauge("genre_workers", "Analysis workers ready")
#: Votes recorded in the label store, by kind (right, genre, not_music, other).
LABEL_VOTES = Counter("genre_label_votes_total", "Label votes recorded, by kind", ["kind"])
#: Label-store requests refused, by reason (store_busy, store_full, store).
LABEL_STORE_ERRORS = Counter(
    "genre_label_store_errors_total", "Label-store requests refused, by reason", ["reason"]
)


class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it and frees its port."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.port = int(server.server_address[1])

    def close(self) -> None:
        self._server.shutdown()  # ends serve_forever in its thread
        self._server.server_close()


def serve(port: int, addr: str = "0.0.0.0") -> MetricsServer | None:
    """Serve ``/metrics`` on ``port`` (all interfaces) from a background thread; 0: don't.

    Returns the server, for its owner to close (a bot restarted in one process binds again).
    A port already taken is logged, not raised: the bot still answers clips without metrics.
    """
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr)
    except OSError:
        log.exception("cannot serve metrics on port %d; running without them", port)
        return None
    log.info("metrics on http://%s:%d/metrics", addr, port)
    return MetricsServer(server)
