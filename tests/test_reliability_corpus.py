"""A corpus of bad and odd inputs, each sent through the real bot and the fake Discord.

Every input is generated here (ffmpeg, numpy, a few bytes by hand): no binary fixtures. One bot
serves the whole module (a module-scoped event loop), as a public bot serves one stream of users:
each case gets a clear, specific answer, and after each one the bot still answers a good clip.
Decoding is the real ``genre_core.audio.decode``; the model is the conftest stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import logging
import re
import struct
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
import soundfile
from aiohttp import web
from conftest import assert_clean, make_stub_artifact, replies_to, thread_stub_jobs
from fake_discord import FakeDiscord, SpecUnavailable, cdn, running
from synth import encode, music_like, tone, wav_bytes

from bot.client import GenreBot
from bot.download import url_session
from bot.settings import BotSettings

pytestmark = pytest.mark.asyncio(loop_scope="module")

CAP = 8 * 1024 * 1024  # the corpus bot's size cap
MB = 1024 * 1024
DOWNLOAD_TIMEOUT_S = 4.0
PREDICTION_TITLES = ("🎵", "🤔", "🔇")
FOOTER = re.compile(r"Analysed ([\d.]+) s of ([\d.]+) s")


# --- generated inputs ---------------------------------------------------------------------------


def ffmpeg_file(args: list[str], suffix: str) -> bytes:
    """Run ffmpeg writing a file (mp4 needs a seekable output) and return its bytes."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"out{suffix}"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(out)], check=True, timeout=120
        )
        return out.read_bytes()


def soundfile_wav(y: np.ndarray, sr: int, subtype: str, channels: int = 1) -> bytes:
    """WAV in a sample format libsndfile writes (``PCM_U8``, ``FLOAT``...), ``channels`` wide."""
    data = np.repeat(y[:, None], channels, axis=1) if channels > 1 else y
    buffer = io.BytesIO()
    soundfile.write(buffer, data, sr, subtype=subtype, format="WAV")
    return buffer.getvalue()


def png_image() -> bytes:
    """A real 16x16 RGB PNG."""
    size = 16
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 16, y * 16, 99)) for x in range(size)) for y in range(size)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@cache
def song(fmt: str) -> bytes:
    """Eight seconds of music-like audio in ``fmt``."""
    return encode(music_like(8.0), fmt)


def truncated(fmt: str, fraction: float | None = None, keep: int | None = None) -> bytes:
    data = song(fmt)
    return data[:keep] if keep is not None else data[: int(len(data) * (fraction or 1.0))]


@cache
def good_wav() -> bytes:
    return wav_bytes(music_like(4.0))


def wav_claiming_gigabytes() -> bytes:
    """Four seconds of audio whose RIFF and data sizes claim about 4 GB."""
    data = bytearray(good_wav())
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data[40:44] = struct.pack("<I", 0xFFFFFFD0)  # the data chunk's size (after a 36-byte header)
    return bytes(data)


def three_hours() -> bytes:
    """A real three-hour FLAC: ten seconds of tone, then silence. Silence in long FLAC frames
    costs a few bytes per frame, so the file is ~50 KB and takes seconds to make."""
    return ffmpeg_file(
        [
            "-f", "lavfi", "-i", "sine=f=440:d=10:r=8000",
            "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
            "-filter_complex", "[0][1]concat=n=2:v=0:a=1[a]", "-map", "[a]",
            "-t", "10800", "-c:a", "flac", "-sample_fmt", "s16", "-frame_size", "65535",
        ],
        ".flac",
    )  # fmt: skip


def video_without_audio() -> bytes:
    return ffmpeg_file(
        ["-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=2", "-c:v", "mpeg4"], ".mp4"
    )


def mp4_with_audio() -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        wav = Path(folder) / "a.wav"
        wav.write_bytes(good_wav())
        return ffmpeg_file(
            [
                "-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=4", "-i", str(wav),
                "-c:v", "mpeg4", "-c:a", "aac", "-shortest",
            ],
            ".mp4",
        )  # fmt: skip


