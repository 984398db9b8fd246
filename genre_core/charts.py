"""Pictures of an evaluation, for the README and for people who would rather look than read:
accuracy per protocol, the confusion matrix and the reliability diagram of held-out answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genre_core.evaluation import top_is_right
from genre_core.result import display_name


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files
    import matplotlib.pyplot as plt

    return plt


def evaluation_charts(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``accuracy.png``, ``confusion.png`` and ``reliability.png`` for a cross-collection
    report (:func:`genre_core.crosscollection.evaluate`) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pooled = report["loco_pooled"]
    return [
        accuracy_chart(report["protocols"], out_dir / "accuracy.png"),
        confusion_chart(np.asarray(report["loco_confusion"]), report["classes"],
                        out_dir / "confusion.png"),
        reliability_chart(np.asarray(pooled["probs"]), np.asarray(pooled["masks"]),
                          out_dir / "reliability.png"),
    ]


def accuracy_chart(protocols: dict[str, Any], out: Path) -> Path:
    """One bar per protocol part: accuracy, and accuracy of the confident answers."""
    plt = _pyplot()
    names = [n for n, p in protocols.items() if p.get("accuracy") is not None]
    labels = [f"held out: {n}" if "-" not in n else n for n in names]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    y = np.arange(len(names))
    ax.barh(y - 0.2, [protocols[n]["accuracy"] for n in names], 0.4, label="all answers")
    ax.barh(y + 0.2, [protocols[n]["confident_accuracy"] or 0 for n in names], 0.4,
            label="confident answers (top ≥ 0.8)")
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.axvline(0.9, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of clips whose top genre is one of their tags")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("accuracy by protocol")
    return _save(fig, plt, out)


def confusion_chart(confusion: np.ndarray, classes: list[str], out: Path) -> Path:
    """Rows: the clip's one right genre; columns: the answer; each row as shares."""
    plt = _pyplot()
    shares = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    names = [display_name(c) for c in classes]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), [f"{n} ({int(t)})" for n, t in
                                      zip(names, confusion.sum(axis=1), strict=True)])
    for i, j in zip(*np.nonzero(confusion), strict=True):
        ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xlabel("answered")
    ax.set_ylabel("right genre (clips)")
    ax.set_title("held-out collections: who gets taken for whom")
    return _save(fig, plt, out)


def reliability_chart(probs: np.ndarray, masks: np.ndarray, out: Path, bins: int = 10) -> Path:
    """How often answers given with each confidence were right, against the diagonal."""
    plt = _pyplot()
    confidence, right = probs.max(axis=1), top_is_right(probs, masks)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges) - 1, 0, bins - 1)
    centres, rates, counts = [], [], []
    for b in range(bins):
        if (which == b).any():
            centres.append(confidence[which == b].mean())
            rates.append(right[which == b].mean())
            counts.append(int((which == b).sum()))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    ax.plot(centres, rates, marker="o", label="held-out collections")
    for x, y, n in zip(centres, rates, counts, strict=True):
        ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence of the answer")
    ax.set_ylabel("share right")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("reliability (numbers: clips per bin)")
    return _save(fig, plt, out)


def _save(fig: Any, plt: Any, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def learning_curve_chart(report: dict[str, Any], out: Path, max_genres: int = 7) -> Path:
    """Accuracy against corrections per genre (:func:`genre_core.learning_curve.learning_curve`):
    overall and a few genres, mean over seeds with ± one standard deviation as error bars."""
    from genre_core.learning_curve import ordered_units

    plt = _pyplot()
    summary = {int(k): v for k, v in report["summary"].items()}
    ks = sorted(summary)
    fig, ax = plt.subplots(figsize=(9.5, 5))
    lines = [("all clips left", [summary[k]["accuracy"] for k in ks])]
    if all("common" in summary[k] for k in ks):
        lines.append((f"the same clips at every k "
                      f"({summary[ks[0]]['common']['n_test']['mean']:.0f})",
                      [summary[k]["common"]["accuracy"] for k in ks]))
    lines += [(" / ".join(display_name(g) for g in unit.split("/")),
               [summary[k]["per_unit"][unit] for k in ks])
              for unit in ordered_units(report["units"])[:max_genres]]
    spread = 0.25 * (ks[-1] - ks[0]) / max(len(ks) * len(lines), 1)  # keep error bars apart
    for n, (label, stats) in enumerate(lines):
        keep = [i for i, s in enumerate(stats) if s["mean"] is not None]
        x = np.array([ks[i] for i in keep]) + (n - len(lines) / 2) * spread
        overall = label.startswith(("all clips", "the same clips"))
        ax.errorbar(x, [stats[i]["mean"] for i in keep], yerr=[stats[i]["sd"] for i in keep],
                    marker="o", capsize=3, label=label, color="black" if overall else None,
                    linestyle="--" if label.startswith("the same") else "-",
                    linewidth=2.5 if overall else 1.2, markersize=6 if overall else 4,
                    zorder=3 if overall else 2)
    ax.set_xticks(ks)
    ax.set_ylim(0, 1)
    ax.set_xlabel("corrections per genre (clips of the server's music)")
    ax.set_ylabel("share of clips whose top genre is one of their tags\n"
                  "(genres: clips with that one right answer)")
    ax.grid(axis="y", linestyle=":", linewidth=0.8)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    name = {"mer": "4Q-MER"}.get(report["community"], report["community"])
    ax.set_title(f"a base that never heard {name}, corrected k clips per genre\n"
                 f"(mean ± sd over {len(report['seeds'])} seeds; other artists tested)",
                 fontsize=10)
    return _save(fig, plt, out)


def detector_chart(collections: dict[str, dict[str, Any]],
                   cues_alone: dict[str, dict[str, Any]] | None, out: Path) -> Path:
    """Per real source, the share of held-out whole clips the music detector called right
    (music recall for a collection, not-music recall for speech and sounds), with and without
    the network check, against the targets (:func:`detector_training.recall_by_source`)."""
    from genre_core.detector_training import (
        REAL_SOURCES,
        TARGET_MUSIC_RECALL,
        TARGET_NOT_MUSIC_RECALL,
    )

    plt = _pyplot()
    names = [s for s in REAL_SOURCES if s in collections]  # music first
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(names))

    def shares(table: dict[str, dict[str, Any]]) -> list[float]:
        return [table[n].get("music_recall", table[n].get("not_music_recall", 0.0))
                for n in names]

    if cues_alone:
        ax.bar(x - 0.2, shares(cues_alone), 0.4, label="cues alone", color="#bbbbbb")
    ax.bar(x + (0.2 if cues_alone else 0), shares(collections), 0.4,
           label="cues + network (shipped)")
    for i, n in enumerate(names):
        target = TARGET_MUSIC_RECALL if "music_recall" in collections[n] else \
            TARGET_NOT_MUSIC_RECALL
        ax.hlines(target, i - 0.45, i + 0.45, color="black", linestyle=":", linewidth=1)
    labels = [f"{n}\n({'music' if 'music_recall' in collections[n] else 'not music'})"
              for n in names]
    ax.set_xticks(x, labels)
    ax.set_ylim(0.85, 1.0)
    ax.set_ylabel("held-out clips called right")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("is it music? 5 folds, whole sources held out (dotted: the targets)")
    return _save(fig, plt, out)
