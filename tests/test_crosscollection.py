"""Training and measuring across collections: tag mapping, answer sets, the protocols.

The protocols run on synthetic feature rows with a planted genre signal (the network's outputs
are tested in test_musicnn), so what is checked is the bookkeeping: who is held out, which clips
can be answered, how sets count as right, and that calibration is fitted where it should be.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genre_core import corpora, crosscollection
from genre_core.corpora import Recording
from genre_core.crosscollection import Material
from genre_core.evaluation import expected_calibration_error, fit_temperature, top_is_right
from genre_core.model import GenreModel, softmax


def test_tags_map_to_sets_of_our_genres(tmp_path: Path) -> None:
    mer = tmp_path / "mer4q"
    (mer / "audio").mkdir(parents=True)
    (mer / "labels.csv").write_text(
        "song,artist,title,allmusic_genres,quadrant,seconds\n"
        "A,Someone,x,Pop/Rock,Q1,30\n"
        "B,Other,y,Jazz; Latin,Q1,30\n"
        "C,Other,z,Holiday; International,Q1,30\n"
        "D,Missing,w,Jazz,Q1,30\n"
    )
    for song in "ABC":  # D has no audio: left out
        (mer / "audio" / f"{song}.opus").write_bytes(b"")
    found = {r.clip_id: r for r in corpora.mer(tmp_path)}
    assert set(found) == {"A", "B", "C"}
    assert found["A"].genres == {"pop", "rock", "metal"}
    assert found["B"].genres == {"jazz", "latin"}
    assert found["C"].genres == frozenset()  # music without a genre of ours
    assert found["B"].group == found["C"].group == "mer:other"


def test_the_class_list_comes_from_the_data() -> None:
    recs = [Recording("x", str(i), Path(f"{i}"), frozenset({g}), "g")
            for i, g in enumerate(["jazz"] * 3 + ["rnb"] * 3 + ["polka"])]
    assert corpora.class_list(recs, min_clips=3) == ["jazz", "rnb"]


def test_a_set_counts_as_right_when_the_top_genre_is_in_it() -> None:
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
    masks = np.array([[0, 1, 1], [0, 1, 0]])
    assert top_is_right(probs, masks).tolist() == [False, True]
    assert top_is_right(probs, np.array([0, 1])).tolist() == [True, True]
    # Confidence 0.6 wrong and 0.7 right: ECE = (0.6 + 0.3) / 2.
    assert expected_calibration_error(probs, masks) == pytest.approx(0.45)


def test_temperature_with_sets_undoes_a_known_sharpening() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 2
    truth = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    masks = np.eye(4)[truth]
    # Sets built of the truth plus one more genre: the probability of the set is what counts.
    masks[np.arange(0, 4000, 2), (truth[::2] + 1) % 4] = 1
    sharpened = logits * 3.0
    fitted = fit_temperature(sharpened, np.eye(4)[truth])
    assert fitted == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(sharpened, masks) > 1.5  # sets do not hide over-confidence


def test_a_head_trained_on_sets_learns_the_genre_the_sets_share() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6)).astype(np.float32)
    genre = (X[:, 0] > 0).astype(int)  # 0: first genre, 1: second
    masks = np.eye(3)[genre]
    masks[genre == 1, 2] = 1  # the second genre only ever comes as "1 or 2"
    model = GenreModel([f"f{i}" for i in range(6)], family="test", hidden=(16,), epochs=30,
                       genres=["a", "b", "c"], seed=0)
    model.fit(X, masks, sample_weight=crosscollection.class_balance(masks))
    probs = model.predict_proba(X)
    assert top_is_right(probs, masks).mean() > 0.95


# --- the protocols on synthetic rows ------------------------------------------------------------

GENRES = ["blues", "electronic", "jazz", "rock"]


def synthetic_material(rng: np.random.Generator) -> Material:
    """Three collections: GTZAN-like (single genres, no electronic), MER-like (sets, with
    electronic) and a small FMA-like one. Each row leans towards its genre's direction."""
    recs, rows, owner, original = [], [], [], []
    plan = [("gtzan", ["blues", "jazz", "rock"], 40), ("mer", GENRES, 40), ("fma", ["rock"], 8)]
    for collection, genres, per_genre in plan:
        for genre in genres:
            for k in range(per_genre):
                answers = {"rock", "blues"} if collection == "mer" and genre == "rock" else {genre}
                recs.append(Recording(collection, f"{collection}-{genre}-{k}",
                                      Path(f"{collection}/{genre}/{k}"), frozenset(answers),
                                      f"{collection}:{genre}:{k // 4}"))
                centre = np.eye(len(GENRES))[GENRES.index(genre)] * 2.5
                for variant in range(2):
                    rows.append(np.concatenate([centre + rng.normal(size=4), rng.normal(size=2)]))
                    owner.append(len(recs) - 1)
                    original.append(variant == 0)
    return Material(recs, [f"f{i}" for i in range(6)], np.array(rows, dtype=np.float32),
                    np.array(owner), np.array(original))