def zip_of_a_song() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("song.wav", good_wav())
    return buffer.getvalue()


def float_wav_with_nans() -> bytes:
    y = music_like(4.0)
    y[1000:3000] = np.nan
    return soundfile_wav(y, 22_050, "FLOAT")


def mp3_with_a_huge_tag() -> bytes:
    """An mp3 behind a 3 MB ID3v2 tag (cover art is often this big)."""
    audio = encode(music_like(5.0), "mp3", extra=["-write_id3v2", "0", "-write_xing", "0"])
    body = b"PRIV" + struct.pack(">I", 3_000_000) + b"\0\0" + b"x\0" + bytes(2_999_998)
    size = len(body)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + body + audio


def mp3_with_garbage_inside() -> bytes:
    data = song("mp3")
    noise = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    return data[:5000] + noise + data[25_000:]


MIDI = (
    b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60"
    b"MTrk\x00\x00\x00\x0c\x00\x90\x3c\x40\x60\x80\x3c\x40\x00\xff\x2f\x00"
)
ELF = b"\x7fELF\x02\x01\x01" + bytes(4000)
HTML = b"<!doctype html><html><body><h1>My mixtape</h1></body></html>\n" * 20


# --- the bot, the fake, and how a case is asked ------------------------------------------------


@dataclass
class Env:
    fake: FakeDiscord
    bot: GenreBot
    logs: list[str] = field(default_factory=list)
    users: int = 0

    def user(self) -> int:
        """A fresh member: per-user limits never interfere between cases."""
        self.users += 1
        return self.fake.add_user(f"user{self.users}")


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(self.format(record))


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """One bot for the whole corpus, with every log record captured at DEBUG."""
    fake = FakeDiscord(heartbeat_interval_ms=1000)
    try:
        await fake.start()
    except SpecUnavailable as exc:
        pytest.skip(f"Discord OpenAPI spec not found ({exc}); ../shared/data absent")
    folder = tmp_path_factory.mktemp("corpus")
    settings = BotSettings(  # type: ignore[call-arg]
        _env_file=None,
        token=fake.token,
        api_base=fake.api_base,
        gateway_url=fake.gateway_url,
        model_dir=make_stub_artifact(folder / "models" / "genre", "shipped-1", 0.5),
        state_dir=folder / "var",
        data_dir=folder,
        allow_private_urls=True,  # the fake's CDN is on 127.0.0.1; see production_url_policy
        max_bytes=CAP,
        download_timeout_s=DOWNLOAD_TIMEOUT_S,
    )
    environment = Env(fake, GenreBot(settings, jobs_factory=thread_stub_jobs))
    handler = _Capture(environment.logs)
    root, discord_logger = logging.getLogger(), logging.getLogger("discord")
    levels = root.level, discord_logger.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    discord_logger.setLevel(logging.DEBUG)
    try:
        async with running(environment.bot, fake, timeout=120):
            yield environment
    finally:
        root.removeHandler(handler)
        root.setLevel(levels[0])
        discord_logger.setLevel(levels[1])
        await fake.stop()


@dataclass
class Answer:
    """What the bot answered: a prediction or an error, as the user sees it."""

    kind: str  # "prediction" or "error"
    text: str  # an error's message; a prediction's title and footer
    embeds: list[dict[str, Any]] = field(default_factory=list)
    message: dict[str, Any] | None = None

    @property
    def durations(self) -> tuple[float, float]:
        """(analysed, total) seconds from a prediction's footer."""
        found = FOOTER.search(self.embeds[0]["footer"]["text"])
        assert found, self.embeds[0]
        return float(found.group(1)), float(found.group(2))


def embed_answer(embed: dict[str, Any]) -> Answer:
    title = embed.get("title", "")
    if title.startswith(PREDICTION_TITLES):
        return Answer("prediction", f"{title} | {embed['footer']['text']}", [embed])
    assert title.startswith("⚠️"), embed
    return Answer("error", embed.get("description", ""), [embed])


