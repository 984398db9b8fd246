"""Both model families measured on the same clips with the same protocol.

Protocol ("clip-kfold"): every labelled GTZAN clip with audio (full and partial), stratified
k-fold grouped by blocks of five consecutive track ids, so no track and, as far as GTZAN's
numbering tells, no artist sits on both sides. Per fold the learned head trains on the other
folds' clips (with augmentation) and the table model on every table row except the evaluated
tracks; both then classify the held-out clips from their audio. The 8 kHz copies are scored by
the fold model that never saw their track, for robustness only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from genre_core.data import audio_clips, genre_of, load_split
from genre_core.evaluation import Evaluation, fit_temperature
from genre_core.features import FEATURE_NAMES
from genre_core.learned import build_clip_set, make_head, track_block
from genre_core.model import GENRES, GenreModel, softmax
from genre_core.training import audio_features, calibration_report, table_training_set

Progress = Callable[[str], None]
FAMILIES = ("table", "musicnn")


def compare(
    data_dir: Path, *, groups: Sequence[str] = ("tags", "penultimate"), n_splits: int = 5,
    seed: int = 0, families: Sequence[str] = FAMILIES, progress: Progress | None = None,
) -> dict[str, Any]:
    """Out-of-fold results of the families on the same clips; see the module docstring."""
    from genre_core.musicnn import MusicnnFeaturizer

    say = progress or (lambda message: None)
    featurizer = MusicnnFeaturizer(groups=groups)
    clips = audio_clips(data_dir, kinds=("full", "partial"))
    narrow = audio_clips(data_dir, kinds=("8khz",))
    y = np.array([GENRES.index(c.genre) for c in clips])
    tracks = np.array([c.track for c in clips])
    learned = build_clip_set(clips, featurizer, seed=seed, progress=say)
    learned_eval = build_clip_set(clips, featurizer, variants=("original",), crops=0)
    narrow_learned = build_clip_set(narrow, featurizer, variants=("original",), crops=0)
    with_table = "table" in families
    if with_table:
        say("table features of the clips")
        table_eval = np.stack([audio_features(c.path) for c in clips])
        narrow_table = np.stack([audio_features(c.path) for c in narrow])
        table = table_training_set(data_dir)

    logits = {family: np.zeros((len(clips), len(GENRES))) for family in families}
    narrow_logits = {family: np.zeros((len(narrow), len(GENRES))) for family in families}
    narrow_tracks = np.array([c.track for c in narrow])
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    blocks = [track_block(t) for t in tracks]
    for k, (_, test) in enumerate(folds.split(tracks, y, groups=blocks), start=1):
        say(f"comparison fold {k}/{n_splits}")
        held_out = set(tracks[test])
        head = make_head(featurizer.feature_names, seed)
        seen = np.isin(learned.tracks, list(held_out), invert=True)
        head.fit(learned.X[seen], learned.y[seen])
        logits["musicnn"][test] = head.logits(learned_eval.X[test])
        # 8 kHz copies: scored by a model that never saw their track (the first fold's model
        # for tracks without another copy among the clips).
        mine = np.isin(narrow_tracks, list(held_out)) | (
            (k == 1) & ~np.isin(narrow_tracks, tracks)
        )
        narrow_logits["musicnn"][mine] = head.logits(narrow_learned.X[mine])
        if with_table:
            table_model = GenreModel(list(FEATURE_NAMES), family="table", seed=seed)
            keep = np.isin(table.tracks, list(held_out), invert=True)
            table_model.fit(table.X[keep], table.y[keep])
            logits["table"][test] = table_model.logits(table_eval[test])
            narrow_logits["table"][mine] = table_model.logits(narrow_table[mine])

    test_tracks = load_split(data_dir, "test")
    in_test = np.isin(tracks, list(test_tracks))
    report: dict[str, Any] = {
        "protocol": "clip-kfold",
        "description": (
            f"{n_splits}-fold cross-validation over {len(clips)} labelled GTZAN clips "
            "(full and 15-20 s partial), grouped by blocks of 5 track ids (no track, and as far "
            "as GTZAN's numbering tells no artist, on both sides); table model trained on table "
            "rows excluding the evaluated tracks"
        ),
        "clips_per_genre": dict(sorted(Counter(c.genre for c in clips).items())),
        "head_features": list(groups),
        "families": {}, "calibration": {}, "oof": {},
        "fault_filtered_subset": {}, "narrowband_8khz": {},
    }
    for family in families:
        evaluation = Evaluation("clip-kfold", report["description"], y, logits[family])
        temperature = fit_temperature(logits[family], y)
        report["families"][family] = evaluation.summary(temperature)
        report["calibration"][family] = calibration_report(logits[family], y)
        report["oof"][family] = {"probs": softmax(logits[family] / temperature).tolist(),
                                 "y": y.tolist()}
        subset = logits[family][in_test].argmax(1) == y[in_test]
        report["fault_filtered_subset"][family] = {
            "accuracy": round(float(subset.mean()), 4) if subset.size else None,
            "n_clips": int(in_test.sum()),
            "clips_per_genre": dict(sorted(Counter(genre_of(t) for t in tracks[in_test]).items())),
        }
        narrow_hits = narrow_logits[family].argmax(1) == GENRES.index("classical")
        report["narrowband_8khz"][family] = {
            "classical_recall": round(float(narrow_hits.mean()), 4) if narrow else None,
            "n_clips": len(narrow),
        }
    return report
