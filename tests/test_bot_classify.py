"""The bot end to end against the fake Discord: files dropped in a channel, /genre, Apps menu.

A real discord.py client (our GenreBot) talks to the fake over a websocket and HTTP; the
classifier is the stand-in from conftest (real decoding, made-up probabilities) except in the
test marked for the shipped model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    GENRES,
    SHIPPED_MODEL,
    StartBot,
    hold_classifications,
    replies_to,
    shipped_genres,
)
from fake_discord import FakeDiscord, cdn
from synth import DATA_DIR

from bot.client import process_jobs
from genre_core.audio import decode
from genre_core.errors import AudioError
from genre_core.result import SPOKEN

BAR = re.compile(r"^(\S+)\s+[█░]+\s+\d+%$")  # "Jazz", "Hip-hop", "R&B"
#: A bar's name, as the embed writes it for people, back to the genre id.
GENRE_ID = {v.lower(): k for k, v in SPOKEN.items()}


def genre_bars(embed: dict[str, Any]) -> dict[str, str]:
    """``genre -> bar line`` from a prediction embed's confidence field."""
    field = next(f for f in embed.get("fields", []) if f["name"] == "Confidence")
    lines = [line.strip() for line in field["value"].strip("`\n").splitlines()]
    return {GENRE_ID.get(name, name): line for line in lines
            if (m := BAR.match(line)) and (name := m.group(1).lower())}


def assert_clean(fake: FakeDiscord) -> None:
    """Discord would have accepted every request the bot made."""
    assert fake.unknown_requests == []
    assert fake.invalid_requests == []