async def drop(
    env: Env, data: bytes, name: str, content_type: str | None, *, size: int | None = None
) -> Answer:
    """A member drops one file in the channel; the bot's one reply."""
    attachment = env.fake.add_attachment(data, name, content_type, size=size)
    message = await env.fake.send_message(env.user(), "", [attachment])
    [reply] = await env.fake.wait_for(lambda f: replies_to(f, message), timeout=60)
    [embed] = reply["embeds"]
    answer = embed_answer(embed)
    answer.message = reply
    return answer


def slash_answer(fake: FakeDiscord, inter: dict[str, Any]) -> Answer | None:
    for entry in fake.interaction_responses(inter["id"]):
        message = entry.get("message") or {}
        if entry["status"] not in (200, 204):
            continue
        if entry["ephemeral"] and (entry["kind"] == "followup" or entry["type"] == 4):
            return Answer("error", message.get("content", ""), message=message)
        if entry["kind"] == "followup" and message.get("embeds"):
            answer = embed_answer(message["embeds"][0])
            answer.message = message
            return answer
    return None


async def slash(
    env: Env, *, options: dict[str, Any] | None = None, file: dict[str, Any] | None = None
) -> Answer:
    """A member runs ``/genre``; the bot's answer (ephemeral for errors)."""
    attachments = {"file": file} if file is not None else None
    inter = await env.fake.invoke_slash(env.user(), "genre", options, attachments)
    return await env.fake.wait_for(lambda f: slash_answer(f, inter), timeout=60)


async def still_answers(env: Env) -> None:
    """The next request, a good clip, is answered with a prediction."""
    answer = await drop(env, good_wav(), "canary.wav", "audio/wav")
    assert answer.kind == "prediction", answer.text
    assert answer.durations == (4.0, 4.0)


# --- the cases ----------------------------------------------------------------------------------

Asker = Callable[[Env], Awaitable[Answer]]


@dataclass(frozen=True)
class Case:
    """One input: how it is sent, and what the answer must say."""

    id: str
    ask: Asker
    #: A regular expression the answer's text must match (errors); None: a prediction.
    says: str | None = None
    check: Callable[[Env, Answer], None] | None = None
    xfail: str | None = None


def dropped(
    make: Callable[[], bytes], name: str, content_type: str | None, size: int | None = None
) -> Asker:
    async def ask(env: Env) -> Answer:
        return await drop(env, make(), name, content_type, size=size)

    return ask


def slashed_file(make: Callable[[], bytes], name: str, content_type: str | None) -> Asker:
    async def ask(env: Env) -> Answer:
        return await slash(env, file=env.fake.add_attachment(make(), name, content_type))

    return ask


def linked(route: Callable[[FakeDiscord], str]) -> Asker:
    async def ask(env: Env) -> Answer:
        return await slash(env, options={"url": route(env.fake)})

    return ask


def analysed_at_most(seconds: float) -> Callable[[Env, Answer], None]:
    """The surviving part was analysed: less than the whole song."""

    def check(env: Env, answer: Answer) -> None:
        analysed, total = answer.durations
        assert 3.0 <= total <= seconds and analysed == total

    return check


def analysed_exactly(seconds: float) -> Callable[[Env, Answer], None]:
    def check(env: Env, answer: Answer) -> None:
        assert answer.durations == pytest.approx((seconds, seconds), abs=0.06)

    return check


def never_downloaded(name: str) -> Callable[[Env, Answer], None]:
    def check(env: Env, answer: Answer) -> None:
        assert not any(d.path.endswith(name) for d in env.fake.downloads)

    return check


def stopped_at_the_cap(name: str) -> Callable[[Env, Answer], None]:
    def check(env: Env, answer: Answer) -> None:
        [download] = [d for d in env.fake.downloads if d.path.endswith(name)]
        assert not download.complete
        assert download.bytes_sent < CAP + 8 * MB  # socket buffers' slack, not 64 MB

    return check


def odd_name_shown_safely(env: Env, answer: Answer) -> None:
    assert answer.message is not None
    assert "@everyone" in answer.embeds[0]["footer"]["text"]
    assert answer.message["mentions"] == [] and not answer.message["mention_everyone"]


