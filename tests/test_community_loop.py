"""The whole loop with the real model: clips dropped, corrected by two people, ``/retrain``, and
the published model names that genre for other clips of the same kind it has never heard.

Real audio (GTZAN tracks from ``../shared/data``), the real network (LiteRT) and head, the real
label store, the real training process; the real client against the fake Discord. The shared
data for ``/retrain`` is a handful of tracks (three genres), so that the test embeds little.
Disco stands in for a genre a server names its own way: its people call it "funk", a genre the
model does not have. An admin adds the name, people pick it under the answers, and ``/retrain``
learns it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import SHIPPED_MODEL, StartBot, assert_clean, replies_to, thread_real_jobs
from fake_discord import FakeDiscord
from synth import DATA_DIR
from test_community_labels import answer_text, controls, pick, responses

from genre_core import corpora, crosscollection

pytestmark = pytest.mark.skipif(
    not (DATA_DIR / "gtzan" / "audio").is_dir(), reason="needs ../shared/data/gtzan/audio"
)
SHARED = {"classical": 5, "metal": 5, "hiphop": 5}
CORRECTED, UNSEEN = 6, 3  # disco tracks: dropped and corrected / dropped after the retrain


def tracks(genre: str) -> list[Path]:
    """A genre's tracks outside the artist blocks held out from training (so that this tiny
    shared set keeps every genre on the training side), one per block: several artists."""
    recordings = [r for r in corpora.gtzan(DATA_DIR) if genre in r.genres]
    held = crosscollection.held_out(recordings)
    one_per_block = {r.group: r.path for r, h in zip(recordings, held, strict=True) if not h}
    return sorted(one_per_block.values())


def shared_data(root: Path) -> Path:
    audio = root / "gtzan" / "audio"
    audio.mkdir(parents=True)
    for genre, count in SHARED.items():
        for path in tracks(genre)[:count]:
            (audio / path.name).symlink_to(path)
    return root


def top_genre(embed: dict) -> str:
    """The first (most likely) genre of an answer's confidence bars."""
    bars = next(f["value"] for f in embed["fields"] if f["name"] == "Confidence")
    return bars.strip("`\n").splitlines()[0].split()[0]


async def drop(fake: FakeDiscord, user: int, path: Path) -> dict:
    attachment = fake.add_attachment(path.read_bytes(), path.name, "audio/wav")
    message = await fake.send_message(user, "", [attachment])
    [reply] = await fake.wait_for(lambda f: replies_to(f, message), timeout=120)
    return reply


async def test_corrections_teach_the_bot_a_genre_it_then_names_for_unseen_clips(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    fake = fake_discord
    await start_bot(
        jobs_factory=thread_real_jobs, model_dir=SHIPPED_MODEL,
        data_dir=shared_data(tmp_path / "shared"),
        retrain_target="conftest:small_shared_retrain",
        compare_target="genre_core.training:is_not_worse",
        new_genre_min_clips=4, new_genre_min_uploaders=2, votes_to_accept=2,
    )
    admin = fake.add_user("admin", admin=True)
    ann, bob = fake.add_user("ann"), fake.add_user("bob")
    added = await fake.invoke_slash(admin, "labels genre-add", {"name": "Funk"})
    assert "Added **funk**" in await answer_text(fake, added)

    disco = tracks("disco")
    for i, path in enumerate(disco[:CORRECTED]):
        reply = await drop(fake, (ann, bob)[i % 2], path)
        assert "Funk" not in reply["embeds"][0]["title"]  # the shipped model has no funk
        for voter in (ann, bob):
            _, text = await pick(fake, voter, reply, "g:funk")
            assert "Thanks" in text

    retrain = await fake.invoke_slash(admin, "retrain")
    report = await fake.wait_for(
        lambda f: next((e["message"]["embeds"][0] for e in responses(f, retrain)
                        if e.get("message") and e["message"].get("embeds")), None),
        timeout=600,
    )
    assert report["title"].startswith("✅ Model"), report
    fields = {f["name"]: f["value"] for f in report["fields"]}
    assert "New genres: Funk" in fields["From your servers"]
    assert "community clip(s) trained on" in fields["From your servers"]
    assert "Funk" in fields["Per genre (held-out clips)"]

    answers = [await drop(fake, admin, path) for path in disco[CORRECTED:CORRECTED + UNSEEN]]
    tops = [top_genre(reply["embeds"][0]) for reply in answers]
    assert tops.count("Funk") >= UNSEEN - 1, tops  # most clips it never heard are "funk" now
    assert all(controls(reply) for reply in answers)  # and can be corrected in turn
    await asyncio.sleep(0)
    assert_clean(fake)
