"""The pretrained music network: musicnn MSD (Pons & Serra, 2019) rebuilt in Keras 3.

musicnn's MSD_musicnn tagger, trained on the tags of the Million Song Dataset, turns 3-s patches
of a log-mel spectrogram into 50 tag probabilities ("rock", "female vocalists", "80s", ...). Its
inner layers are good general music embeddings. This module holds the architecture as a native
Keras functional model, loads the converted weights shipped in ``models/musicnn/`` (made once by
``scripts/convert_musicnn.py`` from the checkpoint in musicnn's 0.1.0 wheel) and never needs the
musicnn package itself.

Serving runs the same network, frozen into ``msd_musicnn.tflite``, on the LiteRT interpreter
(package ``ai-edge-litert``): 1.3-1.5x faster on one core than Keras, equal within float32
rounding, and without importing TensorFlow at all. Keras stays the fallback where LiteRT or the
file is missing, and the source the ``.tflite`` is made from.

Reads top to bottom as the path of a clip: :func:`log_mel` → :func:`split_patches` →
:func:`build_model` → :class:`MusicnnEmbedder` (per-patch outputs) → :class:`MusicnnFeaturizer`
(one vector per analysis window, for a genre head).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import librosa
import numpy as np

from genre_core.errors import EmptyAudioError, ModelMismatchError, ModelMissingError
from genre_core.model import read_artifact

if TYPE_CHECKING:
    import keras

#: Where the converted network ships.
DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "models" / "musicnn"
WEIGHTS_FILE = "msd_musicnn.weights.h5"
#: The same network frozen for LiteRT (float32), made from the weights by the conversion script.
TFLITE_FILE = "msd_musicnn.tflite"
TAGS_FILE = "tags.json"
CONFIG_FILE = "config.json"

# The input representation musicnn was trained on (its configuration.py and extractor.py).
SR = 16_000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
#: 3 s at 16 kHz: librosa.time_to_frames(3, sr=16000, hop_length=256, n_fft=512) + 1.
PATCH_FRAMES = 187

#: Output widths of MSD_musicnn: 5 front-end filter banks (2x204 timbral + 3x51 temporal = 561)
#: densely joined with 3 mid-end layers of 64 give 753 channels, pooled over time.
N_TAGS = 50
N_PENULTIMATE = 200
N_POOLED = 753

#: Patches per model call: one call for anything up to 48 s while bounding memory on long input
#: (about 25 MB of activations per patch).
MAX_BATCH = 16

#: The per-patch outputs of :meth:`MusicnnEmbedder.embed`, in the order features are laid out.
EMBEDDING_KEYS = ("tags", "penultimate", "mean_pool", "max_pool")
#: Width of each output.
OUTPUT_WIDTHS = {"tags": N_TAGS, "penultimate": N_PENULTIMATE, "mean_pool": N_POOLED,
                 "max_pool": N_POOLED}  # fmt: skip


# --- input -------------------------------------------------------------------------------------


def log_mel(y: np.ndarray, sr: int) -> np.ndarray:
    """Log-compressed mel spectrogram exactly as musicnn was trained on.

    Parameters
    ----------
    y : np.ndarray
        Mono audio, 1-D, float.
    sr : int
        Sample rate of ``y``; resampled to 16 kHz (soxr_hq, librosa's default) when different.

    Returns
    -------
    np.ndarray
        ``(n_frames, 96)`` float32: ``log10(10000 * mel_power + 1)`` of a 512-point FFT, hop 256,
        96 Slaney mel bands (librosa defaults: power 2, centred frames, zero padding). Computed in
        float32 throughout; musicnn's own extractor casts to float16 first, which overflows under
        numpy 2 and turns every output into NaN.

    Examples
    --------
    >>> log_mel(np.zeros(16_000, dtype=np.float32), 16_000).shape
    (63, 96)
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"log_mel expects mono 1-D audio, got shape {y.shape}")
    if y.size == 0:
        raise EmptyAudioError("The clip contains no audio at all.")
    if sr != SR:
        y = librosa.resample(y, orig_sr=sr, target_sr=SR).astype(np.float32, copy=False)
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS
    )
    return np.log10(np.float32(10_000) * mel.T.astype(np.float32) + np.float32(1))


