import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import gendm
from gendm.core.provenance import CPU_FLAGS, git_state, provenance
from gendm.train import TrainSettings, train

REPO = Path(gendm.__file__).resolve().parent
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_fields_present_and_json_serialisable():
    p = provenance(threads=1)
    assert set(p) >= {"git", "date_utc", "versions", "cpu", "threads", "platform"}
    assert {"python", "gendm", "torch", "numpy", "gymnasium"} <= set(p["versions"])
    assert p["versions"]["torch"] == torch.__version__ and p["versions"]["gendm"] == gendm.__version__
    assert p["date_utc"].endswith("+00:00")
    assert p["threads"]["requested"] == 1 and p["threads"]["torch"] == torch.get_num_threads()
    assert p["cpu"]["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    from gendm.core.precision import native_bf16

    assert p["cpu"]["native_bf16"] == native_bf16(torch.device("cpu"))
    json.dumps(p)


@needs_git
def test_commit_matches_git_rev_parse():
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("gendm is not imported from a git work tree")
    g = provenance()["git"]
    assert g["commit"] == head.stdout.strip() and head.stdout.strip().startswith(g["short"])
    assert isinstance(g["dirty"], bool)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs /proc/cpuinfo")
def test_cpu_flags_agree_with_proc_cpuinfo():
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = set(next(ln for ln in lines if ln.startswith("flags")).split(":", 1)[1].split())
    model = next(ln for ln in lines if ln.startswith("model name")).split(":", 1)[1].strip()
    family = next(ln for ln in lines if ln.startswith("cpu family")).split(":", 1)[1].strip()
    cpu = provenance()["cpu"]
    assert cpu["model"] == model and cpu["family"] == family
    assert cpu["flags"] == {f: f in flags for f in CPU_FLAGS}


@needs_git
def test_dirty_flag_follows_the_work_tree(tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    if subprocess.run(["git", "rev-parse"], cwd=outside, capture_output=True).returncode == 0:
        pytest.skip("the temp directory lies inside a git work tree")
    assert git_state(outside) == {"commit": "unknown", "short": "unknown", "dirty": "unknown"}
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "one")
    clean = git_state(repo)
    assert clean["commit"] == _git(repo, "rev-parse", "HEAD") and clean["dirty"] is False
    (repo / "untracked.txt").write_text("b")
    assert git_state(repo)["dirty"] is True and git_state(repo)["changed_files"] == 1


def test_summary_json_carries_provenance(tmp_path):
    settings = dict(eval_every=300, eval_episodes=1, progress=False, tensorboard=False, threads=1)
    s = train(TrainSettings("dqn", "CartPole-v1", steps=300, out_dir=tmp_path, **settings))
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["provenance"]["threads"]["requested"] == 1
    # commit only: the dirty flag and file count may change while other work goes on in the checkout
    commit = written["provenance"]["git"]["commit"]
    assert commit == provenance()["git"]["commit"] == s["provenance"]["git"]["commit"]
    assert written["versions"]["torch"] == written["provenance"]["versions"]["torch"]  # versions() stays
