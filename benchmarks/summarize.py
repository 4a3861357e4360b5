"""Turn ``vs_sb3.py`` result files into the markdown tables of BENCHMARKS.md: per library, the
final-return IQM with a 95% bootstrap CI over seeds (gendm.bench.stats, 50k reps), the mean
env-steps/s, the speed ratio to SB3 and, where run, to ``sb3-ftz`` (mean of per-seed ratios, paired
by seed), peak RSS, and the raw per-seed numbers.

    python benchmarks/summarize.py benchmarks/results/sac_pendulum_stacked.json [...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from gendm.bench.stats import iqm, stratified_bootstrap_ci

COLUMNS = [
    "library", "seed", "final return", "env steps", "train s", "env steps/s", "grad steps", "peak RSS MB",
]  # fmt: skip


def _ratio(runs: list[dict], reference: dict[int, float]) -> str:
    """Mean of per-seed speed ratios to a reference library's runs of the same seeds."""
    ratios = [r["env_steps_per_s"] / reference[r["seed"]] for r in runs if r["seed"] in reference]
    return f"{np.mean(ratios):.2f}x" if ratios else "n/a"


def summarize(path: Path) -> str:
    data = json.loads(path.read_text())
    runs = data["runs"]
    libs = list(dict.fromkeys(r["lib"] for r in runs))
    by = {lib: sorted((r for r in runs if r["lib"] == lib), key=lambda r: r["seed"]) for lib in libs}
    sb3_speed = {r["seed"]: r["env_steps_per_s"] for r in by.get("sb3", [])}
    ftz_speed = {r["seed"]: r["env_steps_per_s"] for r in by.get("sb3-ftz", [])}
    threads = data.get("threads", 1)
    lines = [
        f"**{data['algo'].upper()} on {data['env']}**, {data['steps']:,} env steps, "
        f"{len(by[libs[0]])} seeds, overrides `{' '.join(data['overrides']) or 'none'}`, "
        f"{data['workers']} runs in parallel, {threads} torch thread{'s' * (threads > 1)} each; "
        f"started {data['started']}.",
        "",
        "| library | final return IQM [95% CI] | env steps/s (mean) | speed vs SB3 |"
        + (" speed vs SB3 + FTZ |" if ftz_speed else "")
        + " peak RSS MB |",
        "|---|---|---|---|---|" + ("---|" if ftz_speed else ""),
    ]
    for lib in libs:
        rs = by[lib]
        finals = np.array([[r["final_return"]] for r in rs])
        point, lo, hi = stratified_bootstrap_ci(finals, iqm, reps=50_000, seed=0)
        speed = np.mean([r["env_steps_per_s"] for r in rs])
        ratio = _ratio(rs, sb3_speed)
        ftz = f" {_ratio(rs, ftz_speed)} |" if ftz_speed else ""
        rss = np.mean([r["peak_rss_mb"] for r in rs])
        lines.append(f"| {lib} | {point:.1f} [{lo:.1f}, {hi:.1f}] | {speed:.1f} | {ratio} |{ftz} {rss:.0f} |")
    lines += ["", "<details><summary>Per-seed raw numbers</summary>", ""]
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for lib in libs:
        for r in by[lib]:
            cells = [
                lib,
                r["seed"],
                f"{r['final_return']:.1f}",
                r["env_steps"],
                f"{r['train_s']:.1f}",
                f"{r['env_steps_per_s']:.1f}",
                r["grad_steps"],
                f"{r['peak_rss_mb']:.0f}",
            ]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n".join(summarize(Path(p)) for p in sys.argv[1:]))
