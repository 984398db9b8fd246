"""The learned family trained on every music collection, and measured across them.

Material: every recording of GTZAN, 4Q-MER and FMA (:mod:`genre_core.corpora`), embedded by the
frozen network as is, every second one (by a hash of its id) also "shifted" the way another
collection would hold it (:func:`genre_core.learned.shifted`: half the clips give the variety at
half the network time), plus random crops of each. A clip's label is the set of
genres its tags map to; the head learns the probability of that set (:func:`model.set_nll`),
and each row is weighted so that every genre weighs the same. The classes are the genres the
data supports (:func:`corpora.class_list`).

Protocols (every figure names one); a clip is right when its top genre is one of its set:

* ``loco``: leave one collection out. Train on the others, test on it. Clips whose genres the
  other collections never name cannot be answered; they are counted apart.
* ``grouped-kfold``: five folds over all collections grouped by artist (GTZAN: blocks of five
  consecutive ids), figures per collection.
* ``gtzan-to-mer`` and ``mer-to-gtzan``: one collection trained, the other tested, on the clips
  whose genres the trained one names.
* ``fault-filtered``: GTZAN's artist-filtered test tracks with audio, per genre; every GTZAN
  track outside train+valid is left out of training.

Calibration: one temperature fitted on the pooled ``loco`` predictions (each made by a model that
never saw that collection); each collection's ECE is measured with a temperature fitted on the
other collections only, so the figure is out of sample.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import GroupKFold

from genre_core import corpora, learned
from genre_core.corpora import Recording
from genre_core.data import fingerprint, load_split
from genre_core.evaluation import (
    choose_unsure_thresholds,
    ece_floor,
    expected_calibration_error,
    fit_temperature,
    top_is_right,
)
from genre_core.learned import DEFAULT_GROUPS, SHIFTED, clip_embedding, crop_spans
from genre_core.model import GenreModel, softmax

Progress = Callable[[str], None]
VARIANTS = ("original", SHIFTED)
CROPS = 4
#: The GTZAN head's recipe with half the epochs: it sees 2-3x the rows. On the collections held
#: out, 30 epochs scored as well as 60 (within a point) and needed a milder temperature (4.0
#: against 5.1), i.e. were less over-confident where they had not been trained.
HEAD = {**learned.HEAD, "epochs": 30}
#: Fewest optimiser steps a head gets: a small training set (a server's first clips on a few
#: shared tracks) is repeated up to it; the full collections (about 3,300 steps) are unchanged.
MIN_STEPS = 1000
#: An answer shown as confident must reach this probability (below: "not sure: X or Y").
CONFIDENT = 0.8
ABSENT = -1e9  # the logit of a genre a fold's model was not trained on


def variants_of(recording: Recording) -> tuple[str, ...]:
    """The audio variants a recording is embedded in: every second one is also shifted."""
    shifted = zlib.crc32(f"{recording.collection}:{recording.clip_id}".encode()) % 2 == 0
    return VARIANTS if shifted else VARIANTS[:1]


@dataclass
class Material:
    """Feature rows of every recording: its variants' whole clips and crops."""

    recordings: list[Recording]
    feature_names: list[str]
    X: np.ndarray
    owner: np.ndarray  # the recording index of each row
    original: np.ndarray  # the un-augmented whole-clip row of each recording

    def masks(self, classes: Sequence[str]) -> np.ndarray:
        """0/1 per recording and class: its right answers among ``classes``."""
        return np.array([[g in r.genres for g in classes] for r in self.recordings], dtype=bool)


def build_material(
    recordings: Sequence[Recording], *, groups: Sequence[str] = DEFAULT_GROUPS,
    variants: Sequence[str] = VARIANTS, crops: int = CROPS, seed: int = 0,
    progress: Progress | None = None,
) -> Material:
    """Embed (or read from the cache) and featurize every recording."""
    from genre_core.musicnn import MusicnnFeaturizer

    featurizer = MusicnnFeaturizer(groups=groups)
    rng = np.random.default_rng(seed)
    rows, owner, original = [], [], []
    for i, recording in enumerate(recordings):
        if progress and i % 100 == 0:
            progress(f"embedding clips: {i}/{len(recordings)}")
        for variant in (v for v in variants_of(recording) if v in variants):
            embedding = clip_embedding(recording, variant, featurizer.embedder)
            for k, (start, end) in enumerate(crop_spans(len(embedding["tags"]), crops, rng)):
                rows.append(featurizer.featurize({n: v[start:end] for n, v in embedding.items()}))
                owner.append(i)
                original.append(variant == "original" and k == 0)
    return Material(list(recordings), list(featurizer.feature_names), np.stack(rows),
                    np.array(owner), np.array(original))


