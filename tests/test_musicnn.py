"""The musicnn network: input, artifact, featurizer, runtimes, and fidelity to the original.

Tests run on the default runtime (LiteRT on the shipped ``.tflite`` where ai-edge-litert is
installed, else Keras), and check LiteRT against the Keras model. Fidelity is checked twice:
against the original TF1 graph itself (read from the musicnn wheel's checkpoint, skipped where
the wheel is not present), and against reference outputs of that graph stored in
``tests/fixtures/musicnn_reference.npz`` (needs only ../shared/data).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path
from types import ModuleType

import librosa
import numpy as np
import pytest

from genre_core import musicnn as mn
from genre_core.errors import EmptyAudioError, ModelMismatchError, ModelMissingError

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.npz"
SCRIPT = ROOT / "scripts" / "convert_musicnn.py"
#: The network's widest fan-in: the mid-end convolution sums 7 frames x 561 front-end channels.
FAN_IN = 7 * 561
#: float32 sums of FAN_IN terms in another order (another CPU's kernels, oneDNN on or off, another
#: batch size) differ by about sqrt(FAN_IN) * eps of the output's scale; we allow 4x that (3e-5).
#: Measured here: 2.5e-6 (oneDNN on vs off); on another CPU, 7e-6.
RTOL_OF_SCALE = 4 * np.sqrt(FAN_IN) * np.finfo(np.float32).eps


def assert_close_at_scale(actual: np.ndarray, expected: np.ndarray, err_msg: str = "") -> None:
    """Equal up to float32 rounding: ``RTOL_OF_SCALE`` times the largest magnitude in
    ``expected``, since each output is a sum whose terms are of that scale."""
    atol = RTOL_OF_SCALE * float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol, err_msg=err_msg)


needs_data = pytest.mark.skipif(
    not (DATA_DIR / "gtzan" / "audio").is_dir(), reason=f"shared data not found at {DATA_DIR}"
)
needs_litert = pytest.mark.skipif(
    mn._litert_interpreter() is None, reason="ai-edge-litert is not installed"
)


def synth(seconds: float, sr: int = 22_050, seed: int = 0) -> np.ndarray:
    """A few seconds of music-like audio: a plucked chord progression over a noise hi-hat."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    for i, root in enumerate([220.0, 174.6, 261.6, 196.0] * int(seconds + 1)):
        start = i * 0.5
        if start >= seconds:
            break
        env = np.where(t >= start, np.exp(-4 * (t - start)), 0.0)
        for ratio in (1.0, 1.25, 1.5):
            y += 0.15 * env * np.sin(2 * np.pi * root * ratio * (t - start))
    hat = rng.standard_normal(len(t)) * np.exp(-40 * ((t * 4) % 1.0))
    return (y + 0.05 * hat).astype(np.float32)


@pytest.fixture(scope="module")
def embedder() -> mn.MusicnnEmbedder:
    """The default runtime, as serving loads it."""
    return mn.MusicnnEmbedder.load()


@pytest.fixture(scope="module")
def keras_embedder() -> mn.MusicnnEmbedder:
    return mn.MusicnnEmbedder.load(runtime="keras")


@pytest.fixture(scope="module")
def featurizer(embedder: mn.MusicnnEmbedder) -> mn.MusicnnFeaturizer:
    return mn.MusicnnFeaturizer(embedder)


# --- input -------------------------------------------------------------------------------------