def split_patches(
    spec: np.ndarray, n_frames: int = PATCH_FRAMES, max_patches: int | None = None
) -> np.ndarray:
    """Cut a log-mel spectrogram into consecutive, non-overlapping patches.

    As musicnn's extractor does, a trailing remainder shorter than a patch is dropped. A
    spectrogram shorter than one patch is repeated until it fills one (the "repeat-pad" the network
    was trained with), so any non-empty input gives at least one patch.

    Parameters
    ----------
    spec : np.ndarray
        ``(frames, n_mels)`` log-mel spectrogram.
    n_frames : int
        Patch length in frames (187 = 3 s).
    max_patches : int, optional
        Keep at most this many patches, evenly spread over the clip (the network's cost is
        linear in patches); all of them by default.

    Returns
    -------
    np.ndarray
        ``(n_patches, n_frames, n_mels)`` float32.
    """
    if spec.shape[0] == 0:
        raise EmptyAudioError("The clip contains no audio at all.")
    if spec.shape[0] < n_frames:
        reps = -(-n_frames // spec.shape[0])
        spec = np.tile(spec, (reps, 1))[:n_frames]
    n_patches = spec.shape[0] // n_frames
    # Frames are rows of a C-ordered array, so whole patches are a plain reshape.
    patches = np.ascontiguousarray(spec[: n_patches * n_frames], dtype=np.float32).reshape(
        n_patches, n_frames, spec.shape[1]
    )
    if max_patches is not None and n_patches > max_patches:
        if max_patches < 1:
            raise ValueError(f"max_patches must be at least 1, got {max_patches}")
        patches = patches[np.linspace(0, n_patches - 1, max_patches).round().astype(int)]
    return patches


# --- network -----------------------------------------------------------------------------------

# Layer names equal the TF1 variable scopes of the checkpoint, so conversion is a name lookup.
# Keras (and TensorFlow under it) is imported only here, on first use: serving runs the .tflite.


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    return keras


@functools.cache
def _fused_order_batch_norm() -> type:
    keras = _keras()

    @keras.saving.register_keras_serializable(package="genre_bot")
    class FusedOrderBatchNorm(keras.layers.BatchNormalization):
        """Inference batch-norm in the order of TF's fused kernel: ``(x - mean) * s + beta``.

        The original graph ran its 4-D batch-norms through ``FusedBatchNorm``; Keras computes
        ``x * s + (beta - mean * s)``. Same maths, but on the mid-end's large activations (~100)
        the rounding differs by up to ~1.3e-4. In the original order, the eagerly run Keras model
        matches the original graph bit for bit on real clips (the traced inference path, where
        TensorFlow fuses ops, within ~3e-5). Training (never done here: the network is frozen)
        falls back to Keras.
        """

        def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
            if training and self.trainable:
                return super().call(inputs, training=training, mask=mask)
            scale = keras.ops.rsqrt(self.moving_variance + self.epsilon) * self.gamma
            return (inputs - self.moving_mean) * scale + self.beta

    return FusedOrderBatchNorm


def __getattr__(name: str) -> Any:
    # The batch-norm layer class stays reachable by name without importing Keras at import time.
    if name == "FusedOrderBatchNorm":
        return _fused_order_batch_norm()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _bn(name: str, fused_order: bool = True) -> Any:
    # tf.compat.v1.layers.batch_normalization defaults: epsilon 1e-3, centre and scale.
    cls = _fused_order_batch_norm() if fused_order else _keras().layers.BatchNormalization
    return cls(epsilon=1e-3, name=name)


def _timbral(x: keras.KerasTensor, width: int, idx: int) -> keras.KerasTensor:
    """Timbral filters: 7 frames x ``width`` mel bands, max-pooled over frequency."""
    layers = _keras().layers
    pad = layers.ZeroPadding2D(((3, 3), (0, 0)), name=f"timbral_pad_{idx}")(x)
    conv = layers.Conv2D(204, (7, width), activation="relu", name=_conv_name(idx))(pad)
    bn = _bn(_bn_name(idx + 1))(conv)
    pooled = layers.MaxPooling2D((1, N_MELS - width + 1), name=f"timbral_pool_{idx}")(bn)
    return layers.Reshape((-1, 204), name=f"timbral_{idx}")(pooled)


def _temporal(x_ft: keras.KerasTensor, length: int, idx: int) -> keras.KerasTensor:
    """Temporal filters: ``length`` frames x 1 band, max-pooled over frequency.

    ``x_ft`` is the input transposed to (mel, frame): the original's ``[length, 1]`` kernel runs
    as ``[1, length]`` along the width there, which TensorFlow's CPU convolution computes 1.5-2x
    faster, with bit-identical results (each output is the same sum in the same order).
    """
    layers = _keras().layers
    conv = layers.Conv2D(51, (1, length), padding="same", activation="relu", name=_conv_name(idx))(
        x_ft
    )
    bn = _bn(_bn_name(idx + 1))(conv)
    pooled = layers.MaxPooling2D((N_MELS, 1), name=f"temporal_pool_{idx}")(bn)
    return layers.Reshape((-1, 51), name=f"temporal_{idx}")(pooled)


def _conv_name(idx: int) -> str:
    return "conv2d" if idx == 0 else f"conv2d_{idx}"


def _bn_name(idx: int) -> str:
    return "batch_normalization" if idx == 0 else f"batch_normalization_{idx}"


def build_model() -> keras.Model:
    """The MSD_musicnn architecture (inference only: dropout omitted, batch-norm frozen).

    Input ``(batch, frames, 96)`` log-mel patches (any number of frames; trained on 187).
    Returns a functional model whose call gives a dict: ``tags`` (sigmoid, 50), ``penultimate``
    (200, after its batch-norm), ``mean_pool`` and ``max_pool`` (753 each: the back-end's
    temporal mean and max of the concatenated front- and mid-end feature maps).
    """
    keras = _keras()
    layers = keras.layers
    inp = keras.Input(shape=(None, N_MELS), name="log_mel")
    x = layers.Reshape((-1, N_MELS, 1), name="expand")(inp)
    x = _bn(_bn_name(0))(x)

    # Front-end: musically motivated filters (Pons et al.), "7774timbraltemporal".
    x_ft = layers.Permute((2, 1, 3), name="mel_by_frame")(x)
    front = [
        _timbral(x, int(0.4 * N_MELS), 0),
        _timbral(x, int(0.7 * N_MELS), 1),
        _temporal(x_ft, 128, 2),
        _temporal(x_ft, 64, 3),
        _temporal(x_ft, 32, 4),
    ]
    front_out = layers.Concatenate(axis=-1, name="frontend")(front)

    # Mid-end: three 7-frame convolutions across all channels, residual and densely joined. The
    # original convolves a [7, channels] kernel over a transposed map: that is a Conv1D.
    m1 = _bn(_bn_name(6))(
        layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_5")(front_out)
    )
    c2 = _bn(_bn_name(7))(
        layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_6")(m1)
    )
    m2 = layers.Add(name="midend_res_2")([c2, m1])
    c3 = _bn(_bn_name(8))(
        layers.Conv1D(64, 7, padding="same", activation="relu", name="conv2d_7")(m2)
    )
    m3 = layers.Add(name="midend_res_3")([c3, m2])
    mid = layers.Concatenate(axis=-1, name="midend")([front_out, m1, m2, m3])

    # Back-end: temporal max and mean, interleaved per channel as the original's
    # concat([max, mean], axis=2) + flatten lays them out, then dense 200 and 50 tags. Its 2-D
    # batch-norms were not fused in the original, and compute like Keras's own.
    max_pool = layers.GlobalMaxPooling1D(name="max_pool")(mid)
    mean_pool = layers.GlobalAveragePooling1D(name="mean_pool")(mid)
    stacked = layers.Concatenate(axis=-1, name="pool_stack")(
        [
            layers.Reshape((N_POOLED, 1), name="max_pool_col")(max_pool),
            layers.Reshape((N_POOLED, 1), name="mean_pool_col")(mean_pool),
        ]
    )
    flat = _bn(_bn_name(9), fused_order=False)(layers.Flatten(name="pool_flat")(stacked))
    dense = layers.Dense(N_PENULTIMATE, activation="relu", name="dense")(flat)
    penultimate = _bn(_bn_name(10), fused_order=False)(dense)
    logits = layers.Dense(N_TAGS, name="dense_1")(penultimate)
    tags = layers.Activation("sigmoid", name="tags")(logits)
    outputs = {
        "tags": tags,
        "penultimate": penultimate,
        "mean_pool": mean_pool,
        "max_pool": max_pool,
    }
    return keras.Model(inp, outputs, name="msd_musicnn")


# --- artifact ----------------------------------------------------------------------------------


def load_tag_names(weights_dir: Path | None = None) -> list[str]:
    """The 50 MSD tag names, in output order, from the shipped ``tags.json``."""
    path = Path(weights_dir or DEFAULT_WEIGHTS_DIR) / TAGS_FILE
    if not path.is_file():
        raise ModelMissingError(
            f"The music network's tag list is missing ({path}). Run "
            "scripts/convert_musicnn.py or restore models/musicnn/."
        )
    names = json.loads(path.read_text())
    if len(names) != N_TAGS:
        raise ModelMismatchError(f"{path} lists {len(names)} tags; the network has {N_TAGS}.")
    return [str(n) for n in names]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Runs the network on one batch of patches: ``(n, 187, 96)`` float32 to the outputs by key.
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def _keras_runner(model: keras.Model) -> Runner:
    """The Keras model through a traced ``tf.function`` rather than ``model.predict``, which
    costs a fresh dataset pipeline per call."""
    import tensorflow as tf

    infer = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, PATCH_FRAMES, N_MELS], tf.float32)],
    )

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        out = infer(tf.constant(batch))
        return {key: out[key].numpy() for key in EMBEDDING_KEYS}

    return run


