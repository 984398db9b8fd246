"""The plain reference recipe: straight librosa calls per window, as the seed extractor did.

Kept verbatim (it was ``genre_core.features.extract`` before the fast extractor replaced it) so
the benchmark can time it and the tests can hold the fast extractor to it. The shipped model was
trained on these features.
"""

from __future__ import annotations

import time
from pathlib import Path

import librosa
import numpy as np

from genre_core.audio import Audio, analysis_windows
from genre_core.model import GenreModel
from genre_core.pipeline import aggregate
from genre_core.settings import SAMPLE_RATE

N_MFCC = 20


def extract_reference(y: np.ndarray, sr: int) -> np.ndarray:
    """Compute the 57 features of one analysis window the plain way.

    Every librosa function computes its own STFT, HPSS runs scipy's median filters on the full
    spectrogram and inverts both components.

    Parameters
    ----------
    y : np.ndarray
        Mono audio, float32.
    sr : int
        Its sampling rate (22,050 Hz for the GTZAN tables).

    Returns
    -------
    np.ndarray
        Shape ``(57,)``, in the order of ``genre_core.features.FEATURE_NAMES``.
    """
    harmonic, percussive = librosa.effects.hpss(y)
    frames = [
        librosa.feature.chroma_stft(y=y, sr=sr),
        librosa.feature.rms(y=y),
        librosa.feature.spectral_centroid(y=y, sr=sr),
        librosa.feature.spectral_bandwidth(y=y, sr=sr),
        librosa.feature.spectral_rolloff(y=y, sr=sr),
        librosa.feature.zero_crossing_rate(y),
        harmonic,
        percussive,
    ]
    tempo = librosa.feature.tempo(y=y, sr=sr)
    mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC)
    values: list[float] = []
    for frame in frames:
        values += [float(np.mean(frame)), float(np.var(frame))]
    values.append(float(np.atleast_1d(tempo)[0]))
    for row in mfcc:
        values += [float(np.mean(row)), float(np.var(row))]
    return np.asarray(values, dtype=np.float64)


def classify_reference(path: Path, model: GenreModel, window_s: float = 30.0,
                       max_windows: int = 6) -> tuple[np.ndarray, dict[str, float]]:
    """The whole plain recipe on one file: ``librosa.load``, the same analysis windows as the
    pipeline, :func:`extract_reference` per window and one model call per window.

    Parameters
    ----------
    path : Path
        An audio file.
    model : GenreModel
        The genre head (trained on these features).
    window_s, max_windows
        The pipeline's windowing.

    Returns
    -------
    probabilities : np.ndarray
        The song's genre probabilities, shape ``(10,)`` (windows aggregated as the pipeline
        does).
    timings_ms : dict
        ``decode``, ``features``, ``inference`` and ``total``, in milliseconds.
    """
    started = time.perf_counter()
    y, sr = librosa.load(path, sr=SAMPLE_RATE, mono=True)
    decoded = time.perf_counter()
    windows = analysis_windows(Audio(y, int(sr)), window_s, max_windows)
    X = [extract_reference(w, int(sr)) for _, w in windows]
    featured = time.perf_counter()
    probs = np.concatenate([model.predict_proba(x[None, :]) for x in X])
    done = time.perf_counter()
    timings = {
        "decode": (decoded - started) * 1000,
        "features": (featured - decoded) * 1000,
        "inference": (done - featured) * 1000,
        "total": (done - started) * 1000,
    }
    return aggregate(probs), timings
