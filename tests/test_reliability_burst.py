"""Bursts: 200 uploads from 20 users at once, through the fake Discord.

The queue stays bounded, each user is held to their concurrency and rate with a friendly
message, every message gets exactly one reply (every accepted job answered once), and memory does
not grow from one burst to the next.

Each user posts in their own channel. In one channel, discord.py's rate limiting (which the fake
announces like Discord: 5 requests per bucket, per channel) would pace 200 replies to minutes,
which is right in production and not what this test is about.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from typing import Any

import pytest
from conftest import StartBot, assert_clean, music_like, replies_to
from fake_discord import FakeDiscord
from synth import encode

from bot.client import GenreBot
from bot.limits import CooldownError, UserBusyError, UserLimiter
from genre_core.jobs import BusyError

USERS = 20
PER_USER = 10
USER_CONCURRENCY = 2
USER_RATE = 4
QUEUE_SIZE = 6  # the stand-in runner has 2 threads: 8 jobs accepted at once
RSS_GROWTH_BOUND = 64 * 1024 * 1024  # generous: a leak of 200 clips' bytes would pass 10 MB

PREDICTION = re.compile(r"^(🎵|🤔|🔇)")
BUSY = "I'm busy with other clips right now"
CONCURRENCY = f"You already have {USER_CONCURRENCY} requests being analysed"
MESSAGES_ROUTE = re.compile(r"/channels/\d+/messages")
COOLDOWN = re.compile(r"^Slow down a little: you can send another clip in \d+ s")


def rss_bytes() -> int:
    """Resident memory of this process (the bot runs in it), from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class Accounting:
    """Wraps the bot's job runner: how many jobs it accepted and refused, and the most it ever
    held at once."""

    def __init__(self, bot: GenreBot) -> None:
        self.jobs = bot.jobs
        self.inner = bot.jobs.classify
        self.accepted = 0
        self.refused = 0
        self.most_pending = 0
        bot.jobs.classify = self.classify  # type: ignore[method-assign]

    async def classify(self, data: bytes, filename: str | None) -> Any:
        task = asyncio.ensure_future(self.inner(data, filename))
        await asyncio.sleep(0)  # let it be admitted (or refused) before looking
        self.most_pending = max(self.most_pending, self.jobs.pending)  # type: ignore[attr-defined]
        try:
            result = await task
        except BusyError:
            self.refused += 1
            raise
        self.accepted += 1
        return result


def reply_kind(reply: dict[str, Any]) -> str:
    if reply["embeds"]:
        embed = reply["embeds"][0]
        if PREDICTION.match(embed.get("title", "")):
            return "prediction"
        assert BUSY in embed.get("description", ""), embed
        return "busy"
    if reply["content"].startswith(CONCURRENCY):
        return "concurrency"
    assert COOLDOWN.match(reply["content"]), reply["content"]
    return "cooldown"


def posted(fake: FakeDiscord, since: int) -> int:
    """Messages the bot posted since request number ``since``."""
    return sum(
        1
        for r in fake.requests[since:]
        if r.method == "POST" and r.status == 200 and MESSAGES_ROUTE.fullmatch(r.path)
    )


async def burst(
    fake: FakeDiscord, attachment: dict[str, Any], channels: list[int], round_: int
) -> dict[str, str]:
    """200 messages at once from 20 new users; returns each message's one reply kind."""
    users = [fake.add_user(f"r{round_}u{i}") for i in range(USERS)]
    since = len(fake.requests)
    sent = await asyncio.gather(
        *(
            fake.send_message(user, "", [attachment], channel_id=channel)
            for user, channel in zip(users, channels, strict=True)
            for _ in range(PER_USER)
        )
    )
    authors = {m["id"]: int(m["author"]["id"]) for m in sent}
    total = USERS * PER_USER
    # Counting the fake's request records is cheap; copying every message on each change is not.
    await fake.wait_for(lambda f: posted(f, since) >= total, timeout=120)
    await asyncio.sleep(0.5)  # a duplicate answer would show up now
    replies: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in (m for channel in channels for m in fake.messages(channel)):
        reference = (message.get("message_reference") or {}).get("message_id")
        if reference in authors:
            replies[reference].append(message)
    assert set(replies) == set(authors), "every message is answered"
    assert all(len(r) == 1 for r in replies.values()), "and answered once"
    kinds = {m: reply_kind(r[0]) for m, r in replies.items()}
    by_user: dict[int, Counter[str]] = defaultdict(Counter)
    for message_id, kind in kinds.items():
        by_user[authors[message_id]][kind] += 1
    for counts in by_user.values():
        # Only admitted requests reach the queue, and a user is admitted at most USER_RATE times.
        assert counts["prediction"] + counts["busy"] <= USER_RATE, counts
    return kinds


