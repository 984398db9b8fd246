"""Calibration measures: the ECE, what sampling noise alone gives, and temperature fitting."""

from __future__ import annotations

import numpy as np

from genre_core.evaluation import ece_floor, expected_calibration_error, fit_temperature
from genre_core.model import softmax


def outcomes(n: int, sharpness: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from the logits' own softmax: calibrated at temperature 1."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, sharpness, size=(n, 10))
    probs = softmax(logits)
    y = np.array([rng.choice(10, p=p) for p in probs])
    return logits, y


def test_a_calibrated_model_scores_about_the_floor_and_an_overconfident_one_does_not() -> None:
    logits, y = outcomes(200, sharpness=3.0)
    calibrated = softmax(logits)
    overconfident = softmax(logits * 3)
    floor = ece_floor(calibrated)
    assert expected_calibration_error(calibrated, y) < floor + 0.04
    assert expected_calibration_error(overconfident, y) > floor + 0.1


def test_the_floor_shrinks_with_more_examples() -> None:
    small, _ = outcomes(100, sharpness=2.0)
    large, _ = outcomes(5000, sharpness=2.0)
    assert ece_floor(softmax(large)) < ece_floor(softmax(small)) / 3


def test_fit_temperature_undoes_a_known_sharpening() -> None:
    logits, y = outcomes(3000, sharpness=2.0, seed=1)
    assert abs(fit_temperature(logits * 2.5, y) - 2.5) < 0.3
