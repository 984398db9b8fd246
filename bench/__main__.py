"""``python -m bench [--quick]``: how fast genre-bot answers, against the plain librosa recipe.

Measures, in one run, the fast pipeline (:class:`genre_core.pipeline.Classifier` with a
table-family model, i.e. the 57 GTZAN features) and the reference (``librosa.load`` +
:func:`bench.reference.extract_reference` per window + one model call per window, same model) on
a 30-s clip and a 4-minute song: decode / features / inference / end-to-end latency (median and
p95 after warm-up), CPU per clip, throughput with two worker processes at full use, cold start,
peak RSS. When the shipped default is another family (the learned musicnn head), its latency,
stages and cold start too, and the bot's event-loop lag while 20 clips are analysed by the bot as
shipped. Prints a table and writes ``bench/results.json`` (one flat object; ``*_ratio`` figures
are fast / reference).
"""

from __future__ import annotations

import os

# Like the production workers (genre_core.jobs): one BLAS/numba/TF thread per process, so two
# processes use the two cores without fighting. Set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench import chart, measure  # noqa: E402
from bench.clips import make_clips  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"
WORKERS = 2
#: What users feel, on the 2-core machine, for the default (shipped) family.
TARGETS = {
    "target_e2e_ratio_max": 0.2,
    "target_bot_throughput_clips_per_s_min": 5.0,
    "target_peak_rss_mb_max": 1024.0,
    "target_loop_lag_p99_ms_max": 20.0,
    "target_first_answer_s_max": 5.0,
}


