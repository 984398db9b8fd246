"""Throw-away servers on free loopback ports, for the bench and the tests (which import it)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A real ``redis-server`` (from PATH) on a free loopback port, keeping its files (and, with
    ``appendonly``, its append-only log) in ``directory``."""

    def __init__(self, directory: Path, *, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until it answers; RuntimeError (with its log) when it cannot."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes" if self.appendonly else "no", "--save", "",
             "--protected-mode", "no"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        tail = self.log.read_text(errors="replace")[-2000:]
                        raise RuntimeError(f"redis-server could not start: {tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        """A clean shutdown: Redis writes its append-only file, as on a restart in production."""
        import redis

        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(redis.RedisError):
            redis.Redis.from_url(self.url).shutdown()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