def long_name_clipped(env: Env, answer: Answer) -> None:
    footer_name = answer.embeds[0]["footer"]["text"].split(" · ")[0]
    assert len(footer_name) == 100 and footer_name.endswith("…")


def gzip_bomb(fake: FakeDiscord) -> str:
    """100 MB of zeros in a 100-KB gzip body: the cap must count what is unpacked."""
    body = gzip.compress(bytes(100 * MB), compresslevel=6)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, headers={"Content-Type": "audio/mpeg", "Content-Encoding": "gzip"}
        )

    return fake.cdn_route("/links/bomb.mp3", handler)


async def drop_streamed(env: Env, name: str, handler: cdn.Handler) -> Answer:
    """Drop an attachment whose CDN answer is ``handler`` (it claims 1000 bytes)."""
    attachment = env.fake.add_attachment(b"x", name, "audio/mpeg", size=1000)
    env.fake.cdn_route(attachment["url"], handler)
    message = await env.fake.send_message(env.user(), "", [attachment])
    [reply] = await env.fake.wait_for(lambda f: replies_to(f, message), timeout=60)
    return embed_answer(reply["embeds"][0])


AUDIO_FOLLOWS_NO_FORMAT = "doesn't look like an audio file"
DAMAGED = "(damaged|incomplete)"

