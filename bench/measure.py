"""The measurements: latency per stage, throughput, cold start and peak RSS, fast and reference.

Each function returns a flat ``{name: number}`` dict; :mod:`bench.__main__` merges them, adds the
ratios and prints the table.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.clips import Clip

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("decode", "features", "inference", "music_check", "total")


def model_dirs() -> tuple[Path, Path | None]:
    """The shipped artifact, and a table-family one (the reference recipe's features) to hold
    the fast extractor against the reference with the same model: the shipped one when it is
    of that family, else ``models/genre-table`` beside it (``None`` if there is none)."""
    from genre_core.pipeline import DEFAULT_MODEL_DIR

    shipped = Path(os.environ.get("GENRE_MODEL_DIR") or DEFAULT_MODEL_DIR)
    for candidate in (shipped, shipped.parent / "genre-table"):
        meta = candidate / "metadata.json"
        if meta.is_file() and json.loads(meta.read_text()).get("family") == "table":
            return shipped, candidate
    return shipped, None


def summarise(prefix: str, samples: dict[str, list[float]]) -> dict[str, float]:
    """Median and 95th percentile of each list, named ``{prefix}_{stage}_ms_p50`` / ``_p95``."""
    out: dict[str, float] = {}
    for stage, values in samples.items():
        if values:
            out[f"{prefix}_{stage}_ms_p50"] = round(float(np.median(values)), 2)
            out[f"{prefix}_{stage}_ms_p95"] = round(float(np.percentile(values, 95)), 2)
    return out


def fast_latency(
    classifier: Any, clip: Clip, runs: int, warmup: int = 2, label: str = "fast"
) -> dict[str, float]:
    """Per-stage and end-to-end latency of ``Classifier.classify(bytes)`` after warm-up.

    End-to-end (``e2e``) is timed around the call; the stages are the pipeline's own
    ``timings_ms``. ``cpu`` is the CPU time the call used, its child processes (ffprobe,
    ffmpeg) included: what bounds throughput on a busy machine.
    """
    data = clip.data
    for _ in range(warmup):
        classifier.classify(data, clip.path.name)
    samples: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "e2e", "cpu")}
    for _ in range(runs):
        cpu = _cpu_s()
        started = time.perf_counter()
        prediction = classifier.classify(data, clip.path.name)
        samples["e2e"].append((time.perf_counter() - started) * 1000)
        samples["cpu"].append((_cpu_s() - cpu) * 1000)
        for stage in STAGES:
            samples[stage].append(prediction.timings_ms.get(stage, 0.0))
    return summarise(f"{clip.name}_{label}", samples)


def probe_cost(clip: Clip, runs: int) -> dict[str, float]:
    """What the ffprobe process that :func:`genre_core.audio.decode` starts for every input
    costs by itself (wall and CPU), to weigh it against the rest of the pipeline."""
    from genre_core.audio import _finish_probe, _start_probe
    from genre_core.settings import Limits

    samples: dict[str, list[float]] = {"wall": [], "cpu": []}
    for _ in range(runs):
        cpu = _cpu_s()
        started = time.perf_counter()
        _finish_probe(_start_probe(clip.path), clip.path, Limits(), time.monotonic() + 30)
        samples["wall"].append((time.perf_counter() - started) * 1000)
        samples["cpu"].append((_cpu_s() - cpu) * 1000)
    return summarise(f"{clip.name}_ffprobe", samples)


def numpy_inference(classifier: Any, clip: Clip, runs: int) -> dict[str, float]:
    """The genre head's forward pass in plain numpy (scaler, dense layers, softmax: what serving
    runs) against the Keras network it was saved from, on the clip's feature vectors: the cost
    of each runtime, and how far their probabilities are apart."""
    import keras

    from genre_core.audio import analysis_windows, decode
    from genre_core.model import MODEL_FILE, NumpyHead

    model = classifier.model
    audio = decode(clip.path)
    windows = analysis_windows(audio, classifier.featurizer.window_s, classifier.limits.max_windows)
    X = np.stack([classifier.featurizer.transform(w, audio.sr) for _, w in windows])
    network = model.network_
    if network is None:  # loaded through its head.npz: read the Keras network beside it
        network = keras.models.load_model(classifier.model_dir / MODEL_FILE, compile=False)
    forward = model.head_ if model.head_ is not None else NumpyHead.from_network(network)
    samples: dict[str, list[float]] = {"keras": [], "numpy": []}
    for _ in range(runs + 1):
        started = time.perf_counter()
        keras_probs = _softmax(np.asarray(network(X, training=False), np.float64)
                               / model.temperature_)
        middle = time.perf_counter()
        numpy_probs = _softmax(forward(X) / model.temperature_)
        done = time.perf_counter()
        samples["keras"].append((middle - started) * 1000)
        samples["numpy"].append((done - middle) * 1000)
    out = summarise(f"{clip.name}_inference", {k: v[1:] for k, v in samples.items()})
    difference = float(np.abs(keras_probs - numpy_probs).max())
    out[f"{clip.name}_inference_numpy_max_prob_diff"] = difference
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _cpu_s() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def reference_latency(model: Any, clip: Clip, runs: int) -> dict[str, float]:
    """The same clip through :func:`bench.reference.classify_reference` (librosa throughout)."""
    from bench.reference import classify_reference

    classify_reference(clip.path, model)  # librosa's numba functions compile on first use
    samples: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "e2e")}
    for _ in range(runs):
        started = time.perf_counter()
        _, timings = classify_reference(clip.path, model)
        samples["e2e"].append((time.perf_counter() - started) * 1000)
        for stage in STAGES:
            samples[stage].append(timings.get(stage, 0.0))
    return summarise(f"{clip.name}_ref", samples)


def musicnn_stages(clip: Clip, runs: int) -> dict[str, float]:
    """Per-stage cost of the learned (musicnn) featurizer on one decoded clip."""
    from genre_core.audio import decode
    from genre_core.musicnn import MusicnnFeaturizer

    featurizer = MusicnnFeaturizer()
    featurizer.warm_up()
    audio = decode(clip.path)
    embedder = featurizer.embedder
    samples: dict[str, list[float]] = {"patches": [], "network": [], "featurize": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        patches = embedder.patches(audio.samples, audio.sr)
        t1 = time.perf_counter()
        embedding = embedder.embed_patches(patches)
        t2 = time.perf_counter()
        featurizer.featurize(embedding)
        t3 = time.perf_counter()
        if i:  # the first run is warm-up
            samples["patches"].append((t1 - t0) * 1000)
            samples["network"].append((t2 - t1) * 1000)
            samples["featurize"].append((t3 - t2) * 1000)
    return summarise(f"{clip.name}_musicnn", samples)


# -- throughput -------------------------------------------------------------------------------
def fast_throughput(
    clip: Clip, n_clips: int, workers: int, model_dir: Path, label: str = "fast"
) -> dict[str, float]:
    """Clips per second through the production executor (``genre_core.jobs.ProcessJobs``) with
    every worker busy: ``n_clips`` submitted at once, timed from submission to the last answer
    (the workers have loaded and warmed up before)."""
    from genre_core.jobs import ProcessJobs

    data = clip.data

    async def run() -> float:
        jobs = await ProcessJobs.create(model_dir, workers=workers,
                                        max_pending=n_clips + workers)
        try:
            await asyncio.gather(*(jobs.classify(data, clip.path.name) for _ in range(workers)))
            started = time.perf_counter()
            await asyncio.gather(*(jobs.classify(data, clip.path.name) for _ in range(n_clips)))
            return time.perf_counter() - started
        finally:
            await jobs.close()

    elapsed = asyncio.run(run())
    return {f"{clip.name}_{label}_throughput_clips_per_s": round(n_clips / elapsed, 3)}


_reference_model: Any = None


def _reference_init(model_dir: str) -> None:
    global _reference_model
    from genre_core.model import GenreModel

    _reference_model = GenreModel.load(Path(model_dir))


def _reference_task(path: str) -> int:
    from bench.reference import classify_reference

    probs, _ = classify_reference(Path(path), _reference_model)
    return int(probs.argmax())


def reference_throughput(
    clip: Clip, n_clips: int, workers: int, model_dir: Path
) -> dict[str, float]:
    """The reference recipe in a plain process pool of ``workers``, every worker busy."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_reference_init,
                             initargs=(str(model_dir),)) as pool:
        list(pool.map(_reference_task, [str(clip.path)] * workers))  # load, compile
        started = time.perf_counter()
        list(pool.map(_reference_task, [str(clip.path)] * n_clips))
        elapsed = time.perf_counter() - started
    return {f"{clip.name}_ref_throughput_clips_per_s": round(n_clips / elapsed, 3)}


