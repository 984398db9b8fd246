"""The genre head: fit/predict, and an artifact that round-trips or is refused with a reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genre_core.errors import ModelMismatchError, ModelMissingError
from genre_core.model import GENRES, METADATA_FILE, MODEL_FILE, GenreModel

NAMES = [f"f{i}" for i in range(6)]


def separable_data(n_per_genre: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 5, size=(len(GENRES), len(NAMES)))
    y = np.repeat(np.arange(len(GENRES)), n_per_genre)
    return centres[y] + rng.normal(0, 0.5, size=(len(y), len(NAMES))), y


@pytest.fixture(scope="module")
def trained() -> tuple[GenreModel, np.ndarray, np.ndarray]:
    X, y = separable_data()
    return GenreModel(NAMES, epochs=60, hidden=(32,)).fit(X, y), X, y


def test_learns_and_gives_probabilities(trained: tuple[GenreModel, np.ndarray, np.ndarray]) -> None:
    model, X, y = trained
    probs = model.predict_proba(X)
    assert probs.shape == (len(X), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert (model.predict(X) == y).mean() > 0.9


def test_temperature_softens_without_changing_the_answer(
    trained: tuple[GenreModel, np.ndarray, np.ndarray],
) -> None:
    model, X, _ = trained
    sharp = model.predict_proba(X)
    model.temperature_ = 3.0
    try:
        soft = model.predict_proba(X)
    finally:
        model.temperature_ = 1.0
    assert (soft.argmax(1) == sharp.argmax(1)).all()
    assert soft.max(1).mean() < sharp.max(1).mean()


def test_round_trip(trained: tuple[GenreModel, np.ndarray, np.ndarray], tmp_path: Path) -> None:
    model, X, _ = trained
    model.save(tmp_path, metadata={"version": "test-1"})
    loaded = GenreModel.load(tmp_path, expected_features=NAMES)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
    meta = loaded.metadata_
    assert meta["version"] == "test-1" and meta["feature_names"] == NAMES
    assert meta["genres"] == GENRES and "keras" in meta["library_versions"]


def _saved(model: GenreModel, directory: Path) -> Path:
    model.save(directory)
    return directory


def test_refuses_other_feature_names(trained, tmp_path: Path) -> None:  # noqa: ANN001
    directory = _saved(trained[0], tmp_path)
    with pytest.raises(ModelMismatchError, match="feature names differ"):
        GenreModel.load(directory, expected_features=NAMES[::-1])


def test_refuses_another_format_version(trained, tmp_path: Path) -> None:  # noqa: ANN001
    directory = _saved(trained[0], tmp_path)
    meta = json.loads((directory / METADATA_FILE).read_text())
    meta["format_version"] = 99
    (directory / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="artifact format 99"):
        GenreModel.load(directory)


def test_refuses_a_half_written_directory(trained, tmp_path: Path) -> None:  # noqa: ANN001
    directory = _saved(trained[0], tmp_path)
    (directory / MODEL_FILE).unlink()
    with pytest.raises(ModelMissingError, match="No complete model"):
        GenreModel.load(directory)


def test_refuses_a_corrupt_model_file(trained, tmp_path: Path) -> None:  # noqa: ANN001
    directory = _saved(trained[0], tmp_path)
    (directory / MODEL_FILE).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelMismatchError, match="could not be read"):
        GenreModel.load(directory)


def test_an_l2_penalty_tempers_the_logits_and_is_kept(tmp_path: Path) -> None:
    X, y = separable_data()
    plain = GenreModel(NAMES, epochs=60, hidden=(32,)).fit(X, y)
    penalised = GenreModel(NAMES, epochs=60, hidden=(32,), l2=0.05).fit(X, y)
    assert (penalised.predict(X) == y).mean() > 0.9
    assert np.abs(penalised.logits(X)).max() < np.abs(plain.logits(X)).max()
    penalised.save(tmp_path)
    assert GenreModel.load(tmp_path).l2 == 0.05
