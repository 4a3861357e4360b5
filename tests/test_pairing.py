"""benchmarks/pairing.py with two fake "libraries": real short-lived subprocesses that sleep, count their
launches and report the rate they are told to, their CPU affinity and their thread settings."""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("pairing", ROOT / "benchmarks" / "pairing.py")
pairing = importlib.util.module_from_spec(_spec)
sys.modules["pairing"] = pairing
_spec.loader.exec_module(pairing)

FAKE_LIB = textwrap.dedent(
    """
    import json, os, sys, time
    rate, ret, launches = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    sleep = float(os.environ["FAKE_SLEEP"])
    with open(launches, "a") as f:
        f.write(f"{os.getpid()}\\n")
    if rate < 0:
        sys.exit("fake lib: told to fail")
    time.sleep(sleep)
    print("some noise on stdout first")
    print(json.dumps({"final_return": ret, "learn_rate": rate, "rate_unit": "updates/s",
                      "affinity": sorted(os.sched_getaffinity(0)), "omp": os.environ.get("OMP_NUM_THREADS"),
                      "xla": os.environ.get("XLA_FLAGS")}))
    """
)

# (round, seed) -> (gendm rate, peer rate); round 1 ratios 2, 3, 10 (median 3), round 2 1, 1.5, 4 (1.5)
RATES = {
    (1, 0): (200, 100), (1, 1): (300, 100), (1, 2): (1000, 100),
    (2, 0): (100, 100), (2, 1): (150, 100), (2, 2): (400, 100),
}  # fmt: skip


def _cores() -> list[int]:
    usable = sorted(os.sched_getaffinity(0))
    return usable[:2] if len(usable) >= 2 else [usable[0], usable[0]]


def _plan(tmp: Path, sleep: float = 0.3, fail: set | None = None):
    script = tmp / "fake_lib.py"
    script.write_text(FAKE_LIB)

    def plan(rnd: int) -> list:
        units = []
        for seed in range(3):
            g, p = RATES[(rnd, seed)]
            if fail and (rnd, seed) in fail:
                p = -1
            runs = [
                pairing.Run(lib, [sys.executable, str(script), str(rate), str(10.0 * seed + off),
                                  str(tmp / f"launches-{lib}")], env={"FAKE_SLEEP": str(sleep)})
                for lib, rate, off in (("fastlib", g, 1.0), ("slowlib", p, 0.0))
            ]  # fmt: skip
            units.append(pairing.Unit("fastlib~slowlib", seed, runs, group="fastlib~slowlib"))
        return units

    return plan


def _pids(tmp: Path, lib: str) -> list[str]:
    path = tmp / f"launches-{lib}"
    return path.read_text().split() if path.is_file() else []


def _launches(tmp: Path, lib: str) -> int:
    return len(_pids(tmp, lib))


def test_pairs_run_together_pinned_alternating_cores_and_summarise(tmp_path):
    log = tmp_path / "runs.jsonl"
    cores = _cores()
    failed = pairing.run_rounds(_plan(tmp_path), 2, log, cores=cores, echo=lambda s: None)
    assert failed == []
    runs = pairing.collect(_plan(tmp_path), 2, log)
    assert len(runs) == 12
    for r in runs:
        assert r["status"] == "ok" and r["omp"] == "1" and "intra_op_parallelism_threads=1" in r["xla"]
        assert r["affinity"] == [r["core"]]  # pinned to the core it was given
        first = r["round"] % 2 == 1
        assert r["core"] == (cores[0] if (r["lib"] == "fastlib") == first else cores[1])
    for rnd in (1, 2):
        for seed in range(3):
            a, b = (r for r in runs if r["round"] == rnd and r["seed"] == seed)
            assert max(a["started"], b["started"]) < min(a["ended"], b["ended"])  # they overlapped
    s = pairing.summarize(runs, reps=2000)["fastlib~slowlib"]
    assert s["gendm"] == "fastlib" and s["peer"] == "slowlib" and s["pairs"] == 6
    ratio = s["ratio"]
    assert [x["ratio"] for x in ratio["per_pair"]] == pytest.approx([2, 3, 10, 1, 1.5, 4])
    assert ratio["round_medians"] == pytest.approx({1: 3.0, 2: 1.5})
    assert ratio["median_of_round_medians"] == pytest.approx(2.25)
    assert ratio["range_over_rounds"] == pytest.approx([1.5, 3.0])
    fast = s["libs"]["fastlib"]
    assert fast["learn_rate"] == pytest.approx({"median": 250.0, "min": 100.0, "max": 1000.0})
    assert fast["final_return"]["per_seed_mean"] == pytest.approx([1.0, 11.0, 21.0])
    lo, hi = fast["final_return"]["ci95"]
    assert lo <= fast["final_return"]["iqm"] <= hi and lo >= 1.0 and hi <= 21.0
    assert "**2.25x**" in pairing.markdown(pairing.summarize(runs, reps=200))


