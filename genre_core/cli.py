"""The ``genre`` command line: predict, train, evaluate, info.

Errors exit non-zero with the typed error's message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from genre_core.data import default_data_dir
from genre_core.errors import GenreError
from genre_core.result import Prediction, display_name

BAR_WIDTH = 24


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except GenreError as error:
        print(f"genre: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genre", description="Tell the music genre of a song.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    predict = sub.add_parser("predict", help="classify audio files")
    predict.add_argument("files", nargs="+", type=Path, metavar="FILE")
    predict.add_argument("--json", action="store_true", help="one JSON object per file")
    predict.add_argument("--model", type=Path, help="model directory (default: the shipped one)")
    predict.set_defaults(run=_predict)

    train = sub.add_parser("train", help="train a model from ../shared/data")
    train.add_argument("--out", type=Path, default=Path("models/genre"), help="artifact directory")
    train.add_argument("--family", choices=["table", "musicnn"], default="table",
                       help="table: the 57 GTZAN features; musicnn: the pretrained network")
    _data_options(train)
    train.set_defaults(run=_train)

    evaluate = sub.add_parser("evaluate", help="measure the training recipe honestly")
    evaluate.add_argument(
        "--protocol",
        choices=["track-kfold", "fault-filtered", "clip-kfold", "cross-collection",
                 "learning-curve", "all"],
        default="all",
        help="track-kfold and fault-filtered measure the table recipe on the feature table; "
        "clip-kfold compares both families on the same GTZAN clips; cross-collection measures "
        "the learned family across GTZAN, 4Q-MER and FMA (leave one collection out and more); "
        "learning-curve: accuracy on 4Q-MER after k corrections per genre (5 seeds)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--charts", type=Path, default=None,
                          help="cross-collection: write confusion and reliability PNGs here; "
                          "learning-curve: learning_curve.png")
    _data_options(evaluate)
    evaluate.set_defaults(run=_evaluate)

    detector = sub.add_parser("train-detector", help="train the music / not-music detector")
    detector.add_argument("--out", type=Path, default=None, help="default: models/detector")
    detector.add_argument("--data", type=Path, default=None)
    detector.add_argument("--seed", type=int, default=0)
    detector.add_argument("--charts", type=Path, default=None,
                          help="write detector.png (held-out recall per source) here")
    detector.set_defaults(run=_train_detector)

    check = sub.add_parser("evaluate-detector", help="measure the detector on held-out sources")
    check.add_argument("--data", type=Path, default=None)
    check.add_argument("--json", action="store_true")
    check.add_argument("--charts", type=Path, default=None,
                       help="write detector.png (held-out recall per source) here")
    check.set_defaults(run=_evaluate_detector)

    embed = sub.add_parser("embed", help="fill the network's cache for every collection's clips")
    embed.add_argument("--data", type=Path, default=None)
    embed.add_argument("--workers", type=int, default=2, help="processes (one core each)")
    embed.set_defaults(run=_embed)

    info = sub.add_parser("info", help="show the current model's version and metrics")
    info.add_argument("--model", type=Path)
    info.set_defaults(run=_info)
    return parser


def _data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, default=None, help="data directory (../shared/data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="override training epochs")


def _predict(args: argparse.Namespace) -> int:
    from genre_core.pipeline import Classifier

    classifier = Classifier.load(args.model)
    failures = 0
    for path in args.files:
        try:
            prediction = classifier.classify(path)
        except GenreError as error:
            failures += 1
            if args.json:
                print(json.dumps({"file": str(path), "error": error.code, "message": str(error)}))
            else:
                print(f"{path}: {error}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"file": str(path), **prediction.to_dict()}))
        else:
            print(format_table(path, prediction))
    return 2 if failures else 0


def format_table(path: Path, prediction: Prediction) -> str:
    """A readable answer for a terminal."""
    lines = [f"{path}: {prediction.summary}"]
    if prediction.music:
        for genre, probability in prediction.ranked:
            bar = "█" * round(probability * BAR_WIDTH)
            lines.append(f"  {display_name(genre):<10} {bar:<{BAR_WIDTH}} {probability:6.1%}")
    else:
        lines.append(f"  P(music) = {prediction.music_probability:.2f}")
    if prediction.tags:
        lines.append("  style: " + ", ".join(tag for tag, _ in prediction.tags))
    if len(prediction.windows) > 1:
        timeline = ", ".join(f"{w.start_s:.0f}s {w.genre}" for w in prediction.windows)
        lines.append(f"  windows: {timeline}")
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in prediction.timings_ms.items())
    lines.append(f"  analysed {prediction.analysed_s:.1f} s of {prediction.duration_s:.1f} s; "
                 f"{timings}")
    return "\n".join(lines)


def _train(args: argparse.Namespace) -> int:
    from genre_core.training import retrain

    metrics = retrain(args.data or default_data_dir(), args.out, seed=args.seed,
                      epochs=args.epochs, family=args.family, progress=_progress)
    for report in metrics["protocols"].values():
        print(_format_report(report))
    print(f"model written to {args.out}")
    return 0


def _progress(message: str) -> None:
    print(f"· {message}", file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> int:
    from genre_core.training import evaluate

    data_dir = args.data or default_data_dir()
    reports = []
    if args.protocol in ("track-kfold", "fault-filtered", "all"):
        reports += evaluate(data_dir, protocol=args.protocol, seed=args.seed,
                            epochs=args.epochs, progress=_progress)
    if args.protocol in ("clip-kfold", "all"):
        reports += _clip_reports(data_dir, args.seed)
    if args.protocol == "cross-collection":
        return _cross_collection(data_dir, args)
    if args.protocol == "learning-curve":
        return _learning_curve(data_dir, args)
    if args.json:
        out: dict[str, Any] = reports[0] if len(reports) == 1 else {
            **reports[0], "protocols": {r["protocol"]: r for r in reports},
        }
        print(json.dumps(out))
    else:
        print("\n\n".join(_format_report(r) for r in reports))
    return 0


def _cross_collection(data_dir: Path, args: argparse.Namespace) -> int:
    from genre_core import crosscollection

    report = crosscollection.evaluate(data_dir, seed=args.seed, progress=_progress)
    if args.charts:
        from genre_core import charts

        for path in charts.evaluation_charts(report, args.charts):
            _progress(f"wrote {path}")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "loco_pooled"}))
    else:
        print(crosscollection.format_report(report))
    return 0


def _learning_curve(data_dir: Path, args: argparse.Namespace) -> int:
    from genre_core import corpora, crosscollection, learning_curve

    material = crosscollection.build_material(corpora.recordings(data_dir), seed=args.seed,
                                              progress=_progress)
    report = learning_curve.learning_curve(
        material, seeds=range(args.seed, args.seed + len(learning_curve.SEEDS)),
        progress=_progress)
    if args.charts:
        from genre_core import charts

        args.charts.mkdir(parents=True, exist_ok=True)
        path = charts.learning_curve_chart(report, args.charts / "learning_curve.png")
        _progress(f"wrote {path}")
    if args.json:
        print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    else:
        print(learning_curve.format_curve(report))
    return 0


def _embed(args: argparse.Namespace) -> int:
    from genre_core.corpora import recordings
    from genre_core.crosscollection import variants_of
    from genre_core.learned import cache_embeddings

    clips = recordings(args.data or default_data_dir())
    # Every clip as is first, then the shifted copies: the first pass alone can train a head.
    jobs = [(c.path, v) for rank in (0, 1) for c in clips for v in variants_of(c)[rank:rank + 1]]
    cache_embeddings(jobs, workers=args.workers, progress=_progress)
    print(f"{len(clips)} clips embedded ({len(jobs)} clip variants)")
    return 0


def _clip_reports(data_dir: Path, seed: int) -> list[dict[str, Any]]:
    """One report per family from the same clip-level comparison."""
    from genre_core.comparison import compare

    comparison = compare(data_dir, seed=seed, progress=_progress)
    reports = []
    for family, report in comparison["families"].items():
        reports.append({
            **report,
            "protocol": f"clip-kfold/{family}",
            "family": family,
            "clips_per_genre": comparison["clips_per_genre"],
            "calibration": comparison["calibration"][family],
            "fault_filtered_subset": comparison["fault_filtered_subset"][family],
            "narrowband_8khz": comparison["narrowband_8khz"][family],
        })
    return reports


def _format_report(report: dict[str, Any]) -> str:
    genres = report["genres"]
    lines = [
        f"{report['protocol']}: {report['description']}",
        f"  accuracy {report['accuracy']:.1%}   macro-F1 {report['macro_f1']:.3f}   "
        f"ECE {report['ece']:.3f}   ({report['n_tracks']} tracks)",
    ]
    calibration = report.get("calibration")
    if calibration and "ece_floor" in calibration:
        lines.append(
            f"  calibration: temperature {calibration['temperature']:.2f}, ECE "
            f"{calibration['ece_before']:.3f} before, {calibration['ece_after']:.3f} after "
            f"(cross-fitted; a perfectly calibrated model scores about "
            f"{calibration['ece_floor']:.3f} on {calibration['n']} examples)"
        )
    lines += [
        "  confusion (rows: true, columns: predicted)",
        "  " + " " * 10 + " ".join(f"{g[:4]:>4}" for g in genres),
    ]
    for genre, row in zip(genres, report["confusion"], strict=True):
        lines.append(f"  {genre:<10}" + " ".join(f"{n:>4}" for n in row))
    return "\n".join(lines)


def _train_detector(args: argparse.Namespace) -> int:
    from genre_core.detector_training import format_report, train_detector

    meta = train_detector(args.data, args.out, seed=args.seed, progress=_progress)
    _detector_chart(meta["report"], args.charts)
    print(format_report(meta["report"]))
    return 0


def _evaluate_detector(args: argparse.Namespace) -> int:
    from genre_core.detector_training import evaluate_detector, format_report

    report = evaluate_detector(args.data, progress=_progress)
    _detector_chart(report, args.charts)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _detector_chart(report: dict[str, Any], out_dir: Path | None) -> None:
    if out_dir is not None and report.get("collections"):
        from genre_core.charts import detector_chart

        cues_alone = report.get("collections_cues_alone") if report.get("network_check") else None
        path = detector_chart(report["collections"], cues_alone, Path(out_dir) / "detector.png")
        _progress(f"wrote {path}")


def _info(args: argparse.Namespace) -> int:
    from genre_core.pipeline import Classifier

    print(json.dumps(Classifier.load(args.model).info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
