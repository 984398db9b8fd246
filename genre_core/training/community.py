"""``/retrain`` with what the servers taught: the shared collections plus the community's clips.

The bot hands the child process the clips that count (:meth:`LabelStore.training_examples`)
as a folder (:func:`genre_core.store.labels.write_examples`): a manifest, and per clip its
window feature rows and its kept audio. Rows made by another featurizer than the serving one
are made again from the audio, so retraining never depends on the network staying the same.

Honest comparison: the old and the new model answer the same held-out clips:

* the shared collections' held-out artists (:func:`crosscollection.held_out`, one artist group
  in five; the shipped model never trained on them either);
* one community upload in five (by a hash of its id, at least one per genre that has three or
  more), whole uploads only: one upload is never on both sides.

The new model is what was measured: it is published as trained, without the held-out clips.
"""

from __future__ import annotations

import io
import json
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from genre_core import corpora
from genre_core.data import fingerprint
from genre_core.store.labels import MANIFEST

Progress = Callable[[str], None]
#: A genre the shared collections do not have joins the model with at least this many community
#: clips, from at least this many different uploaders (defaults of the bot's settings).
MIN_CLIPS = 20
MIN_UPLOADERS = 3
#: One community upload in this many is held out.
HOLD_OUT_EVERY = 5


@dataclass(frozen=True)
class CommunityClip:
    """A community clip as training reads it: its window feature rows and right answers."""

    clip_id: int
    uploader_id: int
    genres: frozenset[str]
    rows: np.ndarray


def read_examples(directory: Path, featurizer: Any, featurizer_key: str,
                  progress: Progress | None = None) -> tuple[list[CommunityClip], dict[str, int]]:
    """The community clips with genres, as feature rows of ``featurizer``; and counts of those
    left out (``not_music``, ``unusable``: neither matching rows nor audio)."""
    from genre_core.audio import analysis_windows, decode

    listed = directory / MANIFEST
    manifest = json.loads(listed.read_text()) if listed.is_file() else []
    clips, skipped = [], Counter()
    for i, entry in enumerate(manifest):
        if not entry["genres"]:
            skipped["not_music"] += 1
            continue
        rows_file, audio_file = (directory / f"{entry['clip_id']}.{ext}" for ext in ("npy", "ogg"))
        if entry["featurizer"] == featurizer_key and rows_file.is_file():
            rows = np.load(io.BytesIO(rows_file.read_bytes()), allow_pickle=False)
        elif audio_file.is_file():
            if progress and i % 20 == 0:
                progress(f"analysing community clips again: {i}/{len(manifest)}")
            audio = decode(audio_file.read_bytes())
            windows = [w for _, w in analysis_windows(audio, featurizer.window_s, 6)]
            rows = np.stack([featurizer.transform(w, audio.sr) for w in windows])
        else:
            skipped["unusable"] += 1
            continue
        clips.append(CommunityClip(int(entry["clip_id"]), int(entry["uploader_id"]),
                                   frozenset(entry["genres"]), np.asarray(rows, np.float32)))
    return clips, dict(skipped)


def community_classes(shared: Sequence[str], clips: Sequence[CommunityClip],
                      min_clips: int = MIN_CLIPS,
                      min_uploaders: int = MIN_UPLOADERS) -> tuple[list[str], dict[str, str]]:
    """The class list: the shared collections' genres, plus each community genre with enough
    clips from enough uploaders; and, for the genres still short, what they have."""
    clips_of: Counter[str] = Counter()
    uploaders_of: dict[str, set[int]] = defaultdict(set)
    for clip in clips:
        for genre in clip.genres:
            clips_of[genre] += 1
            uploaders_of[genre].add(clip.uploader_id)
    joined, waiting = set(shared), {}
    for genre in sorted(set(clips_of) - set(shared)):
        n, people = clips_of[genre], len(uploaders_of[genre])
        if n >= min_clips and people >= min_uploaders:
            joined.add(genre)
        else:
            waiting[genre] = (f"{n}/{min_clips} clips from {people}/{min_uploaders} uploaders")
    return sorted(joined), waiting


