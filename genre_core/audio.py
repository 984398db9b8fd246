"""Decoding: any format ffmpeg reads → mono float32 at 22,050 Hz, and the analysis windows.

ffprobe looks at every input first, so a refusal can say what the file is (an image, a video
without sound, three hours long). What libsndfile reads (wav, flac, ogg/vorbis, opus, mp3) is then
decoded in-process, while ffprobe runs: starting an ffmpeg process costs ~0.1 s of CPU (it loads
~200 shared libraries) against ~20 ms to decode a 30-s mp3. Everything else (m4a, webm, mp4...)
and anything libsndfile stumbles on goes to ffmpeg, which we call ourselves rather than through
``AudioSegment.from_file`` because pydub offers no timeout and a hostile file must not be able to
hang a worker. Both paths give the same samples (ffmpeg mixes channels down by their mean, as we
do; resampling, where needed, is soxr's instead of ffmpeg's).
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
from pydub.utils import get_encoder_name, get_prober_name, which

from genre_core.errors import (
    AudioError,
    CorruptAudioError,
    DecoderMissingError,
    DecodeTimeoutError,
    EmptyAudioError,
    NotAudioError,
    SilentAudioError,
    TooLargeError,
    TooLongError,
    TooShortError,
)
from genre_core.settings import SAMPLE_RATE, Limits

#: A clip whose loudest sample stays below this (about -66 dBFS) is treated as silence.
SILENCE_PEAK = 5e-4
#: In-process decoding reads a file whole up to this much float32 PCM (12 min of 44.1-kHz
#: stereo), longer ones in blocks of READ_BLOCK_BYTES, to bound memory.
READ_AT_ONCE_BYTES = 128 * 1024 * 1024
READ_BLOCK_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Audio:
    """Decoded audio: mono float32 samples in [-1, 1]."""

    samples: np.ndarray
    sr: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sr


def decode(source: bytes | str | Path, limits: Limits = Limits()) -> Audio:
    """Decode a file (path or raw bytes) to mono float32 at 22,050 Hz.

    Parameters
    ----------
    source : bytes, str or Path
        The encoded file: anything ffmpeg reads (mp3, wav, ogg, opus, flac, m4a, webm, mp4).
    limits : Limits
        Size, duration and time limits.

    Returns
    -------
    Audio

    Raises
    ------
    AudioError
        A subclass saying what is wrong, in words a person understands.
    """
    with _as_file(source, limits) as path:
        deadline = time.monotonic() + limits.decode_timeout_s
        prober = _start_probe(path)
        try:
            samples = _decode_in_process(path, limits)
            probe = _finish_probe(prober, path, limits, deadline)
        finally:
            if prober.poll() is None:
                prober.kill()
                prober.wait()
        if samples is None:
            pcm = _run_ffmpeg(path, limits, probe)
            samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    audio = Audio(samples)
    _check_content(audio, limits)
    return audio


def analysis_windows(
    audio: Audio, window_s: float, max_windows: int
) -> list[tuple[float, np.ndarray]]:
    """Cut a clip into analysis windows: ``(start_s, samples)`` pairs.

    A clip no longer than 1.2 windows is a single window (the features are means and
    variances, so a window's length hardly shifts them). A longer song gets
    ``min(max_windows, ceil(duration / window_s))`` windows spread evenly from its start to its
    end, so a long song is heard throughout rather than only in its first seconds.
    """
    size = int(round(window_s * audio.sr))
    total = len(audio.samples)
    if total <= size * 1.2:
        return [(0.0, audio.samples)]
    count = min(max_windows, math.ceil(total / size))
    starts = np.linspace(0, total - size, count).round().astype(int)
    return [(start / audio.sr, audio.samples[start : start + size]) for start in starts]


def encode_opus(samples: np.ndarray, sr: int, limits: Limits = Limits(),
                bitrate: str = "48k") -> bytes:
    """``samples`` (mono float32) as an Ogg/Opus file: what the label store keeps of a clip.
    48 kbit/s mono keeps what the genre features hear at about 6 kB per second; the fastest
    encoder setting halves the time (0.17 s per 30 s here) for a file 8% bigger."""
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    cmd = [_tool(get_encoder_name()), "-v", "error", "-f", "s16le", "-ar", str(sr), "-ac", "1",
           "-i", "pipe:0", "-c:a", "libopus", "-b:a", bitrate, "-compression_level", "0",
           "-f", "ogg", "pipe:1"]
    try:
        done = subprocess.run(cmd, input=pcm, capture_output=True, check=False,
                              timeout=limits.decode_timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise _timeout_error(limits) from exc
    if done.returncode != 0 or not done.stdout:
        raise AudioError(f"ffmpeg could not encode the clip: {done.stderr.decode()[-300:]}")
    return done.stdout


@contextmanager
def _as_file(source: bytes | str | Path, limits: Limits) -> Iterator[Path]:
    """Yield a path to the input, writing bytes to a temporary file (ffmpeg needs to seek)."""
    if isinstance(source, bytes | bytearray | memoryview):
        _check_size(len(source), limits)
        with tempfile.NamedTemporaryFile(prefix="genre-", suffix=".bin") as tmp:
            tmp.write(source)
            tmp.flush()
            yield Path(tmp.name)
        return
    path = Path(source)
    if not path.is_file():
        raise NotAudioError(f"There is no file at {path}.")
    _check_size(path.stat().st_size, limits)
    yield path


def _check_size(size: int, limits: Limits) -> None:
    if size == 0:
        raise EmptyAudioError("That file is empty (0 bytes).")
    if size > limits.max_bytes:
        raise TooLargeError(
            f"That file is {_mb(size)}; the limit is {_mb(limits.max_bytes)}. "
            "Try a shorter excerpt or a compressed format such as mp3 or ogg."
        )


def _tool(name: str) -> str:
    path = which(name)
    if path is None:
        raise DecoderMissingError(
            f"The audio decoder ({name}) is not installed on the server, so no audio can be read. "
            "An admin needs to install ffmpeg."
        )
    return path


def _run(cmd: list[str], limits: Limits) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            cmd, capture_output=True, timeout=limits.decode_timeout_s, check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise _timeout_error(limits) from exc


def _timeout_error(limits: Limits) -> DecodeTimeoutError:
    return DecodeTimeoutError(
        f"Decoding took longer than {limits.decode_timeout_s:g} s and was stopped. "
        "The file may be damaged or unusually complex."
    )


def _start_probe(path: Path) -> subprocess.Popen[bytes]:
    """Start ffprobe on ``path``; :func:`_finish_probe` reads its verdict."""
    cmd = [
        _tool(get_prober_name()), "-v", "error", "-of", "json",
        "-show_entries", "format=format_name,duration:stream=codec_type,codec_name",
        str(path),
    ]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _finish_probe(
    prober: subprocess.Popen[bytes], path: Path, limits: Limits, deadline: float
) -> dict:
    """Wait for ffprobe (until ``deadline``) and refuse what is not audio or is too long."""
    try:
        # A floor, so that a probe which has finished is read even if decoding took long.
        stdout, _ = prober.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired as exc:
        raise _timeout_error(limits) from exc
    if prober.returncode != 0:
        container = _sniff(path)
        if container:
            raise CorruptAudioError(
                f"That looks like {container} audio, but it is damaged or incomplete: "
                "the decoder could not read it."
            )
        raise NotAudioError(
            "That doesn't look like an audio file: the decoder could not recognise its format."
        )
    info = json.loads(stdout or b"{}")
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    if not any(s.get("codec_type") == "audio" for s in streams):
        if any(s.get("codec_type") == "video" for s in streams):
            kind = "an image" if _is_image(fmt, streams) else "a video without a sound track"
            raise NotAudioError(f"That file is {kind}, not audio.")
        raise NotAudioError("That file contains no audio stream.")
    duration = _float(fmt.get("duration"))
    if duration is not None and duration > limits.max_input_duration_s:
        raise TooLongError(
            f"That recording is {_minutes(duration)} long; the limit is "
            f"{_minutes(limits.max_input_duration_s)}. Send an excerpt instead."
        )
    return info


def _decode_in_process(path: Path, limits: Limits) -> np.ndarray | None:
    """Decode with libsndfile, mixed down and resampled as ffmpeg would; ``None`` when
    libsndfile cannot read the file (ffmpeg then decodes it, or explains what is wrong).

    A long file is read in blocks, so an hour of stereo 48 kHz never sits in memory whole.
    """
    try:
        with soundfile.SoundFile(path) as sound:
            sr, channels = sound.samplerate, sound.channels
            # Never decode more than the longest accepted input, whatever the header claims.
            longest = int((limits.max_input_duration_s + 1) * sr)
            # ffmpeg's "-ac 1" takes the mean of the channels.
            weights = np.full(channels, 1.0 / channels, dtype=np.float32)
            resampler = (
                soxr.ResampleStream(sr, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                if sr != SAMPLE_RATE else None
            )
            # One read where the decoded file is small enough: between reads SoundFile asks
            # libsndfile for its position, which makes mpg123 re-seek and log warnings.
            bytes_per_frame = 4 * channels
            block_frames = (longest if 0 < sound.frames * bytes_per_frame <= READ_AT_ONCE_BYTES
                            else READ_BLOCK_BYTES // bytes_per_frame)
            parts, remaining = [], longest
            while remaining > 0:
                # Not SoundFile.blocks: with mp3 it pads to the frame count of the header,
                # past the gapless end that read() stops at (as ffmpeg does).
                block = sound.read(min(block_frames, remaining), dtype="float32",
                                   always_2d=True)
                if not len(block):
                    break
                remaining -= len(block)
                mono = block[:, 0].copy() if channels == 1 else block @ weights
                parts.append(resampler.resample_chunk(mono) if resampler else mono)
            if resampler is not None:
                parts.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError, MemoryError):
        return None  # e.g. a codec libsndfile lacks, or a stream it cannot follow
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        return None  # let ffmpeg say why
    # ffmpeg's 16-bit output saturates; keep the same [-1, 1] range.
    return np.clip(samples, -1.0, 1.0, out=samples)


def _is_image(fmt: dict, streams: list[dict]) -> bool:
    image_codecs = {"png", "mjpeg", "gif", "webp", "bmp", "tiff"}
    return "pipe" in fmt.get("format_name", "") or any(
        s.get("codec_name") in image_codecs for s in streams
    )


def _run_ffmpeg(path: Path, limits: Limits, probe: dict) -> bytes:
    cmd = [
        _tool(get_encoder_name()), "-nostdin", "-v", "error", "-i", str(path),
        "-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(SAMPLE_RATE),
        # Never decode more than the longest accepted input, whatever the header claims.
        "-t", f"{limits.max_input_duration_s + 1:g}",
        "-f", "s16le", "-acodec", "pcm_s16le", "pipe:1",
    ]
    result = _run(cmd, limits)
    if result.returncode != 0 or not result.stdout:
        fmt = probe.get("format", {}).get("format_name", "unknown")
        if result.returncode == 0:
            raise EmptyAudioError("That file's audio track is empty.")
        raise CorruptAudioError(
            f"That file looks like {fmt} audio but could not be decoded: it may be damaged or "
            "incomplete."
        )
    # An odd byte count means a truncated last sample; drop it.
    return result.stdout[: len(result.stdout) // 2 * 2]


#: The first bytes of audio containers, to tell a damaged audio file from something else.
MAGIC = {b"OggS": "an OGG", b"fLaC": "a FLAC", b"ID3": "an MP3", b"RIFF": "a WAV",
         b"FORM": "an AIFF", b"\x1aE\xdf\xa3": "a WebM"}


def _sniff(path: Path) -> str | None:
    """The container a file's first bytes announce, if it is an audio one."""
    with path.open("rb") as handle:
        head = handle.read(12)
    if head[4:8] == b"ftyp":
        return "an MP4/M4A"
    return next((name for magic, name in MAGIC.items() if head.startswith(magic)), None)


def _check_content(audio: Audio, limits: Limits) -> None:
    if len(audio.samples) == 0:
        raise EmptyAudioError("That file's audio track is empty.")
    if not np.isfinite(audio.samples).all():
        raise CorruptAudioError(
            "That file is damaged: some of its samples are not numbers (NaN or infinite)."
        )
    if audio.duration_s > limits.max_input_duration_s:
        raise TooLongError(
            f"That recording is longer than {_minutes(limits.max_input_duration_s)}. "
            "Send an excerpt instead."
        )
    if audio.duration_s < limits.min_duration_s:
        raise TooShortError(
            f"That clip is only {audio.duration_s:.1f} s long; at least "
            f"{limits.min_duration_s:g} s of music is needed to tell its genre."
        )
    if float(np.max(np.abs(audio.samples))) < SILENCE_PEAK:
        raise SilentAudioError("That clip is silent: there is nothing to listen to.")


def _float(value: object) -> float | None:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _mb(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB"


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


