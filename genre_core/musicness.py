"""Is it music? Cue features made for the job and a detector trained on them.

Before a genre is named the clip has to be music at all. The 57 genre features cannot tell: a
detector on them called real audiobook speech music with P = 0.99. The cues here follow Scheirer &
Slaney (1997) and later speech/music work: they describe *how a sound evolves* (syllable-rate
modulation, pauses, pitch glides versus held notes, a steady pulse) rather than its timbre, so they
carry over to recordings that were never seen.

Every cue is computed on a copy of the window resampled to 8 kHz and normalised in level: the
telephone band is where speech and music differ most, and it makes the cues blind to the
recording's bandwidth and loudness (LibriSpeech is 16 kHz, GTZAN 22 kHz: a detector that could see
the top octave would learn the corpus, not the sound).

A second opinion comes from the pretrained music network the genre head already runs
(:class:`NetworkCheck`): when the pipeline hands its rows over, each window's P(music) is the mean
of the cues' and the network's. The cues keep the detector working without the network (the table
family) and carry what the network never learned (a beat under speech); the network knows music
the cues find strange (noise rock, electroacoustic pieces).

Reads top to bottom: cue features → :class:`NetworkCheck` → :class:`MusicDetector` (classifier,
out-of-distribution check, "sounds like" guess, the network check) → the clip-level decision rule
in :meth:`MusicDetector.decide`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import scipy.fft as sfft
import scipy.ndimage as ndi

from genre_core.errors import ModelMismatchError, ModelMissingError
from genre_core.model import read_artifact

#: Rate every cue is computed at: the telephone band (0-4 kHz), see the module docstring.
CUE_SR = 8_000
#: Short-time analysis: 64-ms frames, 32-ms hop (31.25 frames/s, enough for 4-Hz modulation).
N_FFT = 512
HOP = 256
#: Long frames for pitch-class (chroma) analysis: 256 ms resolve semitones down to ~100 Hz.
N_FFT_TONAL = 2048
HOP_TONAL = 1024
N_MELS = 32
#: Pitch search range of the YIN tracker, in Hz.
F0_MIN = 65.0
F0_MAX = 1000.0
#: YIN aperiodicity below which a frame counts as voiced (pitched).
VOICING_THRESHOLD = 0.25
#: Frames more than this many dB below the loud (95th percentile) frames count as silence.
SILENCE_DB = 35.0
#: ... and frames below this RMS level (dB re full scale) are silent whatever the rest does.
SILENCE_DBFS = -60.0
#: The detector hears a long window as segments of about this many seconds.
SEGMENT_S = 10.0

CUE_NAMES: tuple[str, ...] = (
    # Energy contour: speech pauses between words, music rarely stops.
    "low_energy_share",
    "silence_share",
    "level_range_db",
    "level_delta_std_db",
    # Modulation spectrum of the band envelopes: syllables come at ~4 Hz.
    "mod_4hz_share",
    "mod_slow_share",
    "mod_centroid_hz",
    # Spectral change and shape.
    "flux_mean",
    "flux_std",
    "flatness_mean",
    "flatness_std",
    "centroid_mean",
    "centroid_std",
    "zcr_cv",
    "mfcc_delta_var",
    "mfcc_std",
    # Pitch (YIN on a coarse hop): speech glides in short voiced runs, music holds notes.
    "voiced_share",
    "voiced_run_mean_s",
    "voiced_runs_per_s",
    "aperiodicity_mean",
    "pitch_std_st",
    "pitch_step_median_st",
    "pitch_steady_share",
    # Tonality over long frames: a few pitch classes that persist.
    "chroma_peak",
    "chroma_stability",
    "spectral_stability",
    # Rhythm: a regular pulse in the onset envelope.
    "pulse_strength",
    "pulse_contrast",
    "onset_rate",
    # Harmonic versus percussive energy.
    "harmonic_share",
    "percussive_share",
)
N_CUES = len(CUE_NAMES)


# --------------------------------------------------------------------------------------------
# Cue features: pure functions, y and sr in, arrays out
# --------------------------------------------------------------------------------------------


def prepare(y: np.ndarray, sr: int) -> np.ndarray:
    """Resample to :data:`CUE_SR`, remove DC and normalise the level.

    Parameters
    ----------
    y : np.ndarray
        Mono audio, any float dtype.
    sr : int
        Its sample rate.

    Returns
    -------
    np.ndarray
        float32 audio at :data:`CUE_SR` with unit RMS over its loud part (all zeros stay zeros).
    """
    return _prepare(y, sr)[0]


def _prepare(y: np.ndarray, sr: int) -> tuple[np.ndarray, float]:
    """:func:`prepare`, also returning the RMS the audio was divided by."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio (1-D), got shape {y.shape}")
    if sr != CUE_SR:
        # soxr "mq" is ~400x faster than "hq" and the cues do not need audiophile filters.
        y = librosa.resample(y, orig_sr=sr, target_sr=CUE_SR, res_type="soxr_mq")
    y = y - float(np.mean(y)) if y.size else y
    y = _trim(y)
    if y.size < N_FFT_TONAL:
        y = np.pad(y, (0, N_FFT_TONAL - y.size))
    rms = float(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
    if rms > 1e-8:
        y = y / rms
    return y.astype(np.float32), max(rms, 1e-8)


def _trim(y: np.ndarray) -> np.ndarray:
    """Cut leading and trailing silence (frames :data:`SILENCE_DB` below the loud ones).

    Silence before a song starts or after it fades says nothing about what the sound is;
    pauses *inside* the window do, and stay.
    """
    n = y.size // HOP
    if n < 2:
        return y
    energy = np.mean(y[: n * HOP].astype(np.float64).reshape(n, HOP) ** 2, axis=1)
    db = 10.0 * np.log10(energy + 1e-20)
    loud = np.flatnonzero(db > np.percentile(db, 95) - SILENCE_DB)
    if loud.size == 0 or (loud[-1] + 1 - loud[0]) * HOP < N_FFT_TONAL:
        return y
    return y[loud[0] * HOP : (loud[-1] + 1) * HOP]


def _frame_db(power: np.ndarray) -> np.ndarray:
    """Per-frame level in dB relative to the loud (95th percentile) frames, floored at -80."""
    db = 10.0 * np.log10(power + 1e-12)
    return np.maximum(db - np.percentile(db, 95), -80.0)


def yin(
    y: np.ndarray,
    sr: int,
    *,
    fmin: float = F0_MIN,
    fmax: float = F0_MAX,
    win_length: int = N_FFT // 2,
    hop_length: int = HOP,
    threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Fundamental frequency and aperiodicity per frame (de Cheveigné & Kawahara 2002).

    A coarse, vectorised YIN: librosa's pyin is ~100x slower and its voicing HMM is not needed
    for statistics over a whole window.

    Parameters
    ----------
    y : np.ndarray
        Mono audio.
    sr : int
        Sample rate.
    fmin, fmax : float
        Pitch search range in Hz.
    win_length : int
        Integration window of the difference function, in samples.
    hop_length : int
        Hop between frames, in samples.
    threshold : float
        Absolute threshold of YIN's step 4: the first dip below it wins (avoids octave errors).

    Returns
    -------
    f0 : np.ndarray
        Fundamental frequency in Hz per frame (meaningful only where aperiodicity is low).
    aperiodicity : np.ndarray
        Cumulative-mean-normalised difference at the chosen lag, in [0, ~1.5]; 0 = periodic.
    """
    tau_min = max(2, int(sr / fmax))
    tau_max = int(np.ceil(sr / fmin))
    frame_len = win_length + tau_max + 1
    if y.size < frame_len:
        y = np.pad(y, (0, frame_len - y.size))
    frames = librosa.util.frame(y, frame_length=frame_len, hop_length=hop_length, axis=0)
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    n_fft = sfft.next_fast_len(frame_len + win_length, real=True)  # no circular wrap-around
    head = sfft.rfft(frames[:, :win_length], n=n_fft, axis=1)
    full = sfft.rfft(frames, n=n_fft, axis=1)
    # r[tau] = sum_j x[j] x[j + tau] over the integration window.
    r = sfft.irfft(np.conj(head) * full, n=n_fft, axis=1)[:, : tau_max + 1].astype(np.float64)
    sq = np.cumsum(np.pad(frames.astype(np.float64) ** 2, ((0, 0), (1, 0))), axis=1)
    taus = np.arange(tau_max + 1)
    energy_tau = sq[:, taus + win_length] - sq[:, taus]
    diff = energy_tau[:, :1] + energy_tau - 2.0 * r
    diff[:, 0] = 0.0
    cumulative = np.cumsum(diff[:, 1:], axis=1)
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] * taus[1:] / np.maximum(cumulative, 1e-12)
    search = cmnd[:, tau_min:]
    # First local minimum below the threshold, else the global minimum.
    below = search < threshold
    is_min = np.ones_like(below)
    is_min[:, :-1] = search[:, :-1] <= search[:, 1:]
    candidates = below & is_min
    first = np.where(candidates.any(axis=1), candidates.argmax(axis=1), search.argmin(axis=1))
    idx = first + tau_min
    # Parabolic interpolation: one lag step is ~40 cents at 200 Hz and 8 kHz.
    rows = np.arange(cmnd.shape[0])
    left = cmnd[rows, np.maximum(idx - 1, 1)]
    mid = cmnd[rows, idx]
    right = cmnd[rows, np.minimum(idx + 1, tau_max)]
    denom = left - 2.0 * mid + right
    safe = np.where(np.abs(denom) > 1e-12, denom, 1.0)
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / safe, 0.0)
    period = idx + np.clip(shift, -0.5, 0.5)
    return (sr / period).astype(np.float32), np.clip(mid, 0.0, 2.0).astype(np.float32)


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean vector."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def _modulation(log_bands: np.ndarray, frame_rate: float) -> tuple[float, float, float]:
    """Share of envelope modulation energy at 3-6 Hz and at 0.5-2 Hz, and its centroid."""
    seg = min(64, log_bands.shape[1])  # ~2-s segments, averaged (Welch)
    env = log_bands - log_bands.mean(axis=1, keepdims=True)
    step = max(1, seg // 2)
    starts = range(0, max(1, env.shape[1] - seg + 1), step)
    window = np.hanning(seg)
    spec = np.zeros(seg // 2 + 1)
    for s in starts:
        chunk = env[:, s : s + seg]
        chunk = chunk - chunk.mean(axis=1, keepdims=True)
        spec += (np.abs(np.fft.rfft(chunk * window, axis=1)) ** 2).sum(axis=0)
    freqs = np.fft.rfftfreq(seg, d=1.0 / frame_rate)
    band = (freqs >= 0.5) & (freqs <= 15.0)
    total = spec[band].sum() + 1e-12
    four = spec[(freqs >= 3.0) & (freqs <= 6.0)].sum() / total
    slow = spec[(freqs >= 0.5) & (freqs < 2.0)].sum() / total
    centroid = float((freqs[band] * spec[band]).sum() / total)
    return float(four), float(slow), centroid


def _pulse(onset: np.ndarray, frame_rate: float) -> tuple[float, float]:
    """Strength of a regular pulse: the onset autocorrelation's best peak between 40 and 200 BPM.

    Returns the peak (normalised autocorrelation) and its contrast with the median over the
    range, so that a generally smooth envelope does not pass for a beat.
    """
    x = onset - ndi.uniform_filter1d(onset, size=max(3, int(frame_rate)), mode="nearest")
    n = x.size
    lo, hi = int(0.3 * frame_rate), int(1.5 * frame_rate)
    if n < 2 * hi or not np.any(x):
        return 0.0, 0.0
    spec = np.fft.rfft(x, n=2 * n)
    acf = np.fft.irfft(np.abs(spec) ** 2)[:n]
    # Unbiased: divide by the overlap so long lags are not penalised on short windows.
    acf = acf / np.arange(n, 0, -1)
    acf = acf / max(acf[0], 1e-12)
    seg = acf[lo : hi + 1]
    peak = float(seg.max())
    return peak, float(peak - np.median(seg))


def cue_features(y: np.ndarray, sr: int) -> np.ndarray:
    """Speech/music/noise cue features of one analysis window.

    Parameters
    ----------
    y : np.ndarray
        Mono audio of one window (3-30 s is what the detector was trained on).
    sr : int
        Its sample rate (any; resampled to :data:`CUE_SR`).

    Returns
    -------
    np.ndarray
        float32 vector of length :data:`N_CUES`, named by :data:`CUE_NAMES`.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.arange(5 * 22050) / 22050
    >>> cue_features(np.sin(2 * np.pi * 440 * t), 22050).shape
    (31,)
    """
    x, gain = _prepare(y, sr)
    fr = CUE_SR / HOP
    spec = np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP, center=True))
    power = spec**2
    frame_power = power.mean(axis=0)
    db = _frame_db(frame_power)
    # Silent: far below the loud frames, or below an absolute floor (before level
    # normalisation). The second catches near-silence with a few clicks, whose loud frames
    # *are* the floor.
    frame_rms = librosa.feature.rms(y=x, frame_length=N_FFT, hop_length=HOP, center=True)[0]
    dbfs = 20.0 * np.log10(frame_rms[: db.size] * gain + 1e-10)
    loud = (db > -SILENCE_DB) & (dbfs > SILENCE_DBFS)
    if loud.sum() < 3:  # a (nearly) silent window: nothing below is meaningful
        loud = np.ones_like(loud)

    # --- energy contour (Scheirer & Slaney: share of frames below half the local mean RMS)
    rms = np.sqrt(frame_power)
    local = ndi.uniform_filter1d(rms, size=int(fr), mode="nearest")
    low_energy = float(np.mean(rms < 0.5 * local))
    silence = float(1.0 - np.mean((db > -SILENCE_DB) & (dbfs > SILENCE_DBFS)))
    level_range = float(np.percentile(db, 95) - np.percentile(db, 10))
    smooth_db = ndi.uniform_filter1d(db, size=3, mode="nearest")
    level_delta = float(np.std(np.diff(smooth_db))) if db.size > 1 else 0.0

    # --- modulation spectrum of log mel-band envelopes
    mel = _mel_filters() @ power
    log_mel = np.log10(mel + 1e-4 * mel.mean() + 1e-12)
    mod4, mod_slow, mod_centroid = _modulation(log_mel, fr)

    # --- spectral change and shape (on loud frames only: pauses say nothing about timbre)
    norm = spec / (np.linalg.norm(spec, axis=0, keepdims=True) + 1e-9)
    flux = np.r_[0.0, np.sum(np.diff(norm, axis=1) ** 2, axis=0)]
    band = slice(2, N_FFT // 2 - 6)  # ~60-3800 Hz: skip DC and the resampler's roll-off
    # Floor each frame 60 dB below its peak: a real recording's noise floor and a synthesiser's
    # digital silence should not look different.
    p = np.maximum(power[band], 1e-6 * power[band].max(axis=0, keepdims=True)) + 1e-12
    flatness = np.exp(np.mean(np.log(p), axis=0)) / np.mean(p, axis=0)
    log_flat = np.log10(flatness + 1e-6)
    freqs = librosa.fft_frequencies(sr=CUE_SR, n_fft=N_FFT)
    centroid = (freqs[:, None] * spec).sum(axis=0) / (spec.sum(axis=0) + 1e-9) / (CUE_SR / 2)
    zcr = librosa.feature.zero_crossing_rate(x, frame_length=N_FFT, hop_length=HOP)[0]
    zcr = zcr[: loud.size]
    mfcc = librosa.feature.mfcc(S=10.0 * log_mel, n_mfcc=13)[1:]
    mfcc_l = mfcc[:, loud]
    mfcc_delta = np.diff(mfcc_l, axis=1) if mfcc_l.shape[1] > 1 else np.zeros((12, 1))

    # --- pitch
    f0, aper = yin(x, CUE_SR)
    n = min(f0.size, loud.size)
    f0, aper, loud_p = f0[:n], aper[:n], loud[:n]
    voiced = (aper < VOICING_THRESHOLD) & loud_p
    runs = _runs(voiced)
    runs = runs[runs >= 2]  # a lone voiced frame is noise, not a syllable or a note
    duration = x.size / CUE_SR
    semis = 12.0 * np.log2(np.maximum(f0, 1.0) / 440.0)
    steps = np.abs(np.diff(semis))
    both = voiced[1:] & voiced[:-1]
    steps = steps[both]
    # Octave jumps are tracker errors; fold them away before measuring glides.
    steps = np.abs(steps - 12.0 * np.round(steps / 12.0))
    voiced_semis = semis[voiced]

    # --- tonality over long frames
    tonal = np.abs(librosa.stft(x, n_fft=N_FFT_TONAL, hop_length=HOP_TONAL, center=True)) ** 2
    lowband = librosa.fft_frequencies(sr=CUE_SR, n_fft=N_FFT_TONAL) < 2000.0
    chroma = _chroma_filters()[:, lowband] @ tonal[lowband]
    t_energy = chroma.sum(axis=0)
    t_loud = t_energy > 10 ** (-SILENCE_DB / 10) * (np.percentile(t_energy, 95) + 1e-12)
    c = chroma[:, t_loud] / (t_energy[t_loud] + 1e-12)
    chroma_peak = float(np.mean(c.max(axis=0))) if c.size else 0.0
    chroma_stab = _consecutive_cosine(chroma[:, t_loud])
    spectral_stab = _consecutive_cosine(np.sqrt(tonal[lowband][:, t_loud]))

    # --- rhythm: positive log-mel flux, summed over bands
    onset = np.maximum(0.0, np.diff(log_mel, axis=1)).sum(axis=0)
    pulse, pulse_contrast = _pulse(onset, fr)
    thresh = onset.mean() + onset.std()
    peaks = (onset[1:-1] > onset[:-2]) & (onset[1:-1] >= onset[2:]) & (onset[1:-1] > thresh)
    onset_rate = float(peaks.sum() / duration)

    # --- harmonic / percussive energy (HPSS by median filtering, on 0-2 kHz with bins pooled in
    # pairs to stay cheap: median filters dominate the cost otherwise)
    low = spec[: N_FFT // 4].reshape(N_FFT // 8, 2, -1).mean(axis=1)
    harm = ndi.median_filter(low, size=(1, 9), mode="nearest")
    perc = ndi.median_filter(low, size=(7, 1), mode="nearest")
    total = float((low**2).sum()) + 1e-12
    h_mask = harm >= perc
    harmonic_share = float((low[h_mask] ** 2).sum() / total)
    percussive_share = float(((low * (perc > 2.0 * harm)) ** 2).sum() / total)

    values = [
        low_energy,
        silence,
        level_range,
        level_delta,
        mod4,
        mod_slow,
        mod_centroid,
        float(np.mean(flux[loud])),
        float(np.std(flux[loud])),
        float(np.mean(log_flat[loud])),
        float(np.std(log_flat[loud])),
        float(np.mean(centroid[loud])),
        float(np.std(centroid[loud])),
        float(np.std(zcr[loud]) / (np.mean(zcr[loud]) + 1e-6)),
        float(np.mean(np.var(mfcc_delta, axis=1))),
        float(np.mean(np.std(mfcc_l, axis=1))),
        float(voiced.sum() / max(1, loud_p.sum())),
        float(np.mean(runs) / fr) if runs.size else 0.0,
        float(runs.size / duration),
        float(np.mean(aper[loud_p])),
        float(np.std(voiced_semis)) if voiced_semis.size > 1 else 0.0,
        float(np.median(steps)) if steps.size else 0.0,
        float(np.mean(steps < 0.3)) if steps.size else 0.0,
        chroma_peak,
        chroma_stab,
        spectral_stab,
        pulse,
        pulse_contrast,
        onset_rate,
        harmonic_share,
        percussive_share,
    ]
    out = np.asarray(values, dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@functools.lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    return librosa.filters.mel(sr=CUE_SR, n_fft=N_FFT, n_mels=N_MELS, fmin=60.0, fmax=3800.0)


@functools.lru_cache(maxsize=1)
def _chroma_filters() -> np.ndarray:
    return librosa.filters.chroma(sr=CUE_SR, n_fft=N_FFT_TONAL, tuning=0.0)


def _consecutive_cosine(frames: np.ndarray) -> float:
    """Mean cosine similarity of consecutive columns: how steady a spectrum is over time."""
    if frames.shape[1] < 2:
        return 1.0
    unit = frames / (np.linalg.norm(frames, axis=0, keepdims=True) + 1e-12)
    return float(np.mean(np.sum(unit[:, 1:] * unit[:, :-1], axis=0)))


# --------------------------------------------------------------------------------------------
# The detector
# --------------------------------------------------------------------------------------------

#: What a non-music window sounds like, in words a user reads ("this sounds like speech").
KINDS: tuple[str, ...] = ("speech", "noise", "tone", "animal or other sounds", "silence")
FORMAT_VERSION = 1
META_FILE = "detector.json"
ARRAYS_FILE = "detector.npz"


#: Inverse L2 strength of the network check's logistic regression. Held out (5 folds by
#: source), 0.001-0.1 missed the same real songs within one clip; 0.01 mistook the fewest
#: everyday sounds.
NETWORK_C = 0.01


@dataclass
class NetworkCheck:
    """A second opinion from the pretrained music network: logistic regression on the rows the
    genre head reads (musicnn's tags and penultimate layer, mean and max over 3-s patches).

    The cues hear how a sound evolves; a network trained on a million songs knows what music
    sounds like. Averaged, the two missed fewer held-out songs and mistook fewer everyday sounds
    than either alone (README, "Answers people can trust"). The network hears the pipeline's
    whole analysis windows, so the check scores windows, not the cues' 10-s segments.
    """

    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, E: np.ndarray, y: np.ndarray, feature_names: Sequence[str],
            sample_weight: np.ndarray | None = None, C: float = NETWORK_C) -> NetworkCheck:
        from sklearn.linear_model import LogisticRegression

        E = np.asarray(E, dtype=np.float64)
        mean, scale = E.mean(axis=0), E.std(axis=0) + 1e-9
        lr = LogisticRegression(C=C, max_iter=5000).fit(
            (E - mean) / scale, np.asarray(y).astype(int), sample_weight=sample_weight)
        return cls(list(feature_names), mean, scale, lr.coef_[0].copy(), float(lr.intercept_[0]))

    def proba(self, E: np.ndarray) -> np.ndarray:
        """P(music) per row of network features."""
        Z = (np.atleast_2d(np.asarray(E, dtype=np.float64)) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(Z @ self.coef + self.intercept, -50, 50)))


def joint(cue_probs: np.ndarray, network_probs: np.ndarray) -> np.ndarray:
    """A window's P(music) from both opinions: their mean (held out, averaging beat either
    alone, and the log-odds sum did no better)."""
    return (np.asarray(cue_probs, dtype=np.float64) + np.asarray(network_probs)) / 2


@dataclass(frozen=True)
class MusicAssessment:
    """The detector's answer for one clip, and what it heard per window."""

    music: bool
    music_probability: float
    sounds_like: str | None
    window_probabilities: np.ndarray
    window_kinds: np.ndarray  # (n_windows, len(KINDS)) probabilities of each non-music kind
    window_ood: np.ndarray  # distance from the music training data, in units of the threshold


class MusicDetector:
    """Music versus not-music on :func:`cue_features`, with an out-of-distribution guard.

    Three learned parts on standardised cues, and optionally a fourth:

    * a small neural network (one ReLU hidden layer; ``hidden=()`` gives logistic regression)
      that outputs P(music) per window;
    * a Mahalanobis distance from the music training windows (Ledoit-Wolf covariance). Beyond
      ``threshold_`` (a high quantile of the training music distances times ``ood_margin``), a
      window's P(music) is scaled down by ``(threshold_ / distance) ** ood_power``: what neither
      class resembles (a whale, an unusual machine) is not confidently called music;
    * a multinomial logistic regression over :data:`KINDS`, fitted on the non-music windows,
      for the "sounds like" guess;
    * optionally ``network_`` (:class:`NetworkCheck`, set by the trainer), joined to the cues in
      :meth:`assess` when the caller hands over the network's rows.

    Parameters
    ----------
    hidden : tuple of int
        Hidden layer sizes; ``()`` for logistic regression.
    alpha : float
        L2 penalty of the network (``1 / C`` for logistic regression).
    ood_quantile, ood_margin, ood_power : float
        The out-of-distribution threshold and how hard it bites (see above).
    ood_ridge : float
        Added to the diagonal of the music covariance (standardised units) before inverting.
    music_threshold : float
        A clip is music when its mean window P(music) reaches this.
    kind_min_probability : float
        "Sounds like" is named only when its probability reaches this ("where you can tell").
    segment_s : float or None
        Windows are scored as segments of about this length, averaged (see
        :func:`split_segments`); ``None`` scores each window whole.
    seed : int
        Seed of the network's initialisation.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (32,),
        alpha: float = 0.1,
        ood_quantile: float = 0.99,
        ood_margin: float = 1.0,
        ood_power: float = 4.0,
        ood_ridge: float = 0.1,
        music_threshold: float = 0.5,
        kind_min_probability: float = 0.5,
        segment_s: float | None = SEGMENT_S,
        seed: int = 0,
    ) -> None:
        self.hidden = tuple(hidden)
        self.alpha = alpha
        self.ood_quantile = ood_quantile
        self.ood_margin = ood_margin
        self.ood_power = ood_power
        self.ood_ridge = ood_ridge
        self.music_threshold = music_threshold
        self.kind_min_probability = kind_min_probability
        self.segment_s = segment_s
        self.seed = seed
        self.network_: NetworkCheck | None = None
        self.metadata_: dict[str, Any] = {}

    # -- learning ------------------------------------------------------------------------------
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        kinds: Sequence[str] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> MusicDetector:
        """Fit on cue vectors.

        Parameters
        ----------
        X : np.ndarray
            (n, :data:`N_CUES`) cue features.
        y : np.ndarray
            1 for music, 0 for not music.
        kinds : sequence of str, optional
            For non-music rows, one of :data:`KINDS` (music rows are ignored). Without it the
            detector names no "sounds like".
        sample_weight : np.ndarray, optional
            Per-row weights (e.g. to balance sources).

        Returns
        -------
        MusicDetector
            ``self``.
        """
        from sklearn.covariance import LedoitWolf
        from sklearn.linear_model import LogisticRegression
        from sklearn.neural_network import MLPClassifier

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y).astype(int)
        if X.ndim != 2 or X.shape[1] != N_CUES:
            raise ValueError(f"expected (n, {N_CUES}) cue features, got {X.shape}")
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-9
        Z = (X - self.mean_) / self.scale_
        if self.hidden:
            net = MLPClassifier(
                hidden_layer_sizes=self.hidden, alpha=self.alpha, max_iter=2000,
                random_state=self.seed, tol=1e-5,
            ).fit(Z, y, sample_weight=w * len(w) / w.sum())
            self.weights_ = [np.asarray(c) for c in net.coefs_]
            self.biases_ = [np.asarray(b) for b in net.intercepts_]
        else:
            lr = LogisticRegression(C=1.0 / self.alpha, max_iter=5000).fit(Z, y, sample_weight=w)
            self.weights_ = [lr.coef_.T.copy()]
            self.biases_ = [lr.intercept_.copy()]

        music = Z[y == 1]
        cov = LedoitWolf().fit(music)
        self.ood_mean_ = cov.location_
        # A ridge (in units of the pooled standard deviation) keeps a cue on which the training
        # music barely varies (it is almost never silent) from dominating the distance.
        ridged = cov.covariance_ + self.ood_ridge * np.eye(N_CUES)
        self.ood_precision_ = np.linalg.inv(ridged)
        train_d = self._distance(Z)
        self.threshold_ = float(np.quantile(train_d[y == 1], self.ood_quantile) * self.ood_margin)

        self.kind_coef_: np.ndarray | None = None
        self.kind_intercept_: np.ndarray | None = None
        if kinds is not None:
            kinds_arr = np.asarray(kinds, dtype=object)
            other = y == 0
            labels = np.array([KINDS.index(k) for k in kinds_arr[other]])
            present = np.unique(labels)
            # Expand to all KINDS so a kind absent from training keeps probability ~0.
            coef = np.full((len(KINDS), N_CUES), 0.0)
            intercept = np.full(len(KINDS), -1e3)
            if len(present) == 1:  # nothing to learn: always that kind
                intercept[present[0]] = 0.0
            else:
                clf = LogisticRegression(C=1.0, max_iter=5000).fit(
                    Z[other], labels, sample_weight=w[other]
                )
                if len(present) == 2:  # sklearn's binary case has one row
                    coef[present[1]], intercept[present[1]] = clf.coef_[0], clf.intercept_[0]
                    intercept[present[0]] = 0.0
                else:
                    coef[present], intercept[present] = clf.coef_, clf.intercept_
            self.kind_coef_, self.kind_intercept_ = coef, intercept
        return self

    # -- inference -----------------------------------------------------------------------------
    def _standardise(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "mean_"):
            raise ModelMissingError("The music detector has not been trained or loaded.")
        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        return (X - self.mean_) / self.scale_

    def _distance(self, Z: np.ndarray) -> np.ndarray:
        d = Z - self.ood_mean_
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, self.ood_precision_, d), 0.0))

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        """P(music) per row from the classifier alone, before the out-of-distribution guard."""
        h = self._standardise(X)
        for W, b in zip(self.weights_[:-1], self.biases_[:-1], strict=True):
            h = np.maximum(h @ W + b, 0.0)
        logit = (h @ self.weights_[-1] + self.biases_[-1])[:, 0]
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))

    def ood_distance(self, X: np.ndarray) -> np.ndarray:
        """Mahalanobis distance from the music training windows, in units of ``threshold_``
        (above 1: unlike any music the detector was trained on)."""
        return self._distance(self._standardise(X)) / self.threshold_

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities of [not music, music] per row, after the out-of-distribution guard.

        Parameters
        ----------
        X : np.ndarray
            (n, :data:`N_CUES`) cue features.

        Returns
        -------
        np.ndarray
            (n, 2); column 1 is P(music).
        """
        p = self.raw_proba(X)
        ratio = self.ood_distance(X)
        p = np.where(ratio > 1.0, p / np.maximum(ratio, 1.0) ** self.ood_power, p)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """1 where a window is music, else 0."""
        return (self.predict_proba(X)[:, 1] >= self.music_threshold).astype(int)

    def kind_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities over :data:`KINDS` per row (meaningful for non-music windows)."""
        Z = self._standardise(X)
        if self.kind_coef_ is None or self.kind_intercept_ is None:
            return np.full((len(Z), len(KINDS)), 1.0 / len(KINDS))
        logits = Z @ self.kind_coef_.T + self.kind_intercept_
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        probs = e / e.sum(axis=1, keepdims=True)
        # A window that is nearly all silence is silence, whatever the regression thinks.
        silent = np.atleast_2d(X)[:, CUE_NAMES.index("silence_share")] >= 0.9
        probs[silent] = np.eye(len(KINDS))[KINDS.index("silence")]
        return probs

    # -- the API the pipeline calls ---------------------------------------------------------
    def window_probabilities(self, windows: Sequence[np.ndarray], sr: int) -> np.ndarray:
        """P(music) of each analysis window.

        Parameters
        ----------
        windows : sequence of np.ndarray
            Mono audio windows of one clip.
        sr : int
            Their sample rate.

        Returns
        -------
        np.ndarray
            (n_windows,) probabilities: each the mean over the window's segments of about
            ``segment_s`` seconds.
        """
        cues, owner = self._segment_cues(windows, sr)
        return _per_window(self.predict_proba(cues)[:, 1], owner, len(windows))

    def _segment_cues(self, windows: Sequence[np.ndarray], sr: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Cues of every segment of every window, and the window each segment belongs to.

        A 30-s window is heard as three 10-s segments: a song whose first window holds a
        spoken intro then keeps the credit for the music in that window (held-out, segmenting
        changed nothing on pure speech or music and helped on mixtures).
        """
        segments: list[np.ndarray] = []
        owner: list[int] = []
        for i, w in enumerate(windows):
            parts = split_segments(np.asarray(w), sr, self.segment_s)
            segments += parts
            owner += [i] * len(parts)
        return window_cues(segments, sr), np.asarray(owner, dtype=int)

    def decide(
        self, window_probs: np.ndarray, window_kinds: np.ndarray | None = None
    ) -> tuple[bool, float, str | None]:
        """The clip-level decision.

        Rule: the clip's P(music) is the **mean of its windows' P(music)**, and the clip is music
        when that reaches ``music_threshold`` (0.5). A song with a spoken intro (one speech
        window out of several) stays music; a podcast with a jingle (one music window among
        speech) is not.

        Parameters
        ----------
        window_probs : np.ndarray
            P(music) per window, from :meth:`window_probabilities`.
        window_kinds : np.ndarray, optional
            (n_windows, len(KINDS)) from :meth:`kind_proba`; needed to say what a non-music clip
            sounds like.

        Returns
        -------
        music : bool
        probability : float
            The clip's P(music).
        sounds_like : str or None
            For a non-music clip, the most likely of :data:`KINDS` over its non-music windows
            when that is at least ``kind_min_probability``; otherwise ``None``.
        """
        probs = np.asarray(window_probs, dtype=np.float64).ravel()
        if probs.size == 0:
            raise ValueError("decide() needs at least one window")
        probability = float(np.mean(probs))
        music = probability >= self.music_threshold
        sounds_like = None
        if not music and window_kinds is not None:
            kinds = np.atleast_2d(np.asarray(window_kinds, dtype=np.float64))
            nonmusic = probs < self.music_threshold
            mean_kind = kinds[nonmusic].mean(axis=0)
            best = int(np.argmax(mean_kind))
            if mean_kind[best] >= self.kind_min_probability:
                sounds_like = KINDS[best]
        return music, probability, sounds_like

    def hears_network(self, feature_names: Sequence[str]) -> bool:
        """Whether the detector has a :class:`NetworkCheck` for rows with these feature names."""
        return self.network_ is not None and list(feature_names) == self.network_.feature_names

    def assess(self, windows: Sequence[np.ndarray], sr: int,
               network_rows: np.ndarray | None = None,
               network_names: Sequence[str] = ()) -> MusicAssessment:
        """Everything at once, computing the cues only once: what the pipeline should call.

        Parameters
        ----------
        windows : sequence of np.ndarray
            Mono audio windows of one clip.
        sr : int
            Their sample rate.
        network_rows, network_names : optional
            The genre featurizer's row of each window and its feature names: when the detector
            has a :class:`NetworkCheck` for those names, each window's P(music) is the mean of
            the cues' and the network's (otherwise the cues' alone, e.g. for the table family).

        Returns
        -------
        MusicAssessment
        """
        if len(windows) == 0:
            raise ValueError("assess() needs at least one window")
        cues, owner = self._segment_cues(windows, sr)
        n = len(windows)
        probs = _per_window(self.predict_proba(cues)[:, 1], owner, n)
        if network_rows is not None and self.network_ is not None \
                and self.hears_network(network_names):
            probs = joint(probs, self.network_.proba(network_rows))
        kinds = _per_window(self.kind_proba(cues), owner, n)
        music, probability, sounds_like = self.decide(probs, kinds)
        return MusicAssessment(
            music=music,
            music_probability=probability,
            sounds_like=sounds_like,
            window_probabilities=probs,
            window_kinds=kinds,
            window_ood=_per_window(self.ood_distance(cues), owner, n),
        )

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Write ``detector.json`` (settings, names, metrics) and ``detector.npz`` (arrays).

        Plain JSON and numpy arrays, no pickle: loading a model file cannot run code.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "mean": self.mean_, "scale": self.scale_,
            "ood_mean": self.ood_mean_, "ood_precision": self.ood_precision_,
        }
        for i, (W, b) in enumerate(zip(self.weights_, self.biases_, strict=True)):
            arrays[f"W{i}"], arrays[f"b{i}"] = W, b
        if self.kind_coef_ is not None and self.kind_intercept_ is not None:
            arrays["kind_coef"], arrays["kind_intercept"] = self.kind_coef_, self.kind_intercept_
        net = self.network_
        if net is not None:
            arrays |= {"net_mean": net.mean, "net_scale": net.scale, "net_coef": net.coef,
                       "net_intercept": np.array(net.intercept)}
        np.savez(directory / ARRAYS_FILE, **arrays)
        meta = {**self.metadata_, **(metadata or {})}
        meta.pop("network_feature_names", None)
        if net is not None:
            meta["network_feature_names"] = net.feature_names
        segments = f"~{self.segment_s:g}-s segments" if self.segment_s else "whole window"
        cues = f"the cues' mean over its {segments}"
        window_rule = cues if net is None else (
            f"the mean of {cues} and the network check's P(music) for the window (when the "
            "genre featurizer is the musicnn one it was fitted on; otherwise the cues' alone)")
        meta.update(
            format_version=FORMAT_VERSION,
            cue_names=list(CUE_NAMES),
            kinds=list(KINDS),
            n_layers=len(self.weights_),
            threshold=self.threshold_,
            hyperparameters={
                "hidden": list(self.hidden), "alpha": self.alpha,
                "ood_quantile": self.ood_quantile, "ood_margin": self.ood_margin,
                "ood_power": self.ood_power, "ood_ridge": self.ood_ridge,
                "music_threshold": self.music_threshold,
                "kind_min_probability": self.kind_min_probability,
                "segment_s": self.segment_s, "seed": self.seed,
            },
            decision_rule=(
                f"window P(music) = {window_rule}; clip P(music) = mean of window "
                f"P(music); music when it reaches {self.music_threshold:g}"
            ),
        )
        self.metadata_ = meta
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path | None = None) -> MusicDetector:
        """Load a detector saved by :meth:`save` (default: the shipped ``models/detector``).

        Raises
        ------
        ModelMissingError
            The directory lacks the files.
        ModelMismatchError
            They were written for other cues or another format.
        """
        directory = Path(directory) if directory is not None else DEFAULT_DIR
        meta = read_artifact(directory, META_FILE, ARRAYS_FILE, what="music detector",
                             remedy="Run `genre train-detector` to make one.")
        if meta.get("format_version") != FORMAT_VERSION or meta.get("cue_names") != list(CUE_NAMES):
            raise ModelMismatchError(
                f"The music detector in {directory} was made for other cue features or another "
                "format. Retrain it with `genre train-detector`."
            )
        hp = meta.get("hyperparameters", {})
        det = cls(
            hidden=tuple(hp.get("hidden", ())), alpha=hp.get("alpha", 0.1),
            ood_quantile=hp.get("ood_quantile", 0.99), ood_margin=hp.get("ood_margin", 1.0),
            ood_power=hp.get("ood_power", 4.0), ood_ridge=hp.get("ood_ridge", 0.1),
            music_threshold=hp.get("music_threshold", 0.5),
            kind_min_probability=hp.get("kind_min_probability", 0.5),
            segment_s=hp.get("segment_s", SEGMENT_S), seed=hp.get("seed", 0),
        )
        with np.load(directory / ARRAYS_FILE, allow_pickle=False) as z:
            det.mean_, det.scale_ = z["mean"], z["scale"]
            det.ood_mean_, det.ood_precision_ = z["ood_mean"], z["ood_precision"]
            n = int(meta["n_layers"])
            det.weights_ = [z[f"W{i}"] for i in range(n)]
            det.biases_ = [z[f"b{i}"] for i in range(n)]
            det.kind_coef_ = z.get("kind_coef")
            det.kind_intercept_ = z.get("kind_intercept")
            if "net_coef" in z.files:
                det.network_ = NetworkCheck(
                    list(meta["network_feature_names"]), z["net_mean"], z["net_scale"],
                    z["net_coef"], float(z["net_intercept"]))
        det.threshold_ = float(meta["threshold"])
        det.metadata_ = meta
        return det

    @property
    def info(self) -> dict[str, Any]:
        """Version, training date and held-out metrics, as stored with the model."""
        keys = ("version", "trained_at", "metrics", "decision_rule", "threshold")
        return {k: self.metadata_[k] for k in keys if k in self.metadata_}