def test_log_mel_shape_rate_and_dtype() -> None:
    y = synth(2.0, sr=22_050)
    spec = mn.log_mel(y, 22_050)
    # Resampled to 16 kHz, centred frames of hop 256: 1 + 32000 // 256.
    assert spec.shape == (1 + 32_000 // 256, 96)
    assert spec.dtype == np.float32
    assert np.isfinite(spec).all() and spec.min() >= 0
    # The same signal given at 16 kHz lands in the same mel bands.
    direct = mn.log_mel(librosa.resample(y, orig_sr=22_050, target_sr=16_000), 16_000)
    assert np.abs(direct - spec).max() < 1e-5


def test_log_mel_of_loud_audio_stays_finite(embedder: mn.MusicnnEmbedder) -> None:
    # A full-scale square wave: mel power well above float16's 65504 / 10000, where musicnn's
    # own float16 cast overflows to inf and every output becomes NaN.
    t = np.arange(3 * 16_000) / 16_000
    y = np.sign(np.sin(2 * np.pi * 110 * t)).astype(np.float32)
    spec = mn.log_mel(y, 16_000)
    mel_power = (10.0 ** spec.astype(np.float64) - 1) / 10_000
    assert mel_power.max() > np.finfo(np.float16).max / 10_000
    assert np.isfinite(spec).all()
    out = embedder.embed(y, 16_000)
    assert all(np.isfinite(v).all() for v in out.values())


def test_log_mel_rejects_empty_and_multichannel() -> None:
    with pytest.raises(EmptyAudioError):
        mn.log_mel(np.zeros(0, dtype=np.float32), 16_000)
    with pytest.raises(ValueError):
        mn.log_mel(np.zeros((2, 16_000), dtype=np.float32), 16_000)


def test_split_patches_non_overlapping_drops_remainder() -> None:
    spec = np.arange(400 * 96, dtype=np.float32).reshape(400, 96)
    patches = mn.split_patches(spec)
    assert patches.shape == (2, 187, 96)
    np.testing.assert_array_equal(patches[1], spec[187:374])


def test_split_patches_repeat_pads_short_input() -> None:
    spec = np.random.default_rng(1).random((50, 96)).astype(np.float32)
    patches = mn.split_patches(spec)
    assert patches.shape == (1, 187, 96)
    np.testing.assert_array_equal(patches[0, :50], spec)
    np.testing.assert_array_equal(patches[0, 50:100], spec)
    np.testing.assert_array_equal(patches[0, 150:187], spec[:37])


def test_split_patches_max_patches_spreads_evenly() -> None:
    spec = np.repeat(np.arange(10, dtype=np.float32), 187)[:, None] * np.ones((1, 96), np.float32)
    patches = mn.split_patches(spec, max_patches=4)
    # Patch i is filled with the value i: the kept ones span the clip, first and last included.
    assert patches[:, 0, 0].tolist() == [0.0, 3.0, 6.0, 9.0]


def test_thirty_seconds_give_ten_patches(embedder: mn.MusicnnEmbedder) -> None:
    y = np.zeros(30 * 22_050, dtype=np.float32)
    assert embedder.patches(y, 22_050).shape == (10, 187, 96)


# --- network -----------------------------------------------------------------------------------


def test_model_size_matches_checkpoint(keras_embedder: mn.MusicnnEmbedder) -> None:
    # 64 checkpoint variables, 792k parameters.
    assert keras_embedder.runtime == "keras"
    assert len(keras_embedder.model.weights) == 64
    assert keras_embedder.model.count_params() == 792_079
    assert keras_embedder.config["n_params"] == 792_079


def test_embed_shapes_and_ranges(embedder: mn.MusicnnEmbedder) -> None:
    out = embedder.embed(synth(7.0), 22_050)
    assert set(out) == set(mn.EMBEDDING_KEYS)
    assert out["tags"].shape == (2, 50)
    assert out["penultimate"].shape == (2, 200)
    assert out["mean_pool"].shape == (2, 753)
    assert out["max_pool"].shape == (2, 753)
    assert ((out["tags"] > 0) & (out["tags"] < 1)).all()
    # Max over time is never below the mean over time.
    assert (out["max_pool"] >= out["mean_pool"] - 1e-5).all()


def test_batched_call_equals_patch_by_patch(embedder: mn.MusicnnEmbedder) -> None:
    patches = embedder.patches(synth(9.5, seed=3), 22_050)
    assert len(patches) == 3
    together = embedder.embed_patches(patches)
    for i in range(len(patches)):
        alone = embedder.embed_patches(patches[i : i + 1])
        for key in mn.EMBEDDING_KEYS:
            assert_close_at_scale(alone[key][0], together[key][i], err_msg=key)


def test_long_input_is_chunked_consistently(
    embedder: mn.MusicnnEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    patches = embedder.patches(synth(15.5, seed=4), 22_050)
    assert len(patches) == 5
    whole = embedder.embed_patches(patches)
    # Beyond MAX_BATCH patches the call is split; the pieces must line up with one call.
    monkeypatch.setattr(mn, "MAX_BATCH", 2)
    chunked = embedder.embed_patches(patches)
    for key in mn.EMBEDDING_KEYS:
        assert chunked[key].shape == whole[key].shape
        assert_close_at_scale(chunked[key], whole[key], err_msg=key)


def test_a_songs_windows_in_one_pass_equal_each_window_alone(
    embedder: mn.MusicnnEmbedder,
) -> None:
    windows = [synth(9.5, seed=8), synth(2.0, seed=9), synth(6.5, seed=10)]  # 3, 1 and 2 patches
    together = embedder.embed_many(windows, 22_050)
    assert [len(e["tags"]) for e in together] == [3, 1, 2]
    for window, embedding in zip(windows, together, strict=True):
        alone = embedder.embed(window, 22_050)
        for key in mn.EMBEDDING_KEYS:
            assert_close_at_scale(embedding[key], alone[key], err_msg=key)


def test_embed_patches_rejects_wrong_shape(embedder: mn.MusicnnEmbedder) -> None:
    with pytest.raises(ValueError):
        embedder.embed_patches(np.zeros((1, 100, 96), dtype=np.float32))


# --- runtimes ----------------------------------------------------------------------------------


@needs_litert
def test_default_runtime_is_litert(embedder: mn.MusicnnEmbedder) -> None:
    assert embedder.runtime == "litert" and embedder.model is None


@needs_litert
@pytest.mark.parametrize("n", [1, 3, mn.MAX_BATCH + 1])
def test_litert_equals_keras_on_any_batch(
    embedder: mn.MusicnnEmbedder, keras_embedder: mn.MusicnnEmbedder, n: int
) -> None:
    # Random log-mel-like patches (the network's input is >= 0, typically 0-4); batch sizes
    # alternate on one interpreter, which resizes its input each time.
    patches = np.random.default_rng(n).uniform(0, 4, (n, mn.PATCH_FRAMES, mn.N_MELS))
    lite, ref = embedder.embed_patches(patches), keras_embedder.embed_patches(patches)
    for key in mn.EMBEDDING_KEYS:
        assert lite[key].shape == (n, mn.OUTPUT_WIDTHS[key]) and lite[key].dtype == np.float32
        assert_close_at_scale(lite[key], ref[key], err_msg=f"batch {n} {key}")


@needs_litert
def test_litert_equals_keras_on_synthetic_music(
    embedder: mn.MusicnnEmbedder, keras_embedder: mn.MusicnnEmbedder
) -> None:
    windows = [synth(9.5, seed=11), synth(1.0, seed=12), synth(30.0, seed=13)]  # 3, 1, 10 patches
    lite, ref = embedder.embed_many(windows, 22_050), keras_embedder.embed_many(windows, 22_050)
    for a, b in zip(lite, ref, strict=True):
        for key in mn.EMBEDDING_KEYS:
            assert_close_at_scale(a[key], b[key], err_msg=key)


@needs_litert
@needs_data
def test_litert_equals_keras_on_real_clips(
    embedder: mn.MusicnnEmbedder, keras_embedder: mn.MusicnnEmbedder
) -> None:
    # Two 30-s clips in one call: 20 patches, chunked past MAX_BATCH.
    clips = ("gtzan/audio/blues.00099.mp3", "gtzan/audio/disco.00000.mp3")
    patches = np.concatenate([embedder.patches(*load_clip(DATA_DIR / c)) for c in clips])
    assert len(patches) > mn.MAX_BATCH
    lite, ref = embedder.embed_patches(patches), keras_embedder.embed_patches(patches)
    for key in mn.EMBEDDING_KEYS:
        assert_close_at_scale(lite[key], ref[key], err_msg=key)


# --- featurizer --------------------------------------------------------------------------------


def test_feature_names_are_unique_and_grouped(featurizer: mn.MusicnnFeaturizer) -> None:
    names = featurizer.feature_names
    assert len(names) == len(set(names)) == 2 * (50 + 200 + 753 + 753)
    assert sum(n.startswith("tag_") for n in names) == 100
    assert sum(n.startswith("pen") for n in names) == 400
    assert sum(n.startswith("pool_avg") for n in names) == 2 * 753
    assert sum(n.startswith("pool_max") for n in names) == 2 * 753
    for name in ("tag_rock_mean", "tag_female_vocalists_max", "tag_hip_hop_mean", "pen12_max",
                 "pool_avg7_mean", "pool_max752_max"):  # fmt: skip
        assert name in names


def test_transform_is_mean_and_max_over_patches(featurizer: mn.MusicnnFeaturizer) -> None:
    y = synth(12.0, seed=5)
    vector = featurizer.transform(y, 22_050)
    names = featurizer.feature_names
    assert vector.shape == (len(names),) and vector.dtype == np.float32
    out = featurizer.embed(y, 22_050)
    rock = featurizer.tag_names.index("rock")
    assert vector[names.index("tag_rock_mean")] == pytest.approx(out["tags"][:, rock].mean(), 1e-5)
    assert vector[names.index("pen12_max")] == pytest.approx(out["penultimate"][:, 12].max(), 1e-5)
    assert vector[names.index("pool_avg7_mean")] == pytest.approx(
        out["mean_pool"][:, 7].mean(), 1e-5
    )
    assert vector[names.index("pool_max7_max")] == pytest.approx(out["max_pool"][:, 7].max(), 1e-5)


def test_groups_select_a_subset(embedder: mn.MusicnnEmbedder) -> None:
    full = mn.MusicnnFeaturizer(embedder)
    small = mn.MusicnnFeaturizer(embedder, groups=("tags", "penultimate"))
    assert len(small.feature_names) == 500
    y = synth(6.0, seed=6)
    whole = dict(zip(full.feature_names, full.transform(y, 22_050), strict=True))
    part = small.transform(y, 22_050)
    np.testing.assert_allclose(part, [whole[n] for n in small.feature_names], atol=1e-6)
    with pytest.raises(ValueError):
        mn.MusicnnFeaturizer(embedder, groups=("timbral",)).feature_names  # noqa: B018


def test_short_window_is_padded(featurizer: mn.MusicnnFeaturizer) -> None:
    vector = featurizer.transform(synth(1.5, seed=7), 22_050)
    assert np.isfinite(vector).all()
    # One patch only: its mean and max agree.
    names = featurizer.feature_names
    assert vector[names.index("pen3_mean")] == vector[names.index("pen3_max")]


def test_top_tags_are_the_most_likely(featurizer: mn.MusicnnFeaturizer) -> None:
    y = synth(6.0, seed=8)
    top = featurizer.top_tags(y, 22_050, k=5)
    assert len(top) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True)
    mean_tags = featurizer.embed(y, 22_050)["tags"].mean(axis=0)
    assert [t for t, _ in top] == [featurizer.tag_names[i] for i in np.argsort(-mean_tags)[:5]]
    assert all(0 < p < 1 for p in probs)


def test_featurizer_loads_lazily_from_a_directory() -> None:
    lazy = mn.MusicnnFeaturizer(groups=("tags",))
    assert lazy._embedder is None
    assert len(lazy.feature_names) == 100 and lazy._embedder is None  # names need no network
    assert lazy.family == "musicnn" and lazy.window_s == 30.0


# --- artifact ----------------------------------------------------------------------------------


def test_shipped_artifact_is_complete() -> None:
    files = {p.name for p in mn.DEFAULT_WEIGHTS_DIR.iterdir()}
    assert {mn.WEIGHTS_FILE, mn.TFLITE_FILE, mn.TAGS_FILE, mn.CONFIG_FILE} <= files
    assert {"LICENSE", "README.md"} <= files
    config = json.loads((mn.DEFAULT_WEIGHTS_DIR / mn.CONFIG_FILE).read_text())
    assert config["weights_sha256"] and config["tflite_sha256"]
    assert "ISC" in (mn.DEFAULT_WEIGHTS_DIR / "LICENSE").read_text()
    assert "Pons" in (mn.DEFAULT_WEIGHTS_DIR / "LICENSE").read_text()
    assert len(mn.load_tag_names()) == 50


def test_missing_artifact_raises(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError):
        mn.MusicnnEmbedder.load(tmp_path)


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    target = tmp_path / "musicnn"
    shutil.copytree(mn.DEFAULT_WEIGHTS_DIR, target)
    return target


def test_artifact_for_other_input_is_refused(artifact_copy: Path) -> None:
    config_path = artifact_copy / mn.CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["sample_rate"] = 22_050
    config_path.write_text(json.dumps(config))
    with pytest.raises(ModelMismatchError):
        mn.MusicnnEmbedder.load(artifact_copy)


def test_tampered_weights_are_refused(artifact_copy: Path) -> None:
    weights = artifact_copy / mn.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelMismatchError):
        mn.MusicnnEmbedder.load(artifact_copy, runtime="keras")


