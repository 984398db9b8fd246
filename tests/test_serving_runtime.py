"""What an analysis worker runs: the genre head in numpy (``head.npz``) and the music network on
LiteRT, equal to their Keras sources within float32 rounding, and never importing TensorFlow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from synth import music_like, wav_bytes

from genre_core import musicnn as mn
from genre_core.errors import ModelMismatchError
from genre_core.model import GENRES, HEAD_FILE, MODEL_FILE, GenreModel, NumpyHead

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {name: ROOT / "models" / name for name in ("genre", "genre-table")}
NAMES = [f"f{i}" for i in range(6)]


def rtol_of_scale(head: NumpyHead) -> float:
    """Float32 rounding of the head's logits, relative to their largest magnitude."""
    # Each logit is a float32 sum over up to fan-in terms; summed in another order (numpy's BLAS
    # vs TensorFlow) it moves by about sqrt(fan_in) * eps of its scale: allow 4x that.
    fan_in = max(step["kernel"].shape[0] for step in head.steps if step["kind"] == "dense")
    return 4 * float(np.sqrt(fan_in)) * float(np.finfo(np.float32).eps)


def assert_same_probabilities(numpy_model: GenreModel, keras_model: GenreModel,
                              X: np.ndarray) -> None:
    assert numpy_model.head_ is not None and numpy_model.network_ is None
    assert keras_model.network_ is not None
    logits = keras_model.logits(X)
    atol = rtol_of_scale(numpy_model.head_) * float(np.abs(logits).max())
    np.testing.assert_allclose(numpy_model.logits(X), logits, rtol=0, atol=atol)
    # softmax(z / T) moves no probability by more than the largest change of z / T.
    np.testing.assert_allclose(numpy_model.predict_proba(X), keras_model.predict_proba(X),
                               rtol=0, atol=atol / keras_model.temperature_)


def realistic_features(head: NumpyHead, n: int = 64, seed: int = 0) -> np.ndarray:
    """Feature vectors spread like the training data, from the scaler's mean and variance."""
    scaler = head.steps[0]
    assert scaler["kind"] == "normalization"
    noise = np.random.default_rng(seed).standard_normal((n, head.n_inputs))
    return (scaler["mean"] + np.sqrt(scaler["variance"]) * noise).astype(np.float32)


def without_head(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(HEAD_FILE))
    return target


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenreModel, Path]:
    """A small trained head and its saved artifact."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(GENRES)), 8)
    X = rng.normal(0, 5, (len(GENRES), len(NAMES)))[y] + rng.normal(0, 0.5, (len(y), len(NAMES)))
    model = GenreModel(NAMES, epochs=20, hidden=(16, 8)).fit(X, y)
    model.temperature_ = 1.7
    directory = tmp_path_factory.mktemp("head")
    model.save(directory)
    return model, directory


def test_save_writes_a_head_that_loads_without_keras(saved: tuple[GenreModel, Path]) -> None:
    model, directory = saved
    assert (directory / HEAD_FILE).is_file()
    loaded = GenreModel.load(directory)
    assert loaded.network_ is None and loaded.head_ is not None
    assert [s["kind"] for s in loaded.head_.steps] == ["normalization", "dense", "dense", "dense"]
    assert [s.get("activation") for s in loaded.head_.steps[1:]] == ["relu", "relu", "linear"]
    X = np.random.default_rng(1).normal(0, 5, (32, len(NAMES))).astype(np.float32)
    assert_same_probabilities(loaded, model, X)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_numpy_head_equals_its_keras_network(name: str, tmp_path: Path) -> None:
    served = GenreModel.load(SHIPPED[name])
    through_keras = GenreModel.load(without_head(SHIPPED[name], tmp_path / name))
    assert_same_probabilities(served, through_keras, realistic_features(served.head_))


def test_artifact_without_head_loads_through_keras(saved: tuple[GenreModel, Path],
                                                   tmp_path: Path) -> None:
    model, directory = saved
    loaded = GenreModel.load(without_head(directory, tmp_path / "old"))
    assert loaded.head_ is None and loaded.network_ is not None
    X = np.random.default_rng(2).normal(0, 5, (8, len(NAMES))).astype(np.float32)
    np.testing.assert_array_equal(loaded.logits(X), model.logits(X))


def test_a_head_of_another_model_file_is_not_used(saved: tuple[GenreModel, Path],
                                                  tmp_path: Path) -> None:
    # head.npz records the checksum of the model.keras it came from: a damaged (or replaced)
    # model.keras loads through Keras, which refuses it, rather than being served from the head.
    directory = Path(shutil.copytree(saved[1], tmp_path / "damaged"))
    data = (directory / MODEL_FILE).read_bytes()
    (directory / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelMismatchError, match="could not be read"):
        GenreModel.load(directory)


def test_a_damaged_head_is_refused(saved: tuple[GenreModel, Path], tmp_path: Path) -> None:
    directory = Path(shutil.copytree(saved[1], tmp_path / "damaged"))
    data = bytearray((directory / HEAD_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / HEAD_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError, match="head.npz could not be read"):
        GenreModel.load(directory)


def test_numpy_head_matches_keras_normalization_formula() -> None:
    # Keras divides by max(sqrt(variance), epsilon): a constant feature is not blown up.
    head = NumpyHead([
        {"kind": "normalization", "mean": np.float32([1, 0]), "variance": np.float32([4, 0]),
         "epsilon": np.float32(1e-7)},
        {"kind": "dense", "kernel": np.eye(2, dtype=np.float32), "bias": np.zeros(2, np.float32),
         "activation": "linear"},
    ])  # fmt: skip
    np.testing.assert_allclose(head(np.float32([[3, 1e-6]])), [[1.0, 10.0]], rtol=1e-5)


SERVE = """
import json, sys
from genre_core.pipeline import Classifier

classifier = Classifier.load()
prediction = classifier.classify(sys.argv[1])
print(json.dumps({
    "family": classifier.model.family,
    "runtime": classifier.featurizer.embedder.runtime,
    "probabilities": sum(prediction.probabilities.values()),
    "tensorflow": "tensorflow" in sys.modules,
    "keras": "keras" in sys.modules,
}))
"""


@pytest.mark.skipif(mn._litert_interpreter() is None, reason="ai-edge-litert is not installed")
def test_serving_never_imports_tensorflow(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENRE_MODEL_DIR", raising=False)  # the shipped learned model
    clip = tmp_path / "clip.wav"
    clip.write_bytes(wav_bytes(music_like(4.0)))
    run = subprocess.run([sys.executable, "-c", SERVE, str(clip)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"fresh worker after load + classify: {result}")
    assert result["family"] == "musicnn" and result["runtime"] == "litert"
    assert result["probabilities"] == pytest.approx(1.0, abs=1e-3)
    assert not result["tensorflow"] and not result["keras"], result