#: Repetitions per measurement: a full run, ``--quick``, and ``--tiny`` (the test suite's smoke
#: run on short synthetic clips, which checks that every figure is still produced).
COUNTS = {
    "full": {"clip_runs": 20, "song_runs": 5, "probe_runs": 10, "numpy_runs": 20, "ref_runs": 3,
             "throughput_clips": 24, "ref_throughput_clips": 4, "cold_repeats": 2,
             "shipped_runs": 5, "musicnn_runs": 3, "bot_clips": 20, "fleet_clips": 24},
    "quick": {"clip_runs": 7, "song_runs": 2, "probe_runs": 5, "numpy_runs": 5, "ref_runs": 1,
              "throughput_clips": 10, "ref_throughput_clips": 2, "cold_repeats": 1,
              "shipped_runs": 2, "musicnn_runs": 1, "bot_clips": 20, "fleet_clips": 10},
    "tiny": {"clip_runs": 1, "song_runs": 1, "probe_runs": 1, "numpy_runs": 1, "ref_runs": 1,
             "throughput_clips": 2, "ref_throughput_clips": 2, "cold_repeats": 1,
             "shipped_runs": 1, "musicnn_runs": 1, "bot_clips": 3, "fleet_clips": 2},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (~2-3 min)")
    parser.add_argument("--tiny", action="store_true",
                        help="one repetition on short synthetic clips: checks, not figures")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--no-lag", action="store_true", help="skip the bot event-loop lag")
    parser.add_argument("--no-fleet", action="store_true",
                        help="skip the work queue (Celery + Redis, genre-worker) throughput")
    args = parser.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    n = COUNTS[mode]
    results: dict[str, float | int | str] = {
        "mode": mode,
        "cpu_count": os.cpu_count() or 0,
        "load_avg_1min_before": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "workers": WORKERS,
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genre-bench-") as tmp:
        clip, song = make_clips(Path(tmp), tiny=args.tiny)
        results["clip_30s_source"] = clip.source
        results["song_4min_source"] = song.source
        print(f"genre-bot benchmark, {mode} (this takes a few minutes)", file=sys.stderr)

        from genre_core.pipeline import Classifier

        shipped_dir, table_dir = measure.model_dirs()
        if table_dir is None:
            print("no table-family model: nothing to hold against the reference", file=sys.stderr)
            return 1
        results["table_model_dir"] = str(table_dir)
        table_clf = Classifier.load(table_dir)
        table_clf.warm_up()
        shipped = table_clf if shipped_dir == table_dir else Classifier.load(shipped_dir)
        results["shipped_family"] = shipped.model.family

        # The table family: the fast extractor against the reference, same model.
        results |= measure.timed("fast latency, 30-s clip", lambda: measure.fast_latency(
            table_clf, clip, runs=n["clip_runs"]))
        results |= measure.timed("fast latency, 4-min song", lambda: measure.fast_latency(
            table_clf, song, runs=n["song_runs"], warmup=1))
        results |= measure.timed("ffprobe cost", lambda: measure.probe_cost(
            clip, runs=n["probe_runs"]))
        results |= measure.timed("numpy inference", lambda: measure.numpy_inference(
            table_clf, song, runs=n["numpy_runs"]))
        results |= measure.timed("reference latency, 30-s clip", lambda: measure.reference_latency(
            table_clf.model, clip, runs=n["ref_runs"]))
        results |= measure.timed("reference latency, 4-min song",
                                 lambda: measure.reference_latency(table_clf.model, song, runs=1))
        results |= measure.timed("fast throughput", lambda: measure.fast_throughput(
            clip, n_clips=n["throughput_clips"], workers=WORKERS, model_dir=table_dir))
        results |= measure.timed("reference throughput", lambda: measure.reference_throughput(
            clip, n_clips=n["ref_throughput_clips"], workers=WORKERS, model_dir=table_dir))
        results |= measure.timed("fast cold start", lambda: measure.cold_start(
            "fast", [clip, song], table_dir, repeats=n["cold_repeats"]))
        # The reference child classifies the 30-s clip only: the song would add half a minute.
        results |= measure.timed("reference cold start", lambda: measure.cold_start(
            "reference", [clip], table_dir, repeats=1))

        # The shipped default, when it is another family (the learned one): what users get.
        if shipped is not table_clf:
            shipped.warm_up()
            results |= measure.timed("shipped latency, 30-s clip", lambda: measure.fast_latency(
                shipped, clip, runs=n["shipped_runs"], warmup=1, label="shipped"))
            results |= measure.timed("shipped latency, 4-min song", lambda: measure.fast_latency(
                shipped, song, runs=1, warmup=0, label="shipped"))
            results |= measure.timed("musicnn stages", lambda: measure.musicnn_stages(
                clip, runs=n["musicnn_runs"]))
            # Peak RSS of a process serving the shipped model: what each worker costs.
            results |= measure.timed("shipped cold start", lambda: measure.cold_start(
                "fast", [clip, song], shipped_dir, repeats=1, label="shipped"))
        if not args.no_lag:
            from bench import first_answer, lag

            # The bot as shipped: its default model, the production process pool.
            results |= measure.timed("bot event-loop lag, burst", lambda: lag.measure(
                clip, n_clips=n["bot_clips"], workers=WORKERS))
            results |= measure.timed("bot start to first answer", lambda: first_answer.measure(
                clip, workers=WORKERS))
        if not args.no_fleet and shutil.which("redis-server"):
            from bench import fleet

            # The default family through the fleet's queue, 1 and 2 genre-workers, against the
            # in-process pool (--tiny: the stand-in classifier, to check the path cheaply).
            results |= measure.timed("fleet throughput, 1 and 2 genre-workers", lambda: (
                fleet.measure_tiny(clip.path, n["fleet_clips"]) if args.tiny else
                fleet.measure(clip.path, n_clips=n["fleet_clips"], model_dir=shipped_dir)))
        elif not args.no_fleet:
            print("no redis-server: the fleet's throughput is not measured", file=sys.stderr)
    results["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    results["bench_wall_s"] = round(time.perf_counter() - started, 1)
    results |= ratios(results)
    results |= TARGETS
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    picture = chart.write(results, TARGET_CHECKS, args.out.with_suffix(".png"))
    print(table(results))
    print(f"\nwrote {args.out} and {picture}")
    return 0


def ratios(r: dict[str, float | int | str]) -> dict[str, float]:
    """fast / reference for every figure measured both ways (lower is better, except
    throughput, where higher is)."""
    out: dict[str, float] = {}
    for key, value in r.items():
        if not isinstance(value, int | float):
            continue
        for label, name in (("_fast_", "_"), ("_shipped_", "_shipped_")):
            reference = r.get(key.replace(label, "_ref_")) if label in key else None
            if isinstance(reference, int | float) and reference:
                out[key.replace(label, name) + "_ratio"] = round(value / reference, 4)
    for name in ("cold_start_s",):
        fast, reference = r.get(f"fast_{name}"), r.get(f"ref_{name}")
        if isinstance(fast, int | float) and isinstance(reference, int | float) and reference:
            out[f"{name}_ratio"] = round(fast / reference, 4)
    return out


def table(r: dict[str, float | int | str]) -> str:
    """The results as a fixed-width table: figure, fast, reference, fast/reference."""
    rows = [("figure", "fast", "reference", "fast/ref")]

    def row(label: str, fast_key: str, ref_key: str | None, ratio_key: str | None) -> None:
        fast = r.get(fast_key)
        if fast is None:
            return
        ref = r.get(ref_key) if ref_key else None
        ratio = r.get(ratio_key) if ratio_key else None
        rows.append((label, _fmt(fast), _fmt(ref), _fmt(ratio)))

    for clip in ("clip_30s", "song_4min"):
        for stage in ("decode", "features", "inference", "e2e"):
            for stat in ("p50", "p95"):
                row(f"{clip} {stage} ms {stat}", f"{clip}_fast_{stage}_ms_{stat}",
                    f"{clip}_ref_{stage}_ms_{stat}", f"{clip}_{stage}_ms_{stat}_ratio")
        row(f"{clip} CPU ms p50 (incl. ffprobe)", f"{clip}_fast_cpu_ms_p50", None, None)
        for stage in ("decode", "features", "inference", "e2e", "cpu"):
            row(f"{clip} shipped ({r.get('shipped_family')}) {stage} ms p50",
                f"{clip}_shipped_{stage}_ms_p50", None, None)
        for stage in ("patches", "network", "featurize"):
            row(f"{clip} musicnn {stage} ms p50", f"{clip}_musicnn_{stage}_ms_p50", None, None)
    row("ffprobe alone, CPU ms p50", "clip_30s_ffprobe_cpu_ms_p50", None, None)
    row("ffprobe alone, wall ms p50", "clip_30s_ffprobe_wall_ms_p50", None, None)
    row("6 windows: Keras head ms p50", "song_4min_inference_keras_ms_p50", None, None)
    row("6 windows: numpy head ms p50", "song_4min_inference_numpy_ms_p50", None, None)
    row("throughput clips/s (30-s, 2 workers)", "clip_30s_fast_throughput_clips_per_s",
        "clip_30s_ref_throughput_clips_per_s", "clip_30s_throughput_clips_per_s_ratio")
    row("cold start s (start → 1st prediction)", "fast_cold_start_s", "ref_cold_start_s",
        "cold_start_s_ratio")
    row("fleet clips/s, 1 genre-worker (default family)", "fleet_1_worker_clips_per_s", None, None)
    row("fleet clips/s, 2 genre-workers", "fleet_2_workers_clips_per_s", None, None)
    row("in-process pool clips/s, same run", "fleet_in_process_clips_per_s", None, None)
    row("peak RSS MB (fast: both clips; ref: 30-s)", "fast_peak_rss_mb", "ref_peak_rss_mb", None)
    row("shipped cold start s", "shipped_cold_start_s", None, None)
    row("shipped peak RSS MB", "shipped_peak_rss_mb", None, None)
    for stage in ("e2e", "features", "music_check"):
        row(f"clip_30s shipped {stage} ms p50 (vs reference)", f"clip_30s_shipped_{stage}_ms_p50",
            f"clip_30s_ref_{stage}_ms_p50", f"clip_30s_shipped_{stage}_ms_p50_ratio")
    row("bot ready s (start → on_ready, in-process)", "bot_ready_s", None, None)
    row("bot process start → gateway connected s", "bot_connected_s", None, None)
    row("bot process start → first answer s", "bot_first_answer_s", None, None)
    row("bot event-loop lag ms p50", "bot_loop_lag_ms_p50", None, None)
    row("bot event-loop lag ms p99", "bot_loop_lag_ms_p99", None, None)
    row("bot workers ready s (in-process)", "bot_workers_ready_s", None, None)
    row(f"bot burst of {r.get('bot_clips_in_flight')} clips answered in s", "bot_clips_wall_s",
        None, None)
    row("bot throughput clips/s", "bot_throughput_clips_per_s", None, None)
    widths = [max(len(cells[i]) for cells in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                  for i, cell in enumerate(cells))
        for cells in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    load = (f"load average {r.get('load_avg_1min_before')} → {r.get('load_avg_1min_after')} on "
            f"{r.get('cpu_count')} CPUs")
    return "\n".join([*lines, "", *targets(r), "", load])


#: (label, figure, comparison, bound): the default family first, as users get it.
TARGET_CHECKS = [
    ("30-s clip end to end, shipped family / reference", "clip_30s_shipped_e2e_ms_p50_ratio",
     "<=", "target_e2e_ratio_max"),
    ("30-s clip end to end, table family / reference", "clip_30s_e2e_ms_p50_ratio", "<=",
     "target_e2e_ratio_max"),
    ("bot burst throughput (shipped), clips/s", "bot_throughput_clips_per_s", ">=",
     "target_bot_throughput_clips_per_s_min"),
    ("bot start to first answer, s", "bot_first_answer_s", "<=", "target_first_answer_s_max"),
    ("peak RSS of a worker (shipped), MB", "shipped_peak_rss_mb", "<=", "target_peak_rss_mb_max"),
    ("peak RSS of a worker (table), MB", "fast_peak_rss_mb", "<=", "target_peak_rss_mb_max"),
    ("event-loop lag p99 during the burst, ms", "bot_loop_lag_ms_p99", "<=",
     "target_loop_lag_p99_ms_max"),
]


def targets(r: dict[str, float | int | str]) -> list[str]:
    """One line per target: the figure, the bound, and whether it is met."""
    checks = TARGET_CHECKS
    lines = ["targets:"]
    for label, key, op, bound_key in checks:
        value, bound = r.get(key), r.get(bound_key)
        if not isinstance(value, int | float) or not isinstance(bound, int | float):
            lines.append(f"  {label}: not measured")
            continue
        met = value <= bound if op == "<=" else value >= bound
        lines.append(f"  {label}: {_fmt(value)} (target {op} {_fmt(bound)}) "
                     f"{'met' if met else 'NOT met'}")
    return lines


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