def held_out_clips(clips: Sequence[CommunityClip]) -> np.ndarray:
    """Which community clips are held out: one in :data:`HOLD_OUT_EVERY` by a hash of the
    upload, and at least one of every genre with three clips or more."""
    digest = [zlib.crc32(f"community:{c.clip_id}".encode()) for c in clips]
    held = np.array([d % HOLD_OUT_EVERY == 0 for d in digest], dtype=bool)
    by_genre: dict[str, list[int]] = defaultdict(list)
    for i, clip in enumerate(clips):
        if len(clip.genres) == 1:
            by_genre[next(iter(clip.genres))].append(i)
    for members in by_genre.values():
        if len(members) >= 3 and not held[members].any():
            held[min(members, key=lambda i: digest[i])] = True
    return held


def retrain(data_dir: Path, out_dir: Path, *, community_dir: Path, current_dir: Path,
            seed: int = 0, progress: Progress | None = None, min_clips: int = MIN_CLIPS,
            min_uploaders: int = MIN_UPLOADERS,
            shared_min_clips: int = corpora.MIN_CLIPS_PER_GENRE) -> dict[str, Any]:
    """Train on the shared collections and the community's clips; measure the new and the
    current model on the same held-out clips; save the new one in ``out_dir``.

    Returns metrics with ``accuracy`` (new) and ``old_accuracy`` (current, same clips), the
    same split into ``shared`` and ``community``, ``per_genre`` before and after, and
    ``community`` (clips used, held out, left out, genres still waiting).
    """
    from genre_core import crosscollection
    from genre_core.featurizers import featurizer_id
    from genre_core.learned import DEFAULT_GROUPS
    from genre_core.model import GenreModel, softmax
    from genre_core.musicnn import MusicnnFeaturizer
    from genre_core.pipeline import aggregate

    say = progress or (lambda message: None)
    started = time.monotonic()
    featurizer = MusicnnFeaturizer(groups=DEFAULT_GROUPS)
    say("reading the community's clips")
    clips, skipped = read_examples(Path(community_dir), featurizer, featurizer_id(featurizer),
                                   say)
    material = crosscollection.build_material(corpora.recordings(data_dir), seed=seed,
                                              progress=say)
    shared_classes = corpora.class_list(material.recordings, shared_min_clips)
    classes, waiting = community_classes(shared_classes, clips, min_clips, min_uploaders)
    clips = [c for c in clips if c.genres & set(classes)]
    shared_held = crosscollection.held_out(material.recordings)
    community_held = held_out_clips(clips)
    say(f"training on {len(material.recordings)} shared and {len(clips)} community clips")
    train_clips = [c for c, held in zip(clips, community_held, strict=True) if not held]
    shared_train = np.flatnonzero(~shared_held)
    model = _fit(material, shared_train, train_clips, classes, seed)
    say("calibrating on cross-fitted predictions of the training clips")
    model.temperature_ = cross_fitted_temperature(material, shared_train, train_clips, classes,
                                                  seed)

    say("measuring the new and the current model on the same held-out clips")
    current = GenreModel.load(Path(current_dir))
    held_clips = [c for c, held in zip(clips, community_held, strict=True) if held]
    shared_test = np.flatnonzero(shared_held & np.array([bool(r.genres)
                                                         for r in material.recordings]))
    figures = {}
    for name, candidate in (("new", model), ("old", current)):
        if list(candidate.feature_names) != list(material.feature_names):
            figures[name] = None  # another family: it cannot read these rows
            continue
        logits = crosscollection.logits_in(candidate, material, shared_test, candidate.genres)
        # A held-out upload is answered as the bot answers it: its windows aggregated.
        songs = np.array([aggregate(candidate.predict_proba(c.rows)) for c in held_clips])
        figures[name] = (_spread(candidate, softmax(logits / candidate.temperature_), classes),
                         _spread(candidate, songs.reshape(-1, len(candidate.genres)), classes))
    shared_masks = material.masks(classes)[shared_test]
    community_masks = np.array([[g in c.genres for g in classes] for c in held_clips],
                               dtype=bool).reshape(-1, len(classes))
    metrics = _compare(figures, shared_masks, community_masks, classes)
    metrics["community"] = {
        "clips_used": len(train_clips), "clips_held_out": len(held_clips),
        "left_out": skipped, "waiting": waiting,
        "new_genres": sorted(set(classes) - set(current.genres)),
    }
    metrics["protocol"] = ("held out: 1 shared artist group in 5 and 1 community upload in 5; "
                           "the new and the current model on the same clips")
    metrics["seconds"] = round(time.monotonic() - started, 1)

    thresholds = dict(current.metadata_.get("thresholds", {}))
    calibration = {
        "temperature": round(model.temperature_, 4),
        "fitted_on": "cross-fitted predictions of the training clips, leaving one collection "
                     "out at a time (the community's clips are one)",
        "ece_after": metrics.get("ece"),
    }
    model.save(out_dir, metadata={
        "version": datetime.now(UTC).strftime("%Y%m%d-%H%M%S"),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "featurizer": {"groups": list(DEFAULT_GROUPS), "window_s": 30.0},
        "training": {
            "data_fingerprint": fingerprint([r.path for r in material.recordings]),
            "collections": {c: sum(r.collection == c for r in material.recordings)
                            for c in corpora.COLLECTIONS},
            "community_clips": len(train_clips),
        },
        "calibration": calibration,
        "thresholds": thresholds,
        "metrics": metrics,
    })
    say("done")
    return metrics