def class_balance(mask: np.ndarray) -> np.ndarray:
    """Row weights under which every class weighs the same: a row counts 1/rows-of-its-class,
    averaged over the classes of its set; normalised to a mean of 1."""
    per_class = mask / np.maximum(mask.sum(axis=0), 1)
    weights = per_class.sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
    return weights / weights.mean()


def training_rows(material: Material, train: np.ndarray, classes: Sequence[str],
                  extra: tuple[np.ndarray, np.ndarray] | None = None,
                  extra_weight: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows, 0/1 answer masks and sample weights a head trains on: every row of the
    recordings ``train`` (indices) with an answer among ``classes``, plus ``extra`` rows
    (feature rows, masks over ``classes``: the community's clips; a row with no answer is
    dropped). Every class weighs the same; an extra row ``extra_weight`` times a shared row of
    its class (1: the learning curve's study could not tell 1, 3 and 10 apart; see
    :mod:`genre_core.learning_curve`). Weights have a mean of 1."""
    masks = material.masks(classes)
    rows = np.isin(material.owner, train) & masks[material.owner].any(axis=1)
    X, mask = material.X[rows], masks[material.owner[rows]]
    community = np.zeros(len(X), dtype=bool)
    if extra is not None and len(extra[0]):
        extra_mask = np.asarray(extra[1], dtype=bool)
        if extra_mask.shape != (len(extra[0]), len(classes)):
            raise ValueError(f"extra masks must be {(len(extra[0]), len(classes))}, "
                             f"not {extra_mask.shape}")
        keep = extra_mask.any(axis=1)
        X = np.concatenate([X, np.asarray(extra[0], dtype=X.dtype)[keep]])
        mask = np.concatenate([mask, extra_mask[keep]])
        community = np.concatenate([community, np.ones(int(keep.sum()), dtype=bool)])
    weight = class_balance(mask)
    weight[community] *= extra_weight
    return X, mask, weight / weight.mean()


def fit_head(material: Material, train: np.ndarray, classes: Sequence[str],
             seed: int = 0, extra: tuple[np.ndarray, np.ndarray] | None = None,
             extra_weight: float = 1.0) -> GenreModel:
    """A head over ``classes`` trained on :func:`training_rows`."""
    X, mask, weight = training_rows(material, train, classes, extra, extra_weight)
    # A small set is repeated rather than given more epochs: the same steps, without Keras'
    # per-epoch overhead.
    repeats = math.ceil(MIN_STEPS * HEAD["batch_size"] / (HEAD["epochs"] * len(X)))
    if repeats > 1:
        X, mask, weight = (np.tile(a, (repeats,) + (1,) * (a.ndim - 1)) for a in (X, mask, weight))
    head = GenreModel(material.feature_names, family="musicnn", genres=list(classes),
                      seed=seed, **HEAD)
    return head.fit(X, mask, sample_weight=weight)


def held_out(recordings: Sequence[Recording], every: int = 5) -> np.ndarray:
    """The shared clips no published model trains on: one artist group in ``every`` (by a hash
    of the group), so that ``/retrain`` compares the old and the new model on clips neither
    saw."""
    return np.array([zlib.crc32(r.group.encode()) % every == 0 for r in recordings], dtype=bool)


def logits_in(model: GenreModel, material: Material, test: np.ndarray,
              classes: Sequence[str]) -> np.ndarray:
    """The model's logits for the original rows of ``test``, spread over ``classes`` (a genre
    it does not know gets :data:`ABSENT`)."""
    rows = np.flatnonzero(material.original & np.isin(material.owner, test))
    rows = rows[np.argsort(material.owner[rows])]  # in the order of ``test`` sorted
    own = model.logits(material.X[rows])
    out = np.full((len(rows), len(classes)), ABSENT)
    for j, genre in enumerate(model.genres):
        out[:, list(classes).index(genre)] = own[:, j]
    return out


@dataclass
class Held:
    """Held-out predictions of one protocol part: logits over the full class list."""

    name: str
    test: np.ndarray  # recording indices, sorted
    logits: np.ndarray
    trained_genres: list[str]


def score(held: Held, material: Material, classes: Sequence[str],
          temperature: float = 1.0) -> dict[str, Any]:
    """Figures of one held-out part: accuracy on the clips it could answer, calibration,
    confident answers, per genre."""
    masks = material.masks(classes)[held.test]
    trained = np.isin(classes, held.trained_genres)
    answerable = (masks & trained).any(axis=1)
    probs = softmax(held.logits / temperature)[answerable]
    mask = masks[answerable]
    right = top_is_right(probs, mask)
    confident = probs.max(axis=1) >= CONFIDENT
    per_genre = {}
    for j, genre in enumerate(classes):
        only = mask[:, j] & (mask.sum(axis=1) == 1)  # clips with this genre as their one answer
        if only.sum() >= 5:
            per_genre[genre] = {"n": int(only.sum()),
                                "accuracy": round(float(right[only].mean()), 4)}
    return {
        "n_clips": int(len(held.test)), "n_answerable": int(answerable.sum()),
        "accuracy": round(float(right.mean()), 4) if len(right) else None,
        "ece": round(expected_calibration_error(probs, mask), 4),
        "ece_floor": round(ece_floor(probs), 4),
        "confident_share": round(float(confident.mean()), 4),
        "confident_accuracy": round(float(right[confident].mean()), 4) if confident.any() else None,
        "mean_top_probability": round(float(probs.max(axis=1).mean()), 4),
        "per_genre": per_genre,
        "trained_genres": held.trained_genres,
    }


def _present(material: Material, collection: str) -> np.ndarray:
    return np.array([i for i, r in enumerate(material.recordings) if r.collection == collection])


def _labelled(material: Material, indices: np.ndarray) -> np.ndarray:
    return np.array([i for i in indices if material.recordings[i].genres], dtype=int)


def leave_one_collection_out(material: Material, classes: Sequence[str], seed: int = 0,
                             progress: Progress | None = None) -> list[Held]:
    """One :class:`Held` per collection, from a head that never saw it."""
    out = []
    everyone = np.arange(len(material.recordings))
    for collection in corpora.COLLECTIONS:
        test = _labelled(material, _present(material, collection))
        if not len(test):
            continue
        if progress:
            progress(f"leave one collection out: {collection}")
        train = np.setdiff1d(everyone, _present(material, collection))
        trained = corpora.class_list([material.recordings[i] for i in train])
        model = fit_head(material, train, trained, seed)
        out.append(Held(collection, np.sort(test), logits_in(model, material, test, classes),
                        trained))
    return out


def one_to_another(material: Material, source: str, target: str, classes: Sequence[str],
                   seed: int = 0) -> Held:
    """Train on ``source`` alone, test on ``target``."""
    train = _present(material, source)
    trained = corpora.class_list([material.recordings[i] for i in train])
    test = np.sort(_labelled(material, _present(material, target)))
    model = fit_head(material, train, trained, seed)
    return Held(f"{source}-to-{target}", test, logits_in(model, material, test, classes), trained)


def grouped_kfold(material: Material, classes: Sequence[str], n_splits: int = 5,
                  seed: int = 0, progress: Progress | None = None) -> Held:
    """Out-of-fold logits of every labelled recording, folds grouped by who made it."""
    labelled = _labelled(material, np.arange(len(material.recordings)))
    groups = [material.recordings[i].group for i in labelled]
    logits = np.zeros((len(labelled), len(classes)))
    folds = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for k, (train, test) in enumerate(folds.split(labelled, groups=groups), start=1):
        if progress:
            progress(f"grouped {n_splits}-fold: fold {k}")
        model = fit_head(material, labelled[train], classes, seed)
        logits[test] = logits_in(model, material, labelled[test], classes)
    return Held("grouped-kfold", labelled, logits, list(classes))


def fault_filtered(material: Material, data_dir: Path, classes: Sequence[str],
                   seed: int = 0) -> Held:
    """GTZAN's fault-filtered test tracks with audio; trained on every other collection and on
    GTZAN's train+valid tracks only (the rest may share artists with the test tracks)."""
    train_ids = load_split(data_dir, "train") | load_split(data_dir, "valid")
    test_ids = load_split(data_dir, "test")
    recs = material.recordings
    test = np.array([i for i, r in enumerate(recs)
                     if r.collection == "gtzan" and r.clip_id in test_ids])
    train = np.array([i for i, r in enumerate(recs)
                      if r.collection != "gtzan" or r.clip_id in train_ids])
    model = fit_head(material, train, classes, seed)
    return Held("fault-filtered", np.sort(test), logits_in(model, material, test, classes),
                list(classes))


