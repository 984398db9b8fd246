"""What ``/retrain`` makes of the community's clips: which genres join, which clips are held out,
and rows made again from the kept audio when the featurizer changed."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from synth import music_like

from genre_core.audio import encode_opus
from genre_core.featurizers import TableFeaturizer, featurizer_id
from genre_core.store.labels import Example, write_examples
from genre_core.training import is_not_worse
from genre_core.training.community import (
    CommunityClip,
    community_classes,
    held_out_clips,
    read_examples,
)


def clip(clip_id: int, uploader: int, *genres: str) -> CommunityClip:
    return CommunityClip(clip_id, uploader, frozenset(genres), np.zeros((1, 3), np.float32))


def test_a_new_genre_joins_with_enough_clips_from_enough_uploaders() -> None:
    clips = ([clip(i, i % 3, "funk") for i in range(6)]  # 6 clips, 3 uploaders
             + [clip(10 + i, 7, "dub") for i in range(9)]  # 9 clips, 1 uploader
             + [clip(20, 1, "jazz")])
    classes, waiting = community_classes(["jazz", "rock"], clips, min_clips=5, min_uploaders=2)
    assert classes == ["funk", "jazz", "rock"]
    assert waiting == {"dub": "9/5 clips from 1/2 uploaders"}


def test_held_out_uploads_are_whole_and_every_common_genre_has_one() -> None:
    clips = [clip(i, 1, "funk") for i in range(3)] + [clip(100 + i, 2, "dub") for i in range(40)]
    held = held_out_clips(clips)
    assert held.tolist() == held_out_clips(clips).tolist()  # the same split every time
    assert held[:3].sum() >= 1
    assert 4 <= held[3:].sum() <= 14  # about one in five of 40
    assert not held_out_clips([clip(1, 1, "funk"), clip(2, 1, "funk")]).all()


def test_rows_of_another_featurizer_are_made_again_from_the_kept_audio(tmp_path: Path) -> None:
    featurizer = TableFeaturizer()
    key = featurizer_id(featurizer)
    audio = encode_opus(music_like(12.0), 22050)
    rows = io.BytesIO()
    np.save(rows, np.ones((2, 57), np.float32))
    examples = [
        Example(1, 10, frozenset({"jazz"}), "agreed", key, rows.getvalue(), None),
        Example(2, 11, frozenset({"rock"}), "admin", "musicnn:older", b"stale", audio),
        Example(3, 12, frozenset({"pop"}), "admin", "musicnn:older", b"stale", None),
        Example(4, 13, frozenset(), "agreed", key, rows.getvalue(), None),
    ]
    assert write_examples(tmp_path, examples) == 4
    clips, skipped = read_examples(tmp_path, featurizer, key)
    assert skipped == {"unusable": 1, "not_music": 1}
    by_id = {c.clip_id: c for c in clips}
    assert set(by_id) == {1, 2}
    assert np.array_equal(by_id[1].rows, np.ones((2, 57)))
    remade = by_id[2].rows
    assert remade.shape == (1, 57) and np.isfinite(remade).all()
    assert by_id[2].genres == {"rock"} and by_id[2].uploader_id == 11


def test_not_worse_compares_both_models_on_the_same_clips_when_measured() -> None:
    assert is_not_worse({"accuracy": 0.7, "old_accuracy": 0.7}, {"accuracy": 0.9})
    assert not is_not_worse({"accuracy": 0.69, "old_accuracy": 0.7}, {"accuracy": 0.1})
    assert is_not_worse({"accuracy": 0.8}, {"accuracy": 0.8})  # no same-clip figure: stored ones
