"""The 57 GTZAN features of the Kaggle tables, computed the way the published table was — fast.

The published table was made with plain librosa defaults per window: chroma, RMS, spectral
centroid/bandwidth/roll-off, zero-crossing rate, the harmonic and percussive waveforms of HPSS,
tempo and 20 MFCCs, each summarised by its mean and variance over the window. Names match the CSV
columns exactly.

Called one by one (``bench/reference.py`` keeps that recipe), librosa computes the same STFT six
times and spends ~90 % of its time in scipy's median filters for HPSS. Here the same quantities
come from one shared STFT and one mel spectrogram (shared by MFCC and tempo), the HPSS medians come
from an exact running-median kernel (numba), the percussive waveform is the signal minus the
harmonic one (the two soft masks sum to one), and the tuning estimate only looks at the band
librosa's pitch tracker keeps. Every step computes what librosa computes; the results differ from
the reference by floating-point rounding only (``tests/test_features_fast.py`` states the
tolerances).
"""

from __future__ import annotations

from functools import lru_cache

import librosa
import numba
import numpy as np
import scipy.fft
import scipy.ndimage
from numpy.lib.stride_tricks import sliding_window_view

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

# librosa's defaults, which the published table used.
N_FFT = 2048
HOP_LENGTH = 512
N_MELS = 128
N_CHROMA = 12
#: HPSS median-filter length, in frames (harmonic) and in bins (percussive).
HPSS_KERNEL = 31
ROLL_PERCENT = 0.85
#: Pitch band of librosa's ``piptrack`` (used for the tuning estimate), in Hz.
PIPTRACK_FMIN, PIPTRACK_FMAX = 150.0, 4000.0
PIPTRACK_THRESHOLD = 0.1
ZCR_THRESHOLD = 1e-10
#: Autocorrelation window of the tempo estimate, in seconds.
TEMPO_AC_SIZE_S = 8.0


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

    Examples
    --------
    >>> y = np.sin(2 * np.pi * 440 * np.arange(5 * 22050) / 22050).astype(np.float32)
    >>> extract(y, 22050).shape
    (57,)
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    # Everything below works on (frames, bins): each frame's spectrum is contiguous, so the
    # FFTs and the per-frame reductions read memory in order (librosa uses (bins, frames)).
    spectrum = _stft(y)
    magnitude = np.abs(spectrum)
    power = magnitude**2

    harmonic = _harmonic_waveform(spectrum, magnitude, len(y))
    # The two soft masks sum to one, so istft(P) = istft(D) - istft(H) = y - h.
    percussive = y - harmonic

    centroid, bandwidth, rolloff = _spectral_shape(magnitude, _fft_frequencies(sr, N_FFT),
                                                   np.float32(ROLL_PERCENT))
    log_mel = librosa.power_to_db(np.ascontiguousarray((power @ _mel_basis(sr).T).T))
    onset_envelope = librosa.onset.onset_strength(S=log_mel, sr=sr, hop_length=HOP_LENGTH)
    frames = [
        _chroma(power, sr),
        _rms(y),
        centroid,
        bandwidth,
        rolloff,
        _zero_crossing_rate(y),
        harmonic,
        percussive,
    ]
    tempo = _tempo(onset_envelope, sr)
    mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)
    values: list[float] = []
    for frame in frames:
        values += [float(np.mean(frame)), float(np.var(frame))]
    values.append(tempo)
    for row in mfcc:
        values += [float(np.mean(row)), float(np.var(row))]
    return np.asarray(values, dtype=np.float64)