# -- cold start and memory --------------------------------------------------------------------
def cold_start(
    kind: str, clips: list[Clip], model_dir: Path, repeats: int = 2, label: str | None = None
) -> dict[str, float]:
    """Process start → first prediction ready, in a fresh ``python -m bench.coldstart``.

    Run ``repeats`` times; the last run is reported (on-disk caches such as numba's are warm
    then, as on any restart), the first separately. Peak RSS is the child's, after classifying
    every clip.
    """
    runs: list[dict[str, Any]] = []
    for _ in range(repeats):
        started = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.coldstart", kind, str(model_dir),
             *(str(c.path) for c in clips)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env=_child_env(),
        )
        assert child.stdout is not None
        record: dict[str, Any] = {}
        for line in child.stdout:
            event = json.loads(line)
            if event["event"] == "first":
                record = {**event, "wall_s": time.perf_counter() - started}
            else:
                record["peak_rss_mb"] = event["peak_rss_mb"]
        if child.wait() != 0:
            raise RuntimeError(f"bench.coldstart {kind} failed with exit code {child.returncode}")
        runs.append(record)
    last = runs[-1]
    prefix = label or ("fast" if kind == "fast" else "ref")
    out = {
        f"{prefix}_cold_start_s": round(last["wall_s"], 3),
        f"{prefix}_cold_start_first_run_s": round(runs[0]["wall_s"], 3),
        f"{prefix}_cold_start_import_s": round(last["imported_s"], 3),
        f"{prefix}_cold_start_model_load_s": round(last["loaded_s"] - last["imported_s"], 3),
        f"{prefix}_peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
    }
    if "warm_s" in last:
        out[f"{prefix}_cold_start_warm_up_s"] = round(last["warm_s"] - last["loaded_s"], 3)
    return out


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def timed(label: str, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run one measurement, saying what runs (the whole benchmark takes minutes)."""
    print(f"  {label} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    result = fn()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return result
