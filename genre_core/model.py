"""The genre head: a Keras MLP over a feature vector, with its saved artifact.

The artifact is one directory: ``model.keras`` (the network; its first layer is the fitted
scaler) and ``metadata.json`` (genres, feature names, family, library versions, training-data
fingerprint, calibration, thresholds and evaluation metrics). :meth:`GenreModel.load` refuses a
directory that does not match this code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.errors import ModelMismatchError, ModelMissingError

GENRES: list[str] = [
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
]
#: Bumped when the artifact layout changes; older artifacts are refused.
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"


def _keras():  # noqa: ANN202 - imported lazily: TensorFlow takes seconds to import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


@dataclass
class GenreModel:
    """An MLP from a feature vector to the ten genres, scikit-learn style.

    Parameters
    ----------
    feature_names : list of str
        Names of the input features, in order.
    family : str
        Which featurizer produces the input ("table" for the 57 GTZAN features).
    hidden : tuple of int
        Widths of the hidden layers.
    dropout : float
        Dropout rate after each hidden layer.
    l2 : float
        L2 weight penalty of the hidden layers (0 = none); it keeps a head trained on few
        clips from growing over-confident logits.
    epochs, batch_size, learning_rate, seed
        Training settings.
    """

    feature_names: list[str]
    family: str = "table"
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.3
    l2: float = 0.0
    epochs: int = 150
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    genres: list[str] = field(default_factory=lambda: list(GENRES))
    #: Softmax temperature fitted on held-out tracks (1.0 = uncalibrated).
    temperature_: float = 1.0
    metadata_: dict[str, Any] = field(default_factory=dict)
    network_: Any = None

    # -- training -----------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> GenreModel:
        """Fit on features ``X`` (n, n_features) and genre indices ``y`` (n,)."""
        keras = _keras()
        keras.utils.set_random_seed(self.seed)
        X = np.asarray(X, dtype=np.float32)
        scaler = keras.layers.Normalization(name="scaler")
        scaler.adapt(X)
        layers: list[Any] = [keras.Input((X.shape[1],)), scaler]
        penalty = keras.regularizers.L2(self.l2) if self.l2 else None
        for width in self.hidden:
            layers += [
                keras.layers.Dense(width, activation="relu", kernel_regularizer=penalty),
                keras.layers.Dropout(self.dropout, seed=self.seed),
            ]
        layers.append(keras.layers.Dense(len(self.genres), name="logits"))
        network = keras.Sequential(layers)
        network.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        network.fit(
            X, np.asarray(y), epochs=self.epochs, batch_size=self.batch_size,
            shuffle=True, verbose=0,
        )
        self.network_ = network
        return self

    # -- inference ----------------------------------------------------------------------------
    def logits(self, X: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) logits, one row per feature vector."""
        if self.network_ is None:
            raise ModelMissingError("The model has not been trained or loaded.")
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        # Calling the network directly avoids predict()'s per-call set-up cost.
        return np.asarray(self.network_(X, training=False), dtype=np.float64)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated genre probabilities, shape (n, 10)."""
        return softmax(self.logits(X) / self.temperature_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Write the artifact into ``directory`` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.network_.save(directory / MODEL_FILE)
        meta = {**self.metadata_, **(metadata or {})}
        meta.update(
            format_version=FORMAT_VERSION,
            family=self.family,
            genres=self.genres,
            feature_names=self.feature_names,
            temperature=self.temperature_,
            hyperparameters={
                "hidden": list(self.hidden), "dropout": self.dropout, "l2": self.l2,
                "epochs": self.epochs,
                "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "seed": self.seed,
            },
            library_versions=library_versions(),
        )
        self.metadata_ = meta
        (directory / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path, expected_features: list[str] | None = None) -> GenreModel:
        """Load an artifact, refusing one that is incomplete or does not match this code."""
        directory = Path(directory)
        model_path = directory / MODEL_FILE
        meta = read_artifact(directory, METADATA_FILE, MODEL_FILE, what="model",
                             remedy="Run `genre train` to make one.")
        _check_metadata(meta, directory, expected_features)
        hp = meta.get("hyperparameters", {})
        model = cls(
            feature_names=meta["feature_names"], family=meta["family"], genres=meta["genres"],
            hidden=tuple(hp.get("hidden", ())), dropout=hp.get("dropout", 0.0),
            l2=hp.get("l2", 0.0),
            temperature_=float(meta.get("temperature", 1.0)), metadata_=meta,
        )
        keras = _keras()
        try:
            model.network_ = keras.models.load_model(model_path, compile=False)
        except Exception as exc:  # keras raises many kinds for a damaged file
            raise ModelMismatchError(
                f"The model file in {directory} could not be read ({type(exc).__name__}); "
                "it may be damaged or written by an incompatible Keras."
            ) from exc
        outputs = model.network_.output_shape[-1]
        if outputs != len(model.genres):
            raise ModelMismatchError(
                f"The model in {directory} has {outputs} outputs for {len(model.genres)} genres."
            )
        return model


def read_artifact(
    directory: Path, metadata_file: str, *other_files: str, what: str, remedy: str
) -> dict[str, Any]:
    """The JSON metadata of an artifact directory, refusing one that lacks a file (half
    written or never made) or whose metadata cannot be parsed.

    Parameters
    ----------
    directory : Path
        The artifact.
    metadata_file, *other_files : str
        The files it must hold; the first is parsed and returned.
    what : str
        What the artifact is, for the messages ("model", "music detector").
    remedy : str
        The sentence that tells the user how to make one.
    """
    expected = (metadata_file, *other_files)
    if not all((directory / name).is_file() for name in expected):
        raise ModelMissingError(
            f"No complete {what} at {directory} (expected {' and '.join(expected)}). {remedy}"
        )
    try:
        return json.loads((directory / metadata_file).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelMismatchError(f"The {what} metadata in {directory} is unreadable.") from exc


def _check_metadata(meta: dict, directory: Path, expected_features: list[str] | None) -> None:
    problems = []
    if meta.get("format_version") != FORMAT_VERSION:
        problems.append(
            f"artifact format {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}"
        )
    if meta.get("genres") is None or len(meta["genres"]) != len(GENRES):
        problems.append("its genre list is not the ten GTZAN genres")
    if expected_features is not None and meta.get("feature_names") != expected_features:
        problems.append("its feature names differ from what the extractor computes")
    saved_keras = meta.get("library_versions", {}).get("keras", "")
    current_keras = library_versions()["keras"]
    if saved_keras.split(".")[:1] != current_keras.split(".")[:1]:
        problems.append(f"it was saved with Keras {saved_keras}, this is Keras {current_keras}")
    if problems:
        raise ModelMismatchError(
            f"The model in {directory} does not match this version of genre-bot: "
            + "; ".join(problems) + ". Retrain it with `genre train`."
        )


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("keras", "tensorflow", "librosa", "numpy", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = version("tensorflow-cpu") if package == "tensorflow" else ""
    return versions


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
