"""The 57 GTZAN features of the Kaggle tables, computed the way the published table was.

Plain librosa defaults per window: chroma, RMS, spectral centroid/bandwidth/roll-off,
zero-crossing rate, the harmonic and percussive waveforms of HPSS, tempo and 20 MFCCs, each
summarised by its mean and variance over the window. Names match the CSV columns exactly.
"""

from __future__ import annotations

import librosa
import numpy as np

_SUMMARISED = [
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    "harmony",
    "perceptr",
]
N_MFCC = 20

#: Column names of ``features_30_sec.csv``, in its order.
FEATURE_NAMES: list[str] = (
    [f"{name}_{stat}" for name in _SUMMARISED for stat in ("mean", "var")]
    + ["tempo"]
    + [f"mfcc{i}_{stat}" for i in range(1, N_MFCC + 1) for stat in ("mean", "var")]
)


def extract(y: np.ndarray, sr: int) -> np.ndarray:
    """Compute the 57 features of one analysis window.

    Parameters
    ----------
    y : np.ndarray
        Mono audio, float32.
    sr : int
        Its sampling rate (22,050 Hz for the GTZAN tables).

    Returns
    -------
    np.ndarray
        Shape ``(57,)``, in the order of :data:`FEATURE_NAMES`.
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
