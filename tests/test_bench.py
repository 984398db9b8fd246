"""The benchmark runs end to end (`python -m bench --tiny`) and writes every figure the README's
Speed section reports, so that a refactor cannot break `make bench` unnoticed. No figure is
judged here: speed targets live in the bench, never in tests."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPENAPI = ROOT.parent / "shared" / "data" / "discord" / "openapi.json"

#: The README's Speed table, row by row, as bench/results.json names the figures.
README_FIGURES = {
    "30-s clip, end to end (table family)": [
        "clip_30s_fast_e2e_ms_p50", "clip_30s_ref_e2e_ms_p50", "clip_30s_e2e_ms_p50_ratio"],
    "30-s clip, features": [
        "clip_30s_fast_features_ms_p50", "clip_30s_ref_features_ms_p50",
        "clip_30s_features_ms_p50_ratio"],
    "4-min song, end to end (table family)": [
        "song_4min_fast_e2e_ms_p50", "song_4min_ref_e2e_ms_p50", "song_4min_e2e_ms_p50_ratio"],
    "throughput, 2 worker processes (table family)": [
        "clip_30s_fast_throughput_clips_per_s", "clip_30s_ref_throughput_clips_per_s"],
    "shipped learned family, 30-s clip": [
        "clip_30s_shipped_e2e_ms_p50", "clip_30s_shipped_e2e_ms_p50_ratio",
        "clip_30s_musicnn_network_ms_p50"],
    "bot burst through the local Discord": [
        "bot_throughput_clips_per_s", "bot_loop_lag_ms_p50", "bot_loop_lag_ms_p99"],
    "peak RSS of one worker": ["shipped_peak_rss_mb", "fast_peak_rss_mb"],
    "bot start to first answer": ["bot_connected_s", "bot_first_answer_s"],
    "targets": ["target_e2e_ratio_max", "target_bot_throughput_clips_per_s_min",
                "target_first_answer_s_max", "target_peak_rss_mb_max",
                "target_loop_lag_p99_ms_max"],
}


@pytest.mark.skipif(not OPENAPI.is_file(), reason=f"the bot's lag needs {OPENAPI}")
def test_tiny_bench_writes_every_figure_the_readme_reports(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["mode"] == "tiny"
    missing = [key for keys in README_FIGURES.values() for key in keys if key not in results]
    assert not missing, f"bench/results.json lacks {missing}"
    for keys in README_FIGURES.values():
        for key in keys:
            assert isinstance(results[key], int | float) and math.isfinite(results[key]), key
            assert results[key] > 0, key
    assert "targets:" in done.stdout
    assert out.with_suffix(".png").read_bytes().startswith(b"\x89PNG")  # the run's chart
