"""Training a genre model from ``../shared/data`` and writing its artifact.

One run trains the final model on every track, and measures the same recipe honestly: track-level
k-fold and the fault-filtered split. The out-of-fold predictions also fit the calibration
temperature and the "unsure" thresholds, so all are stored together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.audio import decode
from genre_core.cache import cached
from genre_core.data import TABLE_FILE, Table, audio_clips, fingerprint, load_split, load_table
from genre_core.evaluation import (
    Evaluation,
    choose_unsure_thresholds,
    ece_floor,
    expected_calibration_error,
    fault_filtered,
    fit_temperature,
    track_kfold,
)
from genre_core.features import FEATURE_NAMES, extract
from genre_core.model import METADATA_FILE, GenreModel, softmax

Progress = Callable[[str], None]
#: Cache key of the extractor's output; bump when features.extract changes.
TABLE_FEATURES_KEY = "table-features-v1"


def table_training_set(data_dir: Path, progress: Progress | None = None) -> Table:
    """The published table, with our own extractor's features for every track whose full
    30-s audio is present (so the model learns from what it will see at prediction time)."""
    table = load_table(data_dir)
    full = {clip.track: clip for clip in audio_clips(data_dir, kinds=("full",))}
    X, sources = table.X.copy(), table.sources.copy()
    for i, track in enumerate(table.tracks):
        if track in full:
            if progress:
                progress(f"extracting features of {track}")
            X[i] = audio_features(full[track].path)
            sources[i] = "audio"
    return Table(X, table.y, table.tracks, sources)


def audio_features(path: Path) -> np.ndarray:
    """The 57 features of a 30-s track, cached on disk."""

    def compute() -> np.ndarray:
        audio = decode(path)
        return extract(audio.samples, audio.sr)

    return cached(TABLE_FEATURES_KEY, path, compute)


def _model_factory(seed: int, epochs: int | None) -> Callable[[], GenreModel]:
    def make_model() -> GenreModel:
        model = GenreModel(list(FEATURE_NAMES), family="table", seed=seed)
        if epochs is not None:
            model.epochs = epochs
        return model

    return make_model


def evaluate(
    data_dir: Path, *, protocol: str = "all", seed: int = 0, epochs: int | None = None,
    n_splits: int = 5, progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Measure the training recipe under ``protocol`` ("track-kfold", "fault-filtered" or
    "all"), with calibrated probabilities; one report per protocol."""
    say = progress or (lambda message: None)
    data = table_training_set(data_dir, say)
    return _measure(data_dir, data, protocol, seed, epochs, n_splits, say)[0]


def _measure(
    data_dir: Path, data: Table, protocol: str, seed: int, epochs: int | None, n_splits: int,
    say: Progress,
) -> tuple[list[dict[str, Any]], Evaluation]:
    make_model = _model_factory(seed, epochs)
    train_tracks = load_split(data_dir, "train") | load_split(data_dir, "valid")
    if protocol == "fault-filtered":
        # Only the split's training tracks may inform its calibration.
        keep = np.isin(data.tracks, list(train_tracks))
        calibration_data = Table(data.X[keep], data.y[keep], data.tracks[keep], data.sources[keep])
    else:
        calibration_data = data
    kfold = track_kfold(calibration_data.X, calibration_data.y, calibration_data.tracks,
                        make_model, n_splits=n_splits, seed=seed, progress=say)
    reports = []
    if protocol in ("track-kfold", "all"):
        reports.append({**kfold.summary(fit_temperature(kfold.logits, kfold.y_true)),
                         "calibration": calibration_report(kfold.logits, kfold.y_true)})
    if protocol in ("fault-filtered", "all"):
        say("fault-filtered split")
        split = fault_filtered(data.X, data.y, data.tracks, make_model, train_tracks,
                               load_split(data_dir, "test"))
        in_train = np.isin(calibration_data.tracks, list(train_tracks))
        temperature = fit_temperature(kfold.logits[in_train], kfold.y_true[in_train])
        reports.append({**split.summary(temperature), "temperature": round(temperature, 4)})
    return reports, kfold


def calibration_report(logits: np.ndarray, y: np.ndarray, n_splits: int = 5) -> dict[str, Any]:
    """Temperature scaling measured honestly: each row's temperature is fitted on the other
    rows (cross-fitting), so the ECE after calibration is an out-of-sample figure.
    ``ece_floor`` is what a perfectly calibrated model would score on as many rows."""
    calibrated = np.zeros_like(logits)
    for part in np.array_split(np.random.default_rng(0).permutation(len(y)), n_splits):
        rest = np.setdiff1d(np.arange(len(y)), part)
        calibrated[part] = softmax(logits[part] / fit_temperature(logits[rest], y[rest]))
    temperature = fit_temperature(logits, y)
    return {
        "temperature": round(temperature, 4),
        "fitted_on": "held-out (out-of-fold) logits of the protocol",
        "ece_before": round(expected_calibration_error(softmax(logits), y), 4),
        "ece_after": round(expected_calibration_error(calibrated, y), 4),
        "ece_floor": round(ece_floor(calibrated), 4),
        "n": int(len(y)),
    }


