import json
import os
import re
import subprocess
import sys

from gendm.cli import main


def test_train_writes_the_summary_contract(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "ppo",
            "--env",
            "CartPole-v1",
            "--steps",
            "1024",
            "--out",
            str(out),
            "--eval-every",
            "512",
            "--eval-episodes",
            "2",
            "--no-progress",
            "--set",
            "num_steps=64",
        ]
    )
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert {"final_return", "env_steps", "grad_steps", "wall_s", "curve"} <= set(s)
    assert s["env_steps"] == 1024 and len(s["curve"]) == 3
    assert "final return (last checkpoint)" in capsys.readouterr().out


def test_unknown_algorithm_and_env_errors_suggest_names(tmp_path, capsys):
    assert main(["train", "sacc", "--env", "Pendulum-v1", "--out", str(tmp_path)]) == 2
    assert "Did you mean: sac" in capsys.readouterr().err
    assert main(["train", "sac", "--env", "Pendulum-v2", "--out", str(tmp_path)]) == 2
    assert "Pendulum-v1" in capsys.readouterr().err
    assert main(["train", "sac", "--env", "Pendulum-v1", "--set", "tua=1", "--out", str(tmp_path)]) == 2
    assert "Did you mean: tau" in capsys.readouterr().err


def test_help_explains_every_option_with_defaults():
    for args in (["train", "--help"], ["bench", "--help"], ["report", "--help"], ["list", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "gendm.cli", *args], capture_output=True, text=True
        ).stdout
        assert "default" in out, args
    algo_help = subprocess.run(
        [sys.executable, "-m", "gendm.cli", "train", "sac", "--help"], capture_output=True, text=True
    ).stdout
    assert "tau=0.005" in algo_help and "Polyak" in algo_help


def test_list(capsys):
    assert main(["list", "algos"]) == 0 and "sac" in capsys.readouterr().out
    assert main(["list", "suites"]) == 0 and "HalfCheetah-v5" in capsys.readouterr().out


def test_report_on_a_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.sqlite" in capsys.readouterr().err


