import json

import numpy as np

from gendm.bench.report import RunRecord, build_report, format_summary_table


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
