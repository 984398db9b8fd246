"""Convert musicnn's MSD_musicnn checkpoint into the Keras 3 network of genre_core.musicnn.

Usage::

    # once: get the weights (the musicnn package itself is never installed or imported)
    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn_whl
    unzip -q /tmp/musicnn_whl/musicnn-0.1.0-py3-none-any.whl -d /tmp/musicnn_src
    python scripts/convert_musicnn.py /tmp/musicnn_src/musicnn/MSD_musicnn models/musicnn

    # regenerate the test fixture of reference outputs from the original graph
    python scripts/convert_musicnn.py /tmp/musicnn_src/musicnn/MSD_musicnn models/musicnn \\
        --fixture tests/fixtures/musicnn_reference.npz

    # (re)write only the LiteRT network from the Keras weights already in models/musicnn
    python scripts/convert_musicnn.py --tflite-only models/musicnn

The checkpoint's prefix is the model folder itself (files ``.index`` and
``.data-00000-of-00001``). Writes ``msd_musicnn.weights.h5``, ``tags.json``, ``config.json`` and
``LICENSE`` into OUT_DIR, after checking the Keras model against the original TF1 graph (read from
the checkpoint's ``.meta``, with the checkpoint's own values) on random input; then
``msd_musicnn.tflite``, the same network frozen for LiteRT (float32, any batch size), after
checking it against the Keras model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from genre_core import musicnn as mn  # noqa: E402

#: musicnn's configuration.MSD_LABELS, in output order.
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic", "experimental",
    "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country", "easy listening", "sexy",
    "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb", "indie pop",
    "sad", "House", "happy",
]  # fmt: skip

LICENSE_TEXT = """\
The weights in msd_musicnn.weights.h5 are converted, unchanged in value, from the MSD_musicnn
checkpoint of musicnn 0.1.0 (https://github.com/jordipons/musicnn, PyPI "musicnn"), by Jordi Pons
and Xavier Serra, Music Technology Group, Universitat Pompeu Fabra. Cite: J. Pons and X. Serra,
"musicnn: pre-trained convolutional neural networks for music audio tagging", Late-breaking/demo
session, ISMIR 2019. Distributed under musicnn's ISC licence:

Copyright (c) Music Technology Group, Universitat Pompeu Fabra 2019. Code developed by Jordi Pons
(www.jordipons.me).

Permission to use, copy, modify, and/or distribute this software for any purpose with or without
fee is hereby granted, provided that the above copyright notice and this permission notice appear
in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS
SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE
AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT,
NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE
OF THIS SOFTWARE.
"""

#: Tensors of the original graph that correspond to the Keras model's outputs.
REFERENCE_TENSORS = {
    "tags": "model/Sigmoid:0",
    "penultimate": "model/batch_normalization_10/batchnorm/add_1:0",
    "mean_pool": "model/moments/Squeeze:0",
    "max_pool": "model/Max:0",
}

#: Real clips (under ../shared/data) whose reference outputs the test fixture stores.
FIXTURE_CLIPS = (
    "gtzan/audio/classical.00000.mp3",
    "gtzan/audio/hiphop.00000.mp3",
    "gtzan/audio/metal.00000.mp3",
)
FIXTURE_PATCHES = 2

#: Largest difference of the .tflite's outputs from the Keras model's, relative to each output's
#: largest magnitude, still taken as float32 rounding (measured: under 5e-6).
TFLITE_RTOL_OF_SCALE = 3e-5


def checkpoint_prefix(checkpoint_dir: Path) -> str:
    """The checkpoint prefix: musicnn saved its model with the folder itself as prefix."""
    return str(checkpoint_dir) + "/"


def read_checkpoint(checkpoint_dir: Path) -> dict[str, np.ndarray]:
    """The model's variables from the checkpoint, without optimiser slots and counters."""
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint_prefix(checkpoint_dir))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if "/Adam" not in name and not name.startswith(("beta1_power", "beta2_power"))
    }


