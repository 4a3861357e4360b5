import json
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
