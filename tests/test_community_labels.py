"""People teach the bot, end to end: the real client against the fake Discord, the real label
store (a SQLite file), the stand-in classifier (real decoding, made-up genres).

Every control is clicked, picked or submitted through the fake, which checks each body against
Discord's spec: buttons under answers, the genre select, the "something else" modal, admins'
review buttons, and the commands ``/label``, ``/labels ...`` and ``/forget-me``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from conftest import GENRES, StartBot, assert_clean, replies_to
from fake_discord import FakeDiscord

from genre_core.store.labels import NewClip, StoreFullError


def responses(fake: FakeDiscord, inter: dict[str, Any]) -> list[dict[str, Any]]:
    return fake.interaction_responses(inter["id"])


def private_text(fake: FakeDiscord, inter: dict[str, Any]) -> str | None:
    """The text of the ephemeral message (or edited ephemeral message) the bot answered with."""
    for entry in responses(fake, inter):
        if entry["status"] in (200, 204) and entry.get("message"):
            message = entry["message"]
            if message.get("flags", 0) & 64 and message.get("content"):
                return str(message["content"])
    return None


async def answer_text(fake: FakeDiscord, inter: dict[str, Any]) -> str:
    return str(await fake.wait_for(lambda f: private_text(f, inter)))


def controls(message: dict[str, Any]) -> dict[str, str]:
    """``label -> custom_id`` of a message's buttons and selects."""
    out = {}
    for row in message.get("components") or []:
        for component in row.get("components") or []:
            out[component.get("label") or component.get("placeholder")] = component["custom_id"]
    return out


async def drop(fake: FakeDiscord, user: int, clip: bytes, name: str = "song.mp3"
               ) -> dict[str, Any]:
    """Drop a clip in the channel; returns the bot's reply."""
    attachment = fake.add_attachment(clip, name, "audio/mpeg")
    message = await fake.send_message(user, "", [attachment])
    [reply] = await fake.wait_for(lambda f: replies_to(f, message))
    return reply


async def pick(fake: FakeDiscord, user: int, reply: dict[str, Any], value: str
               ) -> tuple[dict[str, Any], str]:
    """Click "Wrong…", then pick ``value`` in the private select; returns the select's
    interaction and the text the bot answered with."""
    wrong = await fake.click_button(user, reply, controls(reply)["Wrong…"])
    text = await answer_text(fake, wrong)
    assert "What is clip" in text
    ephemeral = next(e["message"] for e in responses(fake, wrong) if e.get("message"))
    select_id = controls(ephemeral)["The right genre is…"]
    chosen = await fake.choose_select(user, ephemeral, select_id, [value])
    return chosen, await answer_text(fake, chosen)


def clip_number(reply: dict[str, Any]) -> int:
    footer = reply["embeds"][0]["footer"]["text"]
    return int(footer.rsplit("clip #", 1)[1].split()[0])


