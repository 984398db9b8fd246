"""A fresh process that classifies files and says when its first prediction was ready.

Run as ``python -m bench.coldstart fast|reference MODEL_DIR CLIP [MORE...]``. It prints a JSON
line as soon as its first prediction is ready (seconds from its own start to imports done, model
loaded, first prediction), then classifies the other files and prints its peak RSS. The parent times
the whole thing from ``Popen`` (interpreter start-up included).
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import json  # noqa: E402  (timed from the first line)
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str]) -> None:
    kind, model_dir, paths = argv[0], Path(argv[1]), [Path(p) for p in argv[2:]]
    marks: dict[str, float] = {}
    if kind == "fast":
        from genre_core.pipeline import Classifier

        marks["imported_s"] = time.perf_counter() - STARTED
        classifier = Classifier.load(model_dir)
        marks["loaded_s"] = time.perf_counter() - STARTED
        # What a worker does before it takes requests (numba from its on-disk cache, TF trace).
        classifier.warm_up()
        marks["warm_s"] = time.perf_counter() - STARTED
        genre = classifier.classify(paths[0]).genre
        marks["first_prediction_s"] = time.perf_counter() - STARTED
        _say({"event": "first", "genre": genre, **marks})
        for path in paths[1:]:
            classifier.classify(path)
    else:
        from bench.reference import classify_reference
        from genre_core.model import GenreModel

        marks["imported_s"] = time.perf_counter() - STARTED
        model = GenreModel.load(model_dir)
        marks["loaded_s"] = time.perf_counter() - STARTED
        probs, _ = classify_reference(paths[0], model)
        genre = model.genres[int(probs.argmax())]
        marks["first_prediction_s"] = time.perf_counter() - STARTED
        _say({"event": "first", "genre": genre, **marks})
        for path in paths[1:]:
            classify_reference(path, model)
    _say({"event": "done", "peak_rss_mb": peak_rss_kb() / 1024})


def peak_rss_kb() -> int:
    """This process's peak resident memory. Linux keeps ``ru_maxrss`` across exec, so a child
    of a big parent (the bench, with TensorFlow loaded) would report the parent's size: the
    kernel's high-water mark of this address space (VmHWM) is read instead where it exists."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _say(record: dict[str, object]) -> None:
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