#: Where the shipped detector lives.
DEFAULT_DIR = Path(__file__).resolve().parents[1] / "models" / "detector"


def split_segments(y: np.ndarray, sr: int, segment_s: float | None) -> list[np.ndarray]:
    """Split a window into ``round(duration / segment_s)`` (at least one) equal segments.

    A 30-s window gives three of 10 s, a 17-s window two of 8.5 s, a 14-s window stays whole.
    ``segment_s=None`` keeps every window whole.
    """
    if not segment_s:
        return [y]
    count = max(1, int(round(y.size / sr / segment_s)))
    return list(np.array_split(y, count))


def _per_window(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Mean of per-segment values (1-D or 2-D) over the segments of each window."""
    counts = np.bincount(owner, minlength=n).astype(np.float64)
    if values.ndim == 1:
        return np.bincount(owner, weights=values, minlength=n) / counts
    return np.stack([np.bincount(owner, weights=values[:, j], minlength=n)
                     for j in range(values.shape[1])], axis=1) / counts[:, None]


def window_cues(windows: Sequence[np.ndarray], sr: int) -> np.ndarray:
    """:func:`cue_features` of each window, stacked into (n_windows, :data:`N_CUES`)."""
    if len(windows) == 0:
        return np.zeros((0, N_CUES), dtype=np.float32)
    return np.stack([cue_features(w, sr) for w in windows])