CASES = [
    Case("zero-bytes", dropped(lambda: b"", "empty.wav", "audio/wav"), r"empty \(0 bytes\)"),
    Case(
        "text-renamed-mp3",
        dropped(lambda: b"Dear diary, today I renamed a text file. " * 40, "diary.mp3", None),
        AUDIO_FOLLOWS_NO_FORMAT,
    ),
    Case("png-renamed-wav", dropped(png_image, "cat.wav", "audio/wav"), r"is an image, not audio"),
    Case(
        "mp3-cut-after-its-first-frames",
        dropped(lambda: truncated("mp3", keep=400), "cut.mp3", "audio/mpeg"),
        r"only 0\.\d s long; at least 3 s",
    ),
    Case(
        "mp3-cut-in-the-middle",
        dropped(lambda: truncated("mp3", 0.6), "half.mp3", "audio/mpeg"),
        check=analysed_at_most(7.0),
    ),
    Case(
        "ogg-cut-inside-its-header",
        dropped(lambda: truncated("ogg", keep=300), "cut.ogg", "audio/ogg"),
        DAMAGED,
    ),
    Case(
        "ogg-cut-in-the-middle",
        dropped(lambda: truncated("ogg", 0.6), "half.ogg", "audio/ogg"),
        check=analysed_at_most(7.0),
    ),
    Case(
        "flac-cut-inside-its-header",
        dropped(lambda: truncated("flac", keep=100), "cut.flac", "audio/flac"),
        DAMAGED,
    ),
    Case(
        "flac-cut-in-the-middle",
        dropped(lambda: truncated("flac", 0.6), "half.flac", "audio/flac"),
        check=analysed_at_most(7.0),
    ),
    Case(
        "wav-header-claiming-4-GB",
        dropped(wav_claiming_gigabytes, "liar.wav", "audio/wav"),
        check=analysed_exactly(4.0),
    ),
    Case(
        "wav-header-without-samples",
        dropped(lambda: good_wav()[:44], "header.wav", "audio/wav"),
        r"audio track is empty",
    ),
    Case(
        "0.2-s-blip",
        dropped(lambda: wav_bytes(tone(0.2)), "blip.wav", "audio/wav"),
        r"only 0\.2 s long",
    ),
    Case(
        "10-s-digital-silence",
        dropped(lambda: wav_bytes(np.zeros(22_050 * 10, np.float32)), "quiet.wav", "audio/wav"),
        r"silent",
    ),
    Case(
        "3-hour-file",
        dropped(three_hours, "mix.flac", "audio/flac"),
        r"3 h 00 min long; the limit is 20 min",
    ),
    Case(
        "96-kHz-8-channel-wav",
        dropped(
            lambda: soundfile_wav(music_like(3.5, sr=96_000), 96_000, "PCM_16", channels=8),
            "surround.wav",
            "audio/wav",
        ),
        check=analysed_exactly(3.5),
    ),
    Case(
        "8-bit-wav",
        dropped(lambda: soundfile_wav(music_like(4.0), 22_050, "PCM_U8"), "u8.wav", "audio/wav"),
        check=analysed_exactly(4.0),
    ),
    Case(
        "32-bit-float-wav",
        dropped(lambda: soundfile_wav(music_like(4.0), 22_050, "FLOAT"), "f32.wav", "audio/wav"),
        check=analysed_exactly(4.0),
    ),
    Case(
        "float-wav-with-NaN-samples",
        dropped(float_wav_with_nans, "nan.wav", "audio/wav"),
        DAMAGED,
    ),
    Case(
        "video-without-audio",
        dropped(video_without_audio, "clip.mp4", "video/mp4"),
        r"video without a sound track",
    ),
    Case(
        "mp4-with-audio",
        dropped(mp4_with_audio, "clip-with-sound.mp4", "video/mp4"),
        check=analysed_at_most(4.1),
    ),
    Case(
        "zip-archive-via-slash",
        slashed_file(zip_of_a_song, "songs.zip", "application/zip"),
        r"`songs\.zip` is an archive, not audio",
        check=never_downloaded("songs.zip"),
    ),
    Case(
        "zip-renamed-mp3",
        dropped(zip_of_a_song, "songs.mp3", "audio/mpeg"),
        AUDIO_FOLLOWS_NO_FORMAT,
    ),
    Case("png-via-slash", slashed_file(png_image, "cat.png", "image/png"), r"is an image"),
    Case("midi-file", dropped(lambda: MIDI, "tune.mid", "audio/midi"), AUDIO_FOLLOWS_NO_FORMAT),
    Case("program-renamed-wav", dropped(lambda: ELF, "setup.wav", None), AUDIO_FOLLOWS_NO_FORMAT),
    Case("html-renamed-ogg", dropped(lambda: HTML, "page.ogg", None), AUDIO_FOLLOWS_NO_FORMAT),
    Case(
        "mp3-with-garbage-inside",
        dropped(mp3_with_garbage_inside, "glitchy.mp3", "audio/mpeg"),
        check=analysed_at_most(8.1),
    ),
    Case(
        "mp3-behind-a-3-MB-tag",
        dropped(mp3_with_a_huge_tag, "tagged.mp3", "audio/mpeg"),
        check=analysed_at_most(5.2),
    ),
    Case(
        "markdown-and-mentions-in-the-name",
        dropped(good_wav, "@everyone **LOUD** `x` <@1> 🎵 ünïcode.wav", "audio/wav"),
        check=odd_name_shown_safely,
    ),
    Case(
        "300-character-name",
        dropped(good_wav, "a" * 296 + ".wav", "audio/wav"),
        check=long_name_clipped,
    ),
    Case(
        "attachment-over-the-cap",
        dropped(lambda: bytes(1000), "huge.wav", "audio/wav", size=12 * MB),
        r"`huge\.wav` is 12\.0 MB; I can analyse files up to 8\.0 MB",
        check=never_downloaded("huge.wav"),
    ),
    Case(
        "attachment-whose-size-lies",
        lambda env: drop_streamed(env, "liar.mp3", cdn.stream_bytes(64 * MB, declared_length=None)),
        r"larger than the 8\.0 MB",
        check=stopped_at_the_cap("liar.mp3"),
    ),
    Case(
        "attachment-gone-from-the-cdn",
        lambda env: drop_streamed(env, "gone.mp3", cdn.status(404)),
        r"would not give me the file \(HTTP 404\)",
    ),
    Case(
        "attachment-trickling-from-the-cdn",
        lambda env: drop_streamed(env, "slow.mp3", cdn.stream_bytes(MB, delay_s=0.5)),
        r"took too long",
    ),
    Case("slash-with-nothing", lambda env: slash(env), r"Attach one audio file or give one link"),
    Case(
        "slash-with-file-and-link",
        lambda env: slash(
            env,
            options={"url": "https://example.com/a.mp3"},
            file=env.fake.add_attachment(good_wav(), "a.wav", "audio/wav"),
        ),
        r"Attach one audio file or give one link \(not both\)",
    ),
    Case(
        "link-to-a-web-page",
        linked(lambda f: f.cdn_route("/links/page", cdn.serve_bytes(HTML, "text/html"))),
        r"leads to a web page, not an audio file",
    ),
    Case(
        "link-in-a-redirect-loop",
        linked(lambda f: f.cdn_route("/links/loop", cdn.redirect("/links/loop"))),
        r"redirects more than 3 times",
    ),
    Case(
        "link-to-a-slow-server",
        linked(lambda f: f.cdn_route("/links/slow.mp3", cdn.stream_bytes(MB, delay_s=0.5))),
        r"took too long",
    ),
    Case(
        "link-answering-404",
        linked(lambda f: f.cdn_route("/links/missing.mp3", cdn.status(404))),
        r"answered HTTP 404",
    ),
    Case("link-to-a-gzip-bomb", linked(gzip_bomb), r"larger than the 8\.0 MB"),
    Case(
        "link-to-a-local-file",
        linked(lambda f: "file:///etc/passwd"),
        r"Only http:// and https:// links",
    ),
    Case("text-that-is-not-a-link", linked(lambda f: "my favourite song"), r"Only http://"),
    Case(
        "link-to-a-good-mp3",
        linked(
            lambda f: f.cdn_route("/links/song.mp3", cdn.serve_bytes(song("mp3"), "audio/mpeg"))
        ),
        check=analysed_at_most(8.1),
    ),
]


