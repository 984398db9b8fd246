"""The fleet: the real bot, a real ``redis-server`` and real ``genre-worker`` processes.

The bot runs against the fake Discord with ``GENRE_QUEUE_URL`` set, so ``bot.client.default_jobs``
builds ``CeleryJobs`` exactly as in production. Each worker is a separate ``genre-worker``
process (Celery prefork, one pool process) with the stand-in classifier (``conftest:load_stub``
and friends, imported by name: ``tests/`` is on its ``PYTHONPATH``) and its own model cache, so
the only way a model reaches it is the store in Redis. Redis runs with ``appendonly yes``, as the
README asks of a fleet's Redis.

Each user posts in their own channel, so discord.py's per-channel rate limiting (which the fake
announces like Discord) does not pace the replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ROOT, STUB_WEIGHTS, StartBot, make_stub_artifact, music_like
from fake_discord import FakeDiscord
from synth import encode, wav_bytes

from bench import servers
from bot.client import default_jobs
from genre_core.audio import decode
from genre_core.errors import GenreError, ModelError, NotAudioError
from genre_core.jobs import BusyError, JobTimeoutError, WorkerCrashedError
from genre_core.queue import store
from genre_core.queue.app import make_app
from genre_core.queue.jobs import PENDING_KEY, CeleryJobs
from genre_core.settings import Limits

REDIS_SERVER = shutil.which("redis-server")
GENRE_WORKER = Path(sys.executable).with_name("genre-worker")
PREDICTION = re.compile(r"^(🎵|🤔|🔇)")
MESSAGES_ROUTE = re.compile(r"/channels/\d+/messages")

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)


class RedisServer(servers.RedisServer):
    """The tests' Redis: append-only (it survives a restart, as in production); a server that
    cannot start skips the test, saying why."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, appendonly=True)

    def start(self) -> None:
        try:
            super().start()
        except RuntimeError as error:
            pytest.skip(str(error))