def _one_error_line(err: str) -> str:
    """stderr of a refused command: exactly one `gendm: error:` line and no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gendm: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_train_out_that_is_a_file_or_lies_under_one_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    for out, what in ((blocker, "is a file"), (blocker / "sub", f"cannot be created: {blocker} is a file")):
        assert main(["train", "sac", "--env", "Pendulum-v1", "--out", str(out), "--no-progress"]) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"--out {out} {what}, not a run directory. Choose another --out" in line
    spec = tmp_path / "spec.toml"
    spec.write_text('seeds = 1\n[methods.ppo]\n[[tasks]]\nenv = "CartPole-v1"\n')
    assert main(["bench", str(spec), "--out", str(blocker / "b"), "--no-progress"]) == 2
    assert "not a benchmark directory" in _one_error_line(capsys.readouterr().err)
    assert blocker.read_text() == "not a directory"
    # the same through the installed entry point's module, as a user would see it
    proc = subprocess.run(
        [sys.executable, "-m", "gendm.cli", "train", "sac", "--env", "Pendulum-v1", "--out", str(blocker)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "is a file" in _one_error_line(proc.stderr)


def _bench_dir(tmp_path):
    """A benchmark directory with two finished runs, written through the store as `gendm bench` does."""
    from gendm.bench.spec import parse_spec
    from gendm.bench.store import Store

    spec = parse_spec({"seeds": 2, "methods": {"ppo": {}}, "tasks": ["CartPole-v1"]})
    out = tmp_path / "bench"
    store = Store(out / "results.sqlite")
    store.add_runs(spec.runs)
    for run in spec.runs:
        curve = [{"env_steps": s, "return_mean": 10.0 + s / 100 + run.seed} for s in (0, 500, 1000)]
        summary = {"wall_s": 1.0, "env_steps": 1000, "grad_steps": 10, "final_return": 20.0, "curve": curve}
        store.mark_done(run.run_id, summary)
    store.close()
    return out


def test_report_with_zero_bootstrap_replicates_is_a_clear_error(tmp_path, capsys):
    out = _bench_dir(tmp_path)
    assert main(["report", str(out), "--reps", "0"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--reps" in line and "got 0" in line and "positive number of bootstrap replicates" in line
    assert main(["report", str(out), "--reps", "200"]) == 0  # the directory itself is fine


def test_corrupt_store_is_a_clear_error_for_report_and_bench(tmp_path, capsys):
    out = _bench_dir(tmp_path)
    (out / "results.sqlite").write_bytes(b"\x00garbage, not SQLite\x00" * 64)
    for name in ("results.sqlite-wal", "results.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    spec = tmp_path / "spec.toml"
    spec.write_text('seeds = 1\n[methods.ppo]\n[[tasks]]\nenv = "CartPole-v1"\n')
    for argv in (["report", str(out)], ["bench", str(spec), "--out", str(out), "--no-progress"]):
        assert main(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert f"{out / 'results.sqlite'} is corrupt or not an SQLite database" in line, argv
        assert f"mv {out / 'results.sqlite'}" in line and "rerun `gendm bench SPEC --out" in line


def test_bench_of_a_spec_without_runs_says_why(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text('seeds = 1\n[methods.dqn]\n[[tasks]]\nenv = "Pendulum-v1"\n')
    assert main(["bench", str(spec), "--out", str(tmp_path / "out")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "has no runs: every method was skipped on every task (dqn (dqn) cannot act in Pendulum-v1" in line
    spec.write_text("seeds = 1\ntasks = []\n[methods.dqn]\n")
    assert main(["bench", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "has no runs: its tasks list is empty" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_report_of_a_bench_directory_whose_spec_had_no_runs(tmp_path, capsys):
    out = _bench_dir(tmp_path)
    reason = "dqn (dqn) cannot act in Pendulum-v1 (Box actions)"
    (out / "spec.json").write_text(
        json.dumps({"name": "x", "source": "x.toml", "run_ids": [], "skipped": [reason]})
    )
    assert main(["report", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "The spec of" in line and f"has no runs: every method was skipped on every task ({reason})" in line


def test_help_states_each_default_once():
    wide = dict(os.environ, COLUMNS="400")  # one line per option
    for args in (["train", "--help"], ["bench", "--help"], ["agent", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "gendm.cli", *args], capture_output=True, text=True, env=wide
        ).stdout
        assert not re.search(r"\(default:[^)]*\)\s*\(default:", out), (args, out)
        if args[0] == "train":
            assert "--out OUT " in out and "run directory (default: runs/ALGO-ENV_OR_DATASET-sSEED)\n" in out
            assert "torch CPU threads (default: torch's choice)\n" in out and "(default: 100000)" in out


def test_unreadable_checkpoint_suggests_no_resume_or_a_new_out(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "ppo", "--env", "CartPole-v1", "--steps", "128", "--out", str(out), "--no-progress"]
    argv += ["--eval-every", "128", "--eval-episodes", "1", "--set", "num_steps=64"]
    assert main(argv) == 0
    meta = out / "checkpoint" / "meta.json"
    meta.write_text('{"format_version": 1, "state": ')  # torn
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{meta} is not valid JSON" in line
    assert f"Rerun with --no-resume to start this run over in {out}" in line and "a new --out" in line
    assert main([*argv, "--no-resume"]) == 0  # following the advice works
    (out / "checkpoint" / "weights.safetensors").unlink()
    capsys.readouterr()
    assert main(argv) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "weights.safetensors is missing" in line and "--no-resume" in line


def test_train_and_bench_numbers_that_would_fail_inside_a_run_are_refused_first(tmp_path, capsys):
    train = ["train", "ppo", "--env", "CartPole-v1", "--out", str(tmp_path / "run"), "--no-progress"]
    for extra, message in (
        (["--seed", "-1"], "--seed must be in 0..4294967295 (seeds every random source), got -1."),
        (["--threads", "-2"], "--threads must be >= 1, got -2"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
    ):
        assert main([*train, *extra]) == 2, extra
        assert message in _one_error_line(capsys.readouterr().err)
    spec = tmp_path / "spec.toml"
    spec.write_text('seeds = 1\n[methods.ppo]\n[[tasks]]\nenv = "CartPole-v1"\n')
    for flag in ("--workers", "--threads-per-worker"):
        assert main(["bench", str(spec), "--out", str(tmp_path / "b"), flag, "0", "--no-progress"]) == 2
        assert f"{flag} must be >= 1, got 0" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists() and not (tmp_path / "b" / "runs").exists()
