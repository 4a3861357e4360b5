"""Quality vs steps vs latency of every solver on a known 2-D mixture (the few-step trade-off).

For each seed, trains one model per family on the 3-mode mixture of ``tests/test_generative.py``
(same networks and budget), then for each solver and step count measures the MMD^2 of 2000 samples
against the true mixture (RBF bandwidth 0.5; two true draws give ~0.001) and the sampling latency at
batch 1 and batch 64 (median of repeated calls). Writes ``benchmarks/results/sampler_quality.json``
(raw per-seed numbers), a markdown table on stdout, and ``benchmarks/results/sampler_quality.png``.

    .venv/bin/python benchmarks/sampler_quality.py --seeds 5 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_generative import FAMILIES, PROBS, mixture, mmd2, mode_masses, train

STEPS = {
    "ddpm": [2, 5, 10, 20, 50],
    "ddim": [2, 5, 10, 20, 50],
    "dpmpp_2m": [2, 5, 10, 20],
    "heun": [2, 5, 10, 20],
    "euler": [1, 2, 5, 10, 20],
    "midpoint": [1, 2, 5, 10],
    "shortcut": [1, 2, 4, 8, 16],
}
MODELS = {
    "eps": ["ddpm", "ddim", "dpmpp_2m"],
    "edm": ["heun", "euler"],
    "flow": ["euler", "midpoint"],
    "shortcut": ["shortcut"],
}


def latency_ms(model, batch: int, solver: str, steps: int, device: str, reps: int) -> float:
    """Median time of one ``sample`` call. On the CPU (one torch thread) this is the calling thread's
    CPU time, which other processes on a busy machine do not inflate (wall time there jumped ~30x for
    calls longer than a scheduler slice); on CUDA it is synchronised wall time."""
    clock = time.perf_counter if device == "cuda" else time.thread_time
    model.sample(batch, solver=solver, steps=steps)  # warm-up
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        model.sample(batch, solver=solver, steps=steps)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return 1000 * statistics.median(times)


def remeasure_latency(args) -> None:
    """Refresh the latency columns of an existing result file: latency does not depend on the
    weights, so one freshly built model per family serves every seed's row."""
    data = json.loads(Path(args.out).read_text())
    models = {family: FAMILIES[family]().to(args.device).eval() for family in MODELS}
    cache = {}
    for row in data["rows"]:
        key = (row["family"], row["solver"], row["steps"])
        if key not in cache:
            model = models[row["family"]]
            cache[key] = [latency_ms(model, b, *key[1:], args.device, args.reps) for b in (1, 64)]
            print(key, cache[key], flush=True)
        row["latency_ms_b1"], row["latency_ms_b64"] = cache[key]
    data["meta"]["latency"] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "clock": "CPU thread time" if args.device == "cpu" else "wall",
        "reps": args.reps,
    }
    Path(args.out).write_text(json.dumps(data, indent=1))
    summarize(data["rows"])
    plot(data["rows"], Path(args.out).with_suffix(".png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", default="benchmarks/results/sampler_quality.json")
    p.add_argument("--latency-only", action="store_true", help="re-measure latency in an existing --out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.latency_only:
        return remeasure_latency(args)
    rows = []
    for seed in range(args.seeds):
        ref, _ = mixture(2000, torch.Generator().manual_seed(1000 + seed))
        for family, solvers in MODELS.items():
            t0 = time.perf_counter()
            model = train(FAMILIES[family](), steps=2000 if family == "shortcut" else 1500, seed=seed)
            model = model.to(args.device)
            train_s = time.perf_counter() - t0
            for solver in solvers:
                for steps in STEPS[solver]:
                    x = model.sample(2000, solver=solver, steps=steps, generator=None).cpu()
                    row = {
                        "seed": seed,
                        "family": family,
                        "solver": solver,
                        "steps": steps,
                        "mmd2": mmd2(x, ref),
                        "mass_error": float((mode_masses(x) - PROBS).abs().max()),
                        "latency_ms_b1": latency_ms(model, 1, solver, steps, args.device, args.reps),
                        "latency_ms_b64": latency_ms(model, 64, solver, steps, args.device, args.reps),
                        "train_s": train_s,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": platform.processor() or platform.machine(),
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    summarize(rows)
    plot(rows, Path(args.out).with_suffix(".png"))


def _groups(rows):
    keys = sorted({(r["family"], r["solver"], r["steps"]) for r in rows}, key=lambda k: (k[0], k[1], k[2]))
    for k in keys:
        yield k, [r for r in rows if (r["family"], r["solver"], r["steps"]) == k]


def summarize(rows) -> None:
    print(
        "\n| model | solver | steps | MMD^2 (median, min-max over seeds) | max mode-mass error | "
        "latency b=1 (ms) | latency b=64 (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for (family, solver, steps), rs in _groups(rows):
        m = [r["mmd2"] for r in rs]
        med = {k: np.median([r[k] for r in rs]) for k in ("mass_error", "latency_ms_b1", "latency_ms_b64")}
        print(
            f"| {family} | {solver} | {steps} | {np.median(m):.4f} ({min(m):.4f}-{max(m):.4f}) | "
            f"{med['mass_error']:.3f} | {med['latency_ms_b1']:.2f} | {med['latency_ms_b64']:.2f} |"
        )


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for family, solvers in MODELS.items():
        for solver in solvers:
            pts = [
                (steps, np.median([r["mmd2"] for r in rs]), np.median([r["latency_ms_b64"] for r in rs]))
                for (f, s, steps), rs in _groups(rows)
                if f == family and s == solver
            ]
            label = f"{family}/{solver}"
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
            axes[1].plot([p[2] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for ax, xl in zip(axes, ["solver steps", "latency at batch 64 (ms)"]):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel("MMD^2 to the true mixture (lower is better)")
        ax.axhline(0.001, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    axes[0].set_title("quality vs steps (median of seeds)")
    axes[1].set_title("quality vs latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
