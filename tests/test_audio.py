"""Decoding every format ffmpeg reads, and a clear typed error for every kind of bad input."""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import numpy as np
import pytest
from synth import SR, encode, music_like, tone, wav_bytes

from genre_core import audio as audio_module
from genre_core.audio import Audio, analysis_windows, decode
from genre_core.errors import (
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
from genre_core.settings import Limits

CODECS = {
    "mp3": [],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "flac": [],
    "m4a": ["-c:a", "aac"],
    "webm": ["-c:a", "libopus"],
    "wav": [],
}


@pytest.mark.parametrize("fmt", sorted(CODECS))
def test_decodes_every_format_to_mono_22k(fmt: str) -> None:
    source = music_like(4.0, sr=44_100)
    decoded = decode(encode(source, fmt, sr=44_100, extra=CODECS[fmt]))
    assert decoded.sr == SR
    assert decoded.samples.dtype == np.float32
    assert decoded.samples.ndim == 1
    assert decoded.duration_s == pytest.approx(4.0, abs=0.1)
    assert 0.2 < np.max(np.abs(decoded.samples)) <= 1.0


def test_decodes_a_path_and_an_mp4_video_with_sound(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(
        encode(
            music_like(4.0), "mp4", extra=["-c:a", "aac", "-movflags", "frag_keyframe+empty_moov"]
        )
    )
    assert decode(path).duration_s == pytest.approx(4.0, abs=0.1)


def test_stereo_is_mixed_down() -> None:
    left = tone(4.0, 440)
    stereo = np.stack([left, -left], axis=1)  # opposite phases cancel when averaged
    import subprocess

    pcm = (stereo * 32767).astype("<i2").tobytes()
    wav = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "s16le",
            "-ar",
            str(SR),
            "-ac",
            "2",
            "-i",
            "pipe:0",
            "-f",
            "wav",
            "pipe:1",
        ],
        input=pcm,
        capture_output=True,
        check=True,
    ).stdout
    with pytest.raises(SilentAudioError):
        decode(wav)


def test_empty_bytes() -> None:
    with pytest.raises(EmptyAudioError, match="empty"):
        decode(b"")


def test_text_renamed_mp3(tmp_path: Path) -> None:
    path = tmp_path / "song.mp3"
    path.write_text("this is not a song, just some text\n" * 20)
    with pytest.raises(NotAudioError, match="doesn't look like an audio file"):
        decode(path)


def test_png_is_not_audio() -> None:
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(NotAudioError, match="image"):
        decode(png)


def test_truncated_flac_is_corrupt_or_decoded_partially() -> None:
    data = encode(music_like(6.0), "flac")
    with pytest.raises((CorruptAudioError, NotAudioError, TooShortError)):
        decode(data[:200])


def test_too_short() -> None:
    with pytest.raises(TooShortError, match="at least 3 s"):
        decode(wav_bytes(tone(1.0)))


def test_silence() -> None:
    with pytest.raises(SilentAudioError, match="silent"):
        decode(wav_bytes(np.zeros(SR * 10, dtype=np.float32)))


def test_too_large_is_refused_before_decoding() -> None:
    data = wav_bytes(tone(5.0))
    with pytest.raises(TooLargeError, match="limit is"):
        decode(data, Limits(max_bytes=len(data) - 1))


def test_too_long_is_refused() -> None:
    with pytest.raises(TooLongError, match="limit is"):
        decode(encode(tone(12.0), "mp3"), Limits(max_input_duration_s=10.0))


def test_decoder_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_module, "which", lambda name: None)
    with pytest.raises(DecoderMissingError, match="ffmpeg"):
        decode(wav_bytes(tone(4.0)))


def test_hanging_decoder_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "ffprobe"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(audio_module, "get_prober_name", lambda: str(fake))
    monkeypatch.setattr(audio_module, "which", lambda name: name)
    with pytest.raises(DecodeTimeoutError, match="longer than"):
        decode(wav_bytes(tone(4.0)), Limits(decode_timeout_s=0.5))


def test_every_error_message_is_a_sentence() -> None:
    for source in (b"", b"plain text " * 50, wav_bytes(tone(1.0))):
        with pytest.raises(Exception) as info:
            decode(source)
        message = str(info.value)
        assert message[0].isupper() and message.endswith("."), message


def test_short_clip_is_one_window() -> None:
    clip = Audio(tone(20.0))
    windows = analysis_windows(clip, window_s=30.0, max_windows=6)
    assert len(windows) == 1 and len(windows[0][1]) == len(clip.samples)


def test_long_song_windows_spread_over_the_whole_song() -> None:
    song = Audio(np.zeros(SR * 240, dtype=np.float32))
    windows = analysis_windows(song, window_s=30.0, max_windows=6)
    starts = [start for start, _ in windows]
    assert len(windows) == 6
    assert starts[0] == 0.0 and starts[-1] == pytest.approx(210.0, abs=0.01)
    assert all(len(w) == 30 * SR for _, w in windows)
    assert np.all(np.diff(starts) > 0)
