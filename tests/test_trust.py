"""Answers people can trust, through the shipped model: "not music", "unsure", and a genre for
real music — from the CLI and from the real bot client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHIPPED_MODEL, StartBot, replies_to, shipped_genres
from fake_discord import FakeDiscord
from synth import DATA_DIR, SR, music_like, tone, wav_bytes

from bot.client import process_jobs
from genre_core.audio import Audio
from genre_core.pipeline import Classifier, describe
from genre_core.result import WindowPrediction, display_name

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
needs_detector = pytest.mark.skipif(
    not (SHIPPED_MODEL.parent / "detector" / "detector.json").is_file(),
    reason="no shipped music detector in models/detector",
)
GTZAN_CLIP = DATA_DIR / "gtzan" / "audio" / "metal.00000.mp3"


def speech_wav(tmp_path: Path) -> bytes:
    out = tmp_path / "speech.wav"
    text = ("Good evening. Today we read the third chapter, in which the travellers reach the "
            "river and decide, after a long argument, to wait for the morning boat.")
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(out), text], check=True,
                   capture_output=True, timeout=60)
    return out.read_bytes()


def non_music_clips(tmp_path: Path) -> dict[str, bytes]:
    noise = np.random.default_rng(0).normal(0, 0.2, SR * 8).astype(np.float32)
    return {
        "speech.wav": speech_wav(tmp_path),
        "noise.wav": wav_bytes(np.clip(noise, -1, 1)),
        "tone.wav": wav_bytes(tone(8.0, 1000.0)),
    }


@needs_espeak
@needs_detector
def test_cli_says_speech_noise_and_a_tone_are_not_music(tmp_path: Path) -> None:
    paths = []
    for name, data in non_music_clips(tmp_path).items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    if GTZAN_CLIP.is_file():
        paths.append(str(GTZAN_CLIP))
    result = subprocess.run([sys.executable, "-m", "genre_core.cli", "predict", "--json", *paths],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    answers = {Path(a["file"]).name: a for a in map(json.loads, result.stdout.splitlines())}
    for name in ("speech.wav", "noise.wav", "tone.wav"):
        answer = answers[name]
        assert answer["music"] is False and answer["genre"] is None, answer
        assert answer["music_probability"] < 0.5
        assert "doesn't sound like music" in answer["summary"]
        assert len(answer["probabilities"]) == len(shipped_genres()) and not answer["unsure"]
    assert answers["speech.wav"]["sounds_like"] == "speech"
    if GTZAN_CLIP.is_file():
        metal = answers[GTZAN_CLIP.name]
        assert metal["music"] is True and metal["genre"] == "metal", metal


@needs_espeak
@needs_detector
@pytest.mark.shared_data
async def test_the_bot_says_not_music_and_shows_no_genre_bars(
    fake_discord: FakeDiscord, start_bot: StartBot, tmp_path: Path
) -> None:
    if not GTZAN_CLIP.is_file():
        pytest.skip(f"{GTZAN_CLIP} not found (../shared/data absent)")
    fake = fake_discord
    await start_bot(jobs_factory=process_jobs, model_dir=SHIPPED_MODEL, workers=1)
    clips = {**non_music_clips(tmp_path), GTZAN_CLIP.name: GTZAN_CLIP.read_bytes()}
    user = fake.add_user("listener")
    message = await fake.send_message(user, "", [
        fake.add_attachment(data, name, "audio/mpeg" if name.endswith("mp3") else "audio/wav")
        for name, data in clips.items()
    ])
    replies = await fake.wait_for(lambda f: replies_to(f, message), timeout=300)
    embeds: list[dict[str, Any]] = [e for reply in replies for e in reply["embeds"]]
    assert len(embeds) == 4
    by_file = {name: next(e for e in embeds if name in json.dumps(e)) for name in clips}
    for name in ("speech.wav", "noise.wav", "tone.wav"):
        embed = by_file[name]
        assert embed["title"].startswith("🔇"), embed
        assert all(f["name"] != "Confidence" for f in embed.get("fields", []))
    assert "speech" in by_file["speech.wav"]["description"]
    assert by_file[GTZAN_CLIP.name]["title"].startswith(("🎵 Metal", "🤔")), by_file


def test_a_strong_second_genre_is_named_and_ids_are_written_for_people() -> None:
    steady = [WindowPrediction(0.0, 30.0, "jazz", {"jazz": 0.8, "latin": 0.2})]
    assert describe(True, None, False, ["jazz"], steady, also="latin") == (
        "Sounds like jazz, with latin.")
    assert describe(True, None, True, ["rnb", "hiphop"], steady) == "Not sure — R&B or hip-hop."


def test_a_close_call_is_called_unsure() -> None:
    classifier = Classifier.load(SHIPPED_MODEL)
    classifier.min_probability = 0.999  # nothing is that sure: every answer is a close call
    classifier.detector = None  # this checks the verdict, not the music detector
    prediction = classifier.classify_audio(Audio(music_like(6.0)))
    assert prediction.music is True and prediction.unsure is True
    first, second = (genre for genre, _ in prediction.ranked[:2])
    assert prediction.candidates == [first, second]
    spoken = [display_name(g, capital=False) for g in (first, second)]
    assert prediction.summary == f"Not sure — {spoken[0]} or {spoken[1]}."


def test_windows_that_disagree_are_described() -> None:
    def window(start: float, genre: str, p: float) -> WindowPrediction:
        return WindowPrediction(start, start + 30, genre, {genre: p})

    windows = [window(0, "rock", 0.8), window(30, "rock", 0.7), window(60, "metal", 0.9)]
    assert describe(True, None, False, ["rock"], windows) == "Starts as rock, turns into metal."
    assert describe(False, "speech", False, [], windows) == (
        "This doesn't sound like music (mostly speech)."
    )
    steady = [window(0, "jazz", 0.9), window(30, "jazz", 0.8)]
    assert describe(True, None, True, ["jazz", "blues"], steady) == "Not sure — jazz or blues."
