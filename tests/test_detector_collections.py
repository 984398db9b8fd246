"""The music detector learns music from all three collections (GTZAN, 4Q-MER, FMA), keeps each
artist on one side of every fold, is evaluated per held-out collection, and the shipped detector
calls real MER and FMA clips music."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from genre_core import detector_training as dt
from genre_core.musicness import N_CUES, MusicDetector
from genre_core.pipeline import Classifier

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAS_COLLECTIONS = (DATA / "mer4q" / "labels.csv").is_file() and (
    DATA / "fma" / "labels.csv"
).is_file()
needs_data = pytest.mark.skipif(
    not HAS_COLLECTIONS, reason="needs ../shared/data with mer4q/ and fma/ (real audio)"
)


# -- the training material ---------------------------------------------------------------------


@pytest.mark.shared_data
@needs_data
def test_mer_and_fma_music_is_trained_on_grouped_by_artist() -> None:
    music = dt.music_recordings(DATA)
    by_source: dict[str, list[dt.Recording]] = defaultdict(list)
    for rec in music:
        by_source[rec.source].append(rec)
    assert {"gtzan", "mer", "fma"} <= set(by_source)
    assert len(by_source["mer"]) > 500 and len(by_source["fma"]) > 50
    for source in ("mer", "fma"):
        recs = by_source[source]
        assert all(r.music and r.group.startswith(f"{source}:") for r in recs)
        assert len({r.group for r in recs}) < len(recs)  # some artists have several clips
        folds_of: dict[str, set[int]] = defaultdict(set)
        for r in recs:
            folds_of[r.group].add(r.fold)
        assert all(len(f) == 1 for f in folds_of.values()), "an artist on both sides of a fold"
        assert {r.fold for r in recs} == set(range(dt.N_FOLDS))
    assert len({r.key for r in music}) == len(music)


def _windows(sources: list[str], per_source: int = 40, seed: int = 0) -> dt.WindowSet:
    """A toy window set: column 0 of X names the source, music sources are shifted apart."""
    rng = np.random.default_rng(seed)
    rows = [(s, i) for s in sources for i in range(per_source)]
    names = sorted(set(sources))
    X = rng.standard_normal((len(rows), N_CUES))
    X[:, 0] = [names.index(s) for s, _ in rows]
    music = np.array([int(s in dt.MUSIC_SOURCES) for s, _ in rows])
    X[:, 1] += 3.0 * music
    kind = np.array(["music" if m else "speech" for m in music], dtype=object)
    group = np.array([f"{s}:g{i % 10}" if s != "gtzan" else f"gtzan:blues.{i:05d}"
                      for s, i in rows])
    return dt.WindowSet(
        X=X, music=music, kind=kind, source=np.array([s for s, _ in rows]), group=group,
        fold=np.array([i % dt.N_FOLDS for _, i in rows]),
        recording=np.array([f"{s}/{i}" for s, i in rows]), whole=np.ones(len(rows), bool),
        length_s=np.full(len(rows), 30.0), augment=np.array(["none"] * len(rows)),
    )


def test_source_weights_share_the_music_half_between_collections() -> None:
    ws = _windows(["gtzan", "mer", "mer", "fma", "librispeech", "esc10", "espeak", "synthetic",
                   "mix"])
    w = dt.source_weights(ws)
    share = {s: w[ws.source == s].sum() / w.sum() for s in np.unique(ws.source)}
    total = sum(dt.SOURCE_WEIGHTS.values())
    music_half = sum(dt.SOURCE_WEIGHTS[s] for s in dt.MUSIC_SOURCES) / total
    assert share["mer"] == pytest.approx(dt.SOURCE_WEIGHTS["mer"] / total)  # not doubled
    assert sum(share[s] for s in dt.MUSIC_SOURCES) == pytest.approx(music_half)
    assert max(share[s] for s in dt.MUSIC_SOURCES) < music_half  # no collection is all of it
    # Without GTZAN the others take its share: music keeps its half.
    without = ws.subset(ws.source != "gtzan")
    w2 = dt.source_weights(without)
    music2 = w2[np.isin(without.source, dt.MUSIC_SOURCES)].sum() / w2.sum()
    assert music2 == pytest.approx(music_half)


class _Spy(MusicDetector):
    """Records which sources (column 0 of X) each fit saw."""

    seen: list[set[int]] = []

    def __init__(self) -> None:
        super().__init__(hidden=(), alpha=1.0)

    def fit(self, X: np.ndarray, y: np.ndarray, kinds: object = None,
            sample_weight: np.ndarray | None = None) -> MusicDetector:
        _Spy.seen.append({int(v) for v in np.asarray(X)[:, 0]})
        return super().fit(X, y, kinds=kinds, sample_weight=sample_weight)


def test_leave_collection_out_never_trains_on_the_held_out_collection() -> None:
    sources = ["gtzan", "mer", "fma", "librispeech", "esc10", "synthetic"]
    ws = _windows(sources)
    names = sorted(set(sources))
    _Spy.seen = []
    report = dt.leave_collection_out(ws, _Spy)
    assert set(report) == {"without_gtzan", "without_mer", "without_fma"}
    assert len(_Spy.seen) == 3 * dt.N_FOLDS
    for i, collection in enumerate(dt.MUSIC_SOURCES):
        for seen in _Spy.seen[i * dt.N_FOLDS : (i + 1) * dt.N_FOLDS]:
            assert names.index(collection) not in seen
        result = report[f"without_{collection}"]
        assert set(result["recall"]) == {collection, "librispeech", "esc10"}
        assert result["recall"][collection]["n"] == 40  # every clip of it scored
        assert "music_recall" in result["recall"][collection]
        assert "not_music_recall" in result["recall"]["esc10"]
    text = dt.format_report({"protocol": "p", "metrics": {
        scope: {"real": dt._binary_metrics(ws.music, ws.music), "per_source": {}}
        for scope in ("whole", "windows")}, "leave_collection_out": report})
    assert "trained without mer music" in text


def test_the_network_check_is_held_out_like_the_cues_and_joins_them_on_whole_windows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sources = ["gtzan", "mer", "fma", "librispeech", "esc10", "synthetic"]
    ws = _windows(sources)
    names = sorted(set(sources))
    # A network row per recording: its source in column 0, music in column 1 (plus noise).
    rng = np.random.default_rng(2)
    rows = {str(r): np.array([names.index(str(s)), 2.0 * m + rng.standard_normal(), 0.0])
            for r, s, m in zip(ws.recording, ws.source, ws.music, strict=True)}
    net = dt.NetworkRows(["a", "b", "c"], rows)
    seen: list[set[int]] = []
    fit = dt.NetworkCheck.fit

    def spy(E: np.ndarray, *args: object, **kwargs: object) -> dt.NetworkCheck:
        seen.append({int(v) for v in np.asarray(E)[:, 0]})
        return fit(E, *args, **kwargs)

    monkeypatch.setattr(dt.NetworkCheck, "fit", spy)
    report = dt.leave_collection_out(ws, lambda: MusicDetector(hidden=(), alpha=1.0), net=net)
    assert len(seen) == 3 * dt.N_FOLDS
    for i, collection in enumerate(dt.MUSIC_SOURCES):
        assert all(names.index(collection) not in s for s in seen[i * dt.N_FOLDS:][:dt.N_FOLDS])
        assert "recall_cues_alone" in report[f"without_{collection}"]

    cv = dt.cross_validate(ws, lambda: MusicDetector(hidden=(), alpha=1.0), net=net)
    whole = ws.whole
    assert not np.allclose(cv["prob"][whole], cv["cues"][whole])
    # Each whole window's P(music) is the mean of the cues' and its fold's network check's.
    k = ws.fold == 0
    det = dt.fit_detector(ws.subset(~k), lambda: MusicDetector(hidden=(), alpha=1.0), net)
    sel = np.flatnonzero(k & whole)
    expected = (cv["cues"][sel] + det.network_.proba(net.of(ws.recording[sel]))) / 2
    np.testing.assert_allclose(cv["prob"][sel], expected, rtol=1e-9)


# -- the shipped detector on real clips of the other collections ---------------------------------


def test_shipped_detector_was_trained_on_all_three_collections() -> None:
    meta = MusicDetector.load().metadata_
    assert {"gtzan", "mer", "fma"} <= set(meta["training_windows"])
    held_out = meta["metrics"]["leave_collection_out"]
    assert {"without_gtzan", "without_mer", "without_fma"} <= set(held_out)


def _clips(collection: str, column: str, tag: str, count: int) -> list[Path]:
    """The first ``count`` clips (in file order) whose ``column`` contains ``tag``."""
    import csv

    root = DATA / ("mer4q" if collection == "mer" else "fma")
    with (root / "labels.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if tag in r[column]]
    key = "song" if collection == "mer" else "track"
    return [root / "audio" / f"{r[key]}.opus" for r in rows[:count]]


@pytest.mark.shared_data
@needs_data
@pytest.mark.parametrize(
    "path",
    _clips("mer", "allmusic_genres", "Electronic", 4) + _clips("mer", "allmusic_genres", "Jazz", 1)
    + _clips("fma", "id3_genre", "Folk", 2) + _clips("fma", "id3_genre", "Hip-Hop", 1)
    if HAS_COLLECTIONS else [],
    ids=lambda p: f"{p.parent.parent.name}/{p.stem}",
)
def test_shipped_detector_calls_real_mer_and_fma_clips_music(path: Path,
                                                            classifier: Classifier) -> None:
    prediction = classifier.classify(path)  # the pipeline: cues and the network check
    assert prediction.music, f"P(music) {prediction.music_probability:.3f}"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def test_the_shipped_pipeline_asks_the_network_check(classifier: Classifier) -> None:
    assert classifier.detector.hears_network(classifier.featurizer.feature_names)


def test_the_shipped_detectors_held_out_recall_is_charted(tmp_path: Path) -> None:
    from genre_core import charts

    metrics = MusicDetector.load().metadata_["metrics"]
    both, alone = metrics["per_collection_whole"], metrics["per_collection_whole_cues_alone"]
    assert set(both) == set(alone) == set(dt.REAL_SOURCES)
    out = charts.detector_chart(both, alone, tmp_path / "detector.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
