"""TensorFlow's own fast paths for the musicnn network, one by one, on one 30-s clip's patches.

Run as ``python -m bench.network_paths [--quick] [--out PATH]``. Each intra-op thread setting
runs in its own worker process (TensorFlow fixes its thread pools when it initialises), which
times every path on the clip's patches in one call, interleaving the paths rep by rep so that a
burst of load from elsewhere hits them all alike. The parent compares every path's outputs with
the Keras path (``MusicnnEmbedder.embed_patches``, ``runtime="keras"``, 1 thread), prints a
table and writes a flat JSON (default ``bench/network_paths.json``).

Paths: ``baseline`` (embed_patches), ``xla`` (``tf.function(jit_compile=True)``), ``tflite_*``
(the TFLite interpreter on a fixed-shape frozen graph, XNNPACK being its default CPU delegate:
float32, float16 weights, dynamic-range int8, float32 without XNNPACK); suffix ``_t1``/``_t2``:
intra-op threads.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLIP = Path(__file__).resolve().parents[2] / "shared/data/gtzan/audio/blues.00099.mp3"
OUT = Path(__file__).resolve().parent / "network_paths.json"
KEYS = ("tags", "penultimate", "mean_pool", "max_pool")
#: Relative difference (to each output's max |value|) still counted as float32 rounding.
ROUNDING_REL = 3e-5
#: Paths per intra-op thread setting, in full and ``--quick`` runs.
PATHS = {
    1: ["baseline", "xla", "tflite_fp32", "tflite_fp16w", "tflite_int8dr", "tflite_fp32_noxnnpack"],
    2: ["baseline", "xla", "tflite_fp32"],
}
QUICK_PATHS = {1: PATHS[1][:5], 2: ["baseline"]}

Result = dict[str, float | int | str]


# --- worker: one thread setting ----------------------------------------------------------------


def synth_clip(sr: int = 22_050, seconds: float = 30.0) -> np.ndarray:
    """Music-like stand-in when the GTZAN clip is absent: chords of harmonic notes and a beat."""
    rng = np.random.default_rng(0)
    t = np.arange(int(sr * seconds)) / sr
    y = np.zeros_like(t)
    for i, root in enumerate(rng.choice([110.0, 146.8, 164.8, 196.0], size=int(seconds / 2))):
        seg = (t >= 2 * i) & (t < 2 * i + 2)
        for ratio in (1.0, 1.25, 1.5):
            for h in range(1, 6):
                y[seg] += np.sin(2 * np.pi * root * ratio * h * t[seg]) / h
    beat = np.exp(-30 * (t % 0.5)) * rng.standard_normal(t.size)  # noise hit every half second
    y = y / np.abs(y).max() * 0.5 + 0.3 * beat
    return (y / np.abs(y).max() * 0.9).astype(np.float32)


def _tflite_runner(model, patches: np.ndarray, variant: str, threads: int) -> Callable:
    """Convert a fixed-shape frozen graph of the model and return a call on the interpreter."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    # A tuple in KEYS order fixes the output order. The graph is frozen first: converting the
    # unfrozen concrete function silently drops Keras 3's variables (all outputs NaN).
    fn = tf.function(lambda x: tuple(model(x, training=False)[k] for k in KEYS))
    frozen = convert_variables_to_constants_v2(
        fn.get_concrete_function(tf.TensorSpec(patches.shape, tf.float32))
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if variant in ("fp16w", "int8dr"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "fp16w":
        converter.target_spec.supported_types = [tf.float16]
    resolver = tf.lite.experimental.OpResolverType
    interp = tf.lite.Interpreter(
        model_content=converter.convert(),
        num_threads=threads,
        experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if variant == "fp32_noxnnpack"
        else resolver.AUTO,
    )
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    outs = [d["index"] for d in interp.get_output_details()]

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        interp.set_tensor(inp, x)
        interp.invoke()
        return {k: interp.get_tensor(i) for k, i in zip(KEYS, outs, strict=True)}

    return run


def network_gflop(model) -> float:
    """Multiply-adds of one patch's Conv/Dense layers x 2 (BN, pooling, adds are negligible).

    'same'-padded convolutions count their zero taps, which the kernels compute too.
    """
    import keras

    from genre_core.musicnn import N_MELS, PATCH_FRAMES

    layers = [layer for layer in model.layers if hasattr(layer, "kernel")]
    probe = keras.Model(model.input, [layer.output for layer in layers])
    outs = probe(np.zeros((1, PATCH_FRAMES, N_MELS), np.float32))
    flops = sum(
        2 * np.prod(out.shape[1:]) * np.prod(layer.kernel.shape[:-1])
        for layer, out in zip(layers, outs, strict=True)
    )
    return float(flops) / 1e9


def worker(threads: int, names: list[str], reps: int, tmp: Path) -> None:
    """Time ``names`` at ``threads`` intra-op threads; outputs to ``tmp/<path>.npz``, figures
    to ``tmp/t<threads>.json``."""
    import tensorflow as tf

    # Before any op runs: TensorFlow builds its thread pools once, on first use.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from genre_core.audio import decode
    from genre_core.musicnn import MusicnnEmbedder

    emb = MusicnnEmbedder.load(runtime="keras")  # the paths below all start from the Keras model
    if CLIP.is_file():
        audio = decode(CLIP)
        y, sr, clip = audio.samples, audio.sr, CLIP.name
    else:
        y, sr, clip = synth_clip(), 22_050, "synthetic"
    patches = emb.patches(y, sr)
    res: Result = {"clip": clip, "n_patches": len(patches), "tf_version": tf.__version__}
    if threads == 1:
        res["gflop_per_patch"] = network_gflop(emb.model)

    xla = tf.function(lambda x: emb.model(x, training=False), jit_compile=True)
    runners: dict[str, Callable] = {}
    for name in names:
        try:
            if name == "baseline":
                runners[name] = emb.embed_patches
            elif name == "xla":
                runners[name] = lambda x: {k: v.numpy() for k, v in xla(tf.constant(x)).items()}
            else:
                runners[name] = _tflite_runner(emb.model, patches, name[7:], threads)
            for _ in range(2):  # warm-up: tracing, XLA compile, XNNPACK weight packing
                out = runners[name](patches)
            np.savez(tmp / f"{name}_t{threads}.npz", **out)
        except Exception as err:  # one failed path must not sink the others
            runners.pop(name, None)
            res[f"{name}_t{threads}_error"] = f"{type(err).__name__}: {err}"[:300]

    wall: dict[str, list[float]] = {n: [] for n in runners}
    cpu: dict[str, list[float]] = {n: [] for n in runners}
    for _ in range(reps):
        for name, run in runners.items():
            w, c = time.perf_counter(), time.process_time()
            run(patches)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    for name in runners:
        res[f"{name}_t{threads}_ms"] = 1e3 * float(np.median(wall[name]))
        res[f"{name}_t{threads}_cpu_ms"] = 1e3 * float(np.median(cpu[name]))
    (tmp / f"t{threads}.json").write_text(json.dumps(res))


# --- parent ------------------------------------------------------------------------------------


def cpu_peak() -> Result:
    """Peak FP32 GFLOP/s per core = GHz x FLOPs/cycle, from lscpu and /proc/cpuinfo."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    flags = set(re.search(r"Flags:\s*(.*)", text).group(1).split()) if "Flags:" in text else set()
    mhz = re.search(r"CPU max MHz:\s*([\d.]+)", text)
    if mhz is None:  # VMs often hide the max clock: take the reported (nominal) one
        mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text())
    ghz = float(mhz.group(1)) / 1e3 if mhz else float("nan")
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 (16 lanes) x 2 FMA units x 2"
    elif {"avx2", "fma"} <= flags:
        per_cycle, isa = 32, "AVX2 (8 lanes) x 2 FMA units x 2"
    else:
        per_cycle, isa = 8, "SSE (4 lanes) x 1 mul + 1 add"
    model = re.search(r"Model name:\s*(.*)", text)
    return {
        "cpu_model": model.group(1).strip() if model else "?",
        "cpu_ghz": ghz,
        "flops_per_cycle": per_cycle,
        "peak_gflops_1core": ghz * per_cycle,
        "peak_assumption": f"1 core x {ghz:.2f} GHz (reported clock, no boost) x {per_cycle} "
        f"FP32 FLOPs/cycle [{isa}]",
    }


def run_worker(threads: int, quick: bool, reps: int, tmp: Path) -> Result:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_NUM_INTRAOP_THREADS=str(threads),
               TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    names = (QUICK_PATHS if quick else PATHS)[threads]
    cmd = [sys.executable, "-m", "bench.network_paths", "--worker", str(threads),
           "--paths", ",".join(names), "--reps", str(reps), "--tmp", str(tmp)]
    root = Path(__file__).resolve().parents[1]
    proc = None
    try:
        proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=420)
        return json.loads((tmp / f"t{threads}.json").read_text())
    except Exception as err:  # report the worker's last words, keep the other setting's figures
        tail = proc.stderr.strip().splitlines()[-1:] if proc else []
        return {f"t{threads}_error": f"{type(err).__name__}: {err} {tail}"[:300]}


def compare(res: Result, tmp: Path) -> None:
    """Per path and output: max |diff| to baseline_t1, absolute and relative to its max |value|;
    and speed: GFLOP/s, share of the peak of the cores it may use, speed-up."""
    ref = dict(np.load(tmp / "baseline_t1.npz")) if (tmp / "baseline_t1.npz").is_file() else {}
    gflop = res.get("gflop_per_patch", 0.0) * res.get("n_patches", 0)
    res["gflop_per_clip"] = gflop
    for npz in sorted(tmp.glob("*.npz")):
        path = npz.stem
        out = dict(np.load(npz))
        rels = []
        for k in KEYS if ref else ():
            diff = float(np.abs(out[k].astype(np.float64) - ref[k]).max())
            res[f"{path}_{k}_maxabs"] = diff
            res[f"{path}_{k}_rel"] = diff / float(np.abs(ref[k]).max())
            rels.append(res[f"{path}_{k}_rel"])
        if rels:
            res[f"{path}_max_rel"] = max(rels)
        ms = res.get(f"{path}_ms")
        if ms and gflop:
            res[f"{path}_gflops"] = gflop / (ms / 1e3)
            cores = min(int(path[-1]), os.cpu_count() or 1)
            res[f"{path}_pct_peak"] = 100 * res[f"{path}_gflops"] / (
                cores * res["peak_gflops_1core"]
            )
        if ms and res.get("baseline_t1_ms"):
            res[f"{path}_speedup"] = res["baseline_t1_ms"] / ms


def table(res: Result) -> str:
    def f(key: str, fmt: str) -> str:
        v = res.get(key)
        return format(v, fmt) if isinstance(v, int | float) else "-"

    paths = [f"{n}_t{t}" for t in (1, 2) for n in PATHS[t]]
    head = (f"{'path':<25}{'ms':>7}{'cpu ms':>8}{'x base':>7}{'GFLOP/s':>8}{'%peak':>6}"
            f"  max rel diff: {'tags':>8}{'penult':>8}{'meanpl':>8}{'maxpl':>8}  ok")
    lines = [
        f"musicnn on {res.get('clip')}: {res.get('n_patches')} patches, "
        f"{f('gflop_per_clip', '.1f')} GFLOP/clip; peak {f('peak_gflops_1core', '.1f')} "
        f"GFLOP/s/core = {res.get('peak_assumption')}; %peak of 1 core for _t1, 2 for _t2",
        f"load avg 1 min: {f('loadavg_1m_before', '.2f')} before, "
        f"{f('loadavg_1m_after', '.2f')} after; diffs vs baseline_t1; "
        f"ok = every output within {ROUNDING_REL:g} of its scale; cpu ms (all threads) under "
        "ms = waited for a core",
        head,
        "-" * len(head),
    ]
    for p in paths:
        if f"{p}_error" in res:
            lines.append(f"{p:<25}FAILED: {res[f'{p}_error']}")
        elif f"{p}_ms" in res:
            ok = "yes" if res.get(f"{p}_max_rel", 1.0) <= ROUNDING_REL else "NO"
            lines.append(
                f"{p:<25}{f(p + '_ms', '7.0f')}{f(p + '_cpu_ms', '8.0f')}"
                f"{f(p + '_speedup', '7.2f')}{f(p + '_gflops', '8.1f')}"
                f"{f(p + '_pct_peak', '6.0f')}  {'':>14}"
                + "".join(f(f"{p}_{k}_rel", "8.1e") for k in KEYS) + f"  {ok}"
            )
    lines.append("max abs diff (tags / penultimate / mean_pool / max_pool):")
    lines += [
        f"  {p:<25}" + " / ".join(f(f"{p}_{k}_maxabs", ".2e") for k in KEYS)
        for p in paths if f"{p}_tags_maxabs" in res
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.network_paths",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer reps and paths (~1-2 min)")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the JSON")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--paths", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.paths.split(","), args.reps, args.tmp)
        return 0

    started = time.perf_counter()
    res: Result = {"quick": int(args.quick), "loadavg_1m_before": os.getloadavg()[0], **cpu_peak()}
    reps = 3 if args.quick else 9
    with tempfile.TemporaryDirectory(prefix="network-paths-") as tmp:
        for threads in (1, 2):
            res.update(run_worker(threads, args.quick, reps, Path(tmp)))
        compare(res, Path(tmp))
    res["reps"] = reps
    res["loadavg_1m_after"] = os.getloadavg()[0]
    res["elapsed_s"] = time.perf_counter() - started
    print(table(res))
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
