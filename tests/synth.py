"""Audio the tests make themselves: tones, chords and noise, encoded by ffmpeg into any format."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np

SR = 22_050
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tone(seconds: float, freq: float = 440.0, sr: int = SR, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music_like(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Chords on a beat with a noise snare: enough structure for every stage to run."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for i, root in enumerate([220.0, 261.6, 196.0, 174.6] * int(seconds)):
        start, end = i * 0.5, i * 0.5 + 0.5
        mask = (t >= start) & (t < end)
        for ratio in (1.0, 1.26, 1.5):
            y[mask] += 0.15 * np.sin(2 * np.pi * root * ratio * t[mask])
        hit = (t >= start) & (t < start + 0.05)
        y[hit] += 0.3 * rng.standard_normal(hit.sum())
    return (y / np.max(np.abs(y)) * 0.5).astype(np.float32)


def wav_bytes(y: np.ndarray, sr: int = SR) -> bytes:
    """16-bit PCM WAV in memory."""
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sr)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


def encode(y: np.ndarray, fmt: str, sr: int = SR, extra: list[str] | None = None) -> bytes:
    """Encode ``y`` with ffmpeg into the container ``fmt`` (mp3, ogg, opus, flac, m4a, webm...)."""
    muxer = {"m4a": "ipod", "opus": "opus", "ogg": "ogg"}.get(fmt, fmt)
    cmd = [
        "ffmpeg",
        "-v",
        "error",
        "-f",
        "wav",
        "-i",
        "pipe:0",
        *(extra or []),
        "-f",
        muxer,
        "pipe:1",
    ]
    if fmt == "m4a":  # the mp4 muxer needs a seekable output
        cmd = cmd[:-1] + ["-movflags", "frag_keyframe+empty_moov", "pipe:1"]
    result = subprocess.run(
        cmd, input=wav_bytes(y, sr), capture_output=True, check=True, timeout=120
    )
    return result.stdout
