"""The three music collections under ``../shared/data`` as recordings with every right answer.

GTZAN names one genre per track. AllMusic (4Q-MER) and the Free Music Archive tag clips in their
own words; :data:`MER_TAGS` and :data:`FMA_TAGS` map those words to ours. One tag can stand for
several of our genres (AllMusic's "Pop/Rock" is pop, rock or metal), and a clip can carry several
tags: its genres are then a set, and any of them is a right answer. Tags that name no genre of
ours (International, Vocal, Holiday...) are dropped; a clip left with none is music without a
genre label.

Each recording has a ``group``: who made it. Folds keep a group on one side of a split: MER and
FMA by artist name; GTZAN by blocks of five consecutive ids (it numbers an artist's tracks
consecutively).
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from genre_core.data import AUDIO_EXTENSIONS, genre_of, track_id
from genre_core.learned import track_block

COLLECTIONS = ("gtzan", "mer", "fma")
#: AllMusic's genre tags (4Q-MER's ``allmusic_genres``) → our genres.
MER_TAGS: dict[str, tuple[str, ...]] = {
    "Pop/Rock": ("pop", "rock", "metal"), "Rap": ("hiphop",), "Electronic": ("electronic",),
    "Jazz": ("jazz",), "Blues": ("blues",), "Country": ("country",), "R&B": ("rnb",),
    "Reggae": ("reggae",), "Latin": ("latin",), "Folk": ("folk",), "Classical": ("classical",),
}
#: The Free Music Archive artists' ID3 genres → ours.
FMA_TAGS: dict[str, tuple[str, ...]] = {
    "Folk": ("folk",), "Free Folk": ("folk",), "Latin": ("latin",), "Hip-Hop": ("hiphop",),
    "Pop": ("pop",), "Rock": ("rock",), "Punk": ("rock",), "Krautrock": ("rock",),
    "Metal": ("metal",), "Reggae - Dub": ("reggae",),
}
#: A genre joins the class list with at least this many labelled clips (all collections): 20
#: keeps every GTZAN genre (disco has 24 tracks with audio) and needs a real body of examples.
MIN_CLIPS_PER_GENRE = 20


@dataclass(frozen=True)
class Recording:
    """One labelled music clip."""

    collection: str
    clip_id: str
    path: Path
    genres: frozenset[str]  # every right answer; empty when no tag names a genre of ours
    group: str  # who made it (artist, or a GTZAN id block): never on both sides of a split
    tags: str = ""  # the collection's own words, as given


def gtzan(data_dir: Path) -> list[Recording]:
    """Every full GTZAN track with audio (``gtzan/audio``)."""
    out = []
    for path in sorted((Path(data_dir) / "gtzan" / "audio").glob("*")):
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            track = track_id(path.name)
            genre = genre_of(track)
            out.append(Recording("gtzan", track, path, frozenset({genre}), gtzan_group(track),
                                 genre))
    return out


def gtzan_group(track: str, size: int = 5) -> str:
    """``blues.00012`` → ``gtzan:blues.2``: blocks of ``size`` consecutive ids."""
    return f"gtzan:{track_block(track, size)}"


def mer(data_dir: Path) -> list[Recording]:
    """4Q-MER's AllMusic previews, their tags mapped with :data:`MER_TAGS`."""
    root = Path(data_dir) / "mer4q"
    return [
        Recording("mer", row["song"], root / "audio" / f"{row['song']}.opus",
                  _mapped(row["allmusic_genres"].split(";"), MER_TAGS),
                  f"mer:{row['artist'].strip().lower()}", row["allmusic_genres"])
        for row in _rows(root / "labels.csv")
        if (root / "audio" / f"{row['song']}.opus").is_file()
    ]


def fma(data_dir: Path) -> list[Recording]:
    """The Free Music Archive clips, their ID3 genres mapped with :data:`FMA_TAGS`."""
    root = Path(data_dir) / "fma"
    return [
        Recording("fma", row["track"], root / "audio" / f"{row['track']}.opus",
                  _mapped([row["id3_genre"]], FMA_TAGS),
                  f"fma:{row['artist'].strip().lower()}", row["id3_genre"])
        for row in _rows(root / "labels.csv")
        if (root / "audio" / f"{row['track']}.opus").is_file()
    ]


def recordings(data_dir: Path, collections: Sequence[str] = COLLECTIONS) -> list[Recording]:
    """The recordings of ``collections`` that are present (a missing collection adds none)."""
    readers = {"gtzan": gtzan, "mer": mer, "fma": fma}
    return [r for name in collections for r in readers[name](data_dir)]


def class_list(labelled: Iterable[Recording], min_clips: int = MIN_CLIPS_PER_GENRE) -> list[str]:
    """The genres the data supports: those with at least ``min_clips`` clips naming them, in
    alphabetical order. The model's classes come from here, not from a constant."""
    counts = Counter(g for r in labelled for g in r.genres)
    return sorted(g for g, n in counts.items() if n >= min_clips)


def _mapped(tags: Iterable[str], table: dict[str, tuple[str, ...]]) -> frozenset[str]:
    return frozenset(g for tag in tags for g in table.get(tag.strip(), ()))


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