#: Folds of the cross-fitted predictions the temperature is fitted on.
FOLDS = 3


def _rows(clips: Sequence[CommunityClip], classes: Sequence[str],
          width: int) -> tuple[np.ndarray, np.ndarray]:
    """The window rows of ``clips`` and their 0/1 masks over ``classes``."""
    if not clips:
        return np.zeros((0, width), np.float32), np.zeros((0, len(classes)), dtype=bool)
    X = np.concatenate([c.rows for c in clips])
    mask = np.array([[g in c.genres for g in classes] for c in clips for _ in c.rows], dtype=bool)
    return X, mask


def _fit(material: Any, shared: np.ndarray, clips: Sequence[CommunityClip],
         classes: Sequence[str], seed: int) -> Any:
    from genre_core import crosscollection

    extra = _rows(clips, classes, material.X.shape[1])
    return crosscollection.fit_head(material, shared, classes, seed, extra=extra)


def cross_fitted_temperature(material: Any, shared: np.ndarray,
                             clips: Sequence[CommunityClip], classes: Sequence[str],
                             seed: int = 0, folds: int = FOLDS) -> float:
    """The temperature that calibrates predictions each made by a head that did not train on
    that clip. As for the shipped model, folds are whole collections (the community's clips
    are one of their own), so that it holds on music from elsewhere; where that leaves nothing
    to measure (a single collection), folds are artists (community: uploads). The class list
    changes with the community's genres, so the temperature is fitted anew."""
    from sklearn.model_selection import GroupKFold

    from genre_core.evaluation import fit_temperature

    labelled = np.array([i for i in shared if material.recordings[i].genres], dtype=int)
    everyone = np.arange(len(clips))
    by_collection = [(labelled[[material.recordings[i].collection == c for i in labelled]],
                      np.array([], dtype=int)) for c in corpora.COLLECTIONS]
    by_collection.append((np.array([], dtype=int), everyone))
    logits, masks = _cross_fitted(material, shared, clips, classes, seed, by_collection)
    if not len(masks):
        groups = [material.recordings[i].group for i in labelled]
        splits = GroupKFold(n_splits=min(folds, len(set(groups)))).split(labelled, groups=groups)
        by_artist = [(labelled[test], everyone[everyone % folds == k])
                     for k, (_, test) in enumerate(splits)]
        logits, masks = _cross_fitted(material, shared, clips, classes, seed, by_artist)
    return fit_temperature(logits, masks) if len(masks) else 1.0