def test_rerun_skips_recorded_pairs_and_retries_failed_ones(tmp_path):
    log = tmp_path / "runs.jsonl"
    quiet = dict(cores=_cores(), echo=lambda s: None)
    failed = pairing.run_rounds(_plan(tmp_path, 0.05, fail={(1, 1)}), 1, log, **quiet)
    assert [(r["lib"], r["seed"]) for r in failed] == [("slowlib", 1)]
    assert "told to fail" in " ".join(failed[0]["stderr_tail"])
    assert len(pairing.collect(_plan(tmp_path), 1, log)) == 4  # the failed unit is not complete
    assert _launches(tmp_path, "fastlib") == 3
    # the same command again: only the failed unit runs, both of its runs
    assert pairing.run_rounds(_plan(tmp_path, 0.05), 1, log, **quiet) == []
    assert (_launches(tmp_path, "fastlib"), _launches(tmp_path, "slowlib")) == (4, 4)
    runs = pairing.collect(_plan(tmp_path), 1, log)
    assert sorted((r["seed"], r["lib"]) for r in runs) == sorted(
        (s, lib) for s in range(3) for lib in ("fastlib", "slowlib")
    )
    pairing.run_rounds(_plan(tmp_path, 0.05), 1, log, **quiet)
    assert _launches(tmp_path, "fastlib") == 4  # nothing left to do
    RATES[(1, 0)] = (250, 100)  # a different command for one unit: its old record does not count
    try:
        pairing.run_rounds(_plan(tmp_path, 0.05), 1, log, **quiet)
        ratios = pairing.summarize(pairing.collect(_plan(tmp_path), 1, log), reps=200)
    finally:
        RATES[(1, 0)] = (200, 100)
    assert _launches(tmp_path, "fastlib") == 5
    assert ratios["fastlib~slowlib"]["ratio"]["per_pair"][0]["ratio"] == pytest.approx(2.5)


DRIVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import test_pairing as t
    from pathlib import Path
    tmp = Path({tmp!r})
    t.pairing.run_rounds(t._plan(tmp, {sleep}), 2, tmp / "runs.jsonl", cores=t._cores())
    """
)


def test_killed_driver_takes_its_children_and_resumes(tmp_path):
    log = tmp_path / "runs.jsonl"
    code = DRIVER.format(tests=str(ROOT / "tests"), tmp=str(tmp_path), sleep=1.0)
    drv = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while len(pairing.read_log(log)) < 2 and time.time() < deadline:  # the first pair recorded
        time.sleep(0.05)
    while _launches(tmp_path, "slowlib") < 2 and time.time() < deadline:  # the second pair started
        time.sleep(0.05)
    drv.send_signal(signal.SIGTERM)
    drv.wait(timeout=30)
    assert drv.returncode != 0
    children = [int(pid) for lib in ("fastlib", "slowlib") for pid in _pids(tmp_path, lib)]
    time.sleep(0.5)
    for pid in children:  # none of the runs outlives the driver
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    done_units = len(pairing.collect(_plan(tmp_path), 2, log)) // 2
    assert done_units in (1, 2)  # the pair running at the kill is not recorded as done
    launched = _launches(tmp_path, "fastlib")
    pairing.run_rounds(_plan(tmp_path, 0.05), 2, log, cores=_cores(), echo=lambda s: None)
    runs = pairing.collect(_plan(tmp_path), 2, log)
    assert len(runs) == 12
    assert _launches(tmp_path, "fastlib") == launched + 6 - done_units  # recorded pairs were skipped
    ratios = pairing.summarize(runs, reps=200)["fastlib~slowlib"]["ratio"]["per_pair"]
    assert len(ratios) == 6 and np.allclose(sorted(x["ratio"] for x in ratios), [1, 1.5, 2, 3, 4, 10])


def test_one_usable_core_is_refused(monkeypatch):
    monkeypatch.setattr(pairing.os, "sched_getaffinity", lambda pid: {0})
    with pytest.raises(pairing.PairingError, match="two cores"):
        pairing.default_cores()


def test_vs_sb3_refuses_gendm_bf16_where_bf16_is_emulated():
    from gendm.core.precision import force_native_bf16, hardware_native_bf16

    spec = importlib.util.spec_from_file_location("vs_sb3", ROOT / "benchmarks" / "vs_sb3.py")
    vs_sb3 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(vs_sb3)
    assert vs_sb3.parse_libs("gendm,gendm-bf16,sb3,sbx") == [
        ("gendm", "sb3"), ("gendm", "sbx"), ("gendm-bf16", "sb3"), ("gendm-bf16", "sbx"),
    ]  # fmt: skip
    with force_native_bf16(False), pytest.raises(SystemExit, match="bf16 is emulated on this CPU"):
        vs_sb3.refuse_emulated_bf16(["gendm-bf16"])
    with force_native_bf16(False):
        vs_sb3.refuse_emulated_bf16(["gendm"])  # fp32 runs anywhere
    if hardware_native_bf16("cpu"):
        with force_native_bf16(True):
            vs_sb3.refuse_emulated_bf16(["gendm-bf16"])


def test_steady_ratio_leaves_out_each_runs_first_update():
    # A peer whose first update takes 10 s (a JIT compile) of a 20 s window: 1.0x over the whole
    # window from 100 vs 50 updates/s, but 0.5x after the first update, where the peer is twice as fast.
    def run(side, lib, rnd, seed, first):
        return {"group": "g~p", "unit": "g~p", "round": rnd, "seed": seed, "side": side, "lib": lib,
                "learn_rate": 1001 / 20, "learn_updates": 1001, "learn_s": 20.0, "first_update_s": first,
                "rate_unit": "updates/s", "final_return": 0.0}  # fmt: skip

    runs = [
        run(side, lib, rnd, seed, first)
        for rnd in (1, 2)
        for seed in (0, 1)
        for side, lib, first in (("gendm", "g", 0.0), ("peer", "p", 10.0))
    ]
    summary = pairing.summarize(runs, reps=200)["g~p"]
    assert summary["ratio"]["median_of_round_medians"] == pytest.approx(1.0)
    assert summary["ratio_after_first_update"]["median_of_round_medians"] == pytest.approx(0.5)
    assert "0.50x after each run's first update" in pairing.markdown({"g~p": summary})
    del runs[0]["first_update_s"]  # a run without the timing: no steady figure rather than a wrong one
    assert "ratio_after_first_update" not in pairing.summarize(runs, reps=200)["g~p"]
