"""Turn ``vs_sb3.py`` result files into the markdown tables of BENCHMARKS.md.

Paired files (``vs_sb3.py`` now; they carry ``provenance`` and ``summary``): per comparison, the
learning-phase speed ratio (median of the round medians, its range over rounds and each round's
median), each side's learning-phase rate and final-return IQM [95% CI] over seeds, where the file
came from (commit, CPU, flags, date), and the raw per-run numbers.

Older files (no ``summary``: one run per library and seed, queued on a thread pool): per library the
final-return IQM with a 95% bootstrap CI over seeds (gendm.bench.stats, 50k reps), the mean
env-steps/s, the speed ratio to SB3 and, where run, to ``sb3-ftz`` (mean of per-seed ratios, paired
by seed), peak RSS, and the raw per-seed numbers.

    python benchmarks/summarize.py benchmarks/results/sac_pendulum_paired.json [...]
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
    if "summary" in data:
        return summarize_paired(data)
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


def _where(prov: dict) -> str:
    git, cpu = prov.get("git", {}), prov.get("cpu", {})
    dirty = {True: ", dirty tree", False: "", "unknown": ", tree state unknown"}.get(git.get("dirty"), "")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if cpu.get("flags", {}).get(f)]
    return (
        f"commit {git.get('short', 'unknown')}{dirty}; {cpu.get('model', 'unknown CPU')} "
        f"({', '.join(flags) or 'no AVX2'}; native bf16: {cpu.get('native_bf16')}), "
        f"{cpu.get('usable_cores')} usable cores; {prov.get('date_utc', '?')}"
    )


def summarize_paired(data: dict) -> str:
    b, summary = data["benchmark"], data["summary"]
    lines = [
        f"**{b['algo'].upper()} on {b['env']}**, {b['steps']:,} env steps, {b['seeds']} seeds x "
        f"{b['rounds']} rounds, each gendm run side by side with its peer's run of the same seed (one "
        f"pinned core and one thread each, cores swapped between rounds), overrides "
        f"`{' '.join(b['overrides']) or 'none'}`; {_where(data.get('provenance', {}))}.",
        "",
        "| comparison | speed ratio (median of round medians) | range over rounds | round medians "
        "| gendm rate | peer rate | gendm return IQM [95% CI] | peer return IQM [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def rate(v: dict) -> str:
        r = v["learn_rate"]
        return f"{r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f})"

    def ret(v: dict) -> str:
        f = v.get("final_return")
        return f"{f['iqm']:.1f} [{f['ci95'][0]:.1f}, {f['ci95'][1]:.1f}]" if f else "-"

    for g, s in summary.items():
        r, libs = s["ratio"], s["libs"]
        if r["median_of_round_medians"] is None:
            lines.append(f"| {g} | no complete pair | | | | | | |")
            continue
        gv, pv = libs[s["gendm"]], libs[s["peer"]]
        rounds = ", ".join(f"{x:.2f}" for x in r["round_medians"].values())
        lo, hi = r["range_over_rounds"]
        lines.append(
            f"| {s['gendm']} vs {s['peer']} | {r['median_of_round_medians']:.2f}x | {lo:.2f}-{hi:.2f} "
            f"| {rounds} | {rate(gv)} | {rate(pv)} | {ret(gv)} | {ret(pv)} |"
        )
    unit = next(iter(summary.values()), {}).get("rate_unit") or "per second"
    lines += ["", f"Rates: learning phase only, {unit}, median (min-max) over runs; see vs_sb3.py."]
    cols = ["round", "seed", "comparison", "library", "core", "learn rate", "learn s", "final return"]
    cols += ["RSS MB"]
    lines += ["", "<details><summary>Per-run raw numbers</summary>", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for x in data["runs"]:
        cells = [
            x["round"], x["seed"], x["unit"], x["lib"], x["core"], f"{x['learn_rate']:.1f}",
            f"{x['learn_s']:.1f}", f"{x['final_return']:.1f}", f"{x.get('peak_rss_mb', 0):.0f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n".join(summarize(Path(p)) for p in sys.argv[1:]))