@pytest.mark.parametrize("runtime", ["auto", "litert"])
def test_damaged_tflite_is_refused(artifact_copy: Path, runtime: str) -> None:
    tflite = artifact_copy / mn.TFLITE_FILE
    data = bytearray(tflite.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a weight, silently wrong if it were loaded
    tflite.write_bytes(bytes(data))
    if runtime == "auto" and mn._litert_interpreter() is None:
        pytest.skip("without LiteRT, auto never reads the .tflite")
    with pytest.raises(ModelMismatchError, match=r"msd_musicnn\.tflite is not the file.*checksum"):
        mn.MusicnnEmbedder.load(artifact_copy, runtime=runtime)


@needs_litert
def test_unreadable_tflite_without_checksum_is_refused(artifact_copy: Path) -> None:
    config_path = artifact_copy / mn.CONFIG_FILE
    config = json.loads(config_path.read_text())
    del config["tflite_sha256"]
    config_path.write_text(json.dumps(config))
    (artifact_copy / mn.TFLITE_FILE).write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelMismatchError, match="could not be read as a LiteRT model"):
        mn.MusicnnEmbedder.load(artifact_copy)


@pytest.mark.parametrize("missing", ["tflite file", "litert package"])
def test_falls_back_to_keras(
    artifact_copy: Path, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    if missing == "tflite file":
        (artifact_copy / mn.TFLITE_FILE).unlink()
    else:
        monkeypatch.setattr(mn, "_litert_interpreter", lambda: None)
    embedder = mn.MusicnnEmbedder.load(artifact_copy)
    assert embedder.runtime == "keras" and embedder.model is not None
    assert embedder.embed(synth(3.5), 22_050)["tags"].shape == (1, 50)


# --- fidelity on real clips ----------------------------------------------------------------------


def load_clip(path: Path) -> tuple[np.ndarray, int]:
    # As the fixture was made: libsndfile via librosa, at the file's own rate.
    y, sr = librosa.load(path, sr=None, mono=True)
    return y, int(sr)


@needs_data
def test_matches_stored_reference_outputs(embedder: mn.MusicnnEmbedder) -> None:
    """Our network, on the default runtime (LiteRT where installed), against the original
    graph's outputs stored by scripts/convert_musicnn.py."""
    ref = np.load(FIXTURE)
    n_ref = ref["tags"].shape[1]
    for i, clip in enumerate(ref["clips"]):
        y, sr = load_clip(DATA_DIR / str(clip))
        patches = embedder.patches(y, sr)
        assert len(patches) == ref["n_patches"][i], clip
        # Same input first: a failure here is the decoder or the front end, not the network.
        # The log-mel's sums (a 512-point FFT, mel bands) are shorter than the network's.
        assert_close_at_scale(
            patches[:n_ref].mean(axis=(1, 2)), ref["logmel_mean"][i],
            err_msg=f"{clip}: log-mel input differs from the one the fixture was made from",
        )  # fmt: skip
        out = embedder.embed_patches(patches[:n_ref])
        for key in mn.EMBEDDING_KEYS:
            assert_close_at_scale(out[key], ref[key][i], err_msg=f"{clip} {key}")


@needs_data
def test_metal_sounds_like_metal(featurizer: mn.MusicnnFeaturizer) -> None:
    y, sr = load_clip(DATA_DIR / "gtzan" / "audio" / "metal.00000.mp3")
    tags = [t for t, _ in featurizer.top_tags(y, sr, k=3)]
    assert "metal" in tags or "heavy metal" in tags, tags


def musicnn_checkpoint() -> Path | None:
    """MSD_musicnn from the musicnn wheel: $MUSICNN_CHECKPOINT, or an installed musicnn package
    (found without importing it: its import pulls in TF1-only code)."""
    if os.environ.get("MUSICNN_CHECKPOINT"):
        return Path(os.environ["MUSICNN_CHECKPOINT"])
    spec = importlib.util.find_spec("musicnn")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "MSD_musicnn"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("convert_musicnn", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_data
def test_matches_original_tf1_graph(embedder: mn.MusicnnEmbedder) -> None:
    """Our network against musicnn's own graph and checkpoint, on every patch of real clips."""
    checkpoint = musicnn_checkpoint()
    if checkpoint is None or not (checkpoint / ".meta").is_file():
        pytest.skip(
            "musicnn's checkpoint is not available: `pip install --no-deps musicnn==0.1.0` or set "
            "MUSICNN_CHECKPOINT to its musicnn/MSD_musicnn folder"
        )
    reference = load_script().reference_graph(checkpoint)
    clips = sorted((DATA_DIR / "gtzan" / "audio").glob("*.00000.mp3"))[::4]
    assert clips
    for path in clips:
        patches = embedder.patches(*load_clip(path))
        ours, theirs = embedder.embed_patches(patches), reference(patches)
        for key in mn.EMBEDDING_KEYS:
            assert_close_at_scale(ours[key], theirs[key], err_msg=f"{path.name} {key}")