async def test_votes_under_a_dropped_clip_are_recorded_privately_and_can_change(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    uploader, ann, bob = (fake.add_user(n) for n in ("uploader", "ann", "bob"))
    reply = await drop(fake, uploader, mp3_clip)
    assert set(controls(reply)) == {"Right", "Wrong…"}
    clip_id = clip_number(reply)
    predicted = (await bot.labels.get_clip(clip_id)).predicted  # type: ignore[union-attr]
    assert predicted in GENRES

    right = await fake.click_button(ann, reply, controls(reply)["Right"])
    assert "Thanks, recorded" in await answer_text(fake, right)
    other = next(g for g in GENRES if g != predicted)
    _, text = await pick(fake, bob, reply, f"g:{other}")
    assert f"clip #{clip_id}" in text and "Thanks, recorded" in text
    # Bob changes his mind: still one vote, the new one.
    _, text = await pick(fake, bob, reply, "not_music")
    assert "changed your vote" in text

    [record] = await bot.labels.export(None)  # type: ignore[union-attr]
    votes = {v["user_id"]: (v["kind"], v["genre"]) for v in record["votes"]}
    assert votes == {ann: ("right", predicted), bob: ("not_music", None)}
    assert record["uploader_id"] == uploader and record["predicted"] == predicted
    assert_clean(fake)


async def test_two_people_agreeing_make_a_training_example_and_one_does_not(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot(votes_to_accept=2)
    uploader, ann, bob = (fake.add_user(n) for n in ("uploader", "ann", "bob"))
    reply = await drop(fake, uploader, mp3_clip)
    await pick(fake, ann, reply, "g:jazz")
    assert await bot.labels.training_examples() == []  # type: ignore[union-attr]
    await pick(fake, bob, reply, "g:jazz")
    [example] = await bot.labels.training_examples()  # type: ignore[union-attr]
    assert example.genres == {"jazz"} and example.reason == "agreed"


async def test_something_else_goes_through_a_modal_and_an_admins_review(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    uploader, admin = fake.add_user("uploader"), fake.add_user("admin", admin=True)
    reply = await drop(fake, uploader, mp3_clip)
    chosen, _ = await pick_other(fake, uploader, reply, "Drum and Bass")

    review = await fake.invoke_slash(admin, "labels review")
    text = await answer_text(fake, review)
    assert "drum and bass" in text.lower() and "1 person says" in text
    page = next(e["message"] for e in responses(fake, review) if e.get("message"))
    accept = await fake.click_button(admin, page, controls(page)["Accept"])
    assert "Nothing left to review" in await answer_text(fake, accept)
    [example] = await bot.labels.training_examples()  # type: ignore[union-attr]
    assert example.genres == {"drum and bass"} and example.reason == "accepted"
    # Accepting a new name made it a genre people can pick.
    assert await bot.labels.added_genres() == ["drum and bass"]  # type: ignore[union-attr]
    assert_clean(fake)


async def pick_other(fake: FakeDiscord, user: int, reply: dict[str, Any], typed: str
                     ) -> tuple[dict[str, Any], str]:
    chosen, _ = await pick_without_answer(fake, user, reply, "other")
    modal = await fake.wait_for(lambda f: f.modal_of(chosen))
    assert modal["title"] == "What genre is it?"
    submitted = await fake.submit_modal(user, chosen, {"genre": typed})
    text = await answer_text(fake, submitted)
    assert typed in text
    return submitted, text


async def pick_without_answer(fake: FakeDiscord, user: int, reply: dict[str, Any], value: str
                              ) -> tuple[dict[str, Any], None]:
    wrong = await fake.click_button(user, reply, controls(reply)["Wrong…"])
    await answer_text(fake, wrong)
    ephemeral = next(e["message"] for e in responses(fake, wrong) if e.get("message"))
    chosen = await fake.choose_select(user, ephemeral, controls(ephemeral)["The right genre is…"],
                                      [value])
    return chosen, None


async def test_the_buttons_keep_working_after_a_restart(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    user = fake.add_user("listener")
    reply = await drop(fake, user, mp3_clip)
    await bot.close()
    bot = await start_bot()  # same state folder: same database, same signing key
    right = await fake.click_button(user, reply, controls(reply)["Right"])
    assert "Thanks, recorded" in await answer_text(fake, right)
    [record] = await bot.labels.export(None)  # type: ignore[union-attr]
    assert [v["kind"] for v in record["votes"]] == ["right"]


async def fetch(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.read()


def private_message(fake: FakeDiscord, inter: dict[str, Any]) -> dict[str, Any] | None:
    for entry in responses(fake, inter):
        if entry["status"] in (200, 204) and entry.get("message"):
            message = entry["message"]
            if message.get("flags", 0) & 64 and (message.get("content") or message.get("embeds")
                                                 or message.get("attachments")):
                return message
    return None


async def test_slash_command_and_apps_menu_answers_carry_the_controls_too(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, mp3_clip_2: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    user = fake.add_user("listener")
    attachment = fake.add_attachment(mp3_clip, "one.mp3", "audio/mpeg")
    inter = await fake.invoke_slash(user, "genre", attachments={"file": attachment})
    answer = await fake.wait_for(
        lambda f: next((e["message"] for e in responses(f, inter)
                        if e.get("message") and e["message"].get("embeds")), None))
    assert set(controls(answer)) == {"Right", "Wrong…"}

    files = [fake.add_attachment(c, f"{n}.mp3", "audio/mpeg")
             for n, c in (("a", mp3_clip), ("b", mp3_clip_2))]
    message = await fake.send_message(user, "", files)
    await fake.wait_for(lambda f: replies_to(f, message))  # dropped: answered in the channel
    menu = await fake.invoke_message_command(user, "Classify genre", message)
    answer = await fake.wait_for(
        lambda f: next((e["message"] for e in responses(f, menu)
                        if e.get("message") and e["message"].get("embeds")), None))
    # Two clips in one message: one numbered row each.
    assert set(controls(answer)) == {"Right #1", "Wrong… #1", "Right #2", "Wrong… #2"}
    sources = [r["source"] for r in await bot.labels.export(None)]  # type: ignore[union-attr]
    assert sorted(sources) == ["drop", "drop", "menu", "menu", "slash"]
    click = await fake.click_button(user, answer, controls(answer)["Right #2"])
    assert "Thanks, recorded" in await answer_text(fake, click)
    assert_clean(fake)


async def test_admins_label_clips_count_export_and_delete(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, mp3_clip_2: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    admin, member, voter = (fake.add_user("admin", admin=True), fake.add_user("member"),
                            fake.add_user("voter"))
    attachment = fake.add_attachment(mp3_clip, "lesson.mp3", "audio/mpeg")
    inter = await fake.invoke_slash(admin, "label", {"genre": "Jazz"},
                                    attachments={"file": attachment})
    text = await answer_text(fake, inter)
    assert "Labelled clip #" in text and "Jazz" in text
    reply = await drop(fake, member, mp3_clip_2)
    await pick(fake, voter, reply, "g:rock")

    counts = await fake.invoke_slash(admin, "labels counts")
    embed = (await fake.wait_for(lambda f: private_message(f, counts)))["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "Jazz: 1" in fields["Labelled by admins"]
    assert "Rock: 1" in fields["Waiting (votes or review)"]

    for kind in ("csv", "jsonl"):
        export = await fake.invoke_slash(admin, "labels export", {"format": kind})
        message = await fake.wait_for(lambda f, e=export: private_message(f, e))
        [attached] = message["attachments"]
        data = (await fetch(attached["url"])).decode()
        if kind == "csv":
            rows = list(csv.DictReader(io.StringIO(data)))
            assert {(r["label"], r["vote_genre"]) for r in rows} == {("jazz", "jazz"),
                                                                     ("", "rock")}
        else:
            records = [json.loads(line) for line in data.splitlines()]
            assert [r["label"] for r in records] == [["jazz"], []]
            assert "token" not in data and "content" not in data

    delete = await fake.invoke_slash(admin, "labels delete", {"user": member})
    assert "1 uploaded clip" in await answer_text(fake, delete)
    [left] = await bot.labels.export(None)  # type: ignore[union-attr]
    assert left["source"] == "label"
    assert_clean(fake)


async def test_everyone_can_erase_their_own_votes_and_uploads(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, mp3_clip_2: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot()
    ann, bob = fake.add_user("ann"), fake.add_user("bob")
    mine, theirs = await drop(fake, ann, mp3_clip), await drop(fake, bob, mp3_clip_2)
    await answer_text(fake, await fake.click_button(ann, theirs, controls(theirs)["Right"]))
    await answer_text(fake, await fake.click_button(bob, mine, controls(mine)["Right"]))
    forget = await fake.invoke_slash(ann, "forget-me")
    assert "erased 1 vote(s) and 1 clip(s)" in await answer_text(fake, forget)
    [left] = await bot.labels.export(None)  # type: ignore[union-attr]
    assert left["uploader_id"] == bob and left["votes"] == []
    # The erased clip's controls now answer that it is gone.
    click = await fake.click_button(bob, mine, controls(mine)["Right"])
    assert "no longer" in await answer_text(fake, click)


async def test_bad_input_gets_a_clear_private_answer_and_changes_nothing(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    bot = await start_bot(vote_rate=2)
    admin, member, spammer = (fake.add_user("admin", admin=True), fake.add_user("member"),
                              fake.add_user("spammer"))
    reply = await drop(fake, member, mp3_clip)

    # Vote spam: the third vote within the window is refused.
    for _ in range(2):
        await answer_text(fake, await fake.click_button(spammer, reply, controls(reply)["Right"]))
    spam = await fake.click_button(spammer, reply, controls(reply)["Right"])
    assert "a lot of votes" in await answer_text(fake, spam)

    # An unknown genre, and a clip that cannot be analysed, are not labelled.
    attachment = fake.add_attachment(mp3_clip, "x.mp3", "audio/mpeg")
    unknown = await fake.invoke_slash(admin, "label", {"genre": "polka"},
                                      attachments={"file": attachment})
    assert "don't know the genre 'polka'" in await answer_text(fake, unknown)
    broken = fake.add_attachment(b"\x00not audio at all" * 50, "broken.mp3", "audio/mpeg")
    bad = await fake.invoke_slash(admin, "label", {"genre": "jazz"}, attachments={"file": broken})
    assert "could not be analysed, so nothing was labelled" in await answer_text(fake, bad)

    # Admin commands: hidden from members, and refused if a server shows them anyway.
    with pytest.raises(PermissionError):
        await fake.invoke_slash(member, "labels counts")
    for command in fake.commands.scope(None):
        if command["name"] in ("labels", "label"):
            command["default_member_permissions"] = None
    refused = await fake.invoke_slash(member, "labels delete", {"clip": clip_number(reply)})
    assert "Only server admins" in await answer_text(fake, refused)

    # A stale control: an id of an older format the bot once sent.
    old = await bot.get_channel(fake.channel_id).send(  # type: ignore[union-attr]
        "old answer", view=view_with_button("gv:vote:1"))
    stale = await fake.click_button(member, {"id": old.id, "channel_id": old.channel.id},
                                    "gv:vote:1")
    assert "no longer works" in await answer_text(fake, stale)

    # A deleted clip's buttons.
    await answer_text(fake, await fake.invoke_slash(admin, "labels delete",
                                                    {"clip": clip_number(reply)}))
    gone = await fake.click_button(admin, reply, controls(reply)["Right"])
    assert "no longer stored" in await answer_text(fake, gone)
    assert await bot.labels.export(None) == []  # type: ignore[union-attr]
    assert_clean(fake)


def view_with_button(custom_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(discord.ui.Button(label="Right", custom_id=custom_id))
    return view


async def test_expired_clips_and_a_replaced_database_are_answered_in_words(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, tmp_path: Path
) -> None:
    fake = fake_discord
    bot = await start_bot(keep_days=2 / 86400)  # two seconds
    user = fake.add_user("listener")
    reply = await drop(fake, user, mp3_clip)
    await asyncio.sleep(2.5)
    late = await fake.click_button(user, reply, controls(reply)["Right"])
    assert "has expired" in await answer_text(fake, late)
    # Restarted, the bot deletes it (and daily after that): it counted for nothing.
    await bot.close()
    bot = await start_bot(keep_days=2 / 86400)
    for _ in range(100):
        if await bot.labels.get_clip(clip_number(reply)) is None:  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.1)
    assert await bot.labels.get_clip(clip_number(reply)) is None  # type: ignore[union-attr]

    # The database was deleted and made anew: the old buttons' signatures are not its own.
    fresh = await drop(fake, user, mp3_clip)
    await bot.close()
    (tmp_path / "var" / "labels.db").unlink()
    await start_bot()
    forged = await fake.click_button(user, fresh, controls(fresh)["Right"])
    assert "no longer works" in await answer_text(fake, forged)
    assert_clean(fake)


async def test_a_locked_or_full_database_is_answered_in_words_and_the_bot_keeps_going(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, mp3_clip_2: bytes,
    tmp_path: Path,
) -> None:
    from sqlalchemy import event

    fake = fake_discord
    bot = await start_bot()
    user, voter = fake.add_user("listener"), fake.add_user("voter")
    reply = await drop(fake, user, mp3_clip)
    holder = sqlite3.connect(tmp_path / "var" / "labels.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the file
    try:
        locked = await fake.click_button(voter, reply, controls(reply)["Right"])
        assert "busy" in await answer_text(fake, locked)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    store = bot.labels
    assert store is not None
    await store.engine.dispose()

    # SQLite's max_page_count makes the file "full" as a full disk does (SQLITE_FULL); filling
    # the pages it has leaves no room for any write.
    @event.listens_for(store.engine.sync_engine, "connect")
    def _full(connection, _record):  # type: ignore[no-untyped-def]
        cursor = connection.cursor()
        cursor.execute("PRAGMA page_count")
        cursor.execute(f"PRAGMA max_page_count = {cursor.fetchone()[0]}")

    # Fill every table a drop or a vote writes with rows no bigger than theirs.
    tiny = NewClip(None, None, 0, "drop", "", "", "", "", None, {})
    with pytest.raises(StoreFullError):
        for _ in range(100_000):
            filler = await store.add_clip(tiny)
    with pytest.raises(StoreFullError):
        for i in range(100_000):
            await store.vote(filler, 10**6 + i, "right")

    # The answer still comes, without controls: nothing to vote on was stored.
    second = await drop(fake, user, mp3_clip_2)
    assert second["embeds"] and not second.get("components")
    vote = await fake.click_button(voter, reply, controls(reply)["Right"])
    assert "disk is full" in await answer_text(fake, vote)
    event.remove(store.engine.sync_engine, "connect", _full)
    await store.engine.dispose()
    again = await fake.click_button(voter, reply, controls(reply)["Right"])
    assert "Thanks, recorded" in await answer_text(fake, again)
    assert_clean(fake)


async def test_without_a_usable_database_the_bot_still_answers(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes, tmp_path: Path
) -> None:
    fake = fake_discord
    (tmp_path / "not-a-db").mkdir()
    await start_bot(database_url=f"sqlite+aiosqlite:///{tmp_path / 'not-a-db'}")
    user = fake.add_user("listener")
    reply = await drop(fake, user, mp3_clip)
    assert reply["embeds"] and not reply.get("components")
    forget = await fake.invoke_slash(user, "forget-me")
    assert "switched off" in await answer_text(fake, forget)
    assert_clean(fake)


async def test_seven_clips_in_one_message_get_their_controls_over_two_replies(
    fake_discord: FakeDiscord, start_bot: StartBot, mp3_clip: bytes
) -> None:
    fake = fake_discord
    await start_bot()
    user = fake.add_user("listener")
    files = [fake.add_attachment(mp3_clip, f"{n}.mp3", "audio/mpeg") for n in range(7)]
    files.insert(3, fake.add_attachment(b"", "empty.mp3", "audio/mpeg"))  # no clip, no row
    message = await fake.send_message(user, "", files)
    first, second = await fake.wait_for(lambda f: (r := replies_to(f, message)) and len(r) == 2
                                        and r)
    # A message holds five rows of controls: the sixth stored clip starts a second reply.
    assert len(first["embeds"]) == 6 and len(first["components"]) == 5
    assert len(second["embeds"]) == 2 and len(second["components"]) == 2
    assert "Right #1" in controls(first) and "Right #2" in controls(second)
    names = [e["footer"]["text"].split(" ·")[0] if "footer" in e else e["title"]
             for e in first["embeds"] + second["embeds"]]
    assert names[:3] == ["0.mp3", "1.mp3", "2.mp3"] and "empty.mp3" in names[3]
    assert names[4:] == ["3.mp3", "4.mp3", "5.mp3", "6.mp3"]
    assert_clean(fake)
