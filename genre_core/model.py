"""The genre head: a Keras MLP over a feature vector, with its saved artifact.

The artifact is one directory: ``model.keras`` (the network; its first layer is the fitted
scaler), ``metadata.json`` (genres, feature names, family, library versions, training-data
fingerprint, calibration, thresholds and evaluation metrics) and ``head.npz`` (the same network's
weights as plain arrays, so that serving runs it in numpy without importing Keras; artifacts
without one load through Keras). :meth:`GenreModel.load` refuses a directory that does not match
this code.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genre_core.errors import ModelMismatchError, ModelMissingError

#: GTZAN's ten genres: the table family's classes. A model's own classes are in its metadata
#: (``genres``), and come from its training data.
GENRES: list[str] = [
    "blues", "classical", "country", "disco", "hiphop",
    "jazz", "metal", "pop", "reggae", "rock",
]
#: Bumped when the artifact layout changes; older artifacts are refused.
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
#: The network as numpy arrays (see :class:`NumpyHead`); optional.
HEAD_FILE = "head.npz"


def _keras():  # noqa: ANN202 - imported lazily: TensorFlow takes seconds to import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


@dataclass
class GenreModel:
    """An MLP from a feature vector to its genres (``genres``), scikit-learn style.

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
    #: The Keras network (after :meth:`fit`, or loaded from an artifact without ``head.npz``).
    network_: Any = None
    #: The numpy copy of the network a loaded artifact's ``head.npz`` gives (``network_`` None).
    head_: NumpyHead | None = None

    # -- training -----------------------------------------------------------------------------
    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> GenreModel:
        """Fit on features ``X`` (n, n_features) and genre indices ``y`` (n,), or a 0/1 mask
        ``y`` (n, n_genres) of every right answer per row: the loss is then the negative log of
        the probability given to the whole set, so "pop, rock or metal" teaches no guess of one.
        """
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
        y = np.asarray(y)
        network.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate),
            loss=set_nll if y.ndim == 2 else
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        network.fit(
            X, y.astype(np.float32) if y.ndim == 2 else y, sample_weight=sample_weight,
            epochs=self.epochs, batch_size=self.batch_size, shuffle=True, verbose=0,
        )
        self.network_ = network
        return self

    # -- inference ----------------------------------------------------------------------------
    def logits(self, X: np.ndarray) -> np.ndarray:
        """Raw (uncalibrated) logits, one row per feature vector."""
        X = np.atleast_2d(np.asarray(X, dtype=np.float32))
        if self.network_ is not None:
            # Calling the network directly avoids predict()'s per-call set-up cost.
            return np.asarray(self.network_(X, training=False), dtype=np.float64)
        if self.head_ is not None:
            return self.head_(X)
        raise ModelMissingError("The model has not been trained or loaded.")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Calibrated genre probabilities, shape (n, len(genres))."""
        return softmax(self.logits(X) / self.temperature_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: Path, metadata: dict[str, Any] | None = None) -> None:
        """Write the artifact into ``directory`` (created if needed)."""
        if self.network_ is None:
            raise ModelMissingError("There is no Keras network to save: fit the model first.")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.network_.save(directory / MODEL_FILE)
        write_head(self.network_, directory)
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
        """Load an artifact, refusing one that is incomplete or does not match this code.

        With a ``head.npz`` made from this ``model.keras`` (its recorded checksum matches), the
        network runs in numpy and Keras is never imported; otherwise it loads through Keras.
        """
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
        model.head_ = NumpyHead.load(directory)
        if model.head_ is not None:
            inputs, outputs = model.head_.n_inputs, model.head_.n_outputs
        else:
            keras = _keras()
            try:
                model.network_ = keras.models.load_model(model_path, compile=False)
            except Exception as exc:  # keras raises many kinds for a damaged file
                raise ModelMismatchError(
                    f"The model file in {directory} could not be read ({type(exc).__name__}); "
                    "it may be damaged or written by an incompatible Keras."
                ) from exc
            inputs = model.network_.input_shape[-1]
            outputs = model.network_.output_shape[-1]
        if inputs != len(model.feature_names):
            raise ModelMismatchError(
                f"The model in {directory} reads {inputs} features; its metadata names "
                f"{len(model.feature_names)}."
            )
        if outputs != len(model.genres):
            raise ModelMismatchError(
                f"The model in {directory} has {outputs} outputs for {len(model.genres)} genres."
            )
        return model


class NumpyHead:
    """The genre network's forward pass in numpy, float32 as in Keras: the scaler
    ``(x - mean) / max(sqrt(variance), epsilon)`` (Keras's Normalization), then each Dense layer
    ``activation(x @ kernel + bias)``; Dropout is the identity at inference.

    Parameters
    ----------
    steps : list of dict
        In order: ``{"kind": "normalization", "mean", "variance", "epsilon"}`` or
        ``{"kind": "dense", "kernel", "bias", "activation"}`` (``"relu"`` or ``"linear"``).
    """

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        dense = [s for s in steps if s["kind"] == "dense"]
        if not dense or any(s["activation"] not in _ACTIVATIONS for s in dense):
            raise ValueError("a head needs Dense layers with relu or linear activations")
        self.n_inputs = int(dense[0]["kernel"].shape[0])
        self.n_outputs = int(dense[-1]["kernel"].shape[1])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Logits (float64) of feature vectors ``X`` (n, n_inputs), computed in float32."""
        x = np.atleast_2d(np.asarray(X, dtype=np.float32))
        for step in self.steps:
            if step["kind"] == "normalization":
                x = (x - step["mean"]) / np.maximum(np.sqrt(step["variance"]), step["epsilon"])
            else:
                x = _ACTIVATIONS[step["activation"]](x @ step["kernel"] + step["bias"])
        return x.astype(np.float64)

    @classmethod
    def from_network(cls, network: Any) -> NumpyHead | None:
        """The numpy copy of a Keras Sequential head; None if it holds a layer or activation
        this class does not compute."""
        keras = _keras()
        steps: list[dict[str, Any]] = []
        for layer in network.layers:
            kind = type(layer).__name__
            if kind == "Normalization":
                steps.append({
                    "kind": "normalization",
                    "mean": np.asarray(layer.mean, dtype=np.float32),
                    "variance": np.asarray(layer.variance, dtype=np.float32),
                    "epsilon": np.float32(keras.config.epsilon()),
                })  # fmt: skip
            elif kind == "Dense":
                activation = layer.get_config().get("activation")
                weights = layer.get_weights()
                if activation not in _ACTIVATIONS or len(weights) != 2:  # no bias: not ours
                    return None
                kernel, bias = (np.asarray(w, dtype=np.float32) for w in weights)
                steps.append(
                    {"kind": "dense", "kernel": kernel, "bias": bias, "activation": activation}
                )
            elif kind not in ("Dropout", "InputLayer"):
                return None
        return cls(steps)

    def save(self, path: Path, source_sha256: str) -> None:
        """Write ``path`` (an .npz); ``source_sha256`` is the checksum of the model file these
        arrays were taken from, which :meth:`load` checks."""
        arrays: dict[str, np.ndarray] = {
            "kinds": np.array([s["kind"] for s in self.steps]),
            "source_sha256": np.array(source_sha256),
        }
        for i, step in enumerate(self.steps):
            for key, value in step.items():
                if key != "kind":
                    arrays[f"{i}.{key}"] = np.asarray(value)
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    @classmethod
    def load(cls, directory: Path) -> NumpyHead | None:
        """The head in ``directory``'s ``head.npz``; None when there is none, or when it was made
        from another ``model.keras`` than the one there (which then loads through Keras).

        Raises
        ------
        ModelMismatchError
            ``head.npz`` is present but unreadable.
        """
        path = directory / HEAD_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["source_sha256"]) != _sha256(directory / MODEL_FILE):
                    return None
                arrays = {name: data[name] for name in data.files}
            steps = [
                {"kind": kind} | {
                    name.split(".", 1)[1]: str(value) if value.dtype.kind == "U" else value
                    for name, value in arrays.items() if name.startswith(f"{i}.")
                }
                for i, kind in enumerate(arrays["kinds"].tolist())
            ]
            return cls(steps)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelMismatchError(
                f"{path} could not be read ({type(exc).__name__}); it may be damaged. Delete it "
                "to serve the model through Keras, or save the model again."
            ) from exc


_ACTIVATIONS = {"relu": lambda x: np.maximum(x, np.float32(0)), "linear": lambda x: x}


def write_head(network: Any, directory: Path) -> bool:
    """Write ``directory/head.npz`` from ``network`` beside its saved ``model.keras``; return
    whether it was written (a network with layers :class:`NumpyHead` does not compute gets
    none, and any older one is removed, so it loads through Keras)."""
    directory = Path(directory)
    path = directory / HEAD_FILE
    path.unlink(missing_ok=True)
    head = NumpyHead.from_network(network)
    if head is None:
        return False
    head.save(path, _sha256(directory / MODEL_FILE))
    return True


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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
    genres = meta.get("genres")
    if not isinstance(genres, list) or len(genres) < 2 or len(set(genres)) != len(genres):
        problems.append("it has no list of two or more distinct genres")
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


def set_nll(mask: Any, logits: Any) -> Any:
    """Keras loss: minus the log of the softmax probability given to the set of right answers
    (``mask`` 0/1 per genre): log-sum-exp over all logits minus over the right ones."""
    ops = _keras().ops
    right = ops.where(mask > 0, logits, ops.full_like(logits, -1e9))
    return ops.logsumexp(logits, axis=-1) - ops.logsumexp(right, axis=-1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
