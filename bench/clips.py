"""The benchmark's inputs: a 30-s clip and a 4-minute song, as mp3 files.

From ``../shared/data`` when it is there (real GTZAN music: the 30-s clip is a GTZAN track as
shipped, 22,050 Hz mono; the song is eight GTZAN tracks re-encoded the way a user's file usually
is, 44.1 kHz stereo at 192 kbps), otherwise synthesised with numpy and encoded by ffmpeg.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GTZAN_AUDIO = DATA_DIR / "gtzan" / "audio"
#: The 30-s clip; its mp3 is a plain conversion of the original GTZAN file.
CLIP_TRACK = "blues.00099"
SONG_TRACKS = ["rock", "pop", "disco", "metal", "country", "hiphop", "reggae", "jazz"]
USER_SR = 44_100


@dataclass(frozen=True)
class Clip:
    """One benchmark input."""

    name: str
    path: Path
    duration_s: float
    source: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


#: ``--tiny``: a short clip (one window) and a short song (two windows), synthesised.
TINY_SECONDS = (8.0, 40.0)


def make_clips(directory: Path, tiny: bool = False) -> tuple[Clip, Clip]:
    """Write the 30-s clip and the 4-minute song into ``directory``.

    Parameters
    ----------
    directory : Path
        Where the mp3 files go (created if needed).
    tiny : bool
        Synthesise short stand-ins (:data:`TINY_SECONDS`) under the same names, so that a smoke
        run produces every figure quickly.

    Returns
    -------
    tuple of Clip
        ``(clip_30s, song_4min)``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    real = GTZAN_AUDIO / f"{CLIP_TRACK}.mp3"
    if tiny:
        clip_s, song_s = TINY_SECONDS
        return (_synthetic_clip("clip_30s", directory, clip_s, seed=1, label="tiny"),
                _synthetic_clip("song_4min", directory, song_s, seed=2, label="tiny"))
    if real.is_file() and all((GTZAN_AUDIO / f"{g}.00000.mp3").is_file() for g in SONG_TRACKS):
        clip = Clip("clip_30s", real, 30.0, f"GTZAN {CLIP_TRACK} (22.05 kHz mono mp3)")
        song_path = directory / "song_4min.mp3"
        _concat_to_mp3([GTZAN_AUDIO / f"{g}.00000.mp3" for g in SONG_TRACKS], song_path)
        song = Clip("song_4min", song_path, 240.0,
                    "8 GTZAN tracks, re-encoded 44.1 kHz stereo 192 kbps mp3")
        return clip, song
    return (_synthetic_clip("clip_30s", directory, 30.0, seed=1),
            _synthetic_clip("song_4min", directory, 240.0, seed=2))


def _synthetic_clip(name: str, directory: Path, seconds: float, seed: int,
                    label: str = "synthetic") -> Clip:
    path = directory / f"{name}.mp3"
    _encode_mp3(synthetic_music(seconds, USER_SR, seed=seed), USER_SR, path)
    return Clip(name, path, seconds, f"{label} {seconds:g} s, 44.1 kHz stereo 192 kbps mp3")


def synthetic_music(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """Chords on a beat with a noise snare and a bass line, stereo float32 ``(n, 2)``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    beat = 0.5
    index = (t // beat).astype(int)
    roots = np.array([220.0, 261.6, 196.0, 174.6])[index % 4]
    phase_t = t % beat
    y = np.zeros(n)
    for ratio in (1.0, 1.26, 1.5):
        y += 0.12 * np.sin(2 * np.pi * roots * ratio * t)
    y += 0.2 * np.sin(2 * np.pi * roots / 4 * t) * np.exp(-3 * phase_t)
    snare = (index % 2 == 1) & (phase_t < 0.06)
    y[snare] += 0.3 * rng.standard_normal(int(snare.sum()))
    y /= np.max(np.abs(y)) * 2
    return np.stack([y, np.roll(y, 64)], axis=1).astype(np.float32)


def _encode_mp3(samples: np.ndarray, sr: int, out: Path) -> None:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(sr), "-ac", "2", "-i", "pipe:0",
         "-c:a", "libmp3lame", "-b:a", "192k", str(out)],
        input=samples.astype("<f4").tobytes(), check=True, capture_output=True,
    )


def _concat_to_mp3(paths: list[Path], out: Path) -> None:
    inputs: list[str] = []
    for path in paths:
        inputs += ["-i", str(path)]
    graph = "".join(f"[{i}:a]" for i in range(len(paths))) + f"concat=n={len(paths)}:v=0:a=1"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", *inputs, "-filter_complex", graph,
         "-ar", str(USER_SR), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "192k", str(out)],
        check=True, capture_output=True,
    )
