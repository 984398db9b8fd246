"""Limits of the audio pipeline: one object, read once, passed down."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLE_RATE = 22_050


@dataclass(frozen=True)
class Limits:
    """What a clip may be. Defaults suit a public Discord bot."""

    #: Largest input file accepted, in bytes.
    max_bytes: int = 25 * 1024 * 1024
    #: Shortest clip worth analysing, in seconds.
    min_duration_s: float = 3.0
    #: Longest input accepted at all, in seconds (a 3-hour mix is refused, not decoded).
    max_input_duration_s: float = 20 * 60.0
    #: Analysis window, in seconds: 30 s matches the GTZAN 30-s feature table.
    window_s: float = 30.0
    #: At most this many windows, spread evenly over a long song.
    max_windows: int = 6
    #: Wall-clock limit for one ffmpeg run, in seconds.
    decode_timeout_s: float = 30.0
    #: Seconds of the analysed windows kept (as Ogg/Opus) with each answer so that it can be
    #: analysed again for training; 0 keeps none.
    keep_audio_s: float = 0.0
