"""Benchmark report: files, self-contained HTML, summary.json schema and content."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from gendm.bench.report import build_report, format_summary_table, write_report
from gendm.bench.spec import RunSpec
from gendm.bench.store import RESULTS_DB, RunRecord, Store

STEPS = [0, 1_000, 2_000, 3_000, 4_000]
METRICS = ("IQM", "Mean", "Median", "Optimality Gap")


def _run(method, task, seed, skill, scale, rng, steps=STEPS):
    curve = [(s, scale * skill * s / steps[-1] + rng.normal(scale=0.02 * scale)) for s in steps]
    return RunRecord(
        method=method,
        task=task,
        seed=seed,
        status="done",
        final_return=curve[-1][1],
        env_steps=steps[-1],
        grad_steps=steps[-1] // 2,
        wall_s=10.0 + seed,
        peak_rss_mb=500.0 + seed,
        curve=curve,
    )


def _synthetic_runs():
    rng = np.random.default_rng(0)
    runs = [
        _run(method, task, seed, skill, scale, rng)
        for method, skill in (("strong", 0.9), ("weak", 0.3))
        for task, scale in (("Hopper", 3000.0), ("Walker", 50.0))
        for seed in range(3)
    ]
    failed = RunRecord(
        "weak", "Walker", 3, "failed", None, 120, 60, 1.5, None, [], "RuntimeError: diverged (NaN loss)"
    )
    return [*runs, failed]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    summary = build_report(
        _synthetic_runs(), {"Hopper": (0.0, 3000.0), "Walker": None}, out, "Synthetic benchmark", reps=2_000
    )
    return out, summary


def test_files_are_written(report):
    out, summary = report
    for name in ("report.md", "report.html", "summary.json"):
        assert (out / name).is_file()
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"curves_Hopper.png", "curves_Walker.png", "aggregate_intervals.png"} <= set(pngs)
    assert {"probability_of_improvement.png", "performance_profiles.png"} <= set(pngs)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not list(out.glob(".*.tmp"))


def test_html_is_self_contained(report):
    out, _ = report
    text = (out / "report.html").read_text()
    assert "data:image/png;base64," in text
    assert 'src="http' not in text and "href=" not in text and "plots/" not in text
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', text))
    assert text.count("<img") == 5


def test_summary_schema(report):
    _, s = report
    assert set(s) == {
        "title", "created", "runs", "scores", "aggregate", "curves", "probability_of_improvement",
        "sample_efficiency", "compute", "normalisation",
    }  # fmt: skip
    assert s["curves"]["Hopper"] == {
        "step_unit": "env_steps", "x_label": "environment steps", "plot": "plots/curves_Hopper.png"
    }  # fmt: skip
    assert s["title"] == "Synthetic benchmark" and "T" in s["created"]
    assert s["runs"] == {"done": 12, "failed": 1}
    cell = s["scores"]["strong"]["Hopper"]
    assert set(cell) == {"final_returns", "iqm", "ci", "seeds"}
    assert cell["seeds"] == [0, 1, 2] and len(cell["final_returns"]) == 3 and len(cell["ci"]) == 2
    for method in ("strong", "weak"):
        agg = s["aggregate"][method]
        assert agg["tasks"] == ["Hopper", "Walker"]
        for metric in METRICS:
            assert set(agg[metric]) == {"point", "lo", "hi"}
            assert agg[metric]["lo"] <= agg[metric]["point"] <= agg[metric]["hi"]
    assert {(p["x"], p["y"]) for p in s["probability_of_improvement"]} == {
        ("strong", "weak"),
        ("weak", "strong"),
    }
    assert all(set(p) == {"x", "y", "point", "lo", "hi"} for p in s["probability_of_improvement"])
    assert set(s["sample_efficiency"]) == {"0", "1000", "3000", "4000"}  # <= 4 evenly spaced common steps
    assert set(s["sample_efficiency"]["4000"]["strong"]) == {"point", "lo", "hi", "n"}
    assert s["sample_efficiency"]["4000"]["strong"]["n"] == 6
    compute = s["compute"]["weak"]["Hopper"]
    assert set(compute) == {"precision", "env_steps_per_s", "grad_steps_per_s", "wall_s", "peak_rss_mb"}
    assert compute["wall_s"] == pytest.approx(11.0) and compute["peak_rss_mb"] == 502.0
    assert s["normalisation"]["Hopper"] == {"random": 0.0, "expert": 3000.0, "source": "reference"}
    assert s["normalisation"]["Walker"]["source"] == "observed"


def test_content(report):
    out, s = report
    assert s["aggregate"]["strong"]["IQM"]["point"] > s["aggregate"]["weak"]["IQM"]["point"]
    assert s["scores"]["strong"]["Walker"]["iqm"] > s["scores"]["weak"]["Walker"]["iqm"]
    poi = {(p["x"], p["y"]): p["point"] for p in s["probability_of_improvement"]}
    assert poi[("strong", "weak")] == 1.0
    se = s["sample_efficiency"]
    assert se["4000"]["strong"]["point"] > se["1000"]["strong"]["point"]
    md = (out / "report.md").read_text()
    assert "the **last** checkpoint of each run, never the best" in md
    assert "observed min-max, not a reference" in md
    failed = md.split("## Failed runs")[1]
    assert "weak | Walker | 3" in failed and "diverged" in failed
    order = ["## Learning curves", "## Last-checkpoint", "## Aggregate", "## Probability of improvement",
             "## Performance profiles", "## Sample efficiency", "## Compute", "## Failed runs"]  # fmt: skip
    positions = [md.index(h) for h in order]
    assert positions == sorted(positions)
    table = format_summary_table(s)
    assert "strong" in table and "Hopper" in table and "[" in table


def test_single_seed_and_task_subsets(tmp_path):
    rng = np.random.default_rng(1)
    runs = [
        _run("a", "T1", 0, 0.8, 10.0, rng),
        _run("a", "T2", 0, 0.8, 10.0, rng),
        _run("b", "T1", 0, 0.2, 10.0, rng, steps=[0, 500, 1_000]),
    ]
    s = build_report(runs, {}, tmp_path, "one seed", budgets=[1_000, 4_000], reps=500)
    cell = s["scores"]["a"]["T1"]
    assert cell["ci"] == [cell["iqm"], cell["iqm"]]
    iqm = s["aggregate"]["a"]["IQM"]
    assert iqm["lo"] == iqm["point"] == iqm["hi"]
    assert s["aggregate"]["b"]["tasks"] == ["T1"]
    assert s["probability_of_improvement"] == []
    assert s["sample_efficiency"]["4000"]["b"]["n"] == 0  # b's curve stops at 1000 steps
    md = (tmp_path / "report.md").read_text()
    assert "n=1: no CI" in md and "do not share all tasks" in md and "curve does not reach the budget" in md
    assert "n=1: no CI" in format_summary_table(s)


def test_no_completed_runs(tmp_path):
    runs = [RunRecord("a", "T", 0, "failed", None, 0, 0, 0.1, None, [], "boom")]
    s = build_report(runs, {}, tmp_path, "empty", reps=100)
    assert s["runs"] == {"done": 0, "failed": 1} and s["scores"] == {}
    assert "boom" in (tmp_path / "report.md").read_text()


# Case from the first committed version of this file: negative returns, a published reference.
def _runs():
    rng = np.random.default_rng(0)
    runs = []
    for method, level in (("good", 0.8), ("bad", 0.3)):
        for task, (lo, hi) in (("Pendulum-v1", (-1200, -150)), ("Toy-v0", (0, 100))):
            for seed in range(3):
                final = lo + (hi - lo) * (level + rng.normal(0, 0.05))
                curve = [(0, lo), (500, (lo + final) / 2), (1000, final)]
                runs.append(
                    RunRecord(method, task, seed, "done", final, 1000, 900, 10.0 + seed, 400.0, curve)
                )
    runs.append(
        RunRecord("bad", "Toy-v0", 3, "failed", None, 200, 100, 2.0, None, [], "TrainingDivergedError: nan")
    )
    return runs


def test_report_files_contents_and_ordering(tmp_path):
    refs = {"Pendulum-v1": (-1233.7, -157.0), "Toy-v0": None}
    summary = build_report(_runs(), refs, tmp_path, "synthetic", reps=2000)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "**last** checkpoint" in md and "observed min-max, not a reference" in md
    assert "TrainingDivergedError: nan" in md  # the failed run is listed with its reason
    assert "data:image/png;base64," in html and 'src="http' not in html and 'src="plots/' not in html
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["runs"] == {"done": 12, "failed": 1}
    assert set(on_disk["scores"]["good"]) == {"Pendulum-v1", "Toy-v0"}
    assert len(on_disk["scores"]["good"]["Toy-v0"]["final_returns"]) == 3
    good, bad = (on_disk["aggregate"][m]["IQM"] for m in ("good", "bad"))
    assert good["lo"] <= good["point"] <= good["hi"] and good["point"] > bad["hi"]
    poi = {(p["x"], p["y"]): p["point"] for p in on_disk["probability_of_improvement"]}
    assert poi[("good", "bad")] == 1.0
    assert on_disk["normalisation"]["Toy-v0"]["source"] == "observed"
    assert on_disk["compute"]["good"]["Toy-v0"]["env_steps_per_s"] > 0
    assert summary["title"] == "synthetic" and "good" in format_summary_table(summary)
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {
        "aggregate_intervals.png",
        "performance_profiles.png",
    }


# ------------------------------------------------------------------------- step units (the x-axis)
OFFLINE_TASK, ONLINE_TASK = "test/report/expert-v0", "CartPole-v1"


def _bench_dir(tmp_path, tasks=(OFFLINE_TASK, ONLINE_TASK)):
    """A benchmark directory written through the store as `gendm bench` does: an offline run's summary
    counts gradient steps (env_steps stays 0), an online run's environment steps."""
    store = Store(tmp_path / RESULTS_DB)
    for task in tasks:
        offline = task == OFFLINE_TASK
        unit = "grad_steps" if offline else "env_steps"
        runs = [
            RunSpec(
                method="iql" if offline else "ppo",
                algo="iql" if offline else "ppo",
                overrides={},
                config={},
                task=task,
                seed=seed,
                steps=1000,
                eval_every=500,
                eval_episodes=2,
            )
            for seed in range(2)
        ]
        store.add_runs(runs)
        for run in runs:
            curve = [{unit: s, "return_mean": 1.0 + s / 100 + run.seed} for s in (0, 500, 1000)]
            summary = {
                "status": "ok",
                "step_unit": unit,
                "wall_s": 1.0,
                "final_return": curve[-1]["return_mean"],
                "env_steps": 0 if offline else 1000,
                "grad_steps": 1000 if offline else 50,
                "curve": curve,
            }
            store.mark_done(run.run_id, summary)
    store.close()
    return tmp_path


