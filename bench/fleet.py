"""``python -m bench.fleet``: clips per second through the fleet's work queue (Celery over Redis,
``genre-worker`` processes) with 1 and 2 workers, against the in-process pool the bot uses by
default (``ProcessJobs``, two worker processes), same model, same clip, same run.

Each figure: ``n_clips`` submitted at once after every worker answered one clip (so loading and
warming up are not counted), timed from submission to the last answer. A throw-away
``redis-server`` (from PATH) runs on a free loopback port; each ``genre-worker`` has one pool
process (``--concurrency 1``), as a one-core machine of a fleet would. On this 2-core machine the
bench's own process (the "bot") shares the cores with the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.servers import RedisServer

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A throw-away redis-server; yields its URL."""
    server = RedisServer(directory)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def start_worker(
    url: str, name: str, directory: Path, loader: str | None
) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).with_name("genre-worker")), url, "--concurrency", "1",
               "--name", name, "--cache-dir", str(directory / "cache"), "--loglevel", "WARNING"]
    if loader:
        command += ["--loader", loader]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)])}
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


async def _timed(jobs: Any, data: bytes, name: str, warm: int, n_clips: int) -> float:
    """Seconds for ``n_clips`` at once, after ``warm`` clips (one per worker)."""
    await asyncio.gather(*(jobs.classify(data, name) for _ in range(warm)))
    started = time.perf_counter()
    await asyncio.gather(*(jobs.classify(data, name) for _ in range(n_clips)))
    return time.perf_counter() - started


def measure(
    clip: Path, *, n_clips: int, model_dir: Path, loader: str | None = None,
    in_process_workers: int = 2,
) -> dict[str, float]:
    """``fleet_{1,2}_worker(s)_clips_per_s`` and ``fleet_in_process_clips_per_s``."""
    from genre_core.jobs import ProcessJobs
    from genre_core.queue.jobs import CeleryJobs
    from genre_core.queue.tasks import resolve_loader

    data, name = clip.read_bytes(), clip.name
    results: dict[str, float] = {}

    async def fleet(url: str, directory: Path) -> None:
        workers = [start_worker(url, "bench-w1", directory, loader)]
        jobs = CeleryJobs(model_dir, queue_url=url, max_pending=n_clips + 4, start_timeout_s=120)
        try:
            await jobs.start()
            await jobs.ready()
            elapsed = await _timed(jobs, data, name, 1, n_clips)
            results["fleet_1_worker_clips_per_s"] = round(n_clips / elapsed, 3)
            # The second worker joins the running fleet: the first one stays warm.
            workers.append(start_worker(url, "bench-w2", directory, loader))
            deadline = time.monotonic() + 120
            while len([r for r in (await jobs.workers()).values()
                       if r.get("model") == jobs._model.get("id")]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError("the second genre-worker did not load the model")
                await asyncio.sleep(0.2)
            elapsed = await _timed(jobs, data, name, 2, n_clips)
            results["fleet_2_workers_clips_per_s"] = round(n_clips / elapsed, 3)
        finally:
            await jobs.close()
            for worker in workers:
                stop_worker(worker)

    async def in_process() -> None:
        jobs = await ProcessJobs.create(
            model_dir, workers=in_process_workers, max_pending=n_clips + in_process_workers,
            loader=resolve_loader(loader),
        )
        try:
            elapsed = await _timed(jobs, data, name, in_process_workers, n_clips)
        finally:
            await jobs.close()
        results["fleet_in_process_clips_per_s"] = round(n_clips / elapsed, 3)

    with tempfile.TemporaryDirectory(prefix="genre-bench-fleet-") as tmp, \
            redis_server(Path(tmp)) as url:
        asyncio.run(fleet(url, Path(tmp)))
    asyncio.run(in_process())
    return results


def measure_tiny(clip: Path, n_clips: int) -> dict[str, float]:
    """The same path with the tests' stand-in classifier (``conftest:load_stub``): ``--tiny``
    checks that the fleet bench runs, cheaply (no real model loads three times)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_stub_artifact

    with tempfile.TemporaryDirectory(prefix="genre-bench-stub-") as tmp:
        stub = make_stub_artifact(Path(tmp) / "stub", "bench-stub", 0.5)
        return measure(clip, n_clips=n_clips, model_dir=stub, loader="conftest:load_stub")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=12, help="clips per figure")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the clip")
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    from bench.measure import model_dirs

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import music_like
    from synth import encode

    with tempfile.TemporaryDirectory(prefix="genre-bench-clip-") as tmp:
        clip = Path(tmp) / "clip.mp3"
        clip.write_bytes(encode(music_like(args.seconds), "mp3"))
        shipped, _ = model_dirs()
        results = measure(clip, n_clips=args.clips, model_dir=shipped)
    print(json.dumps({"clips": args.clips, "clip_s": args.seconds, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
