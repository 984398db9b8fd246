"""The "is it music?" detector: cue features, the detector's API, and the shipped model on
synthesised speech, noise, tones and music (and a real GTZAN clip when the shared data is here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genre_core.detector_training import (
    espeak_available,
    synth_music,
    synth_noise,
    synth_silence,
    synth_speech,
    synth_tone,
)
from genre_core.errors import ModelMismatchError, ModelMissingError
from genre_core.musicness import (
    CUE_NAMES,
    DEFAULT_DIR,
    KINDS,
    N_CUES,
    MusicDetector,
    NetworkCheck,
    cue_features,
    window_cues,
    yin,
)
from genre_core.settings import SAMPLE_RATE

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SR = SAMPLE_RATE


def tone(freq: float = 440.0, seconds: float = 6.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def shipped() -> MusicDetector:
    return MusicDetector.load()


# -- cue features ------------------------------------------------------------------------------


def test_cue_names_are_unique_and_match_the_vector() -> None:
    assert len(set(CUE_NAMES)) == len(CUE_NAMES) == N_CUES
    v = cue_features(tone(), SR)
    assert v.shape == (N_CUES,)
    assert v.dtype == np.float32
    assert np.all(np.isfinite(v))


@pytest.mark.parametrize(
    "y",
    [np.zeros(SR * 4, np.float32), np.ones(SR, np.float32) * 0.1, np.zeros(100, np.float32)],
    ids=["silence", "dc-short", "tiny"],
)
def test_cues_are_finite_on_degenerate_input(y: np.ndarray) -> None:
    assert np.all(np.isfinite(cue_features(y, SR)))


def test_cues_ignore_level_and_sample_rate() -> None:
    rng = np.random.default_rng(1)
    y = synth_music(8.0, SR, rng)
    loud, quiet = cue_features(y, SR), cue_features(0.05 * y, SR)
    np.testing.assert_allclose(loud, quiet, rtol=1e-3, atol=1e-3)
    import librosa

    at_16k = cue_features(librosa.resample(y, orig_sr=SR, target_sr=16_000), 16_000)
    # Resampling paths differ slightly; the cues must stay close, not identical.
    assert np.median(np.abs(at_16k - loud) / (np.abs(loud) + 1e-2)) < 0.05


def test_cues_separate_obvious_cases() -> None:
    names = list(CUE_NAMES)
    noise = cue_features(synth_noise("white", 6.0, SR, np.random.default_rng(0)), SR)
    sine = cue_features(tone(), SR)
    silence = cue_features(synth_silence(6.0, SR, np.random.default_rng(0)), SR)
    flat = names.index("flatness_mean")
    assert noise[flat] > sine[flat] + 1.0  # white noise is flat, a sine is one peak
    assert sine[names.index("voiced_share")] > 0.9
    assert noise[names.index("voiced_share")] < 0.1
    assert silence[names.index("silence_share")] > 0.9


def test_yin_finds_the_pitch_of_a_sine() -> None:
    t = np.arange(8000 * 2) / 8000
    f0, aper = yin(np.sin(2 * np.pi * 220.0 * t).astype(np.float32), 8000)
    assert np.median(f0) == pytest.approx(220.0, rel=0.01)
    assert np.median(aper) < 0.05
    _, aper_noise = yin(np.random.default_rng(0).standard_normal(16000).astype(np.float32), 8000)
    assert np.median(aper_noise) > 0.3


# -- the detector's API on a toy problem ---------------------------------------------------------


def toy_detector(hidden: tuple[int, ...] = (8,)) -> tuple[MusicDetector, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, N_CUES))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    kinds = np.where(X[:, 2] > 0, "speech", "noise")
    return MusicDetector(hidden=hidden, alpha=1e-3).fit(X, y, kinds=kinds), X


@pytest.mark.parametrize("hidden", [(), (8,)], ids=["logistic", "mlp"])
def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path: Path, hidden: tuple) -> None:
    det, X = toy_detector(hidden)
    det.save(tmp_path, {"version": "test"})
    loaded = MusicDetector.load(tmp_path)
    np.testing.assert_allclose(loaded.predict_proba(X), det.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(loaded.kind_proba(X), det.kind_proba(X), rtol=1e-12)
    assert loaded.info["version"] == "test"
    with np.load(tmp_path / "detector.npz", allow_pickle=False) as arrays:
        assert all(arrays[k].dtype != object for k in arrays.files)
    assert json.loads((tmp_path / "detector.json").read_text())["cue_names"] == list(CUE_NAMES)


def toy_network_check(det: MusicDetector, n: int = 200) -> tuple[np.ndarray, list[str]]:
    """Give ``det`` a network check whose rows say "music" in column 0; return some rows."""
    rng = np.random.default_rng(1)
    E = rng.standard_normal((n, 6))
    names = [f"net_{i}" for i in range(6)]
    det.network_ = NetworkCheck.fit(E, (E[:, 0] > 0).astype(int), names, C=10.0)
    return E, names


def test_the_network_check_is_saved_loaded_and_joins_the_cues_only_for_its_features(
        tmp_path: Path) -> None:
    det, _ = toy_detector()
    E, names = toy_network_check(det)
    det.save(tmp_path)
    loaded = MusicDetector.load(tmp_path)
    assert loaded.network_ is not None and loaded.hears_network(names)
    np.testing.assert_allclose(loaded.network_.proba(E), det.network_.proba(E), rtol=1e-12)
    assert not loaded.hears_network(names[::-1])  # another featurizer's rows: cues alone
    assert "network check" in loaded.metadata_["decision_rule"]

    # Three 4-s windows: the cues hear a tone (not music); the network's rows say music for
    # the first two windows and not for the last.
    windows = [tone(440.0, 4.0)] * 3
    rows = np.zeros((3, 6))
    rows[:, 0] = [4.0, 4.0, -4.0]
    cues_alone = loaded.assess(windows, SR)
    joined = loaded.assess(windows, SR, network_rows=rows, network_names=names)
    net = loaded.network_.proba(rows)
    np.testing.assert_allclose(joined.window_probabilities,
                               (cues_alone.window_probabilities + net) / 2, rtol=1e-12)
    assert net[0] > 0.9 and net[2] < 0.1
    ignored = loaded.assess(windows, SR, network_rows=rows, network_names=names[::-1])
    np.testing.assert_allclose(ignored.window_probabilities, cues_alone.window_probabilities)


def test_toy_detector_learns_its_rule() -> None:
    det, X = toy_detector()
    truth = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    assert np.mean(det.predict(X) == truth) > 0.9


def test_load_refuses_missing_and_mismatched(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError):
        MusicDetector.load(tmp_path)
    det, _ = toy_detector()
    det.save(tmp_path)
    meta = json.loads((tmp_path / "detector.json").read_text())
    meta["cue_names"] = meta["cue_names"][:-1]
    (tmp_path / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError):
        MusicDetector.load(tmp_path)


def test_out_of_distribution_windows_lose_their_music_probability() -> None:
    det, X = toy_detector()
    far = X[:5].copy()
    far[:, 3:] += 40.0  # nothing in training looked like this
    assert np.all(det.ood_distance(far) > 1.0)
    assert np.all(det.predict_proba(far)[:, 1] < det.raw_proba(far) * 0.5 + 1e-12)
    near = X[:50]
    np.testing.assert_allclose(
        det.predict_proba(near)[:, 1][det.ood_distance(near) <= 1],
        det.raw_proba(near)[det.ood_distance(near) <= 1],
    )


def test_decide_uses_the_mean_of_window_probabilities() -> None:
    det, _ = toy_detector()
    # A song with a spoken intro: one speech window among music.
    assert det.decide(np.array([0.05, 0.95, 0.9, 0.97]))[0] is True
    # A podcast with a jingle: one music window among speech.
    music, p, _ = det.decide(np.array([0.05, 0.9, 0.1, 0.02]))
    assert music is False
    assert p == pytest.approx(np.mean([0.05, 0.9, 0.1, 0.02]))
    kinds = np.tile(np.eye(len(KINDS))[KINDS.index("speech")], (4, 1))
    assert det.decide(np.array([0.05, 0.9, 0.1, 0.02]), kinds)[2] == "speech"
    unclear = np.full((2, len(KINDS)), 1.0 / len(KINDS))
    assert det.decide(np.array([0.1, 0.2]), unclear)[2] is None
    with pytest.raises(ValueError):
        det.decide(np.array([]))


# -- the shipped detector on synthesised and real audio --------------------------------------------


def test_shipped_detector_is_complete(shipped: MusicDetector) -> None:
    assert (DEFAULT_DIR / "detector.json").is_file()
    metrics = shipped.info["metrics"]["held_out_whole_real"]
    assert {"music_precision", "music_recall", "not_music_recall"} <= set(metrics)


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_synthesised_speech_is_not_music(shipped: MusicDetector) -> None:
    text = (
        "Good evening. Tonight we talk about the history of the railway, "
        "and why the trains were always late on Mondays."
    )
    y = synth_speech(text, "en-us+m3", speed=150)
    a = shipped.assess([y], SR)
    assert a.music is False
    assert a.sounds_like == "speech"


@pytest.mark.parametrize("color", ["white", "pink"])
def test_noise_is_not_music(shipped: MusicDetector, color: str) -> None:
    a = shipped.assess([synth_noise(color, 8.0, SR, np.random.default_rng(3))], SR)
    assert a.music is False
    assert a.sounds_like == "noise"


def test_pure_tone_is_not_music(shipped: MusicDetector) -> None:
    a = shipped.assess([tone(523.25, 8.0)], SR)
    assert a.music is False
    assert a.sounds_like == "tone"


def test_dial_tone_and_silence_are_not_music(shipped: MusicDetector) -> None:
    rng = np.random.default_rng(5)
    assert shipped.assess([synth_tone("busy", 10.0, SR, rng)], SR).music is False
    a = shipped.assess([synth_silence(6.0, SR, rng)], SR)
    assert a.music is False
    assert a.sounds_like == "silence"


def test_synthesised_music_is_music(shipped: MusicDetector) -> None:
    # Never trained on: chords, a bass line and drums made with numpy.
    y = synth_music(12.0, SR, np.random.default_rng(7))
    probs = shipped.window_probabilities([y], SR)
    assert probs.shape == (1,)
    assert probs[0] >= 0.5


@pytest.mark.shared_data
@pytest.mark.skipif(not (DATA / "gtzan" / "audio").is_dir(), reason="needs ../shared/data")
def test_real_gtzan_clip_is_music(shipped: MusicDetector) -> None:
    from genre_core.audio import analysis_windows, decode

    audio = decode(DATA / "gtzan" / "audio" / "hiphop.00000.mp3")
    windows = [w for _, w in analysis_windows(audio, 10.0, 3)]
    a = shipped.assess(windows, audio.sr)
    assert a.music is True
    assert a.window_probabilities.shape == (3,)
    assert a.sounds_like is None


def test_window_cues_stacks_windows() -> None:
    cues = window_cues([tone(), tone(220.0, 4.0)], SR)
    assert cues.shape == (2, N_CUES)
    assert window_cues([], SR).shape == (0, N_CUES)


def test_split_segments_follows_the_rounding_rule() -> None:
    from genre_core.musicness import split_segments

    assert [s.size for s in split_segments(np.zeros(30 * SR), SR, 10.0)] == [10 * SR] * 3
    assert len(split_segments(np.zeros(14 * SR), SR, 10.0)) == 1
    assert len(split_segments(np.zeros(17 * SR), SR, 10.0)) == 2
    assert len(split_segments(np.zeros(30 * SR), SR, None)) == 1


def test_long_windows_are_scored_as_the_mean_of_their_segments() -> None:
    det, _ = toy_detector()
    rng = np.random.default_rng(2)
    a, b = tone(330.0, 10.0), synth_noise("pink", 10.0, SR, rng)
    window = np.concatenate([a, b])
    expected = det.predict_proba(window_cues([a, b], SR))[:, 1].mean()
    assert det.window_probabilities([window], SR)[0] == pytest.approx(expected)
    assessment = det.assess([window, a], SR)
    assert assessment.window_probabilities.shape == (2,)
    assert assessment.window_kinds.shape == (2, len(KINDS))
    np.testing.assert_allclose(assessment.window_kinds.sum(axis=1), 1.0)