def train(
    data_dir: Path, out_dir: Path, *, seed: int = 0, epochs: int | None = None,
    n_splits: int = 5, progress: Progress | None = None,
) -> dict[str, Any]:
    """Train, evaluate, calibrate and save a table-family model into ``out_dir``.

    Returns the metrics stored with it: ``accuracy`` and ``macro_f1`` are the track-level
    k-fold figures; the full reports are under ``protocols``.
    """
    say = progress or (lambda message: None)
    started = time.monotonic()
    data = table_training_set(data_dir, say)
    (kfold_report, split_report), kfold = _measure(
        data_dir, data, "all", seed, epochs, n_splits, say
    )
    calibration = kfold_report.pop("calibration")

    say("training the final model on every track")
    model = _model_factory(seed, epochs)().fit(data.X, data.y)
    model.temperature_ = calibration["temperature"]
    metrics = {
        "accuracy": kfold_report["accuracy"],
        "macro_f1": kfold_report["macro_f1"],
        "protocols": {"track-kfold": kfold_report, "fault-filtered": split_report},
    }
    sources = {str(s): int(n) for s, n in zip(*np.unique(data.sources, return_counts=True),
                                                strict=True)}
    files = [Path(data_dir) / TABLE_FILE] + [c.path for c in audio_clips(data_dir, ("full",))]
    model.save(out_dir, metadata={
        "version": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {
            "data_fingerprint": fingerprint(files),
            "n_tracks": int(len(np.unique(data.tracks))),
            "feature_sources": sources,
            "seconds": round(time.monotonic() - started, 1),
        },
        "calibration": calibration,
        "thresholds": choose_unsure_thresholds(
            softmax(kfold.logits / model.temperature_), kfold.y_true
        ),
        "metrics": metrics,
    })
    say("done")
    return metrics


def retrain(
    data_dir: Path, out_dir: Path, *, seed: int = 0, progress: Progress | None = None,
    epochs: int | None = None, family: str | None = None, community_dir: Path | None = None,
    current_dir: Path | None = None, **community: Any,
) -> dict[str, Any]:
    """What ``/retrain`` runs: a full training of ``family`` (default: the shipped model's) into
    ``out_dir``, calibration and "unsure" thresholds included.

    With ``community_dir`` and ``current_dir`` (the bot's ``/retrain``), the learned family
    learns the community's clips too and both models are measured on the same held-out clips
    (:func:`genre_core.training.community.retrain`; ``community`` holds its thresholds).

    Returns the stored metrics plus flat figures for a report: the headline ``accuracy`` and
    ``macro_f1`` of the family's protocol, its ``ece`` (with ``ece_floor``, what a perfectly
    calibrated model would score on as many examples), ``temperature`` and thresholds, and for
    the learned family the table family's accuracy on the same clips.
    """
    family = family or shipped_family()
    if family == "musicnn" and community_dir is not None and current_dir is not None:
        from genre_core.training import community as learn

        return learn.retrain(data_dir, out_dir, community_dir=community_dir,
                             current_dir=current_dir, seed=seed, progress=progress, **community)
    if family == "musicnn":
        from genre_core import crosscollection

        metrics = crosscollection.train(data_dir, out_dir, seed=seed, progress=progress)
    else:
        metrics = train(data_dir, out_dir, seed=seed, epochs=epochs, progress=progress)
        metrics["fault_filtered_accuracy"] = metrics["protocols"]["fault-filtered"]["accuracy"]
    meta = json.loads((Path(out_dir) / METADATA_FILE).read_text())
    metrics["ece"] = meta["calibration"].get("ece_after")
    metrics["ece_floor"] = meta["calibration"].get("ece_floor")
    metrics["temperature"] = meta["calibration"].get("temperature")
    metrics["unsure_below_probability"] = meta["thresholds"].get("min_probability")
    metrics["unsure_below_margin"] = meta["thresholds"].get("min_margin")
    return metrics


def shipped_family() -> str:
    """The family of the shipped default model (``models/genre``)."""
    from genre_core.pipeline import DEFAULT_MODEL_DIR

    try:
        return str(json.loads((DEFAULT_MODEL_DIR / METADATA_FILE).read_text())["family"])
    except (OSError, ValueError, KeyError):
        return "table"


def is_not_worse(new: dict[str, Any], old: dict[str, Any], tolerance: float = 0.0) -> bool:
    """Whether a candidate is at least as accurate as the current model: on the same held-out
    clips when the retrain measured both (``old_accuracy``), else by their stored honest
    accuracy."""
    if new.get("old_accuracy") is not None:
        return float(new["accuracy"]) >= float(new["old_accuracy"]) - tolerance
    return float(new.get("accuracy", 0.0)) >= float(old.get("accuracy", 0.0)) - tolerance