class Worker:
    """One ``genre-worker`` process group (its Celery main process and its pool process)."""

    def __init__(
        self, url: str, name: str, directory: Path, loader: str, job_timeout_s: float
    ) -> None:
        self.name = name
        self.log = directory / f"worker-{name}.log"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
            "PYTHONUNBUFFERED": "1",
        }
        self.process = subprocess.Popen(
            [str(GENRE_WORKER), url, "--concurrency", "1", "--loader", loader,
             "--name", name, "--cache-dir", str(directory / f"cache-{name}"),
             "--model-dir", str(directory / "no-local-model"),
             "--job-timeout", str(job_timeout_s), "--loglevel", "WARNING"],
            cwd=directory, env=env, start_new_session=True,
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        """``kill -9`` of the whole worker: main process and pool process, mid-job."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


class Fleet:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.redis = RedisServer(directory)
        self.workers: list[Worker] = []

    def start_workers(
        self, count: int, loader: str = "conftest:load_stub", job_timeout_s: float = 30.0
    ) -> list[Worker]:
        started = [
            Worker(self.redis.url, f"w{len(self.workers) + i + 1}", self.directory, loader,
                   job_timeout_s)
            for i in range(count)
        ]
        self.workers += started
        return started

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def reports(self) -> dict[str, dict[str, Any]]:
        with self.client() as client:
            return store.reports(client)

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.name}\n{w.log.read_text(errors='replace')[-3000:]}" for w in self.workers
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    directory = tmp_path / "fleet"
    directory.mkdir()
    fleet = Fleet(directory)
    fleet.redis.start()
    try:
        yield fleet
    finally:
        for worker in fleet.workers:
            worker.stop()
        fleet.redis.stop()


async def start_fleet_bot(start_bot: StartBot, fleet: Fleet, **settings: Any) -> Any:
    """The real bot with ``GENRE_QUEUE_URL`` set, ready (a worker serves its model)."""
    bot = await start_bot(jobs_factory=default_jobs, queue_url=fleet.redis.url, **settings)
    assert isinstance(bot.jobs, CeleryJobs)
    try:
        await asyncio.wait_for(bot.jobs.ready(), 60)
    except BaseException:
        print(fleet.logs())
        raise
    return bot


def posted(fake: FakeDiscord, since: int) -> int:
    return sum(
        1
        for r in fake.requests[since:]
        if r.method == "POST" and r.status == 200 and MESSAGES_ROUTE.fullmatch(r.path)
    )


async def send_all(
    fake: FakeDiscord, uploads: list[tuple[int, int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Post every (user, channel, attachment) at once."""
    return list(
        await asyncio.gather(
            *(fake.send_message(u, "", [a], channel_id=c) for u, c, a in uploads)
        )
    )


async def answers(
    fake: FakeDiscord, sent: list[dict[str, Any]], since: int, timeout: float, fleet: Fleet
) -> dict[str, dict[str, Any]]:
    """Wait until every sent message has a reply; asserts each got exactly one."""
    try:
        await fake.wait_for(lambda f: posted(f, since) >= len(sent), timeout=timeout)
    except BaseException:
        print(fleet.logs())
        raise
    await asyncio.sleep(1.0)  # a duplicate answer would show up now
    ids = {m["id"] for m in sent}
    channels = {int(m["channel_id"]) for m in sent}
    replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for channel in channels:
        for message in fake.messages(channel):
            reference = (message.get("message_reference") or {}).get("message_id")
            if reference in ids:
                replies[reference].append(message)
    assert set(replies) == ids, "every message is answered"
    assert all(len(r) == 1 for r in replies.values()), "and answered once"
    return {m: r[0] for m, r in replies.items()}


def kind(reply: dict[str, Any]) -> str:
    if reply["embeds"] and PREDICTION.match(reply["embeds"][0].get("title", "")):
        return "prediction"
    return f"other: {reply['content'] or reply['embeds']}"


def version_of(reply: dict[str, Any]) -> str:
    return str(reply["embeds"][0]["footer"]["text"].rsplit("model ", 1)[1])


def users_and_channels(fake: FakeDiscord, count: int, tag: str) -> list[tuple[int, int]]:
    return [
        (fake.add_user(f"{tag}u{i}"), fake.add_channel(f"{tag}-room-{i}")) for i in range(count)
    ]


# --- the tests -----------------------------------------------------------------------------------


async def test_a_burst_of_200_uploads_over_two_workers_is_answered_once_each(
    fake_discord: FakeDiscord, start_bot: StartBot, fleet: Fleet
) -> None:
    fake = fake_discord
    people = users_and_channels(fake, 20, "burst")  # channels exist before the bot connects
    fleet.start_workers(2)
    bot = await start_fleet_bot(
        start_bot, fleet, user_concurrency=10, user_rate=10, user_rate_window_s=600.0,
        queue_size=200,
    )
    clip = fake.add_attachment(encode(music_like(3.5, seed=7), "mp3"), "burst.mp3", "audio/mpeg")
    since = len(fake.requests)
    started = time.monotonic()
    sent = await send_all(fake, [(u, c, clip) for u, c in people for _ in range(10)])
    replies = await answers(fake, sent, since, timeout=120, fleet=fleet)
    elapsed = time.monotonic() - started
    kinds = Counter(kind(r) for r in replies.values())
    assert kinds == {"prediction": 200}, kinds
    workers = {name.split(":")[0] for name in bot.jobs.answered_by}
    assert workers == {"w1", "w2"}, bot.jobs.answered_by  # the burst was shared
    assert sum(bot.jobs.answered_by.values()) == 200
    with fleet.client() as client:
        assert client.zcard(PENDING_KEY) == 0, "nothing is left counted as pending"
    print(f"200 uploads answered in {elapsed:.1f} s over 2 workers: {dict(bot.jobs.answered_by)}")


async def test_a_worker_killed_mid_job_leaves_its_job_to_the_other_worker(
    fake_discord: FakeDiscord, start_bot: StartBot, fleet: Fleet
) -> None:
    fake = fake_discord
    [(user, channel)] = users_and_channels(fake, 1, "kill")
    # slow.wav takes 3 s in the stand-in; a short job limit makes the redelivery of a killed
    # worker's job (after the visibility timeout: limit + 5 s) quick.
    first, second = fleet.start_workers(2, loader="conftest:load_hanging_stub", job_timeout_s=6)
    bot = await start_fleet_bot(start_bot, fleet, job_timeout_s=6)
    slow = fake.add_attachment(wav_bytes(music_like(3.5, seed=3)), "slow.wav", "audio/wav")
    since = len(fake.requests)
    [message] = await send_all(fake, [(user, channel, slow)])

    control = make_app(fleet.redis.url).control
    running_on = None
    for _ in range(100):  # which worker took the job (Celery's own view of it)
        active = await asyncio.to_thread(control.inspect(timeout=0.5).active) or {}
        running_on = next((name for name, jobs in active.items() if jobs), None)
        if running_on:
            break
        await asyncio.sleep(0.1)
    assert running_on is not None, fleet.logs()
    victim, survivor = (first, second) if running_on.endswith("@w1") else (second, first)
    victim.kill9()

    replies = await answers(fake, [message], since, timeout=60, fleet=fleet)
    assert kind(replies[message["id"]]) == "prediction"
    assert [name.split(":")[0] for name in bot.jobs.answered_by] == [survivor.name]
    with fleet.client() as client:
        assert client.zcard(PENDING_KEY) == 0


async def test_a_redis_restart_mid_burst_loses_no_upload(
    fake_discord: FakeDiscord, start_bot: StartBot, fleet: Fleet
) -> None:
    fake = fake_discord
    people = users_and_channels(fake, 6, "restart")
    fleet.start_workers(2)
    await start_fleet_bot(
        start_bot, fleet, user_concurrency=8, user_rate=8, user_rate_window_s=600.0,
        queue_size=100, job_timeout_s=20,
    )
    clip = fake.add_attachment(encode(music_like(3.5, seed=5), "mp3"), "song.mp3", "audio/mpeg")
    since = len(fake.requests)
    sent = await send_all(fake, [(u, c, clip) for u, c in people for _ in range(8)])
    await asyncio.sleep(1.5)  # some answered, most queued or running
    answered_before = posted(fake, since)
    await asyncio.to_thread(fleet.redis.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(fleet.redis.start)
    replies = await answers(fake, sent, since, timeout=120, fleet=fleet)
    assert answered_before < len(sent), "the restart came mid-burst"
    kinds = Counter(kind(r) for r in replies.values())
    assert kinds == {"prediction": len(sent)}, kinds


async def test_a_bot_restart_with_jobs_queued_answers_every_message(
    fake_discord: FakeDiscord, start_bot: StartBot, fleet: Fleet
) -> None:
    """"Nothing lost": every message the bot accepted before it was asked to stop gets its
    answer. The jobs wait in Redis, not in the bot; the workers keep working while the bot
    stops, and the stopping bot answers what it accepted before it disconnects. The new bot
    finds the same model announced and reloads no worker."""
    fake = fake_discord
    people = users_and_channels(fake, 3, "botrestart")
    fleet.start_workers(2, loader="conftest:load_hanging_stub")
    bot = await start_fleet_bot(start_bot, fleet)
    slow = fake.add_attachment(wav_bytes(music_like(3.5, seed=4)), "slow.wav", "audio/wav")
    since = len(fake.requests)
    sent = await send_all(fake, [(u, c, slow) for u, c in people for _ in range(2)])
    with fleet.client() as client:
        deadline = time.monotonic() + 20
        while client.zcard(PENDING_KEY) < len(sent):  # all six queued in Redis
            assert time.monotonic() < deadline, fleet.logs()
            await asyncio.sleep(0.05)
    served_before = fleet.reports()
    assert posted(fake, since) < len(sent), "jobs are still queued when the bot stops"
    await bot.close()
    replies = await answers(fake, sent, since, timeout=5, fleet=fleet)  # answered while closing
    assert Counter(kind(r) for r in replies.values()) == {"prediction": len(sent)}

    bot = await start_fleet_bot(start_bot, fleet)
    assert fleet.reports() == served_before, "the same worker processes serve the same model"
    user, channel = people[0]
    since = len(fake.requests)
    clip = fake.add_attachment(wav_bytes(music_like(3.5, seed=8)), "after.wav", "audio/wav")
    [message] = await send_all(fake, [(user, channel, clip)])
    replies = await answers(fake, [message], since, timeout=30, fleet=fleet)
    assert kind(replies[message["id"]]) == "prediction"


def final_embed(fake: FakeDiscord, inter: dict[str, Any]) -> dict[str, Any] | None:
    for entry in reversed(fake.interaction_responses(inter["id"])):
        message = entry.get("message") or {}
        if entry["status"] == 200 and message.get("embeds"):
            return message["embeds"][0]
    return None


async def test_a_retrained_model_reaches_every_worker(
    fake_discord: FakeDiscord, start_bot: StartBot, fleet: Fleet
) -> None:
    fake = fake_discord
    people = users_and_channels(fake, 3, "retrain")
    fleet.start_workers(2)
    bot = await start_fleet_bot(
        start_bot, fleet, user_concurrency=6, user_rate=12, user_rate_window_s=600.0
    )
    clip = fake.add_attachment(encode(music_like(3.5, seed=9), "mp3"), "song.mp3", "audio/mpeg")
    since = len(fake.requests)
    sent = await send_all(fake, [(u, c, clip) for u, c in people for _ in range(2)])
    before = await answers(fake, sent, since, timeout=60, fleet=fleet)
    assert {version_of(r) for r in before.values()} == {"shipped-1"}

    admin = fake.add_user("admin", admin=True)
    inter = await fake.invoke_slash(admin, "retrain")
    await fake.wait_for(lambda f: final_embed(f, inter), timeout=90)
    new_version = bot.registry.current_dir().name
    assert new_version.startswith("stub-")
    # reload() returned only once every live worker process served it.
    reports = fleet.reports()
    assert {r["host"] for r in reports.values()} == {"w1", "w2"}
    assert {r["version"] for r in reports.values()} == {new_version}

    bot.jobs.answered_by.clear()
    since = len(fake.requests)
    sent = await send_all(fake, [(u, c, clip) for u, c in people for _ in range(4)])
    after = await answers(fake, sent, since, timeout=60, fleet=fleet)
    assert {version_of(r) for r in after.values()} == {new_version}
    assert {name.split(":")[0] for name in bot.jobs.answered_by} == {"w1", "w2"}
    # Each worker has the artifact from the store in Redis, in its own cache, not the bot's path.
    for worker in fleet.workers:
        cached = list((fleet.directory / f"cache-{worker.name}").glob("*/metadata.json"))
        assert any(new_version in path.read_text() for path in cached)


async def test_errors_timeouts_the_fleet_wide_bound_and_a_refused_model(
    fleet: Fleet, tmp_path: Path
) -> None:
    """Two runners (two bots) on one queue and one worker: what a user is told comes back as
    the same error class and sentence; the bound holds across both runners; a model a worker
    cannot load is refused and the previous one keeps serving on every worker."""
    fleet.start_workers(1, loader="conftest:load_hanging_stub", job_timeout_s=5)
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped-1", 0.5)
    runners = [
        CeleryJobs(shipped, queue_url=fleet.redis.url, max_pending=2, job_timeout_s=5,
                   start_timeout_s=30)
        for _ in range(2)
    ]
    a, b = runners
    try:
        for jobs in runners:
            await jobs.start()
        await asyncio.wait_for(asyncio.gather(a.ready(), b.ready()), 60)

        garbage = b"this is not audio" * 50
        with pytest.raises(GenreError) as local:
            decode(garbage, Limits())
        with pytest.raises(NotAudioError) as remote:
            await a.classify(garbage, "notes.mp3")
        assert type(remote.value) is type(local.value)
        assert str(remote.value) == str(local.value)

        slow = wav_bytes(music_like(3.5, seed=2))
        first = asyncio.ensure_future(a.classify(slow, "slow.wav"))
        second = asyncio.ensure_future(b.classify(slow, "slow.wav"))
        with fleet.client() as client:
            while client.zcard(PENDING_KEY) < 2:
                await asyncio.sleep(0.02)
        assert b.pending == 1, "b alone would admit one more"
        with pytest.raises(BusyError):
            await b.classify(slow, "slow.wav")  # the fleet holds max_pending=2 already
        assert [p.model_version for p in await asyncio.gather(first, second)] == ["shipped-1"] * 2

        started = time.monotonic()
        with pytest.raises(JobTimeoutError, match="longer than 5 s"):
            await a.classify(slow, "hang.wav")
        assert time.monotonic() - started < 12

        broken = make_stub_artifact(tmp_path / "broken", "broken-2", 0.9)
        (broken / "model.keras").write_bytes(STUB_WEIGHTS[:4])
        with pytest.raises(ModelError, match="could not load model broken-2"):
            await a.reload(broken)
        assert {r["version"] for r in fleet.reports().values()} == {"shipped-1"}
        prediction = await b.classify(wav_bytes(music_like(3.5)), "after.wav")
        assert prediction.model_version == "shipped-1"
        with fleet.client() as client:
            assert store.announced(client)["version"] == "shipped-1"
    finally:
        for jobs in runners:
            await jobs.close()


async def test_a_clip_that_kills_its_worker_is_run_three_times_then_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A job whose pool process dies is run again (``task_reject_on_worker_lost``), but a clip
    that kills every worker it reaches is answered "the worker stopped" after three runs, and
    the worker serves the next clip."""
    [worker] = fleet.start_workers(1, loader="conftest:load_crashing_stub")
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped-1", 0.5)
    jobs = CeleryJobs(shipped, queue_url=fleet.redis.url, job_timeout_s=20, start_timeout_s=30)
    try:
        await jobs.start()
        await asyncio.wait_for(jobs.ready(), 60)
        clip = wav_bytes(music_like(3.5, seed=6))
        with pytest.raises(WorkerCrashedError):
            await asyncio.wait_for(jobs.classify(clip, "crash.wav"), 90)
        log = worker.log.read_text(errors="replace")
        assert log.count("exited with 'exitcode 70'") == 3, log[-3000:]
        prediction = await asyncio.wait_for(jobs.classify(clip, "fine.wav"), 60)
        assert prediction.model_version == "shipped-1"
    finally:
        await jobs.close()


async def test_a_bot_started_before_its_workers_waits_for_them(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A fleet may start its bots first: clips meanwhile are told plainly that no worker runs,
    and once a worker comes up the same runner serves without a restart."""
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped-1", 0.5)
    jobs = CeleryJobs(shipped, queue_url=fleet.redis.url, wait_timeout_s=2, start_timeout_s=5)
    try:
        await jobs.start()
        clip = wav_bytes(music_like(3.5, seed=1))
        with pytest.raises(GenreError, match="No analysis worker is running right now"):
            await jobs.classify(clip, "early.wav")
        await asyncio.sleep(4)  # past start_timeout_s: still waiting, not failed
        assert not jobs.is_ready
        fleet.start_workers(1)
        await asyncio.wait_for(jobs.ready(), 60)
        prediction = await jobs.classify(clip, "later.wav")
        assert prediction.model_version == "shipped-1"
    finally:
        await jobs.close()


async def test_a_job_lost_with_redis_is_sent_again(fleet: Fleet, tmp_path: Path) -> None:
    """Kombu's Redis transport takes a job off the queue, then records it as held: Redis stopping
    between the two loses the job. Here the job is removed from the queue by hand before a Redis
    restart, as that race would; the runner finds it nowhere and sends it again."""
    fleet.start_workers(1, loader="conftest:load_hanging_stub")
    shipped = make_stub_artifact(tmp_path / "shipped", "shipped-1", 0.5)
    jobs = CeleryJobs(shipped, queue_url=fleet.redis.url, job_timeout_s=20, start_timeout_s=30)
    try:
        await jobs.start()
        await asyncio.wait_for(jobs.ready(), 60)
        clip = wav_bytes(music_like(3.5, seed=11))
        busy = asyncio.ensure_future(jobs.classify(clip, "slow.wav"))  # holds the one worker
        queued = asyncio.ensure_future(jobs.classify(clip, "queued.wav"))
        with fleet.client() as client:
            while client.llen("genre") < 1:
                await asyncio.sleep(0.02)
            [message] = client.lrange("genre", 0, -1)
            client.lrem("genre", 1, message)  # lost, as if taken by a worker that never held it
        await asyncio.to_thread(fleet.redis.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(fleet.redis.start)
        predictions = await asyncio.wait_for(asyncio.gather(busy, queued), 60)
        assert [p.model_version for p in predictions] == ["shipped-1"] * 2
    finally:
        await jobs.close()