def load_into(model: keras.Model, variables: dict[str, np.ndarray]) -> int:
    """Copy checkpoint variables into the Keras model by layer name; return parameters copied.

    Raises ``ValueError`` unless every checkpoint variable fills exactly one model weight.
    """
    used: set[str] = set()
    n_params = 0
    for layer in model.layers:
        values = []
        for weight in layer.weights:
            key = f"{layer.name}/{weight.name}"
            if key not in variables:
                raise ValueError(f"no checkpoint variable for model weight {key}")
            value = variables[key]
            if value.ndim == 4 and len(weight.shape) == 3:
                # Mid-end: TF1 conv2d kernel [7, channels, 1, 64] is a Conv1D [7, channels, 64].
                value = value[:, :, 0, :]
            elif value.ndim == 4 and value.shape[1] == 1 and weight.shape[0] == 1:
                # Temporal front-end: [frames, 1, 1, 51] runs on the transposed input as
                # [1, frames, 1, 51].
                value = value.transpose(1, 0, 2, 3)
            if tuple(value.shape) != tuple(weight.shape):
                raise ValueError(f"{key}: checkpoint {value.shape} vs model {weight.shape}")
            values.append(value)
            used.add(key)
            n_params += value.size
        if values:
            layer.set_weights(values)
    unused = set(variables) - used
    if unused:
        raise ValueError(f"checkpoint variables not used by the model: {sorted(unused)}")
    return n_params