@pytest.fixture
def small_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small head for small material: 20 epochs, not repeated up to the full recipe's 1,000
    optimiser steps (what these tests check needs far fewer)."""
    monkeypatch.setattr(crosscollection, "HEAD",
                        {"hidden": (16,), "dropout": 0.1, "l2": 0.0, "epochs": 20,
                         "batch_size": 32})
    monkeypatch.setattr(crosscollection, "MIN_STEPS", 0)


def test_every_protocol_holds_out_what_it_says(tmp_path: Path, small_head: None) -> None:
    material = synthetic_material(np.random.default_rng(2))
    splits = tmp_path / "gtzan" / "splits"
    splits.mkdir(parents=True)
    gtzan = [r.clip_id for r in material.recordings if r.collection == "gtzan"]
    (splits / "train_filtered.txt").write_text("\n".join(gtzan[::2]))
    (splits / "valid_filtered.txt").write_text("")
    (splits / "test_filtered.txt").write_text("\n".join(gtzan[1::4]))
    report = crosscollection.evaluate(tmp_path, material=material)

    assert report["classes"] == sorted(GENRES)
    protocols = report["protocols"]
    assert set(protocols) == {"gtzan", "mer", "fma", "gtzan-to-mer", "mer-to-gtzan",
                              "grouped-kfold", "fault-filtered"}
    # Electronic exists only in MER: with MER held out nobody can answer it, so its clips are
    # counted apart instead of as mistakes; the GTZAN-trained head cannot answer them either.
    assert "electronic" not in protocols["mer"]["trained_genres"]
    assert protocols["mer"]["n_answerable"] == protocols["mer"]["n_clips"] - 40
    assert protocols["gtzan-to-mer"]["n_answerable"] == 120
    assert protocols["fault-filtered"]["n_clips"] == len(gtzan[1::4])
    assert protocols["grouped-kfold"]["n_clips"] == len(material.recordings)
    assert set(protocols["grouped-kfold"]["per_collection"]) == {"gtzan", "mer", "fma"}
    # The planted signal is found (chance: 1/4). With GTZAN held out, rock is learnt only as
    # MER's "rock or blues", so the two blur: above chance is all that is promised there.
    assert protocols["gtzan"]["accuracy"] > 0.35, protocols["gtzan"]
    for name in ("mer", "grouped-kfold"):
        assert protocols[name]["accuracy"] > 0.7, (name, protocols[name])
    assert 0 < report["temperature"] < 20
    for name in corpora.COLLECTIONS:  # calibration measured with another collection's fit
        assert protocols[name]["temperature_cross_fitted"] != report["temperature"]
    assert "unsure below" in crosscollection.format_report(report)


def test_training_data_never_includes_the_held_out_collection(small_head: None) -> None:
    material = synthetic_material(np.random.default_rng(3))
    seen: list[set[str]] = []
    original_fit = crosscollection.fit_head

    def spy(material: Material, train: np.ndarray, classes: list[str], seed: int = 0):
        seen.append({material.recordings[i].collection for i in train})
        return original_fit(material, train, classes, seed)

    crosscollection.fit_head = spy  # type: ignore[assignment]
    try:
        held = crosscollection.leave_one_collection_out(material, sorted(GENRES))
    finally:
        crosscollection.fit_head = original_fit  # type: ignore[assignment]
    assert [h.name for h in held] == ["gtzan", "mer", "fma"]
    for h, collections in zip(held, seen, strict=True):
        assert h.name not in collections and len(collections) == 2
