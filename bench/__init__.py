"""Benchmark of genre-bot's analysis path: ``make bench`` (``python -m bench [--quick]``).

``bench/reference.py`` keeps the plain per-window librosa recipe (the seed's extractor) that every
figure is compared with; ``bench/measure.py`` holds the measurements, ``bench/lag.py`` the bot's
event-loop lag through the local fake Discord, ``bench/coldstart.py`` the fresh process whose
start-up is timed. Results go to ``bench/results.json``.
"""
