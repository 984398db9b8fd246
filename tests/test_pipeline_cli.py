"""The whole chain through the shipped model, from the library and from the `genre` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth import DATA_DIR, encode, music_like, tone

from genre_core.model import GENRES
from genre_core.pipeline import DEFAULT_MODEL_DIR, Classifier, aggregate

GTZAN_AUDIO = DATA_DIR / "gtzan" / "audio"
needs_audio = pytest.mark.skipif(not GTZAN_AUDIO.is_dir(), reason=f"no GTZAN audio at {DATA_DIR}")


def genre_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genre_core.cli", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load(DEFAULT_MODEL_DIR)


def test_aggregate_is_a_normalised_geometric_mean() -> None:
    windows = np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1]])
    expected = np.sqrt(windows[0] * windows[1])
    np.testing.assert_allclose(aggregate(windows), expected / expected.sum())


def test_prediction_covers_every_genre(classifier: Classifier) -> None:
    prediction = classifier.classify(encode(music_like(8.0), "mp3"))
    # The model's own classes (from its training data), every one of them.
    assert set(prediction.probabilities) == set(classifier.model.genres)
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert prediction.duration_s == pytest.approx(8.0, abs=0.1)
    assert len(prediction.windows) == 1
    assert {"decode", "features", "inference", "total"} <= set(prediction.timings_ms)
    assert prediction.model_family == classifier.model.family and prediction.model_version


def test_long_song_is_heard_throughout(classifier: Classifier) -> None:
    song = np.concatenate([music_like(45.0, seed=1), tone(45.0, 330)])
    prediction = classifier.classify(encode(song, "ogg", extra=["-c:a", "libvorbis"]))
    assert len(prediction.windows) == 3
    assert prediction.windows[-1].end_s == pytest.approx(90.0, abs=0.2)
    assert prediction.analysed_s == pytest.approx(90.0, abs=0.5)


@needs_audio
def test_real_gtzan_tracks_are_recognised(classifier: Classifier) -> None:
    # These tracks are in the shipped model's training set: this checks the wiring of the
    # whole path, not accuracy (see `genre evaluate` for that).
    hits = [classifier.classify(GTZAN_AUDIO / f"{g}.00000.mp3").genre == g
            for g in ("classical", "metal", "jazz")]
    assert sum(hits) >= 2


def test_cli_predict_json(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp3"
    clip.write_bytes(encode(music_like(6.0), "mp3"))
    result = genre_cli("predict", "--json", str(clip))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["file"] == str(clip)
    genres = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())["genres"]
    assert set(answer["probabilities"]) == set(genres)
    assert answer["genre"] in genres or answer["music"] is False
    assert answer["windows"] and {"decode", "features", "inference"} <= set(answer["timings_ms"])


def test_cli_error_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    fake = tmp_path / "song.mp3"
    fake.write_text("not music at all\n" * 10)
    result = genre_cli("predict", str(fake))
    assert result.returncode == 2
    assert "doesn't look like an audio file" in result.stderr
    assert "Traceback" not in result.stderr
    missing = genre_cli("predict", "--model", str(tmp_path / "nowhere"), str(fake))
    assert missing.returncode == 2 and "No complete model" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.fixture
def table_data(tmp_path: Path) -> Path:
    """The published feature table and split with a handful of tracks' audio beside it: the
    table family's protocols and its 1,000 tracks are whole, without extracting 550 tracks'
    features from audio (minutes on a clean clone; the full runs are `genre evaluate` and
    `genre train`)."""
    gtzan = tmp_path / "data" / "gtzan"
    (gtzan / "audio").mkdir(parents=True)
    for name in ("features_30_sec.csv", "splits"):
        (gtzan / name).symlink_to(DATA_DIR / "gtzan" / name)
    for path in sorted(GTZAN_AUDIO.glob("*"))[::100]:
        (gtzan / "audio" / path.name).symlink_to(path)
    return tmp_path / "data"


@pytest.mark.skipif(not (DATA_DIR / "gtzan" / "splits").is_dir(), reason="no GTZAN splits")
def test_cli_evaluate_json_fault_filtered(table_data: Path) -> None:
    result = genre_cli("evaluate", "--data", str(table_data), "--protocol", "fault-filtered",
                       "--epochs", "3", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["protocol"] == "fault-filtered"
    assert report["n_tracks"] == 290
    assert 0.0 <= report["macro_f1"] <= 1.0 and 0.1 < report["accuracy"] <= 1.0
    assert np.array(report["confusion"]).sum() == 290


def test_table_family_is_still_selectable() -> None:
    table = Classifier.load(DEFAULT_MODEL_DIR.parent / "genre-table")
    prediction = table.classify(encode(music_like(6.0), "wav"))
    assert prediction.model_family == "table"
    assert set(prediction.probabilities) == set(GENRES)
    assert prediction.tags == []  # only the learned family has a network to name style tags


@pytest.mark.skipif(not (DATA_DIR / "gtzan" / "splits").is_dir(), reason="no GTZAN splits")
def test_retrain_refits_calibration_and_thresholds_with_the_model(tmp_path: Path,
                                                                   table_data: Path) -> None:
    from genre_core.training import retrain

    metrics = retrain(table_data, tmp_path / "model", family="table", epochs=3)
    saved = Classifier.load(tmp_path / "model").model.metadata_
    assert metrics["temperature"] == saved["calibration"]["temperature"] > 0
    assert metrics["ece"] == saved["calibration"]["ece_after"]
    assert 0 < metrics["ece_floor"] < 0.1  # 1,000 held-out tracks
    assert metrics["unsure_below_probability"] == saved["thresholds"]["min_probability"]
    assert saved["calibration"]["n"] == 1000