def _stft(y: np.ndarray) -> np.ndarray:
    """``librosa.stft(y).T``, bit for bit: Hann window, centred frames, zero padding;
    (frames, bins), complex64."""
    frames = sliding_window_view(np.pad(y, N_FFT // 2), N_FFT)[::HOP_LENGTH]
    window = _window(N_FFT)
    out = np.empty((frames.shape[0], N_FFT // 2 + 1), dtype=np.complex64)
    # Like librosa: the windowed frames in float64, rounded to complex64 after the FFT. (A
    # float32 FFT leaves a noise floor ~1e-7 of the peak in every bin, which moves the
    # bandwidth of a pure tone by percents.) In blocks that stay in cache.
    for start in range(0, frames.shape[0], _STFT_BLOCK):
        block = frames[start : start + _STFT_BLOCK]
        out[start : start + len(block)] = scipy.fft.rfft(block * window, axis=-1)
    return out


#: Frames per FFT call in :func:`_stft` (128 float64 frames: 2 MB).
_STFT_BLOCK = 128


def _istft(spectrum: np.ndarray, length: int) -> np.ndarray:
    """``librosa.istft(spectrum.T, length=length)``: overlap-add, window-normalised."""
    n_frames = spectrum.shape[0]
    frames = scipy.fft.irfft(spectrum, n=N_FFT, axis=-1)
    frames *= _window(N_FFT).astype(frames.dtype)
    out = np.zeros((n_frames - 1) * HOP_LENGTH + N_FFT, dtype=frames.dtype)
    for part in range(N_FFT // HOP_LENGTH):  # each frame spans four hops: add it hop by hop
        start = part * HOP_LENGTH
        out[start : start + n_frames * HOP_LENGTH] += (
            frames[:, start : start + HOP_LENGTH].reshape(-1)
        )
    norm = _window_sumsquare(n_frames)
    nonzero = norm > np.finfo(norm.dtype).tiny
    out[nonzero] /= norm[nonzero]
    signal = out[N_FFT // 2 : N_FFT // 2 + length]
    return np.pad(signal, (0, length - len(signal))) if len(signal) < length else signal


# -- HPSS -------------------------------------------------------------------------------------
def _harmonic_waveform(spectrum: np.ndarray, magnitude: np.ndarray, length: int) -> np.ndarray:
    """The harmonic waveform of ``librosa.effects.hpss``, from the (frames, bins) STFT."""
    harm = median_filter_columns(magnitude, HPSS_KERNEL)  # along time
    perc = median_filter_rows(magnitude, HPSS_KERNEL)  # along frequency
    mask = _harmonic_mask(harm, np.ascontiguousarray(perc))
    return _istft(spectrum * mask, length)


def median_filter_rows(x: np.ndarray, size: int) -> np.ndarray:
    """Median over ``size`` neighbours along each row, as
    ``scipy.ndimage.median_filter(x, size=(1, size), mode="reflect")`` computes it, exactly.

    Parameters
    ----------
    x : np.ndarray
        2-D array.
    size : int
        Odd window length.

    Returns
    -------
    np.ndarray
        Same shape and dtype as ``x``.
    """
    return median_filter_columns(np.ascontiguousarray(x.T), size).T


def median_filter_columns(x: np.ndarray, size: int) -> np.ndarray:
    """Median over ``size`` neighbours down each column, as
    ``scipy.ndimage.median_filter(x, size=(size, 1), mode="reflect")`` computes it, exactly.

    Parameters
    ----------
    x : np.ndarray
        2-D array.
    size : int
        Odd window length.

    Returns
    -------
    np.ndarray
        Same shape and dtype as ``x``.
    """
    if size % 2 == 0 or x.ndim != 2:
        raise ValueError("the median filter needs a 2-D array and an odd window")
    if x.shape[0] <= size // 2:
        # Reflection would need more than one bounce: rare enough to leave to scipy.
        return scipy.ndimage.median_filter(x, size=(size, 1), mode="reflect")
    return _running_median_columns(np.ascontiguousarray(x), size)


#: Columns processed together by the running median (its sorted windows stay in L1 cache).
_LANES = 64


@numba.njit(cache=True, nogil=True)
def _running_median_columns(x: np.ndarray, size: int) -> np.ndarray:  # pragma: no cover
    # Every column keeps a sorted copy of its window. One step down, one value leaves and one
    # enters; their ranks are counted and the new sorted window is written with selects only,
    # so the loops over columns become SIMD code: ~50x faster than scipy's median_filter.
    n, m = x.shape
    half = size // 2
    out = np.empty_like(x)
    # Rows 0 and size + 1 are padding, read but never selected, so no index leaves the array.
    cur = np.zeros((size + 2, _LANES), dtype=x.dtype)
    nxt = np.zeros((size + 2, _LANES), dtype=x.dtype)
    leaving = np.empty(_LANES, dtype=x.dtype)
    entering = np.empty(_LANES, dtype=x.dtype)
    rank_out = np.empty(_LANES, dtype=np.int32)
    rank_in = np.empty(_LANES, dtype=np.int32)
    first = np.empty(size, dtype=x.dtype)
    for c0 in range(0, m, _LANES):
        width = min(_LANES, m - c0)
        for lane in range(width):
            for k in range(size):
                first[k] = x[_reflect(k - half, n), c0 + lane]
            first.sort()
            cur[1 : size + 1, lane] = first
            out[0, c0 + lane] = first[half]
        for i in range(1, n):
            row_out = _reflect(i - 1 - half, n)
            row_in = _reflect(i + half, n)
            for lane in range(width):
                leaving[lane] = x[row_out, c0 + lane]
                entering[lane] = x[row_in, c0 + lane]
                rank_out[lane] = 0
                rank_in[lane] = 0
            for j in range(1, size + 1):
                for lane in range(width):
                    v = cur[j, lane]
                    rank_out[lane] += np.int32(v < leaving[lane])
                    rank_in[lane] += np.int32(v < entering[lane])
            for lane in range(width):
                # rank_out: where the leaving value sits; rank_in: where the entering one goes
                # once it has left.
                rank_in[lane] -= np.int32(leaving[lane] < entering[lane])
            for j in range(size):
                jj = np.int32(j)
                for lane in range(width):
                    # Unconditional loads, then selects: the form LLVM vectorises.
                    below, here, above = cur[j, lane], cur[j + 1, lane], cur[j + 2, lane]
                    a, c = rank_out[lane], rank_in[lane]
                    kept_before = below if jj - np.int32(1) < a else here
                    kept_at = here if jj < a else above
                    value = kept_at if jj < c else kept_before
                    nxt[j + 1, lane] = entering[lane] if jj == c else value
            cur, nxt = nxt, cur
            for lane in range(width):
                out[i, c0 + lane] = cur[half + 1, lane]
    return out


@numba.njit(cache=True, inline="always")
def _reflect(i: int, n: int) -> int:  # pragma: no cover (numba)
    # scipy.ndimage's "reflect" boundary: (d c b a | a b c d | d c b a).
    if i < 0:
        return -i - 1
    if i >= n:
        return 2 * n - i - 1
    return i


@numba.njit(cache=True, nogil=True)
def _harmonic_mask(harm: np.ndarray, perc: np.ndarray) -> np.ndarray:  # pragma: no cover
    # librosa.util.softmask(harm, perc, power=2, split_zeros=True), written with selects only
    # so that it vectorises.
    n_rows, n_cols = harm.shape
    out = np.empty_like(harm)
    tiny = np.float32(np.finfo(np.float32).tiny)
    for r in range(n_rows):
        for c in range(n_cols):
            h = harm[r, c]
            p = perc[r, c]
            z = max(h, p)
            usable = z >= tiny
            scale = z if usable else np.float32(1.0)
            a = (h / scale) * (h / scale)
            b = (p / scale) * (p / scale)
            out[r, c] = a / (a + b) if usable else np.float32(0.5)
    return out


# -- spectral features ------------------------------------------------------------------------
@numba.njit(cache=True, nogil=True)
def _spectral_shape(
    mag: np.ndarray, freqs: np.ndarray, roll_percent: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover (numba)
    # librosa's spectral_centroid, spectral_bandwidth (p=2) and spectral_rolloff in one pass per
    # frame; each returned as (1, frames) like librosa's.
    n_frames, n_bins = mag.shape
    centroid = np.zeros((1, n_frames))
    bandwidth = np.zeros((1, n_frames))
    rolloff = np.zeros((1, n_frames))
    tiny = np.finfo(np.float32).tiny
    for t in range(n_frames):
        total32 = np.float32(0.0)
        total = 0.0
        weighted = 0.0
        for f in range(n_bins):
            m = mag[t, f]
            total32 += m
            total += m
            weighted += freqs[f] * m
        # Roll-off: the first bin where librosa's float32 running sum reaches the share.
        threshold = roll_percent * total32
        running = np.float32(0.0)
        for f in range(n_bins):
            running += mag[t, f]
            if not running < threshold:
                rolloff[0, t] = freqs[f]
                break
        if total < tiny:  # librosa leaves an all-zero frame unnormalised: zeros out
            continue
        c = weighted / total
        spread = 0.0
        for f in range(n_bins):
            spread += mag[t, f] * (freqs[f] - c) ** 2
        centroid[0, t] = c
        bandwidth[0, t] = np.sqrt(spread / total)
    return centroid, bandwidth, rolloff


def _chroma(power: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.feature.chroma_stft(S=power.T)`` with its own tuning estimate: (12, frames)."""
    tuning = _estimate_tuning(power, sr)
    raw = power @ _chroma_basis(sr, N_FFT, tuning).T
    return librosa.util.normalize(raw, norm=np.inf, axis=-1).T


def _estimate_tuning(power: np.ndarray, sr: int) -> float:
    """``librosa.estimate_tuning(S=power.T, sr=sr)``, looking only at the band that ``piptrack``
    keeps (150-4,000 Hz) instead of interpolating every bin."""
    freqs = _fft_frequencies(sr, N_FFT)
    band = np.flatnonzero((freqs >= PIPTRACK_FMIN) & (freqs < min(PIPTRACK_FMAX, sr / 2)))
    if band.size == 0:
        return 0.0
    # Bins first-1 .. last+1: the neighbours that the local-maximum test and the interpolation
    # read. (librosa treats the outermost bins as edges; the band never reaches them.)
    lo, hi = max(int(band[0]) - 1, 0), min(int(band[-1]) + 2, power.shape[1])
    block = power[:, lo:hi]
    ref = PIPTRACK_THRESHOLD * np.max(power, axis=1, keepdims=True)
    gated = block * (block > ref)
    peaks = (gated[:, 1:-1] > gated[:, :-2]) & (gated[:, 1:-1] >= gated[:, 2:])
    frames, bins = np.nonzero(peaks)
    bins += 1  # index into block
    below, at, above = block[frames, bins - 1], block[frames, bins], block[frames, bins + 1]
    # The same arithmetic (and precision) as librosa's numba stencil for the interpolation.
    curvature = (above + below).astype(np.float64) - 2.0 * at
    slope = (above - below).astype(np.float64) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(np.abs(slope) >= np.abs(curvature), 0.0, -slope / curvature)
    shift = shift.astype(power.dtype)
    pitches = (bins + lo + shift) * float(sr) / N_FFT
    gradient = (above - below) / 2.0  # np.gradient's float32 central difference
    mags = at + 0.5 * gradient * shift
    keep = pitches > 0
    if not keep.any():
        return 0.0
    threshold = np.median(mags[keep])
    return float(librosa.pitch_tuning(pitches[(mags >= threshold) & keep], bins_per_octave=12))


def _rms(y: np.ndarray) -> np.ndarray:
    """``librosa.feature.rms(y=y)``: zero-padded frames of 2,048 samples every 512; (1, frames)."""
    frames = sliding_window_view(np.pad(y, N_FFT // 2), N_FFT)[::HOP_LENGTH]
    energy = np.einsum("ij,ij->i", frames, frames)
    return np.sqrt(energy / N_FFT)[None, :]


def _zero_crossing_rate(y: np.ndarray) -> np.ndarray:
    """``librosa.feature.zero_crossing_rate(y)``: the share of sign changes per frame."""
    padded = np.pad(y, N_FFT // 2, mode="edge")
    negative = padded < -np.asarray(ZCR_THRESHOLD, dtype=padded.dtype)  # |x| <= 1e-10 is zero
    changes = np.zeros(len(padded), dtype=np.int32)
    changes[1:] = negative[1:] != negative[:-1]
    frames = sliding_window_view(changes, N_FFT)[::HOP_LENGTH]
    # A frame's first sample has no predecessor inside the frame: it never counts.
    counts = frames.sum(axis=1) - frames[:, 0]
    return (counts / N_FFT)[None, :]


def _tempo(onset_envelope: np.ndarray, sr: int) -> float:
    """``librosa.feature.tempo(onset_envelope=...)``: the tempogram's mean is computed with
    contiguous FFTs over (frames, lags) and handed to librosa's estimator."""
    win = int(librosa.time_to_frames(TEMPO_AC_SIZE_S, sr=sr, hop_length=HOP_LENGTH))
    n = onset_envelope.shape[-1]
    padded = np.pad(onset_envelope, win // 2, mode="linear_ramp", end_values=[0, 0])
    frames = sliding_window_view(padded, win)[:n] * _window(win)
    n_pad = scipy.fft.next_fast_len(2 * win - 1, real=True)
    autocorr = scipy.fft.irfft(np.abs(scipy.fft.rfft(frames, n=n_pad, axis=-1)) ** 2,
                               n=n_pad, axis=-1)[:, :win]
    tempogram = librosa.util.normalize(autocorr, norm=np.inf, axis=-1)
    mean = tempogram.mean(axis=0)[:, None]
    return float(librosa.feature.tempo(tg=mean, sr=sr, hop_length=HOP_LENGTH)[0])


@lru_cache(maxsize=8)
def _window(n: int) -> np.ndarray:
    # float64, as librosa keeps it: a window rounded to float32 raises the spectral floor.
    return librosa.filters.get_window("hann", n, fftbins=True)


@lru_cache(maxsize=16)
def _window_sumsquare(n_frames: int) -> np.ndarray:
    # librosa.filters.window_sumsquare, overlap-added like _istft (librosa's numba loop costs
    # seconds to load in every fresh worker).
    squared = _window(N_FFT) ** 2
    out = np.zeros((n_frames - 1) * HOP_LENGTH + N_FFT)
    for start in range(0, N_FFT, HOP_LENGTH):
        out[start : start + n_frames * HOP_LENGTH] += np.tile(
            squared[start : start + HOP_LENGTH], n_frames
        )
    return out.astype(np.float32)


@lru_cache(maxsize=8)
def _fft_frequencies(sr: int, n_fft: int) -> np.ndarray:
    return librosa.fft_frequencies(sr=sr, n_fft=n_fft)


@lru_cache(maxsize=8)
def _mel_basis(sr: int) -> np.ndarray:
    return librosa.filters.mel(sr=sr, n_fft=N_FFT, n_mels=N_MELS)


@lru_cache(maxsize=128)
def _chroma_basis(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    return librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=N_CHROMA)
