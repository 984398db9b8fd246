"""Honest evaluation: splits by track, metrics, calibration error.

Kept apart from training so any model family can be measured by the same protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedGroupKFold

from genre_core.model import GENRES, GenreModel, softmax

#: Builds an unfitted model; called once per fold.
ModelFactory = Callable[[], GenreModel]


@dataclass
class Evaluation:
    """Track-level results of one protocol."""

    protocol: str
    description: str
    y_true: np.ndarray
    logits: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def y_pred(self) -> np.ndarray:
        return self.logits.argmax(axis=1)

    def summary(self, temperature: float = 1.0) -> dict[str, Any]:
        probs = softmax(self.logits / temperature)
        labels = list(range(len(GENRES)))
        return {
            "protocol": self.protocol,
            "description": self.description,
            "n_tracks": int(len(self.y_true)),
            "accuracy": round(float(accuracy_score(self.y_true, self.y_pred)), 4),
            "macro_f1": round(
                float(f1_score(self.y_true, self.y_pred, average="macro", labels=labels)), 4
            ),
            "ece": round(expected_calibration_error(probs, self.y_true), 4),
            "confusion": confusion_matrix(self.y_true, self.y_pred, labels=labels).tolist(),
            "genres": GENRES,
            **self.extra,
        }


def track_kfold(
    X: np.ndarray, y: np.ndarray, tracks: np.ndarray, make_model: ModelFactory,
    *, n_splits: int = 5, seed: int = 0, progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Stratified k-fold grouped by track: no track ever sits on both sides of a split.

    Returns out-of-fold logits for every row, so the same run also serves calibration.
    """
    logits = np.zeros((len(y), len(GENRES)))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(folds.split(X, y, groups=tracks), start=1):
        if progress:
            progress(f"cross-validation fold {k}/{n_splits}")
        logits[test] = make_model().fit(X[train], y[train]).logits(X[test])
    return Evaluation(
        "track-kfold",
        f"stratified {n_splits}-fold cross-validation grouped by track "
        f"({len(np.unique(tracks))} tracks, seed {seed})",
        y, logits,
    )


def fault_filtered(
    X: np.ndarray, y: np.ndarray, tracks: np.ndarray, make_model: ModelFactory,
    train_tracks: set[str], test_tracks: set[str],
) -> Evaluation:
    """Train on the fault-filtered train+valid tracks, test on its test tracks."""
    train = np.isin(tracks, list(train_tracks))
    test = np.isin(tracks, list(test_tracks))
    logits = make_model().fit(X[train], y[train]).logits(X[test])
    return Evaluation(
        "fault-filtered",
        f"fault-filtered GTZAN split (Kereliuk et al. 2015): trained on train+valid "
        f"({len(np.unique(tracks[train]))} tracks), tested on test "
        f"({len(np.unique(tracks[test]))} tracks); no artist on both sides",
        y[test], logits,
    )


def top_is_right(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether each row's top class is a right answer: ``y`` holds one genre index per row, or
    a 0/1 mask of every right answer per row (a clip tagged "Pop/Rock" is right as pop, rock or
    metal)."""
    top = probs.argmax(axis=1)
    y = np.asarray(y)
    return y[np.arange(len(y)), top] > 0 if y.ndim == 2 else top == y


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence, with equal-width bins (``y``: see
    :func:`top_is_right`)."""
    confidence = probs.max(axis=1)
    correct = top_is_right(probs, y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def ece_floor(probs: np.ndarray, draws: int = 500, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would still score on this many examples.

    Binned ECE is biased upwards on small sets: each answer is drawn right with probability
    equal to its confidence, and the mean ECE over ``draws`` such outcomes is returned, so a
    measured ECE can be read against what sampling noise alone gives.
    """
    rng = np.random.default_rng(seed)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    wrong_label = (predicted + 1) % probs.shape[1]
    scores = [
        expected_calibration_error(
            probs, np.where(rng.random(len(probs)) < confidence, predicted, wrong_label)
        )
        for _ in range(draws)
    ]
    return float(np.mean(scores))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The softmax temperature that minimises the negative log-likelihood of held-out logits
    (with answer sets, of the probability given to the set: see :func:`top_is_right`)."""
    mask = np.asarray(y) if np.ndim(y) == 2 else np.eye(logits.shape[1])[np.asarray(y)]

    def nll(temperature: float) -> float:
        probs = softmax(logits / temperature)
        return float(-np.mean(np.log((probs * mask).sum(axis=1) + 1e-12)))

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def choose_unsure_thresholds(
    probs: np.ndarray, y: np.ndarray, target_accuracy: float = 0.9
) -> dict[str, float]:
    """Pick the loosest (top probability, margin to the second) pair whose confident answers
    reach ``target_accuracy`` on held-out tracks; answers below either threshold are "unsure"."""
    ranked = np.sort(probs, axis=1)
    top, margin = ranked[:, -1], ranked[:, -1] - ranked[:, -2]
    correct = top_is_right(probs, y)
    best = {"min_probability": 1.0, "min_margin": 1.0, "coverage": 0.0,
            "confident_accuracy": float("nan")}
    for min_p in np.arange(0.2, 0.96, 0.05):
        for min_m in np.arange(0.0, 0.61, 0.05):
            sure = (top >= min_p) & (margin >= min_m)
            if sure.sum() < 10:
                continue
            accuracy, coverage = correct[sure].mean(), sure.mean()
            if accuracy >= target_accuracy and coverage > best["coverage"]:
                best = {"min_probability": round(float(min_p), 2),
                        "min_margin": round(float(min_m), 2),
                        "coverage": round(float(coverage), 4),
                        "confident_accuracy": round(float(accuracy), 4)}
    best["target_accuracy"] = target_accuracy
    return best