def reference_graph(checkpoint_dir: Path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """The original TF1 inference graph, as trained, with the checkpoint's values.

    Read from the checkpoint's ``.meta`` (musicnn's own graph, TF 1.12): the sub-graph feeding the
    outputs is kept, its variables are frozen to the checkpoint's values, and it is run in a
    ``tf.compat.v1.Session`` with ``is_training`` False. The training half of the meta-graph
    (gradients, Adam) does not import under TF 2 and is not needed.

    Returns
    -------
    callable
        ``patches (n, 187, 96) float32 -> {"tags", "penultimate", "mean_pool", "max_pool"}``.
    """
    meta = tf.compat.v1.MetaGraphDef()
    meta.ParseFromString((checkpoint_dir / ".meta").read_bytes())
    outputs = [t.split(":")[0] for t in REFERENCE_TENSORS.values()]
    sub = tf.compat.v1.graph_util.extract_sub_graph(meta.graph_def, outputs)
    variables = read_checkpoint(checkpoint_dir)
    for node in sub.node:
        node.device = ""
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]
        if node.op == "VariableV2":
            value = variables[node.name]
            node.op = "Const"
            for key in list(node.attr):
                del node.attr[key]
            node.attr["dtype"].type = tf.float32.as_datatype_enum
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(sub, name="")
    session = tf.compat.v1.Session(graph=graph)
    fetches = {k: graph.get_tensor_by_name(t) for k, t in REFERENCE_TENSORS.items()}
    x = graph.get_tensor_by_name("model/Placeholder:0")
    is_training = graph.get_tensor_by_name("model/Placeholder_2:0")

    def run(patches: np.ndarray) -> dict[str, np.ndarray]:
        out = session.run(fetches, {x: np.asarray(patches, np.float32), is_training: False})
        # The graph keeps a trailing unit axis on the pooled features: [n, 753, 1].
        return {k: np.asarray(v, np.float32).reshape(len(patches), -1) for k, v in out.items()}

    return run


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Largest absolute difference per output."""
    return {k: float(np.max(np.abs(a[k] - b[k]))) for k in REFERENCE_TENSORS}


def load_clip(path: Path) -> tuple[np.ndarray, int]:
    """Decode a clip the way the fixture and its test do (libsndfile via librosa, native rate)."""
    import librosa

    y, sr = librosa.load(path, sr=None, mono=True)
    return y, int(sr)


def write_fixture(
    path: Path,
    reference: Callable[[np.ndarray], dict[str, np.ndarray]],
    data_dir: Path,
    clips: Sequence[str] = FIXTURE_CLIPS,
    n_patches: int = FIXTURE_PATCHES,
) -> None:
    """Store the original graph's outputs on the first patches of real clips, for the tests."""
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in REFERENCE_TENSORS}
    arrays["logmel_mean"] = []
    counts = []
    for clip in clips:
        y, sr = load_clip(data_dir / clip)
        patches = mn.split_patches(mn.log_mel(y, sr))
        counts.append(len(patches))
        out = reference(patches[:n_patches])
        for k in REFERENCE_TENSORS:
            arrays[k].append(out[k])
        # Lets a failing test tell a changed decoder/front end from a changed network.
        arrays["logmel_mean"].append(patches[:n_patches].mean(axis=(1, 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        clips=np.array(clips),
        n_patches=np.array(counts),
        **{k: np.stack(v).astype(np.float32) for k, v in arrays.items()},
    )


def tflite_model(model: keras.Model) -> bytes:
    """The Keras model as a float32 LiteRT flatbuffer with a dynamic batch dimension.

    The graph is frozen first: converting the concrete function with its variables silently
    drops Keras 3's variables (every output NaN). The frozen graph is then wrapped once more to
    give the signature its outputs' names, which the runtime reads them by.
    """
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    spec = tf.TensorSpec([None, mn.PATCH_FRAMES, mn.N_MELS], tf.float32, name="log_mel")
    outputs = tf.function(lambda x: tuple(model(x, training=False)[k] for k in mn.EMBEDDING_KEYS))
    frozen = convert_variables_to_constants_v2(outputs.get_concrete_function(spec))
    named = tf.function(lambda log_mel: dict(zip(mn.EMBEDDING_KEYS, frozen(log_mel), strict=True)))
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [named.get_concrete_function(spec)], trackable_obj=tf.Module()
    )
    return converter.convert()


def write_tflite(model: keras.Model, out_dir: Path) -> dict[str, Any]:
    """Write ``msd_musicnn.tflite`` after checking it on the LiteRT runtime against ``model``.

    Checked on random input at batch sizes 1, 3 and ``MAX_BATCH + 1``: every output finite and
    within :data:`TFLITE_RTOL_OF_SCALE` of the Keras model's.

    Returns
    -------
    dict
        The ``config.json`` entries of the file: name, sha256, the check's largest relative
        difference, and the converter's version.
    """
    content = tflite_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / mn.TFLITE_FILE
    tmp = path.with_suffix(".tflite.tmp")
    tmp.write_bytes(content)
    rng = np.random.default_rng(1)
    worst = 0.0
    run = mn._litert_runner(content, tmp)
    for n in (1, 3, mn.MAX_BATCH + 1):
        batch = rng.uniform(0, 4, (n, mn.PATCH_FRAMES, mn.N_MELS)).astype(np.float32)
        ours = run(batch)
        keras_out = {k: np.asarray(v) for k, v in model(batch, training=False).items()}
        for k in mn.EMBEDDING_KEYS:
            if not np.isfinite(ours[k]).all():
                tmp.unlink()
                raise SystemExit(f"the .tflite gives non-finite {k} at batch {n}")
            scale = float(np.abs(keras_out[k]).max())
            worst = max(worst, float(np.abs(ours[k] - keras_out[k]).max()) / scale)
    if worst > TFLITE_RTOL_OF_SCALE:
        tmp.unlink()
        raise SystemExit(f"the .tflite differs from the Keras model by {worst:.2e} of scale")
    tmp.replace(path)
    return {
        "tflite_file": mn.TFLITE_FILE,
        "tflite_sha256": hashlib.sha256(content).hexdigest(),
        "tflite_checked_against_keras_max_rel_diff": worst,
        "tflite_converted_with": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def tflite_only(out_dir: Path) -> dict[str, Any]:
    """(Re)write the ``.tflite`` of an existing artifact from its Keras weights and record it in
    its ``config.json``; return the new entries."""
    embedder = mn.MusicnnEmbedder.load(out_dir, runtime="keras")  # checks the weights' checksum
    entries = write_tflite(embedder.model, out_dir)
    config_path = out_dir / mn.CONFIG_FILE
    config = json.loads(config_path.read_text()) | entries
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return entries


def convert(checkpoint_dir: Path, out_dir: Path) -> dict[str, float]:
    """Convert, verify against the original graph, and write the artifact; return the check."""
    model = mn.build_model()
    n_params = load_into(model, read_checkpoint(checkpoint_dir))

    # Random log-mel-like input (the network's input is >= 0, typically 0-4).
    batch = np.random.default_rng(0).uniform(0, 4, (4, mn.PATCH_FRAMES, mn.N_MELS))
    batch = batch.astype(np.float32)
    ours = {k: np.asarray(v) for k, v in model(batch, training=False).items()}
    diff = max_abs_diff(ours, reference_graph(checkpoint_dir)(batch))
    if max(diff.values()) > 1e-4:
        raise SystemExit(f"converted model differs from the original graph: {diff}")

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / mn.WEIGHTS_FILE
    model.save_weights(weights)
    (out_dir / mn.TAGS_FILE).write_text(json.dumps(MSD_LABELS, indent=1) + "\n")
    source_cfg = json.loads((checkpoint_dir / "config.json").read_text())
    config = {
        "name": "MSD_musicnn",
        "source": "musicnn 0.1.0 wheel (PyPI), folder musicnn/MSD_musicnn",
        "authors": "Jordi Pons, Xavier Serra (MTG, Universitat Pompeu Fabra)",
        "license": "ISC",
        "trained_on": "Million Song Dataset, 50 most frequent last.fm tags",
        "sample_rate": mn.SR,
        "n_fft": mn.N_FFT,
        "hop_length": mn.HOP_LENGTH,
        "n_mels": mn.N_MELS,
        "mel": {"power": 2.0, "htk": False, "norm": "slaney", "center": True,
                "pad_mode": "constant", "window": "hann", "library": "librosa"},
        "log_compression": "log10(10000 * mel + 1), float32",
        "patch_frames": mn.PATCH_FRAMES,
        "patch_hop_frames": mn.PATCH_FRAMES,
        "short_input": source_cfg.get("pad_short", "repeat-pad"),
        "outputs": {"tags": mn.N_TAGS, "penultimate": mn.N_PENULTIMATE,
                    "mean_pool": mn.N_POOLED, "max_pool": mn.N_POOLED},
        "n_params": int(n_params),
        "weights_file": mn.WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "checked_against_original_graph_max_abs_diff": diff,
        "converted_with": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "converted_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **write_tflite(model, out_dir),
    }  # fmt: skip
    (out_dir / mn.CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "LICENSE").write_text(LICENSE_TEXT)
    return diff


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint_dir", type=Path, nargs="?", help="musicnn/MSD_musicnn folder")
    parser.add_argument("out_dir", type=Path, nargs="?",
                        help="where to write the artifact (models/musicnn)")
    parser.add_argument(
        "--tflite-only", type=Path, metavar="DIR",
        help="only (re)write DIR's .tflite from its Keras weights, and its config.json entries",
    )  # fmt: skip
    parser.add_argument("--fixture", type=Path, help="also write reference outputs to this .npz")
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
        help="shared data folder holding the fixture's clips",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.tflite_only:
        entries = tflite_only(args.tflite_only)
        print(f"wrote {args.tflite_only / mn.TFLITE_FILE}: {entries}")
        return 0
    if args.checkpoint_dir is None or args.out_dir is None:
        parser.error("give CHECKPOINT_DIR and OUT_DIR, or --tflite-only DIR")
    if not (args.checkpoint_dir / ".index").is_file():
        parser.error(f"{args.checkpoint_dir} holds no checkpoint (.index missing)")
    diff = convert(args.checkpoint_dir, args.out_dir)
    print(f"wrote {args.out_dir}; max |keras - original| on random input: {diff}")
    if args.fixture:
        write_fixture(args.fixture, reference_graph(args.checkpoint_dir), args.data_dir)
        print(f"wrote {args.fixture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