def params() -> Iterator[Any]:
    for case in CASES:
        marks = [pytest.mark.xfail(reason=case.xfail, strict=True)] if case.xfail else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", list(params()))
async def test_each_input_gets_a_clear_answer_and_the_bot_carries_on(env: Env, case: Case) -> None:
    answer = await case.ask(env)
    try:
        if case.says is None:
            assert answer.kind == "prediction", answer.text
        else:
            assert answer.kind == "error", answer.text
            assert re.search(case.says, answer.text), answer.text
            assert "Something went wrong" not in answer.text
        if case.check is not None:
            case.check(env, answer)
    finally:
        await still_answers(env)


async def test_ten_files_in_one_message_get_one_reply_in_order(env: Env) -> None:
    files = [
        (good_wav(), "one.wav", "audio/wav"),
        (b"", "two.wav", "audio/wav"),
        (png_image(), "three.wav", "audio/wav"),
        (wav_bytes(tone(0.2)), "four.wav", "audio/wav"),
        (song("mp3"), "five.mp3", "audio/mpeg"),
        (b"plain words " * 30, "six.mp3", None),
        (wav_bytes(np.zeros(22_050 * 4, np.float32)), "seven.wav", "audio/wav"),
        (song("ogg"), "eight.ogg", "audio/ogg"),
        (video_without_audio(), "nine.mp4", "video/mp4"),
        (song("flac"), "ten.flac", "audio/flac"),
    ]
    attachments = [env.fake.add_attachment(*f) for f in files]
    message = await env.fake.send_message(env.user(), "", attachments)
    [reply] = await env.fake.wait_for(lambda f: replies_to(f, message), timeout=60)
    answers = [embed_answer(e) for e in reply["embeds"]]
    expected = [
        None,
        r"empty",
        r"an image",
        r"only 0\.2 s",
        None,
        AUDIO_FOLLOWS_NO_FORMAT,
        r"silent",
        None,
        r"video without a sound track",
        None,
    ]
    assert len(answers) == 10
    for (_, name, _), answer, says in zip(files, answers, expected, strict=True):
        if says is None:
            assert answer.kind == "prediction" and name in answer.text, answer.text
        else:
            assert answer.kind == "error" and re.search(says, answer.text), answer.text
            assert name in answer.embeds[0]["title"]
    await still_answers(env)


