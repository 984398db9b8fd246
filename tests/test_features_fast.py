"""The fast extractor computes what the plain librosa recipe computes, and the fast decoder what
ffmpeg decodes; the shipped model's verdicts do not move.

Tolerances (fast vs ``bench.reference.extract_reference`` on the same samples):

* every feature within ``REL_TOL`` relative: float32 sums over the STFT's 2,048-sample frames,
  taken in another order, differ by about sqrt(2048) * eps; 4x that is 2.2e-5 (measured on the
  eleven full GTZAN clips: at most 1.2e-6; the STFT itself is bit-identical);
* ``harmony_mean`` and ``perceptr_mean`` (waveform means, ~1e-5 to 1e-4: noise around zero, so
  their own size is no scale) within ``REL_TOL`` of their signal's scale, its standard deviation
  (the root of the matching ``_var`` feature) (measured: ~1e-9 absolute at most);
* the shipped table-family model's probabilities within ``PROB_TOL`` = 1e-3 and the same top
  genre.
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage
from synth import DATA_DIR, SR, encode, music_like, tone

from bench.reference import extract_reference
from genre_core.audio import _run_ffmpeg, decode
from genre_core.features import (
    FEATURE_NAMES,
    N_FFT,
    extract,
    median_filter_columns,
    median_filter_rows,
)
from genre_core.settings import Limits

REL_TOL = 4 * np.sqrt(N_FFT) * np.finfo(np.float32).eps
PROB_TOL = 1e-3
WAVEFORM_MEANS = [FEATURE_NAMES.index("harmony_mean"), FEATURE_NAMES.index("perceptr_mean")]
ROOT = Path(__file__).resolve().parents[1]
GTZAN_AUDIO = DATA_DIR / "gtzan" / "audio"
#: Five genres that sound unlike each other; blues.00099 is the published-table track.
REAL_CLIPS = ["blues.00099", "classical.00000", "hiphop.00000", "metal.00000", "reggae.00000"]
needs_data = pytest.mark.skipif(
    not GTZAN_AUDIO.is_dir(), reason=f"GTZAN audio not found at {GTZAN_AUDIO}"
)


def assert_close_to_reference(fast: np.ndarray, reference: np.ndarray) -> None:
    absolute = np.abs(fast - reference)
    relative = absolute / np.maximum(np.abs(reference), 1e-30)
    relative[WAVEFORM_MEANS] = 0.0
    worst = int(np.argmax(relative))
    assert relative.max() <= REL_TOL, (
        f"{FEATURE_NAMES[worst]}: fast {fast[worst]!r} vs reference {reference[worst]!r}"
    )
    for i in WAVEFORM_MEANS:
        scale = np.sqrt(reference[FEATURE_NAMES.index(FEATURE_NAMES[i].replace("_mean", "_var"))])
        assert absolute[i] <= REL_TOL * scale, f"{FEATURE_NAMES[i]}: {fast[i]} vs {reference[i]}"


# -- the exact running median -----------------------------------------------------------------
@pytest.mark.parametrize("shape", [(40, 300), (7, 65), (129, 16), (3, 20)])
@pytest.mark.parametrize("size", [31, 5])
def test_running_median_is_scipys_median_filter(shape: tuple[int, int], size: int) -> None:
    rng = np.random.default_rng(sum(shape) + size)
    x = rng.gamma(0.5, size=shape).astype(np.float32)
    x[rng.random(shape) < 0.1] = 0.0  # ties, as in silent spectrogram bins
    np.testing.assert_array_equal(
        median_filter_rows(x, size), scipy.ndimage.median_filter(x, size=(1, size), mode="reflect")
    )
    np.testing.assert_array_equal(
        median_filter_columns(x, size),
        scipy.ndimage.median_filter(x, size=(size, 1), mode="reflect"),
    )


def test_running_median_refuses_an_even_window() -> None:
    with pytest.raises(ValueError, match="odd"):
        median_filter_rows(np.zeros((4, 40), dtype=np.float32), 4)


# -- fast features = reference features -------------------------------------------------------
@pytest.mark.parametrize(
    "name, make",
    [
        ("chords", lambda: music_like(12.0, seed=3)),
        ("tone", lambda: tone(6.0, 330.0)),
        ("noise", lambda: (0.1 * np.random.default_rng(5).standard_normal(SR * 5)).astype(
            np.float32)),
        # Leading silence: frames with an all-zero spectrum take librosa's special cases.
        ("silence then chords", lambda: np.concatenate(
            [np.zeros(SR, dtype=np.float32), music_like(5.0, seed=4)])),
    ],
)
def test_fast_features_match_the_reference_on_synthetic_audio(name: str, make) -> None:  # noqa: ANN001
    y = make()
    assert_close_to_reference(extract(y, SR), extract_reference(y, SR))


@cache
def _real_features(track: str) -> tuple[np.ndarray, np.ndarray]:
    audio = decode(GTZAN_AUDIO / f"{track}.mp3")
    return extract(audio.samples, audio.sr), extract_reference(audio.samples, audio.sr)


@needs_data
@pytest.mark.parametrize("track", REAL_CLIPS)
def test_fast_features_match_the_reference_on_real_music(track: str) -> None:
    fast, reference = _real_features(track)
    assert_close_to_reference(fast, reference)


@cache
def _table_model():  # noqa: ANN202
    """The shipped table-family model (trained on the reference recipe's features)."""
    import json

    from genre_core.model import GenreModel

    for directory in (ROOT / "models" / "genre", ROOT / "models" / "genre-table"):
        meta = directory / "metadata.json"
        if meta.is_file() and json.loads(meta.read_text()).get("family") == "table":
            return GenreModel.load(directory)
    pytest.skip("no table-family model shipped in models/")


@needs_data
def test_the_table_model_hears_the_same_genres() -> None:
    pairs = [_real_features(track) for track in REAL_CLIPS]
    fast = _table_model().predict_proba(np.stack([f for f, _ in pairs]))
    reference = _table_model().predict_proba(np.stack([r for _, r in pairs]))
    np.testing.assert_array_equal(fast.argmax(axis=1), reference.argmax(axis=1))
    assert np.abs(fast - reference).max() <= PROB_TOL


# -- the in-process decoder = ffmpeg ----------------------------------------------------------
def _ffmpeg_decode(data: bytes, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "input.bin"
    path.write_bytes(data)
    pcm = _run_ffmpeg(path, Limits(), {})
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


@pytest.mark.parametrize("fmt, extra", [("mp3", []), ("flac", []), ("wav", []),
                                        ("ogg", ["-c:a", "libvorbis"])])
def test_in_process_decoding_gives_ffmpegs_samples(
    fmt: str, extra: list[str], tmp_path: Path
) -> None:
    # At 22,050 Hz nothing is resampled: the two decoders differ by 16-bit rounding at most.
    data = encode(music_like(5.0), fmt, extra=extra)
    ours, ffmpeg = decode(data).samples, _ffmpeg_decode(data, tmp_path)
    assert len(ours) == len(ffmpeg)
    assert np.abs(ours - ffmpeg).max() <= 2 / 32768


def test_stereo_44k_is_mixed_and_resampled_like_ffmpeg(tmp_path: Path) -> None:
    # Tones well inside both resamplers' pass bands, different in each channel.
    left, right = tone(5.0, 440.0, sr=44_100), tone(5.0, 1_250.0, sr=44_100, amplitude=0.2)
    stereo = np.stack([left, right], axis=1)
    wav = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "f32le", "-ar", "44100", "-ac", "2", "-i", "pipe:0",
         "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"],
        input=stereo.astype("<f4").tobytes(), capture_output=True, check=True,
    ).stdout
    ours, ffmpeg = decode(wav).samples, _ffmpeg_decode(wav, tmp_path)
    assert abs(len(ours) - len(ffmpeg)) <= 1
    n = min(len(ours), len(ffmpeg))
    # Same mean of the channels, same timing. (The resamplers, soxr here and swr in ffmpeg,
    # differ in their transition bands near 11 kHz, not at these frequencies.)
    residual = np.sqrt(np.mean((ours[:n] - ffmpeg[:n]) ** 2))
    assert residual <= 1e-3 * np.sqrt(np.mean(ffmpeg[:n] ** 2))


@needs_data
def test_resampled_real_music_keeps_its_genre(tmp_path: Path) -> None:
    # A GTZAN track as a user would send it (44.1 kHz stereo mp3): soxr (ours) and swr
    # (ffmpeg) resample it slightly differently near 11 kHz; the verdict must not care.
    data = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(GTZAN_AUDIO / "hiphop.00000.mp3"), "-ar", "44100",
         "-ac", "2", "-c:a", "libmp3lame", "-b:a", "192k", "-f", "mp3", "pipe:1"],
        capture_output=True, check=True,
    ).stdout
    ours = extract(decode(data).samples, SR)
    ffmpeg = extract(_ffmpeg_decode(data, tmp_path), SR)
    probs = _table_model().predict_proba(np.stack([ours, ffmpeg]))
    assert probs[0].argmax() == probs[1].argmax()
    assert np.abs(probs[0] - probs[1]).max() <= 0.03