async def test_200_uploads_from_20_users_at_once(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    channels = [fake.add_channel(f"room-{i}") for i in range(USERS)]  # before the bot connects
    bot = await start_bot(
        user_concurrency=USER_CONCURRENCY,
        user_rate=USER_RATE,
        user_rate_window_s=600.0,  # nobody earns a new token during the test
        queue_size=QUEUE_SIZE,
    )
    accounting = Accounting(bot)
    clip = encode(music_like(3.5, seed=7), "mp3")
    attachment = fake.add_attachment(clip, "burst.mp3", "audio/mpeg")  # one file, shared

    first = await burst(fake, attachment, channels, 1)  # warms every cache and pool up
    rss_after_first = rss_bytes()
    second = await burst(fake, attachment, channels, 2)
    rss_after_second = rss_bytes()
    # After its reply a request still takes its hourglass off; then nothing is left in flight.
    await fake.wait_for(
        lambda f: bot.inflight.count == 0 and not any(f.reactions.current.values()), timeout=30
    )

    for kinds in (first, second):
        tally = Counter(kinds.values())
        assert tally["prediction"] > 0
        assert tally["busy"] > 0, "the queue is bounded: some accepted requests were told so"
        assert tally["concurrency"] + tally["cooldown"] > 0, "per-user limits were applied"
    # Every job the runner accepted was answered with a prediction, once.
    predictions = sum(Counter(k.values())["prediction"] for k in (first, second))
    assert accounting.accepted == predictions
    assert accounting.refused == sum(Counter(k.values())["busy"] for k in (first, second))
    assert accounting.most_pending <= 2 + QUEUE_SIZE
    # Nothing left behind: no job, no request in flight, no user held.
    cog = bot.get_cog("Classify")
    assert bot.jobs.pending == 0  # type: ignore[attr-defined]
    assert bot.inflight.count == 0
    assert cog is not None and not cog.limiter.active  # type: ignore[attr-defined]
    assert cog.limiter.tracked <= 2 * USERS  # type: ignore[attr-defined]
    growth = rss_after_second - rss_after_first
    assert growth < RSS_GROWTH_BOUND, f"RSS grew {growth / 2**20:.0f} MB in the second burst"
    assert_clean(fake)
    # The hourglass came off every message it went on.
    assert not any(fake.reactions.current.values())


async def test_a_user_over_their_rate_is_told_when_to_come_back(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    bot = await start_bot(user_rate=2, user_rate_window_s=60.0)  # two, then one per 30 s
    cog = bot.get_cog("Classify")
    assert cog is not None
    # Time moves when told, from a whole number: from time.monotonic()'s value, 29 s + 1 s could
    # add up to 29.999999 s and leave the refilled token a hair short of one.
    now = [1000.0]
    cog.limiter.clock = lambda: now[0]  # type: ignore[attr-defined]
    user, other = fake.add_user("eager"), fake.add_user("other")
    clip = fake.add_attachment(encode(music_like(3.5), "mp3"), "again.mp3", "audio/mpeg")

    async def answer(author: int) -> dict[str, Any]:
        message = await fake.send_message(author, "", [clip])
        [reply] = await fake.wait_for(lambda f: replies_to(f, message))
        return reply

    assert reply_kind(await answer(user)) == "prediction"
    assert reply_kind(await answer(user)) == "prediction"
    refused = await answer(user)
    assert reply_kind(refused) == "cooldown"
    assert "in 30 s (up to 2 every 60 s)" in refused["content"]
    assert reply_kind(await answer(other)) == "prediction"  # one user's limit is theirs alone
    now[0] += 29.0
    assert reply_kind(await answer(user)) == "cooldown"
    now[0] += 1.0
    assert reply_kind(await answer(user)) == "prediction"  # a token came back


def test_the_limiter_refills_and_forgets_idle_users() -> None:
    now = [0.0]
    limiter = UserLimiter(concurrency=1, rate=3, window_s=30.0, clock=lambda: now[0])
    for _ in range(3):
        with limiter.admit(1), pytest.raises(UserBusyError):  # one at a time
            limiter.admit(1).__enter__()
    with pytest.raises(CooldownError) as cooldown:
        limiter.admit(1).__enter__()
    assert cooldown.value.retry_after_s == pytest.approx(10.0)
    assert "in 10 s" in str(cooldown.value)
    now[0] = 10.0
    with limiter.admit(1):
        pass
    # 5,000 users pass by once; a window later they are forgotten.
    for user in range(2, 5002):
        with limiter.admit(user):
            pass
    assert limiter.tracked == 5001
    now[0] = 100.0
    with limiter.admit(9999):
        pass
    assert limiter.tracked == 1
    assert not limiter.active