def _cross_fitted(material: Any, shared: np.ndarray, clips: Sequence[CommunityClip],
                  classes: Sequence[str], seed: int,
                  folds: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Logits and masks of each fold's test recordings and community clips, from a head trained
    on everything else; only those the head could answer (one whose genres it never saw says
    nothing of how sure the final head, which sees every genre, should be)."""
    from genre_core import crosscollection

    all_masks = material.masks(classes)
    logits, masks = [np.zeros((0, len(classes)))], [np.zeros((0, len(classes)), dtype=bool)]
    for test_shared, test_clips in folds:
        if not len(test_shared) and not len(test_clips):
            continue
        train = np.setdiff1d(shared, test_shared)
        train_clips = [c for i, c in enumerate(clips) if i not in set(test_clips)]
        trained = (all_masks[train].any(axis=0)
                   | _rows(train_clips, classes, material.X.shape[1])[1].any(axis=0))
        head = _fit(material, train, train_clips, classes, seed)
        fold_logits = [crosscollection.logits_in(head, material, test_shared, classes)
                       if len(test_shared) else np.zeros((0, len(classes)))]
        fold_masks = [all_masks[np.sort(test_shared)]]
        for i in test_clips:  # a clip's logits: the mean over its windows
            fold_logits.append(head.logits(clips[i].rows).mean(axis=0, keepdims=True))
            fold_masks.append(np.array([[g in clips[i].genres for g in classes]]))
        fold_mask = np.concatenate(fold_masks).astype(bool)
        answerable = (fold_mask & trained).any(axis=1)
        logits.append(np.concatenate(fold_logits)[answerable])
        masks.append(fold_mask[answerable])
    return np.concatenate(logits), np.concatenate(masks)


def _spread(model: Any, probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Probabilities over the model's own genres, spread over ``classes`` (0 where unknown)."""
    out = np.zeros((len(probs), len(classes)))
    for j, genre in enumerate(model.genres):
        if genre in classes:
            out[:, list(classes).index(genre)] = probs[:, j]
    return out


def _compare(figures: dict[str, Any], shared_masks: np.ndarray, community_masks: np.ndarray,
             classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy of each model on the shared, the community and all held-out clips, and per
    genre (clips with one right answer)."""
    from genre_core.evaluation import expected_calibration_error, top_is_right

    masks = np.concatenate([shared_masks, community_masks])
    out: dict[str, Any] = {"n_held_out": int(len(masks)),
                           "n_shared_held_out": int(len(shared_masks)),
                           "n_community_held_out": int(len(community_masks))}
    per_genre: dict[str, dict[str, Any]] = {}
    for name, prefix in (("new", ""), ("old", "old_")):
        if figures.get(name) is None:
            continue
        shared, community = figures[name]
        probs = np.concatenate([shared, community])
        right = top_is_right(probs, masks)
        out[f"{prefix}accuracy"] = round(float(right.mean()), 4) if len(right) else None
        out[f"{prefix}ece"] = (round(expected_calibration_error(probs, masks), 4)
                               if len(right) else None)
        for part, probs, part_masks in (("shared", shared, shared_masks),
                                        ("community", community, community_masks)):
            part_right = top_is_right(probs, part_masks) if len(part_masks) else np.zeros(0)
            out[f"{prefix}{part}_accuracy"] = (round(float(part_right.mean()), 4)
                                               if len(part_right) else None)
        single = masks.sum(axis=1) == 1
        for j, genre in enumerate(classes):
            only = single & masks[:, j]
            if only.any():
                entry = per_genre.setdefault(genre, {"n": int(only.sum())})
                entry["after" if name == "new" else "before"] = round(float(right[only].mean()), 4)
    out["per_genre"] = per_genre
    return out