async def test_a_message_deleted_before_the_answer_still_gets_it(env: Env) -> None:
    jobs = env.bot.jobs
    classify = jobs.classify
    started, release = asyncio.Event(), asyncio.Event()

    async def held(data: bytes, filename: str | None) -> Any:
        started.set()
        await release.wait()
        return await classify(data, filename)

    jobs.classify = held  # type: ignore[method-assign]
    try:
        attachment = env.fake.add_attachment(good_wav(), "then-deleted.wav", "audio/wav")
        message = await env.fake.send_message(env.user(), "", [attachment])
        await started.wait()
        await env.fake.delete_message(message)
        release.set()
        [answer] = await env.fake.wait_for(
            lambda f: [
                m
                for m in f.messages()
                if m["embeds"]
                and "then-deleted.wav" in m["embeds"][0].get("footer", {}).get("text", "")
            ]
        )
    finally:
        jobs.classify = classify  # type: ignore[method-assign]
    assert answer["embeds"][0]["title"].startswith(PREDICTION_TITLES)
    assert "message_reference" not in answer  # the message it answered is gone
    await still_answers(env)


@pytest_asyncio.fixture(loop_scope="module")
async def other_service() -> AsyncIterator[tuple[str, list[str]]]:
    """Another service on 127.0.0.1 (an admin panel, a metadata endpoint): it must never be hit.
    It serves audio, so a bot that fetched it would answer with a prediction."""
    hits: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        hits.append(request.path)
        return web.Response(body=song("mp3"), content_type="audio/mpeg")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def production_url_policy(bot: GenreBot) -> AsyncIterator[None]:
    """The running bot with its production link policy (no private addresses), as if started
    with ``GENRE_ALLOW_PRIVATE_URLS=false``: the settings and the link session it would have."""
    settings, session = bot.settings, bot.url_session
    bot.settings = settings.model_copy(update={"allow_private_urls": False})
    bot.url_session = url_session(allow_private=False, timeout_s=settings.download_timeout_s)
    try:
        yield
    finally:
        await bot.url_session.close()
        bot.settings, bot.url_session = settings, session


@pytest.mark.parametrize(
    "url",
    [
        "http://{service}/song.mp3",
        "http://localhost:{port}/song.mp3",
        "http://2130706433:{port}/song.mp3",  # 127.0.0.1 as one decimal number
        "http://[::ffff:127.0.0.1]:{port}/song.mp3",
        "http://169.254.169.254/latest/meta-data/",  # the cloud metadata service
        "http://10.0.0.8/song.mp3",
    ],
    ids=["loopback", "localhost", "decimal-loopback", "v4-mapped-v6", "metadata", "private-lan"],
)
async def test_links_to_private_addresses_are_refused_by_policy(
    env: Env, other_service: tuple[str, list[str]], url: str
) -> None:
    service, hits = other_service
    link = url.format(service=service, port=service.rsplit(":", 1)[1])
    async with production_url_policy(env.bot):
        answer = await slash(env, options={"url": link})
    assert answer.kind == "error"
    assert "private or local address" in answer.text, answer.text
    assert hits == []
    await still_answers(env)


async def test_every_request_was_one_discord_accepts_and_the_token_never_logged(env: Env) -> None:
    """Runs last: over the whole corpus, no request Discord would refuse, no token in the logs
    (discord.py's DEBUG logging included)."""

    def settled(f: FakeDiscord) -> bool:
        # No request in flight, and every hourglass taken off (a deleted message keeps its own).
        return env.bot.inflight.count == 0 and all(
            not emojis or f.message(mid)["deleted"] for mid, emojis in f.reactions.current.items()
        )

    await env.fake.wait_for(settled)
    assert env.bot.jobs.pending == 0  # type: ignore[attr-defined]
    assert_clean(env.fake)
    assert len(env.logs) > 100
    assert not [line for line in env.logs if env.fake.token in line]