async def test_mp3_dropped_in_channel_gets_a_reply_with_every_genre(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    attachment = fake.add_attachment(mp3_clip, "song.mp3", "audio/mpeg")
    message = await fake.send_message(user, "what is this?", [attachment])

    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    [embed] = reply["embeds"]
    assert set(genre_bars(embed)) == set(GENRES)
    assert embed["title"].startswith("🎵")
    assert "song.mp3" in embed["footer"]["text"]
    assert re.search(r"Analysed 8\.\d s of 8\.\d s", embed["footer"]["text"])
    # The hourglass went up while working and came down with the answer.
    await fake.wait_for(lambda f: not f.reactions.on(message["id"]))
    actions = [(a, e) for a, _, m, e in fake.reactions.log if m == int(message["id"])]
    assert actions == [("add", "⏳"), ("remove", "⏳")]
    assert_clean(fake)


async def test_several_attachments_get_one_reply_covering_each(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, mp3_clip_2: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    files = [
        fake.add_attachment(mp3_clip, "one.mp3", "audio/mpeg"),
        fake.add_attachment(b"just some notes", "notes.txt", "text/plain"),
        fake.add_attachment(mp3_clip_2, "two.ogg.mp3", None),
    ]  # no content type: extension
    message = await fake.send_message(user, "", files)

    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    footers = [e["footer"]["text"] for e in reply["embeds"]]
    assert len(footers) == 2
    assert footers[0].startswith("one.mp3") and footers[1].startswith("two.ogg.mp3")
    assert all(set(genre_bars(e)) == set(GENRES) for e in reply["embeds"])
    assert_clean(fake)


async def test_non_audio_is_ignored_silently(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("poster")
    png = fake.add_attachment(b"\x89PNG\r\n\x1a\n" + bytes(100), "cat.png", "image/png")
    ignored = await fake.send_message(user, "look", [png])
    plain = await fake.send_message(user, "no files at all")
    # Events are handled in order: once this one is answered, the others were seen.
    later = await fake.send_message(
        user, "", [fake.add_attachment(mp3_clip, "x.mp3", "audio/mpeg")]
    )
    await fake.wait_for(lambda f: replies_to(f, later))

    assert replies_to(fake, ignored) == [] and replies_to(fake, plain) == []
    assert len(fake.messages()) == 1
    assert int(ignored["id"]) not in {m for _, _, m, _ in fake.reactions.log}
    assert not any(d.path.endswith("cat.png") for d in fake.downloads)


@pytest.mark.parametrize(
    ("data", "name", "content_type"),
    [
        (bytes(range(256)) * 40, "broken.mp3", "audio/mpeg"),
        (b"Dear diary, today I renamed a text file. " * 50, "diary.mp3", None),
        (b"", "empty.wav", "audio/wav"),
    ],
)
async def test_unreadable_audio_gets_a_friendly_reply(
    fake_discord: FakeDiscord, start_bot: StartBot, data: bytes, name: str, content_type: str | None
) -> None:
    with pytest.raises(AudioError) as decoding:  # what the decoder says about these bytes
        decode(data)
    fake = fake_discord
    await start_bot()
    user = fake.add_user("uploader")
    message = await fake.send_message(user, "", [fake.add_attachment(data, name, content_type)])

    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    [embed] = reply["embeds"]
    assert embed["title"] == f"⚠️ Couldn't analyse {name}"
    assert embed["description"] == str(decoding.value)
    assert "fields" not in embed or not embed["fields"]
    await fake.wait_for(lambda f: not f.reactions.on(message["id"]))
    assert_clean(fake)


async def test_attachment_over_the_cap_is_refused_without_downloading(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    await start_bot(max_bytes=200_000)
    user = fake.add_user("uploader")
    big = fake.add_attachment(bytes(600_000), "huge.wav", "audio/wav")
    message = await fake.send_message(user, "", [big])

    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    assert "0.6 MB" in reply["embeds"][0]["description"]
    assert "0.2 MB" in reply["embeds"][0]["description"]
    assert not any(d.path.endswith("huge.wav") for d in fake.downloads)


async def test_download_stops_at_the_cap_when_the_size_lies(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    cap = 256 * 1024
    await start_bot(max_bytes=cap)
    user = fake.add_user("uploader")
    liar = fake.add_attachment(b"x", "liar.mp3", "audio/mpeg", size=1000)
    total = 64 * 1024 * 1024
    fake.cdn_route(liar["url"], cdn.stream_bytes(total, declared_length=None))
    message = await fake.send_message(user, "", [liar])

    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    assert "larger than" in reply["embeds"][0]["description"]
    [download] = [d for d in fake.downloads if d.path.endswith("liar.mp3")]
    await fake.wait_for(lambda f: download.aborted or download.complete)
    assert download.aborted and not download.complete
    assert download.bytes_sent < cap + 8 * 1024 * 1024  # socket buffers' slack, not 64 MB


async def test_slash_genre_defers_then_follows_up(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("slasher")
    attachment = fake.add_attachment(mp3_clip, "track.mp3", "audio/mpeg")
    inter = await fake.invoke_slash(user, "genre", attachments={"file": attachment})

    responses = await fake.wait_for(
        lambda f: (r := f.interaction_responses(inter["id"])) and r[-1]["kind"] == "followup" and r
    )
    assert responses[0]["kind"] == "callback" and responses[0]["type"] == 5  # deferred at once
    assert responses[0]["status"] in (200, 204)
    final = responses[-1]
    assert not final["ephemeral"]
    [embed] = final["message"]["embeds"]
    assert set(genre_bars(embed)) == set(GENRES)
    assert_clean(fake)


async def test_slash_genre_with_a_link(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("linker")
    url = fake.cdn_route("/files/linked.mp3", cdn.serve_bytes(mp3_clip, "audio/mpeg"))
    inter = await fake.invoke_slash(user, "genre", options={"url": url})

    responses = await fake.wait_for(
        lambda f: (r := f.interaction_responses(inter["id"])) and r[-1]["kind"] == "followup" and r
    )
    [embed] = responses[-1]["message"]["embeds"]
    assert set(genre_bars(embed)) == set(GENRES)
    assert embed["footer"]["text"].startswith("linked.mp3")


async def ephemeral_error(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    """Wait for the ephemeral answer to ``inter``; check nothing public is left behind."""

    def answered(f: FakeDiscord) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in f.interaction_responses(inter["id"])
                if r["ephemeral"]
                and r["status"] in (200, 204)
                and (r["kind"] == "followup" or r["type"] == 4)
            ),
            None,
        )

    entry = await fake.wait_for(answered)
    public = [
        m for m in fake.messages() if (m.get("interaction_metadata") or {}).get("id") == inter["id"]
    ]
    assert public == []
    return entry["message"]["content"]


async def test_slash_genre_errors_are_ephemeral(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("slasher")
    broken = fake.add_attachment(b"not audio at all" * 100, "broken.flac", "audio/flac")
    inter = await fake.invoke_slash(user, "genre", attachments={"file": broken})
    text = await ephemeral_error(fake, inter)
    assert "Something went wrong" not in text and text

    nothing = await fake.invoke_slash(user, "genre")
    assert "Attach one audio file or give one link" in await ephemeral_error(fake, nothing)
    assert_clean(fake)


async def test_slash_genre_refuses_private_addresses(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot(allow_private_urls=False)
    user = fake.add_user("sneaky")
    url = fake.cdn_route("/internal/secret.mp3", cdn.serve_bytes(mp3_clip, "audio/mpeg"))
    inter = await fake.invoke_slash(user, "genre", options={"url": url})
    assert "private or local address" in await ephemeral_error(fake, inter)
    assert not any(d.path == "/internal/secret.mp3" for d in fake.downloads)


async def test_apps_menu_classifies_the_chosen_message(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    poster, curious = fake.add_user("poster"), fake.add_user("curious")
    target = await fake.send_message(
        poster, "", [fake.add_attachment(mp3_clip, "menu.mp3", "audio/mpeg")]
    )
    await fake.wait_for(lambda f: replies_to(f, target))  # the drop handler answers too

    inter = await fake.invoke_message_command(curious, "Classify genre", target)
    responses = await fake.wait_for(
        lambda f: (r := f.interaction_responses(inter["id"])) and r[-1]["kind"] == "followup" and r
    )
    assert responses[0]["type"] == 5
    [embed] = responses[-1]["message"]["embeds"]
    assert set(genre_bars(embed)) == set(GENRES)
    assert embed["footer"]["text"].startswith("menu.mp3")

    text_only = await fake.send_message(poster, "no audio here")
    inter = await fake.invoke_message_command(curious, "Classify genre", text_only)
    assert "no audio attachments" in await ephemeral_error(fake, inter)
    assert_clean(fake)


async def test_commands_sync_to_the_dev_guild_when_set(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    fake = fake_discord
    await start_bot(dev_guild_id=fake.guild_id)
    names = set(fake.commands.names(fake.guild_id))
    assert {"genre", "retrain", "model", "Classify genre"} <= names
    assert fake.commands.names(None) == []
    assert fake.identify_intents is not None and fake.identify_intents & (1 << 15)


async def test_a_user_with_a_request_running_is_asked_to_wait(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot(user_concurrency=1)
    user = fake.add_user("impatient")
    gate = hold_classifications(bot)
    first = await fake.send_message(
        user, "", [fake.add_attachment(mp3_clip, "a.mp3", "audio/mpeg")]
    )
    await fake.wait_for(lambda f: f.reactions.on(first["id"]))
    second = await fake.send_message(
        user, "", [fake.add_attachment(mp3_clip, "b.mp3", "audio/mpeg")]
    )
    [busy] = await fake.wait_for(lambda f: replies_to(f, second))
    assert "wait for the answer" in busy["content"]
    gate.set()
    [answer] = await fake.wait_for(lambda f: replies_to(f, first))
    assert set(genre_bars(answer["embeds"][0])) == set(GENRES)


@pytest.mark.shared_data
async def test_the_shipped_model_classifies_a_real_song(
    fake_discord: FakeDiscord, start_bot: StartBot
) -> None:
    song = DATA_DIR / "gtzan" / "audio" / "classical.00000.mp3"
    if not (SHIPPED_MODEL / "metadata.json").is_file():
        pytest.skip(f"no shipped model in {SHIPPED_MODEL} yet (train it with `genre train`)")
    if not song.is_file():
        pytest.skip(f"{song} not found (../shared/data absent)")
    fake = fake_discord
    bot = await start_bot(jobs_factory=process_jobs, model_dir=SHIPPED_MODEL, workers=1)
    info = await bot.jobs.info()
    user = fake.add_user("listener")
    message = await fake.send_message(
        user, "", [fake.add_attachment(Path(song).read_bytes(), song.name, "audio/mpeg")]
    )

    [reply] = await fake.wait_for(lambda f: replies_to(f, message), timeout=120)
    [embed] = reply["embeds"]
    assert not embed["title"].startswith("⚠️"), embed
    if embed["title"].startswith(("🎵", "🤔")):  # a bar for every genre of the model's own list
        assert set(genre_bars(embed)) == set(shipped_genres())
    assert f"model {info['version']}" in embed["footer"]["text"]
    assert_clean(fake)


async def test_an_unexpected_failure_is_answered_and_logged_not_leaked(
    fake_discord: FakeDiscord,
    start_bot: StartBot,
    mp3_clip: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = fake_discord
    bot = await start_bot()

    async def broken(data: bytes, filename: str | None) -> Any:
        raise RuntimeError("internal detail 0xdeadbeef")

    bot.jobs.classify = broken  # type: ignore[method-assign]
    user = fake.add_user("unlucky")
    message = await fake.send_message(
        user, "", [fake.add_attachment(mp3_clip, "a.mp3", "audio/mpeg")]
    )
    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    assert "Something went wrong on my side" in reply["embeds"][0]["description"]
    inter = await fake.invoke_slash(
        user, "genre", attachments={"file": fake.add_attachment(mp3_clip, "b.mp3", "audio/mpeg")}
    )
    text = await ephemeral_error(fake, inter)
    assert "Something went wrong on my side" in text and "deadbeef" not in text
    assert "0xdeadbeef" in caplog.text  # the details go to the log
    assert_clean(fake)