def baseline_scores(model: GenreModel, material: Material,
                    classes: Sequence[str]) -> dict[str, Any]:
    """Another model (the one serving now) on every collection, with its own calibration: the
    "before" of a comparison. Collections it was trained on are not held out for it."""
    out = {}
    for collection in corpora.COLLECTIONS:
        test = np.sort(_labelled(material, _present(material, collection)))
        if len(test):
            logits = logits_in(model, material, test, classes) / model.temperature_
            out[collection] = score(Held(collection, test, logits, list(model.genres)),
                                    material, classes)
    return out


def _subset(held: Held, material: Material, collection: str) -> Held:
    keep = np.array([material.recordings[i].collection == collection for i in held.test])
    return Held(f"{held.name}:{collection}", held.test[keep], held.logits[keep],
                held.trained_genres)


def evaluate(data_dir: Path, *, seed: int = 0, progress: Progress | None = None,
             material: Material | None = None) -> dict[str, Any]:
    """Every protocol of the module docstring, with calibration across collections."""
    say = progress or (lambda message: None)
    material = material or build_material(corpora.recordings(data_dir), seed=seed, progress=say)
    classes = corpora.class_list(material.recordings)
    loco = leave_one_collection_out(material, classes, seed, say)
    say("one collection to another")
    parts = [*loco, one_to_another(material, "gtzan", "mer", classes, seed),
             one_to_another(material, "mer", "gtzan", classes, seed)]
    parts.append(grouped_kfold(material, classes, seed=seed, progress=say))
    say("fault-filtered GTZAN split")
    parts.append(fault_filtered(material, data_dir, classes, seed))

    pooled_logits = np.concatenate([h.logits for h in loco])
    pooled_masks = np.concatenate([material.masks(classes)[h.test] for h in loco])
    temperature = fit_temperature(pooled_logits, pooled_masks)
    report: dict[str, Any] = {"classes": classes, "temperature": round(temperature, 4),
                              "protocols": {}}
    for held in parts:
        report["protocols"][held.name] = score(held, material, classes, temperature)
    kfold = parts[-2]
    report["protocols"]["grouped-kfold"]["per_collection"] = {
        c: score(_subset(kfold, material, c), material, classes, temperature)
        for c in corpora.COLLECTIONS if len(_subset(kfold, material, c).test)
    }
    for held in loco:  # out-of-sample calibration: the temperature of the other collections
        others = [h for h in loco if h is not held]
        t_other = fit_temperature(np.concatenate([h.logits for h in others]),
                                  np.concatenate([material.masks(classes)[h.test] for h in others]))
        crossed = score(held, material, classes, t_other)
        report["protocols"][held.name] |= {
            "ece_cross_fitted": crossed["ece"], "temperature_cross_fitted": round(t_other, 4),
            "confident_accuracy_cross_fitted": crossed["confident_accuracy"],
            "confident_share_cross_fitted": crossed["confident_share"],
        }
    probs = softmax(pooled_logits / temperature)
    report["thresholds"] = choose_unsure_thresholds(probs, pooled_masks)
    single = pooled_masks.sum(axis=1) == 1  # clips with one right answer: a confusion row each
    report["loco_confusion"] = confusion_matrix(
        pooled_masks[single].argmax(axis=1), probs[single].argmax(axis=1),
        labels=list(range(len(classes)))).tolist()
    report["loco_pooled"] = {"probs": probs.round(5).tolist(),
                             "masks": pooled_masks.astype(int).tolist()}
    return report