def _litert_interpreter() -> type | None:
    """LiteRT's ``Interpreter`` class, or None where the package is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    return Interpreter


def _litert_runner(content: bytes, path: Path) -> Runner:
    """The ``.tflite`` network on LiteRT's interpreter (XNNPACK, one thread: workers are one
    process per core). Outputs are found by the names of its signature, and their widths
    checked, so a file of another network is refused rather than misread."""
    interpreter_class = _litert_interpreter()
    if interpreter_class is None:
        raise ModelMissingError("LiteRT is not installed: `pip install ai-edge-litert`.")
    try:
        runner = interpreter_class(model_content=content, num_threads=1).get_signature_runner()
    except (ValueError, RuntimeError) as err:
        raise ModelMismatchError(f"{path} could not be read as a LiteRT model: {err}") from err
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    found = {k: int(v["shape_signature"][-1]) for k, v in outputs.items()}
    shapes = [list(v["shape_signature"][1:]) for v in inputs.values()]
    if found != OUTPUT_WIDTHS or shapes != [[PATCH_FRAMES, N_MELS]]:
        raise ModelMismatchError(
            f"{path} is not this code's musicnn network: inputs {shapes}, outputs {found}; "
            f"expected one input (n, {PATCH_FRAMES}, {N_MELS}) and outputs {OUTPUT_WIDTHS}."
        )
    (name,) = inputs
    lock = threading.Lock()

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        # One interpreter per embedder: threads sharing it take turns. The runner resizes the
        # input to the batch (cheap when unchanged) and returns copies of the outputs.
        with lock:
            out = runner(**{name: batch})
        return {key: out[key] for key in EMBEDDING_KEYS}

    return run


class MusicnnEmbedder:
    """Runs the frozen network over a clip's 3-s patches.

    Build with :meth:`load`. One batched network call per clip (chunked only beyond
    :data:`MAX_BATCH` patches), on LiteRT (``msd_musicnn.tflite``) where available, otherwise on
    the Keras model.

    Attributes
    ----------
    model : keras.Model or None
        The Keras network (see :func:`build_model`); None on the LiteRT runtime.
    runtime : str
        ``"litert"`` or ``"keras"``.
    tag_names : list[str]
        The 50 tags, in output order.
    config : dict
        The shipped ``config.json``: input parameters, provenance, checksums.
    """

    def __init__(
        self,
        model: keras.Model | None,
        tag_names: Sequence[str],
        config: dict[str, Any],
        max_patches: int | None = None,
        runner: Runner | None = None,
    ):
        if (model is None) == (runner is None):
            raise ValueError("give either a Keras model or a LiteRT runner")
        self.model = model
        self.runtime = "keras" if runner is None else "litert"
        self.tag_names = list(tag_names)
        self.config = config
        self.max_patches = max_patches
        self._run = runner or _keras_runner(model)

    @classmethod
    def load(
        cls, weights_dir: Path | None = None, max_patches: int | None = None,
        runtime: str = "auto",
    ) -> MusicnnEmbedder:
        """Load the converted network.

        Parameters
        ----------
        weights_dir : Path, optional
            Folder holding ``msd_musicnn.weights.h5``, ``tags.json``, ``config.json`` and
            (optionally) ``msd_musicnn.tflite``; defaults to the shipped ``models/musicnn``.
        max_patches : int, optional
            At most this many 3-s patches per clip, evenly spread (see :func:`split_patches`).
        runtime : {"auto", "litert", "keras"}
            ``"auto"`` runs the ``.tflite`` on LiteRT when both are present (no TensorFlow is
            imported then), else the Keras model; the others force one.

        Raises
        ------
        ModelMissingError
            A file of the artifact is absent (or LiteRT, when ``runtime="litert"``).
        ModelMismatchError
            The artifact was made for another input representation, or its weights or
            ``.tflite`` are not the ones its config records.
        """
        if runtime not in ("auto", "litert", "keras"):
            raise ValueError(f"runtime must be auto, litert or keras, got {runtime!r}")
        wdir = Path(weights_dir or DEFAULT_WEIGHTS_DIR)
        weights = wdir / WEIGHTS_FILE
        config = read_artifact(
            wdir, CONFIG_FILE, WEIGHTS_FILE, what="music network",
            remedy="Run scripts/convert_musicnn.py or restore models/musicnn/.",
        )
        expected = {
            "sample_rate": SR,
            "n_fft": N_FFT,
            "hop_length": HOP_LENGTH,
            "n_mels": N_MELS,
            "patch_frames": PATCH_FRAMES,
        }
        wrong = {k: config.get(k) for k, v in expected.items() if config.get(k) != v}
        if wrong:
            raise ModelMismatchError(
                f"The music network in {wdir} expects other input ({wrong}) than this code "
                f"computes ({expected})."
            )
        tags = load_tag_names(wdir)
        tflite = wdir / TFLITE_FILE
        if runtime == "litert" or (
            runtime == "auto" and tflite.is_file() and _litert_interpreter() is not None
        ):
            if not tflite.is_file():
                raise ModelMissingError(
                    f"{tflite} is missing. Run scripts/convert_musicnn.py --tflite-only {wdir}."
                )
            content = tflite.read_bytes()  # checked, then loaded from the same bytes
            recorded = config.get("tflite_sha256")
            if recorded and hashlib.sha256(content).hexdigest() != recorded:
                raise ModelMismatchError(
                    f"{tflite} is not the file its config.json describes (checksum differs); it "
                    f"may be damaged. Rewrite it with scripts/convert_musicnn.py --tflite-only "
                    f"{wdir}."
                )
            return cls(None, tags, config, max_patches, _litert_runner(content, tflite))
        if config.get("weights_sha256") and _sha256(weights) != config["weights_sha256"]:
            raise ModelMismatchError(
                f"{weights} is not the file its config.json describes (checksum differs)."
            )
        model = build_model()
        try:
            model.load_weights(weights)
        except ValueError as err:  # Keras: the file's layers do not fit this architecture
            raise ModelMismatchError(
                f"{weights} does not fit this code's musicnn architecture: {err}"
            ) from err
        return cls(model, tags, config, max_patches)

    def warm_up(self) -> None:
        """Run the network once (Keras: tracing; LiteRT: XNNPACK's weight packing), so the first
        real clip pays neither."""
        self.embed_patches(np.zeros((1, PATCH_FRAMES, N_MELS), dtype=np.float32))

    def patches(self, y: np.ndarray, sr: int) -> np.ndarray:
        """The network's input for a clip: ``(n_patches, 187, 96)`` log-mel patches."""
        return split_patches(log_mel(y, sr), max_patches=self.max_patches)

    def embed_patches(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Run the network over ready patches (see :meth:`embed` for the outputs).

        Useful to batch patches of many clips together when building a training cache.
        """
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (PATCH_FRAMES, N_MELS):
            raise ValueError(f"patches must be (n, {PATCH_FRAMES}, {N_MELS}), got {patches.shape}")
        # Chunks bound the activations' memory (about 25 MB per patch) on long input.
        chunks = [
            self._run(np.ascontiguousarray(patches[i : i + MAX_BATCH]))
            for i in range(0, len(patches), MAX_BATCH)
        ]
        return {key: np.concatenate([c[key] for c in chunks], axis=0) for key in EMBEDDING_KEYS}

    def embed(self, y: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        """Per-patch outputs of the network for a clip.

        Parameters
        ----------
        y : np.ndarray
            Mono audio.
        sr : int
            Its sample rate (resampled to 16 kHz as needed).

        Returns
        -------
        dict[str, np.ndarray]
            ``tags`` ``(n, 50)`` sigmoid probabilities, ``penultimate`` ``(n, 200)``, and the
            back-end's pooled features ``mean_pool`` and ``max_pool`` ``(n, 753)`` each, for the
            ``n`` 3-s patches of the clip (at least one: short clips are repeat-padded).
        """
        return self.embed_patches(self.patches(y, sr))

    def embed_many(self, clips: Sequence[np.ndarray], sr: int) -> list[dict[str, np.ndarray]]:
        """:meth:`embed` of several clips (a song's analysis windows) in one network pass: their
        patches are batched together, then the outputs split back per clip."""
        patches = [self.patches(y, sr) for y in clips]
        every = self.embed_patches(np.concatenate(patches))
        ends = np.cumsum([len(p) for p in patches])
        return [
            {key: value[end - len(p) : end] for key, value in every.items()}
            for p, end in zip(patches, ends, strict=True)
        ]


# --- featurizer --------------------------------------------------------------------------------


def _slug(tag: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", tag.lower()).strip("_")


#: Stats taken over a window's patches, in feature order.
STATS = ("mean", "max")


def feature_names_for(
    tag_names: Sequence[str], groups: Sequence[str] = EMBEDDING_KEYS
) -> list[str]:
    """Names of the featurizer's vector, e.g. ``tag_rock_mean``, ``pen12_max``, ``pool_avg7_mean``.

    Prefixes select groups: ``tag_`` (50 tags), ``pen`` (200 penultimate units), ``pool_avg`` /
    ``pool_max`` (the back-end's temporal mean / max pooled features, 753 each; ``pool`` for
    both). The suffix is the statistic over the window's 3-s patches.
    """
    slugs = [_slug(t) for t in tag_names]
    if len(set(slugs)) != len(slugs):
        raise ModelMismatchError("Two tag names collapse to the same feature name.")
    stems = {
        "tags": [f"tag_{s}" for s in slugs],
        "penultimate": [f"pen{i}" for i in range(N_PENULTIMATE)],
        "mean_pool": [f"pool_avg{i}" for i in range(N_POOLED)],
        "max_pool": [f"pool_max{i}" for i in range(N_POOLED)],
    }
    unknown = set(groups) - set(stems)
    if unknown:
        raise ValueError(f"unknown feature groups {sorted(unknown)}; choose from {EMBEDDING_KEYS}")
    return [f"{stem}_{stat}" for g in groups for stat in STATS for stem in stems[g]]


class MusicnnFeaturizer:
    """One feature vector per analysis window from the frozen network, for a genre head.

    The vector holds, for each chosen group of per-patch outputs, its mean and then its max over
    the window's 3-s patches (names from :func:`feature_names_for`). The network loads on first
    use (thread-safe), so constructing a featurizer is cheap.

    Parameters
    ----------
    embedder : MusicnnEmbedder, optional
        A loaded network to share; otherwise loaded from ``weights_dir`` when first needed.
    weights_dir : Path, optional
        Where the converted network lives (default ``models/musicnn``).
    groups : sequence of str
        Which outputs go into the vector, from ``("tags", "penultimate", "mean_pool",
        "max_pool")``; all by default (3,512 features).
    max_patches : int, optional
        At most this many 3-s patches per window, evenly spread; all (10 per 30 s) by default.
        Only used when the featurizer loads its own network.
    """

    family = "musicnn"
    #: Analysis window length in seconds (ten 3-s patches).
    window_s = 30.0

    def __init__(
        self,
        embedder: MusicnnEmbedder | None = None,
        weights_dir: Path | None = None,
        groups: Sequence[str] = EMBEDDING_KEYS,
        max_patches: int | None = None,
    ):
        self.weights_dir = weights_dir
        self.groups = tuple(groups)
        self.max_patches = max_patches
        self._embedder = embedder
        self._lock = threading.Lock()
        self._names: list[str] | None = None

    @property
    def embedder(self) -> MusicnnEmbedder:
        """The network, loaded on first access."""
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = MusicnnEmbedder.load(self.weights_dir, self.max_patches)
        return self._embedder

    @property
    def tag_names(self) -> list[str]:
        """The 50 tag names (read from the artifact without loading the network)."""
        if self._embedder is not None:
            return self._embedder.tag_names
        return load_tag_names(self.weights_dir)

    @property
    def feature_names(self) -> list[str]:
        """Names of :meth:`transform`'s vector, in order."""
        if self._names is None:
            self._names = feature_names_for(self.tag_names, self.groups)
        return self._names

    def warm_up(self) -> None:
        """Load and trace the network now rather than on the first clip."""
        self.embedder.warm_up()

    def embed(self, y: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        """Per-patch outputs (see :meth:`MusicnnEmbedder.embed`); feed to :meth:`featurize`
        and :meth:`top_tags_from` to get both from one network call."""
        return self.embedder.embed(y, sr)

    def embed_many(self, clips: Sequence[np.ndarray], sr: int) -> list[dict[str, np.ndarray]]:
        """The network's outputs for several clips, in one pass (see
        :meth:`MusicnnEmbedder.embed_many`)."""
        return self.embedder.embed_many(clips, sr)

    def featurize(self, embedding: dict[str, np.ndarray]) -> np.ndarray:
        """The feature vector of an :meth:`embed` result: mean then max over patches per group."""
        parts = [getattr(np, stat)(embedding[g], axis=0) for g in self.groups for stat in STATS]
        return np.concatenate(parts).astype(np.float32)

    def transform(self, y: np.ndarray, sr: int) -> np.ndarray:
        """Feature vector of one analysis window of audio.

        Parameters
        ----------
        y : np.ndarray
            Mono audio of the window (a window under 3 s is repeat-padded to one patch).
        sr : int
            Its sample rate.

        Returns
        -------
        np.ndarray
            1-D float32, ``len(self.feature_names)`` long.
        """
        return self.featurize(self.embed(y, sr))

    def top_tags_from(
        self, embedding: dict[str, np.ndarray], k: int = 5
    ) -> list[tuple[str, float]]:
        """The ``k`` most likely tags of an :meth:`embed` result (mean over its patches)."""
        probs = embedding["tags"].mean(axis=0)
        order = np.argsort(-probs, kind="stable")[:k]
        return [(self.tag_names[i], float(probs[i])) for i in order]

    def top_tags(self, y: np.ndarray, sr: int, k: int = 5) -> list[tuple[str, float]]:
        """The network's ``k`` most likely style tags for a clip, e.g. ``("guitar", 0.41)``.

        Parameters
        ----------
        y : np.ndarray
            Mono audio.
        sr : int
            Its sample rate.
        k : int
            How many tags.

        Returns
        -------
        list[tuple[str, float]]
            ``(tag, probability)`` from most to least likely; probabilities are independent
            sigmoids (multi-label), averaged over the clip's 3-s patches, and need not sum to 1.
        """
        return self.top_tags_from(self.embed(y, sr), k)
