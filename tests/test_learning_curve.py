"""The learning curve's bookkeeping and behaviour on synthetic feature rows (no audio).

A base collection ("gtzan") holds three genres; the community ("mer") holds them too, some
as a two-genre set that always comes together, plus a genre the base never saw ("techno"). Each
genre's rows sit around their own direction, so a head can learn any genre it is shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from genre_core import crosscollection, learning_curve
from genre_core.corpora import Recording
from genre_core.crosscollection import Material

DIRECTIONS = ["blues", "jazz", "rock", "techno"]
ROWS_PER_CLIP = 3


def synthetic_material(seed: int = 0) -> Material:
    """Base: 25 clips of blues, jazz, rock (single answers). Community: 12 artists of three
    clips each per genre; its rock clips always answer {pop, rock} (one unit), and techno
    exists only there. A few community clips carry no genre of ours."""
    rng = np.random.default_rng(seed)
    recs, rows, owner, original = [], [], [], []

    def add(collection: str, clip_id: str, genres: set[str], group: str, genre: str) -> None:
        recs.append(Recording(collection, clip_id, Path(clip_id), frozenset(genres), group))
        centre = np.eye(len(DIRECTIONS) + 1)[DIRECTIONS.index(genre)] * 4.0
        for r in range(ROWS_PER_CLIP):
            rows.append(centre + rng.normal(size=len(centre)))
            owner.append(len(recs) - 1)
            original.append(r == 0)

    for genre in ["blues", "jazz", "rock"]:
        for k in range(25):
            add("gtzan", f"g-{genre}-{k}", {genre}, f"gtzan:{genre}.{k // 5}", genre)
    for genre in DIRECTIONS:
        answers = {"pop", "rock"} if genre == "rock" else {genre}
        for artist in range(12):
            for song in range(3):
                add("mer", f"m-{genre}-{artist}-{song}", answers, f"mer:{genre}-{artist}", genre)
    for k in range(3):
        add("mer", f"m-untagged-{k}", set(), f"mer:vocal-{k}", "jazz")
    return Material(recs, [f"f{i}" for i in range(len(DIRECTIONS) + 1)],
                    np.array(rows, dtype=np.float32), np.array(owner), np.array(original))


@pytest.fixture(autouse=True)
def small_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crosscollection, "HEAD",
                        {"hidden": (16,), "dropout": 0.1, "l2": 0.0, "epochs": 15,
                         "batch_size": 32})


@pytest.fixture(scope="module")
def material() -> Material:
    return synthetic_material()


@pytest.fixture(scope="module")
def curve(material: Material) -> dict:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(crosscollection, "HEAD", {"hidden": (16,), "dropout": 0.1, "l2": 0.0,
                                                "epochs": 15, "batch_size": 32})
        return learning_curve.learning_curve(material, ks=(0, 10), seeds=(0, 1),
                                             calibration={"temperature": 1.0,
                                                          "min_probability": 0.8,
                                                          "min_margin": 0.0})


def test_genres_always_carried_together_are_one_unit(material: Material) -> None:
    community = [r for r in material.recordings if r.collection == "mer"]
    assert learning_curve.correction_units(community) == [
        ("blues",), ("jazz",), ("pop", "rock"), ("techno",)]


def test_corrected_artists_are_never_tested(material: Material, curve: dict) -> None:
    group = {r.clip_id: r.group for r in material.recordings}
    for run in curve["runs"]:
        corrected = {group[c] for c in run["corrected"]}
        assert not corrected & {group[c] for c in run["tested"]}
        if run["k"]:
            # The exclusion removed more than the corrected clips: their artists' other songs.
            labelled = sum(1 for r in material.recordings if r.collection == "mer" and r.genres)
            assert run["n_test"] < labelled - run["n_corrected"]
            assert run["n_corrected"] == 4 * run["k"]  # k per unit, four units
    assert not any(c.startswith("m-untagged") for run in curve["runs"] for c in run["tested"])


def test_the_same_clips_are_tested_at_every_k(material: Material, curve: dict) -> None:
    for seed in curve["seeds"]:
        common = learning_curve.common_clips(material, curve["ks"], seed)
        ids = {material.recordings[i].clip_id for i in common}
        runs = [r for r in curve["runs"] if r["seed"] == seed]
        assert len(runs) == len(curve["ks"])
        for run in runs:
            assert ids <= set(run["tested"])  # never corrected, no corrected artist, at any k
            assert run["common"]["n_test"] == len(ids)
        largest = max(runs, key=lambda r: r["k"])
        assert ids == set(largest["tested"])
    assert curve["summary"][10]["common"]["accuracy"]["mean"] > (
        curve["summary"][0]["common"]["accuracy"]["mean"] + 0.15)


def test_the_class_list_grows_with_the_corrected_genre(curve: dict) -> None:
    for run in curve["runs"]:
        assert ("techno" in run["classes"]) == (run["k"] > 0)
        # Only what corrections name joins: pop comes with the {pop, rock} corrections.
        assert ("pop" in run["classes"]) == (run["k"] > 0)
        assert {"blues", "jazz", "rock"} <= set(run["classes"])


def test_corrections_teach_a_genre_the_base_never_saw(curve: dict) -> None:
    summary = curve["summary"]
    assert summary[0]["per_unit"]["techno"]["mean"] == 0.0  # unknown: always wrong
    assert summary[10]["per_unit"]["techno"]["mean"] > 0.8
    assert summary[10]["accuracy"]["mean"] > summary[0]["accuracy"]["mean"] + 0.15
    assert summary[0]["per_unit"]["jazz"]["mean"] > 0.8  # what the base knew, it still knows


def test_results_are_deterministic_per_seed(material: Material, curve: dict) -> None:
    first = next(r for r in curve["runs"] if r["k"] == 10 and r["seed"] == 0)
    other = next(r for r in curve["runs"] if r["k"] == 10 and r["seed"] == 1)
    common = learning_curve.common_clips(material, curve["ks"], seed=0)
    again = learning_curve.one_run(material, 10, seed=0, calibration=curve["calibration"],
                                   common=common)
    assert again == first
    assert first["corrected"] != other["corrected"]


def test_smaller_corrections_are_part_of_larger_ones(material: Material) -> None:
    _, candidates = learning_curve.split(material)
    units = learning_curve.correction_units([material.recordings[i] for i in candidates])
    five = learning_curve.pick_corrections(material, candidates, units, 5, seed=7)
    ten = learning_curve.pick_corrections(material, candidates, units, 10, seed=7)
    assert set(five) < set(ten)
    assert len(learning_curve.pick_corrections(material, candidates, units, 99, seed=7)) == len(
        candidates)  # more than there are: all of them


def test_training_rows_weigh_community_rows_as_asked(material: Material) -> None:
    base, _ = learning_curve.split(material)
    classes = ["blues", "jazz", "rock", "techno"]
    extra_X = np.ones((6, material.X.shape[1]), np.float32)
    extra = np.zeros((6, 4), bool)
    extra[:3, 1] = True  # jazz, a class the shared rows have too
    extra[3:5, 3] = True  # techno
    # The last row names no class of the list: dropped.
    X, mask, weights = crosscollection.training_rows(material, base, classes, (extra_X, extra),
                                                     extra_weight=3.0)
    shared = 3 * 25 * ROWS_PER_CLIP
    assert len(X) == shared + 5 and mask[shared:].any(axis=1).all()
    assert weights.mean() == pytest.approx(1.0)
    jazz_shared = weights[:shared][mask[:shared, 1]]
    # Class balance alone gives every jazz row the same weight; the community ones get 3x.
    assert weights[shared:shared + 3] == pytest.approx(3 * jazz_shared[0])
    # Weight 1 and no extra rows: the rows and weights of crosscollection.fit_head.
    X1, mask1, w1 = crosscollection.training_rows(material, base, classes)
    masks = material.masks(classes)
    rows = np.isin(material.owner, base) & masks[material.owner].any(axis=1)
    assert np.array_equal(X1, material.X[rows])
    assert w1 == pytest.approx(crosscollection.class_balance(masks[material.owner[rows]]))


def test_format_and_chart(curve: dict, tmp_path: Path) -> None:
    from genre_core import charts

    text = learning_curve.format_curve(curve)
    assert "techno" in text and "±" in text
    out = charts.learning_curve_chart(curve, tmp_path / "learning_curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