def train(data_dir: Path, out_dir: Path, *, seed: int = 0, progress: Progress | None = None,
          report: dict[str, Any] | None = None,
          material: Material | None = None) -> dict[str, Any]:
    """Train the shipped head on every recording and save it, with the temperature and the
    "unsure" thresholds of ``report`` (:func:`evaluate`; run here when not given)."""
    say = progress or (lambda message: None)
    started = time.monotonic()
    material = material or build_material(corpora.recordings(data_dir), seed=seed, progress=say)
    recordings = material.recordings
    report = report or evaluate(data_dir, seed=seed, progress=say, material=material)
    classes = report["classes"]
    say("training the head on every collection, held-out artists aside")
    model = fit_head(material, np.flatnonzero(~held_out(recordings)), classes, seed)
    model.temperature_ = report["temperature"]
    thresholds = dict(report["thresholds"])
    # Never shown as confident below CONFIDENT, whatever the held-out search allowed.
    thresholds["min_probability"] = max(thresholds.get("min_probability", 0.0), CONFIDENT)
    protocols = report["protocols"]
    crossed = {c: protocols[c]["ece_cross_fitted"] for c in corpora.COLLECTIONS
               if c in protocols}
    headline = {name: protocols[name]["accuracy"] for name in corpora.COLLECTIONS
                if name in protocols}
    metrics = {
        "protocol": "leave one collection out (mean over collections)",
        "accuracy": round(float(np.mean(list(headline.values()))), 4),
        "loco_accuracy": headline,
        "protocols": protocols,
    }
    model.save(out_dir, metadata={
        "version": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "featurizer": {"groups": list(DEFAULT_GROUPS), "window_s": 30.0},
        "training": {
            "data_fingerprint": fingerprint([r.path for r in recordings]),
            "collections": {c: sum(r.collection == c for r in recordings)
                            for c in corpora.COLLECTIONS},
            "n_rows": int(len(material.X)), "variants": list(VARIANTS), "crops_per_variant": CROPS,
            # /retrain compares the old and the new model on these, which neither trained on.
            "held_out_recordings": int(held_out(recordings).sum()),
            "seconds": round(time.monotonic() - started, 1),
        },
        "calibration": {
            "temperature": report["temperature"],
            "fitted_on": "pooled leave-one-collection-out predictions",
            "ece_per_held_out_collection": crossed,
            # The headline: the worst collection, measured with a temperature fitted elsewhere.
            "ece_after": max(crossed.values()),
            "ece_floor": max(protocols[c]["ece_floor"] for c in crossed),
        },
        "thresholds": thresholds,
        "metrics": metrics,
    })
    return metrics


