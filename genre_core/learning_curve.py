"""How many corrections until the bot knows a server's music: a learning curve on real audio.

A server's music is played here by a collection the shared model never saw: 4Q-MER (AllMusic
previews). The base head is trained as :func:`crosscollection.fit_head` does, on the other
collections only (GTZAN + FMA); its classes are :func:`corpora.class_list` of those. A
*correction* is one clip of the server's that a user names the genre of: its rows (whole clip,
crops and shifted variant, as :func:`crosscollection.build_material` made them) join the
training rows with the clip's whole answer set as target, and every genre a correction names
joins the class list (with k = 0, MER's electronic, R&B and Latin are unknown and count as
wrong: that is what a user sees).

Protocol, per seed and per k:

* corrections: for every *unit* of the server's genres (genres its clips always carry together
  form one unit: AllMusic's "Pop/Rock" is pop, rock and metal at once), the first k clips of a
  seeded shuffle of the clips that carry it (all of them when fewer); picks grow with k;
* test: every other labelled clip of the server, except those by an artist (``group``) that has a
  corrected clip: the same artist is never on both sides;
* a clip is right when its top genre is one of its set (:func:`evaluation.top_is_right`);
  per unit, over the test clips whose one right answer it is; "not sure" as the shipped model
  decides it (its temperature and thresholds, :func:`shipped_calibration`);
* the clips left shrink as k grows, and small genres run out first; so every k of a seed is
  also scored on the same clips, those left after the largest k (:func:`common_clips`).

The head is trained as ``/retrain`` trains it (:func:`crosscollection.fit_head` with the
corrected clips' rows as ``extra``): shared rows plus community rows, every class weighing the
same. :func:`weight_study` asked whether community rows should weigh more (on seeds other than
the reported ones): 3 beat 1 by 0.6 points there and lost to it on the reported seeds, which is
noise, so they weigh the same (:data:`COMMUNITY_WEIGHT`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genre_core import corpora, crosscollection
from genre_core.corpora import Recording
from genre_core.crosscollection import CONFIDENT, Material
from genre_core.data import PROJECT_ROOT
from genre_core.evaluation import top_is_right
from genre_core.model import GenreModel, softmax

Progress = Callable[[str], None]
#: Community rows weigh as much as shared ones: the study could not tell 1, 3 and 10 apart.
COMMUNITY_WEIGHT = 1.0
KS = (0, 5, 10, 20)
SEEDS = range(5)
#: The seeds :func:`weight_study` chooses on: never the reported ones.
STUDY_SEEDS = (100, 101, 102)
STUDY_WEIGHTS = (1.0, 3.0, 10.0)
#: Units shown first in tables and charts (when present).
HIGHLIGHT = ("electronic", "rnb", "jazz", "metal/pop/rock", "reggae", "latin", "folk")
PROTOCOL = ("base head trained on {base} only ({community} never seen); k corrections per genre "
            "from {community}; test = the rest of {community} minus every clip by a corrected "
            "artist (same clips: the rest after the largest k); right when the top genre is in "
            "the clip's set")


# -- the protocol ----------------------------------------------------------------------------


def correction_units(recordings: Sequence[Recording]) -> list[tuple[str, ...]]:
    """The genres of ``recordings`` grouped by the clips that carry them: genres always carried
    together (AllMusic's "Pop/Rock": metal, pop, rock) are one unit, corrected and counted
    once. Sorted by name."""
    carriers: dict[str, frozenset[int]] = {}
    for genre in sorted({g for r in recordings for g in r.genres}):
        carriers[genre] = frozenset(i for i, r in enumerate(recordings) if genre in r.genres)
    units: dict[frozenset[int], list[str]] = {}
    for genre, clips in carriers.items():
        units.setdefault(clips, []).append(genre)
    return sorted(tuple(genres) for genres in units.values())


def unit_name(unit: Sequence[str]) -> str:
    return "/".join(unit)


def pick_corrections(material: Material, candidates: np.ndarray,
                     units: Sequence[Sequence[str]], k: int, seed: int) -> np.ndarray:
    """Per unit, the first ``k`` of a seeded shuffle of the ``candidates`` that carry it (all
    when fewer): the clips a user corrected. The shuffle depends on the seed and the unit only,
    so the picks of a smaller k are part of those of a larger one."""
    picked: set[int] = set()
    for n, unit in enumerate(units):
        carriers = np.array([i for i in candidates
                             if unit[0] in material.recordings[i].genres], dtype=int)
        order = np.random.default_rng([seed, n]).permutation(carriers)
        picked.update(int(i) for i in order[:k])
    return np.array(sorted(picked), dtype=int)


def remaining_clips(material: Material, candidates: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The ``candidates`` left to test: not corrected, and by no artist that has a corrected
    clip (sorted)."""
    taken = set(picked.tolist())
    corrected = {material.recordings[i].group for i in taken}
    return np.array(sorted(i for i in candidates
                           if i not in taken and material.recordings[i].group not in corrected),
                    dtype=int)


def shipped_calibration(model_dir: Path | None = None) -> dict[str, float] | None:
    """The shipped model's temperature and "unsure" thresholds (None when there is none)."""
    path = Path(model_dir or PROJECT_ROOT / "models" / "genre") / "metadata.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    thresholds = meta.get("thresholds", {})
    return {"temperature": float(meta.get("temperature", 1.0)),
            "min_probability": float(max(thresholds.get("min_probability", 0.0), CONFIDENT)),
            "min_margin": float(thresholds.get("min_margin", 0.0))}


def split(material: Material, community: str = "mer") -> tuple[np.ndarray, np.ndarray]:
    """The base's training recordings (every other collection) and the community's labelled
    clips (the candidates for corrections and tests)."""
    recs = material.recordings
    base = np.array([i for i, r in enumerate(recs) if r.collection != community], dtype=int)
    candidates = np.array([i for i, r in enumerate(recs)
                           if r.collection == community and r.genres], dtype=int)
    return base, candidates


def one_run(material: Material, k: int, seed: int, *, community: str = "mer",
            weight: float = COMMUNITY_WEIGHT, calibration: dict[str, float] | None = None,
            units: Sequence[Sequence[str]] | None = None,
            common: np.ndarray | None = None) -> dict[str, Any]:
    """One point of the curve: k corrections per unit picked with ``seed``, a head trained
    (with ``seed``) on the base plus those clips' rows, scored on the clips left; and, when
    given, on ``common`` too (the same clips for every k: see :func:`common_clips`)."""
    base, candidates = split(material, community)
    if units is None:
        units = correction_units([material.recordings[i] for i in candidates])
    picked = pick_corrections(material, candidates, units, k, seed)
    test = remaining_clips(material, candidates, picked)
    corrected = {g for i in picked for g in material.recordings[i].genres}
    classes = sorted(set(corpora.class_list([material.recordings[i] for i in base])) | corrected)
    rows = np.flatnonzero(np.isin(material.owner, picked))
    extra_masks = material.masks(classes)[material.owner[rows]]
    model = crosscollection.fit_head(material, base, classes, seed,
                                     extra=(material.X[rows], extra_masks), extra_weight=weight)
    out: dict[str, Any] = {
        "k": k, "seed": seed, "weight": weight, "classes": classes,
        "n_corrected": int(len(picked)), "n_corrected_rows": int(len(rows)),
        **_score(model, material, test, classes, units, calibration),
        "corrected": [material.recordings[i].clip_id for i in picked],
        "tested": [material.recordings[i].clip_id for i in test],
    }
    if common is not None:
        if set(common.tolist()) & set(picked.tolist()):
            raise ValueError("common test clips must not be corrected ones")
        out["common"] = _score(model, material, np.sort(common), classes, units, calibration)
    return out


def common_clips(material: Material, ks: Sequence[int], seed: int, community: str = "mer",
                 units: Sequence[Sequence[str]] | None = None) -> np.ndarray:
    """The clips left to test after the largest k: picks grow with k, so these are tested at
    every k of ``seed``, and the curve on them is not moved by a test set that changes."""
    _, candidates = split(material, community)
    if units is None:
        units = correction_units([material.recordings[i] for i in candidates])
    picked = pick_corrections(material, candidates, units, max(ks), seed)
    return remaining_clips(material, candidates, picked)


def _score(model: GenreModel, material: Material, test: np.ndarray, classes: Sequence[str],
           units: Sequence[Sequence[str]],
           calibration: dict[str, float] | None) -> dict[str, Any]:
    """Accuracy over ``test`` (sorted recording indices); per unit over the clips whose one
    right answer it is (a clip tagged "Pop/Rock" alone counts for metal/pop/rock; one also
    tagged Electronic counts in the overall figure only); "not sure" with ``calibration``."""
    logits = crosscollection.logits_in(model, material, test, classes)
    right = top_is_right(logits, material.masks(classes)[test])
    out: dict[str, Any] = {"n_test": int(len(test)),
                           "accuracy": float(right.mean()) if len(test) else None,
                           "per_unit": {}}
    for unit in units:
        only = np.array([material.recordings[i].genres == frozenset(unit) for i in test],
                        dtype=bool)
        out["per_unit"][unit_name(unit)] = {
            "n": int(only.sum()), "accuracy": float(right[only].mean()) if only.any() else None}
    if calibration and len(test):
        ranked = np.sort(softmax(logits / calibration["temperature"]), axis=1)
        sure = ((ranked[:, -1] >= calibration["min_probability"])
                & (ranked[:, -1] - ranked[:, -2] >= calibration["min_margin"]))
        out["unsure"] = float(1 - sure.mean())
        out["right_when_sure"] = float(right[sure].mean()) if sure.any() else None
    return out


def _stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds (of the values that exist)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    sd = float(np.std(present, ddof=1)) if len(present) > 1 else 0.0
    return {"mean": round(float(np.mean(present)), 4), "sd": round(sd, 4), "n": len(present)}


def _summarise_scores(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    units = scores[0]["per_unit"] if scores else {}
    return {
        "accuracy": _stats(s["accuracy"] for s in scores),
        "unsure": _stats(s.get("unsure") for s in scores),
        "right_when_sure": _stats(s.get("right_when_sure") for s in scores),
        "n_test": {"mean": float(np.mean([s["n_test"] for s in scores])),
                   "min": min(s["n_test"] for s in scores),
                   "max": max(s["n_test"] for s in scores)},
        "per_unit": {u: {**_stats(s["per_unit"][u]["accuracy"] for s in scores),
                         "n_test": float(np.mean([s["per_unit"][u]["n"] for s in scores]))}
                     for u in units},
    }


def summarise(runs: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per k: mean ± sd over seeds of accuracy, per unit, "not sure"; test-set sizes; the same
    on the common clips (``common``) where the runs have them."""
    out = {}
    for k in ks:
        at = [r for r in runs if r["k"] == k]
        out[k] = {**_summarise_scores(at),
                  "n_corrected": float(np.mean([r["n_corrected"] for r in at])),
                  "n_classes": float(np.mean([len(r["classes"]) for r in at]))}
        if at and all("common" in r for r in at):
            out[k]["common"] = _summarise_scores([r["common"] for r in at])
    return out


def learning_curve(material: Material, ks: Sequence[int] = KS, seeds: Iterable[int] = SEEDS, *,
                   community: str = "mer", weight: float = COMMUNITY_WEIGHT,
                   calibration: dict[str, float] | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """The curve: :func:`one_run` for every k and seed, and :func:`summarise` over seeds.

    ``calibration`` (temperature, min_probability, min_margin) decides "not sure"; default: the
    shipped model's (:func:`shipped_calibration`)."""
    started = time.monotonic()
    seeds = list(seeds)
    calibration = calibration if calibration is not None else shipped_calibration()
    base, candidates = split(material, community)
    units = correction_units([material.recordings[i] for i in candidates])
    runs = []
    for seed in seeds:
        common = common_clips(material, ks, seed, community, units)
        for k in ks:
            if progress:
                progress(f"learning curve: seed {seed}, k = {k}")
            runs.append(one_run(material, k, seed, community=community, weight=weight,
                                calibration=calibration, units=units, common=common))
    collections = sorted({material.recordings[i].collection for i in base})
    return {
        "protocol": PROTOCOL.format(base=" + ".join(collections), community=community),
        "base_collections": collections, "community": community,
        "n_candidates": int(len(candidates)), "units": [unit_name(u) for u in units],
        "ks": list(ks), "seeds": seeds, "weight": weight, "calibration": calibration,
        "summary": summarise(runs, ks), "runs": runs,
        "seconds": round(time.monotonic() - started, 1),
    }


def weight_study(material: Material, weights: Sequence[float] = STUDY_WEIGHTS,
                 ks: Sequence[int] = (5, 10, 20), seeds: Iterable[int] = STUDY_SEEDS, *,
                 community: str = "mer", progress: Progress | None = None) -> dict[str, Any]:
    """Should corrected rows weigh more than shared ones? Per weight: mean accuracy over ``ks``
    and ``seeds`` (choose on seeds that are not reported). ``best``: the highest mean; a tie
    (within 0.5 point) goes to the smaller weight."""
    seeds = list(seeds)
    out: dict[str, Any] = {"ks": list(ks), "seeds": seeds, "weights": {}}
    reference = None
    for weight in weights:
        runs = []
        for seed in seeds:
            for k in ks:
                if progress:
                    progress(f"weight study: weight {weight:g}, seed {seed}, k = {k}")
                runs.append(one_run(material, k, seed, community=community, weight=weight,
                                    calibration={}))
        summary = summarise(runs, ks)
        accuracies = np.array([r["accuracy"] for r in runs])
        reference = accuracies if reference is None else reference
        gain = accuracies - reference  # the same picks and test clips: paired by (seed, k)
        out["weights"][weight] = {
            "mean_accuracy": round(float(accuracies.mean()), 4),
            "gain_over_first": {"mean": round(float(gain.mean()), 4),
                                "sd": round(float(gain.std(ddof=1)), 4) if len(gain) > 1 else 0.0,
                                "wins": int((gain > 0).sum()), "runs": int(len(gain))},
            "per_k": {k: summary[k]["accuracy"] for k in ks},
            "per_unit": {k: {u: s["mean"] for u, s in summary[k]["per_unit"].items()}
                         for k in ks},
        }
    best = max(v["mean_accuracy"] for v in out["weights"].values())
    out["best"] = min(w for w, v in out["weights"].items() if v["mean_accuracy"] >= best - 0.005)
    return out


# -- reading it --------------------------------------------------------------------------------


def _pm(stats: dict[str, Any]) -> str:
    if stats.get("mean") is None:
        return "-"
    return f"{stats['mean']:.1%} ± {stats['sd'] * 100:.1f}"


def ordered_units(units: Sequence[str]) -> list[str]:
    """:data:`HIGHLIGHT` first (those present), then the rest by name."""
    return [u for u in HIGHLIGHT if u in units] + [u for u in units if u not in HIGHLIGHT]


def format_curve(report: dict[str, Any]) -> str:
    """The curve as text: one line per k (accuracy on the clips left, and on the clips left at
    the largest k, the same for every k), then accuracy per genre unit on the clips left whose
    one right answer it is (mean ± sd over seeds, in points; mean clips in brackets)."""
    summary = {int(k): v for k, v in report["summary"].items()}
    ks = sorted(summary)
    lines = [f"protocol: {report['protocol']}",
             f"seeds {report['seeds']} (mean ± sd); community rows weigh {report['weight']:g}",
             "",
             f"{'k per genre':>11}{'corrected':>10}{'test clips':>15}{'classes':>8}"
             f"{'accuracy':>14}{'same clips':>22}{'not sure':>14}{'right when sure':>17}"]
    for k in ks:
        s = summary[k]
        n = s["n_test"]
        clips = f"{n['mean']:.0f} ({n['min']}-{n['max']})"
        common = s.get("common")
        same = f"{_pm(common['accuracy'])} ({common['n_test']['mean']:.0f})" if common else "-"
        lines.append(f"{k:>11}{s['n_corrected']:>10.0f}{clips:>15}{s['n_classes']:>8.0f}"
                     f"{_pm(s['accuracy']):>14}{same:>22}{_pm(s['unsure']):>14}"
                     f"{_pm(s['right_when_sure']):>17}")
    lines += ["", f"{'genre (one right answer)':<26}" + "".join(f"{f'k={k}':>20}" for k in ks)]
    for unit in ordered_units(report["units"]):
        cells = []
        for k in ks:
            stats = summary[k]["per_unit"][unit]
            cells.append(f"{_pm(stats)} ({stats['n_test']:.0f})")
        lines.append(f"{unit:<26}" + "".join(f"{c:>20}" for c in cells))
    lines.append(f"\n{report['seconds']:.0f} s")
    return "\n".join(lines)


def format_study(study: dict[str, Any]) -> str:
    ks = study["ks"]
    lines = [f"community-row weight, seeds {study['seeds']}",
             f"{'weight':>7}{'mean':>8}" + "".join(f"{f'k={k}':>16}" for k in ks)
             + f"{'paired gain':>20}"]
    for weight, v in study["weights"].items():
        g = v["gain_over_first"]
        gain = f"{g['mean'] * 100:+.1f} ± {g['sd'] * 100:.1f} ({g['wins']}/{g['runs']})"
        lines.append(f"{weight:>7g}{v['mean_accuracy']:>8.1%}"
                     + "".join(f"{_pm(v['per_k'][k]):>16}" for k in ks) + f"{gain:>20}")
    lines.append(f"best: {study['best']:g}")
    return "\n".join(lines)


if __name__ == "__main__":  # the weight study: python -m genre_core.learning_curve
    import sys

    from genre_core.data import default_data_dir

    def _say(message: str) -> None:
        print(f"· {message}", file=sys.stderr)

    built = crosscollection.build_material(corpora.recordings(default_data_dir()), progress=_say)
    print(format_study(weight_study(built, progress=_say)))