def test_curve_axis_follows_the_runs_step_unit(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no_datasets"))
    out = _bench_dir(tmp_path)
    summary = write_report(out, reps=200)
    expected = {
        OFFLINE_TASK: ("grad_steps", "gradient steps"),
        ONLINE_TASK: ("env_steps", "environment steps"),
    }
    html = (out / "report.html").read_text()
    for task, (unit, label) in expected.items():
        entry = summary["curves"][task]
        assert (entry["step_unit"], entry["x_label"]) == (unit, label)
        png = Image.open(out / entry["plot"])
        assert png.text["Description"].startswith(f"x: {label};")  # the label drawn on the PNG's axis
        assert f'alt="learning curves on {task} against {label}"' in html
    md = (out / "report.md").read_text()
    assert "Step budget" in md and "each run's own steps (environment steps / gradient steps)" in md


def test_offline_report_counts_budgets_in_gradient_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "no_datasets"))
    out = _bench_dir(tmp_path, tasks=(OFFLINE_TASK,))
    summary = write_report(out, reps=200)
    assert summary["curves"][OFFLINE_TASK]["x_label"] == "gradient steps"
    efficiency = (out / "report.md").read_text().split("## Sample efficiency")[1].split("## Compute")[0]
    assert "| Gradient-step budget |" in efficiency and "counted in gradient steps" in efficiency
    assert "Env-step" not in efficiency and "env steps" not in efficiency


def test_store_without_step_units_infers_them(tmp_path):
    out = _bench_dir(tmp_path)
    store = Store(out / RESULTS_DB)
    store.db.execute("UPDATE runs SET step_unit = NULL")  # as a store written before the column existed
    units = {(r.task, r.step_unit) for r in store.records()}
    store.close()
    assert units == {(OFFLINE_TASK, "grad_steps"), (ONLINE_TASK, "env_steps")}