def format_report(report: dict[str, Any]) -> str:
    """The report as a table: one line per protocol part."""
    lines = [f"classes ({len(report['classes'])}): {', '.join(report['classes'])}",
             f"temperature (pooled leave-one-collection-out): {report['temperature']:.2f}",
             "",
             f"{'protocol':<24}{'clips':>6}{'answerable':>11}{'accuracy':>9}{'ECE':>7}"
             f"{'ECE x-fit':>10}{'confident':>10}{'right when confident':>22}"]

    def line(name: str, part: dict[str, Any]) -> str:
        def pct(value: Any) -> str:
            return "-" if value is None else f"{value:.1%}"

        crossed = part.get("ece_cross_fitted")
        return (f"{name:<24}{part['n_clips']:>6}{part['n_answerable']:>11}"
                f"{pct(part['accuracy']):>9}{part['ece']:>7.3f}"
                f"{'-' if crossed is None else f'{crossed:.3f}':>10}"
                f"{pct(part['confident_share']):>10}{pct(part['confident_accuracy']):>22}")

    for name, part in report["protocols"].items():
        label = f"loco: {name}" if name in corpora.COLLECTIONS else name
        lines.append(line(label, part))
        for collection, sub in part.get("per_collection", {}).items():
            lines.append(line(f"  {collection}", sub))
    thresholds = report["thresholds"]
    lines += ["", f"unsure below top {thresholds['min_probability']} or lead "
                  f"{thresholds['min_margin']} (pooled held-out: confident on "
                  f"{thresholds['coverage']:.0%}, {thresholds['confident_accuracy']:.0%} right)"]
    return "\n".join(lines)
