"""A picture of one benchmark run: what a 30-s clip costs per stage in each family against the
reference, and where each target stands. Written beside ``results.json`` as ``results.png``."""

from __future__ import annotations

from pathlib import Path

STAGES = ("decode", "features", "inference", "music_check")
ROWS = (("reference (librosa)", "ref"), ("table family", "fast"), ("shipped family", "shipped"))


def write(results: dict[str, float | int | str], checks: list[tuple[str, str, str, str]],
          out: Path) -> Path:
    """Draw ``results`` (see :mod:`bench.__main__`) into the PNG ``out``."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    fig, (costs, goals) = plt.subplots(1, 2, figsize=(13, 4.2), width_ratios=(1.1, 1))
    labels = [label for label, prefix in ROWS if f"clip_30s_{prefix}_e2e_ms_p50" in results]
    left = [0.0] * len(labels)
    for stage in STAGES:
        widths = [_number(results, f"clip_30s_{prefix}_{stage}_ms_p50")
                  for label, prefix in ROWS if label in labels]
        costs.barh(labels, widths, left=left, label=stage.replace("_", " "))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    costs.set_xlabel("ms per 30-s clip (median), by stage")
    costs.invert_yaxis()
    costs.legend(loc="lower right", fontsize=8)
    costs.set_title(f"per-clip cost ({results.get('mode')} run, {results.get('cpu_count')} CPUs)")

    names, shares, colours = [], [], []
    for label, key, op, bound_key in checks:
        value, bound = results.get(key), results.get(bound_key)
        if not isinstance(value, int | float) or not isinstance(bound, int | float) or not value:
            continue
        # Plotted so that shorter is better: figure/bound for "<=", bound/figure for ">=".
        share = value / bound if op == "<=" else bound / value
        names.append(f"{label}\n{value:.3g} (target {op} {bound:g})")
        shares.append(share)
        colours.append("tab:green" if share <= 1 else "tab:red")
    goals.barh(names, shares, color=colours)
    goals.axvline(1.0, color="black", linewidth=1)
    goals.set_xscale("log")
    goals.invert_yaxis()
    goals.tick_params(axis="y", labelsize=7)
    goals.set_xlabel("share of the target (≤ 1 is met; log scale)")
    goals.set_title("targets")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _number(results: dict[str, float | int | str], key: str) -> float:
    value = results.get(key)
    return float(value) if isinstance(value, int | float) else 0.0
