"""ReAct vs StateAct vs ReAct + Q re-ranking on BabyAI text levels and on generated TextWorld games.

Per environment and agent: success rate, mean return, mean steps, the environment's invalid-action
flags, unreadable answers (parse failures, each replaced by the ``noop`` fallback), LM calls and
cache hits; over seeds, IQM with 95% stratified-bootstrap CIs (tasks = environments).

The Q-models of the re-ranking agent are trained first, offline, from scripted trajectories (never
the evaluated episodes): on BabyAI, the BabyAI bot with random actions mixed in (other reset seeds);
on TextWorld, walkthrough prefixes followed by random admissible commands on *other* generated
games. Their held-out ranking accuracy (expert action above a random other action; chance 0.5) is
reported beside the results.

Backends:

- ``--backend sft`` (what this CPU can run): per seed and environment, a small GPT-2 (word-level
  tokenizer built from the prompts) is fine-tuned on expert demonstrations rendered in each agent's
  own format (``gendm.language_agents.imitation``; BabyAI bot, TextWorld walkthroughs of the training
  games), one model for ReAct (also the re-ranker's proposer) and one for StateAct. Re-ranking
  samples ``--num-candidates`` answers from the ReAct model and lets Q pick.
- a served or local model, the same for every agent: ``openai:URL#MODEL`` or ``hf:DIR``.

    # this CPU: 5 seeds of small fine-tuned language policies
    .venv/bin/python benchmarks/language_agents.py --backend sft --seeds 5 --out runs/language_agents
    # a served model (vLLM, llama.cpp server, SGLang, Ollama: any OpenAI-compatible endpoint)
    .venv/bin/python benchmarks/language_agents.py \\
        --backend 'openai:http://localhost:8000/v1#Qwen2.5-7B-Instruct' --proposal logprobs \\
        --episodes 50 --textworld-games 10 --history 6 --cache runs/lm-cache.sqlite \\
        --out runs/language_agents_qwen
    # a local Hugging Face model directory (base models: add --no-chat)
    .venv/bin/python benchmarks/language_agents.py --backend hf:/path/to/model --out runs/language_agents_hf
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gendm.bench.stats import stratified_bootstrap_ci
from gendm.envs.text_minigrid import make_text_minigrid
from gendm.envs.textworld_env import TextWorldEnv, make_textworld_game
from gendm.finetune.sft import supervised_finetune
from gendm.language_agents import (
    LanguageAgentConfig,
    QModel,
    QRerankAgent,
    ReActAgent,
    StateActAgent,
    collect_babyai_transitions,
    collect_textworld_transitions,
    hashed_ngram_embed,
    ranking_accuracy,
    run_episodes,
)
from gendm.language_agents.imitation import babyai_expert, demonstration_pairs, walkthrough_expert
from gendm.lm import CachedBackend, GenerationSettings, make_backend
from gendm.lm.tiny import save_model_dir, tiny_gpt2, word_tokenizer

AGENTS = ("react", "stateact", "react+q")
METRICS = ("success_rate", "mean_return", "mean_steps")
COUNTS = ("invalid_actions", "lm_calls", "parse_failures", "retried", "cache_hits", "wall_s")


# ------------------------------------------------------------------------------------------ environments
class BabyAI:
    def __init__(self, level: str) -> None:
        self.name, self.level = f"babyai/{level.removeprefix('BabyAI-').removesuffix('-v0')}", level

    def demos(self, agent: ReActAgent, args: argparse.Namespace, seed: int) -> list[tuple[str, str]]:
        env = make_text_minigrid(self.level)
        try:
            return demonstration_pairs(
                agent, env, babyai_expert, args.demo_episodes, seed=100_000 + 1000 * seed
            )
        finally:
            env.close()

    def q_data(self, args: argparse.Namespace, seed: int) -> tuple[list, list]:
        train = collect_babyai_transitions(self.level, args.q_episodes, seed=200_000 + 1000 * seed)
        held = collect_babyai_transitions(self.level, 15, seed=300_000 + 1000 * seed)
        return train, held

    def evaluate(self, agent: Any, args: argparse.Namespace) -> dict[str, Any]:
        env = make_text_minigrid(self.level)
        try:
            stats = run_episodes(agent, env, args.episodes, seed=0)  # the same episodes for every seed
        finally:
            env.close()
        stats.pop("episodes_detail")
        return stats


class TextWorld:
    name = "textworld"

    def __init__(self, args: argparse.Namespace) -> None:
        make = lambda s: str(make_textworld_game(args.games_dir, seed=s, world_size=3, nb_objects=5))  # noqa: E731
        self.evals = [make(i) for i in range(args.textworld_games)]
        self.trains = [make(1000 + i) for i in range(args.textworld_train_games)]
        self.max_steps = args.textworld_max_steps

    def demos(self, agent: ReActAgent, args: argparse.Namespace, seed: int) -> list[tuple[str, str]]:
        pairs = []
        for game in self.trains:
            env = TextWorldEnv(game, max_steps=self.max_steps)
            try:
                pairs += demonstration_pairs(agent, env, walkthrough_expert, 1, seed=seed)
            finally:
                env.close()
        return pairs

    def q_data(self, args: argparse.Namespace, seed: int) -> tuple[list, list]:
        train = collect_textworld_transitions(self.trains, self.max_steps, seed=seed)
        held = collect_textworld_transitions(self.evals, self.max_steps, seed=seed + 1)
        return train, held

    def evaluate(self, agent: Any, args: argparse.Namespace) -> dict[str, Any]:
        parts = []
        for game in self.evals:
            env = TextWorldEnv(game, max_steps=self.max_steps)
            try:
                parts.append(run_episodes(agent, env, 1, seed=0))
            finally:
                env.close()
        n = sum(p["episodes"] for p in parts)
        out: dict[str, Any] = {"episodes": n}
        for k in METRICS:
            out[k] = sum(p[k] * p["episodes"] for p in parts) / max(n, 1)
        for k in COUNTS:
            out[k] = sum(p[k] for p in parts)
        return out


# ------------------------------------------------------------------------------------------ models
def agent_config(args: argparse.Namespace) -> LanguageAgentConfig:
    return LanguageAgentConfig(chat=args.chat, max_new_tokens=args.max_new_tokens, history=args.history)


def train_q(env: Any, args: argparse.Namespace, seed: int) -> tuple[QModel, dict[str, Any]]:
    t0 = time.perf_counter()
    train, held = env.q_data(args, seed)
    embed = hashed_ngram_embed
    if args.q_embed == "minilm":
        from gendm.lm import SentenceEmbedder

        embed = SentenceEmbedder.default().embed
    q = QModel(embed, seed=seed)
    q.fit([t for ep in train for t in ep], method=args.q_method, epochs=args.q_epochs)
    rate, pairs = ranking_accuracy(q, [t for ep in held for t in ep], seed=seed)
    info = {"ranking_accuracy": rate, "pairs": pairs, "transitions": sum(map(len, train))}
    info["seconds"] = round(time.perf_counter() - t0, 1)
    return q, info


def sft_policy(
    env: Any, agent_cls: type, args: argparse.Namespace, seed: int, workdir: Path
) -> tuple[Any, dict]:
    """A small GPT-2 fine-tuned on ``env``'s expert demonstrations in ``agent_cls``'s format."""
    t0 = time.perf_counter()
    pairs = env.demos(agent_cls(None, agent_config(args)), args, seed)
    tok = word_tokenizer([p + "\n" + a for p, a in pairs])
    model = tiny_gpt2(tok, n_layer=args.layers, n_embd=args.width, n_positions=args.max_length, seed=seed)
    losses = supervised_finetune(
        model, tok, pairs, steps=args.sft_steps, batch_size=args.sft_batch, lr=args.sft_lr,
        max_length=args.max_length, seed=seed, progress=False,
    )  # fmt: skip
    path = save_model_dir(model, tok, workdir / f"{env.name.replace('/', '_')}-{agent_cls.name}-s{seed}")
    lm = make_backend(f"hf:{path}", settings=GenerationSettings(max_new_tokens=args.max_new_tokens))
    info = {
        "pairs": len(pairs),
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return lm, info


def served_model(args: argparse.Namespace) -> Any:
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    backend = make_backend(args.backend, settings=settings)
    return CachedBackend(backend, args.cache) if args.cache else backend


def agents_for(lms: dict[str, Any], q: QModel, args: argparse.Namespace) -> dict[str, Any]:
    cfg = agent_config(args)
    return {
        "react": ReActAgent(lms["react"], cfg),
        "stateact": StateActAgent(lms["stateact"], cfg),
        "react+q": QRerankAgent(
            ReActAgent(lms["react"], cfg), q, num_candidates=args.num_candidates, proposal=args.proposal
        ),
    }


# ------------------------------------------------------------------------------------------ report
def aggregate(rows: list[dict[str, Any]], envs: list[str], reps: int) -> dict[str, Any]:
    """Per agent: success-rate IQM [95% CI] over environments x seeds, and per-environment means."""
    out = {}
    for agent in AGENTS:
        per_env = [
            np.array([r["success_rate"] for r in rows if r["agent"] == agent and r["env"] == e]) for e in envs
        ]
        per_env = [x for x in per_env if len(x)]
        if not per_env:
            continue
        entry: dict[str, Any] = {"success_iqm": stratified_bootstrap_ci(per_env, reps=reps)}
        for e in envs:
            mine = [r for r in rows if r["agent"] == agent and r["env"] == e]
            if mine:
                entry[e] = {k: float(np.mean([r[k] for r in mine])) for k in (*METRICS, "parse_failures")}
                entry[e]["per_seed_success"] = [r["success_rate"] for r in mine]
        out[agent] = entry
    return out


def table(agg: dict[str, Any], envs: list[str]) -> str:
    head = (
        "| agent | success IQM [95% CI] | "
        + " | ".join(f"{e}: success (per seed) / unreadable" for e in envs)
        + " |"
    )
    lines = [head, "|---|---|" + "---|" * len(envs)]
    for agent, e in agg.items():
        point, lo, hi = e["success_iqm"]
        cells = []
        for env in envs:
            if env in e:
                seeds = ", ".join(f"{s:.2f}" for s in e[env]["per_seed_success"])
                cells.append(f"{e[env]['success_rate']:.2f} ({seeds}) / {e[env]['parse_failures']:.1f}")
            else:
                cells.append("-")
        lines.append(f"| {agent} | {point:.2f} [{lo:.2f}, {hi:.2f}] | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claim(out: Path, env: str, seed: int) -> bool:
    """Take the (env, seed) unit unless it is done or claimed: several processes may share one --out
    (start them with and without --reverse). Remove ``claims/`` after killing a run."""
    done = out / "runs.jsonl"
    for line in done.read_text().splitlines() if done.exists() else []:
        row = json.loads(line)
        if row["env"] == env and row["seed"] == seed:
            return False
    (out / "claims").mkdir(exist_ok=True)
    try:
        (out / "claims" / f"{env.replace('/', '_')}-s{seed}").open("x").close()
    except FileExistsError:
        return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backend", default="sft", help="'sft', or a gendm.lm.make_backend spec (hf:DIR, openai:URL#MODEL)"
    )
    p.add_argument(
        "--cache", default=None, help="SQLite response cache for a served model (gendm.lm.CachedBackend)"
    )
    p.add_argument(
        "--seeds", type=int, default=5, help="sft: training seeds; a served model: repeats (1 is enough)"
    )
    p.add_argument(
        "--babyai-levels", nargs="+", default=["BabyAI-GoToRedBallNoDists-v0", "BabyAI-GoToObj-v0"]
    )
    p.add_argument("--episodes", type=int, default=20, help="BabyAI evaluation episodes per agent and seed")
    p.add_argument("--textworld-games", type=int, default=5, help="generated TextWorld games to evaluate on")
    p.add_argument(
        "--textworld-train-games", type=int, default=20, help="other games (demonstrations and Q data)"
    )
    p.add_argument("--textworld-max-steps", type=int, default=30)
    p.add_argument("--games-dir", default=str(Path(tempfile.gettempdir()) / "gendm-textworld-games"))
    p.add_argument("--skip-textworld", action="store_true")
    p.add_argument("--q-embed", choices=("minilm", "hashed"), default="minilm")
    p.add_argument("--q-method", choices=("mc", "fqi"), default="fqi")
    p.add_argument("--q-episodes", type=int, default=40, help="bot+random BabyAI episodes for the Q")
    p.add_argument("--q-epochs", type=int, default=40)
    p.add_argument("--num-candidates", type=int, default=4)
    p.add_argument("--proposal", choices=("logprobs", "sample"), default="sample")
    p.add_argument("--history", type=int, default=2, help="past turns in the prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None, help="default: off for sft")
    p.add_argument("--demo-episodes", type=int, default=300, help="sft: BabyAI bot episodes per model")
    p.add_argument("--sft-steps", type=int, default=300)
    p.add_argument("--sft-batch", type=int, default=16)
    p.add_argument("--sft-lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument(
        "--max-length", type=int, default=768, help="sft: tokens per training example (prompt cut left)"
    )
    p.add_argument("--reps", type=int, default=10_000, help="bootstrap replicates")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reverse", action="store_true", help="take seeds from the last (a second process)")
    p.add_argument("--out", default="runs/language_agents")
    p.add_argument(
        "--models-dir", default=None, help="sft: keep the fine-tuned models here (default: discard)"
    )
    args = p.parse_args()
    if args.chat is None:
        args.chat = args.backend != "sft"
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "runs.jsonl"  # one line per (env, seed, agent): a rerun skips finished units
    envs: list[Any] = [BabyAI(level) for level in args.babyai_levels]
    if not args.skip_textworld:
        envs.append(TextWorld(args))
    served = None if args.backend == "sft" else served_model(args)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.models_dir or tmp)  # hf:DIR backends for `gendm agent` or a bench spec
        seeds = list(range(args.seeds))
        for seed in reversed(seeds) if args.reverse else seeds:
            for env in envs:
                if not claim(out, env.name, seed):
                    continue  # done, or another process of this benchmark is on it
                q, q_info = train_q(env, args, seed)
                extra: dict[str, Any] = {"q": q_info}
                if served is None:
                    react, extra["sft_react"] = sft_policy(env, ReActAgent, args, seed, workdir)
                    stateact, extra["sft_stateact"] = sft_policy(env, StateActAgent, args, seed, workdir)
                    lms = {"react": react, "stateact": stateact}
                else:
                    lms = {"react": served, "stateact": served}
                new = []
                for name, agent in agents_for(lms, q, args).items():
                    stats = env.evaluate(agent, args)
                    new.append({"env": env.name, "seed": seed, "agent": name, **stats, **extra})
                    print(
                        f"{env.name} seed {seed} {name}: success {stats['success_rate']:.2f} "
                        f"steps {stats['mean_steps']:.1f} unreadable {stats['parse_failures']} "
                        f"({stats['wall_s']:.0f} s; Q acc {q_info['ranking_accuracy']:.2f})",
                        flush=True,
                    )
                with done_path.open("a") as f:
                    f.write("".join(json.dumps(r) + "\n" for r in new))
    if isinstance(served, CachedBackend):
        served.close()
    names = [e.name for e in envs]
    rows = [json.loads(x) for x in done_path.read_text().splitlines()] if done_path.exists() else []
    rows = [r for r in rows if r["seed"] < args.seeds and r["env"] in names]
    agg = aggregate(rows, names, args.reps)
    (out / "language_agents.json").write_text(
        json.dumps({"args": vars(args), "rows": rows, "aggregate": agg}, indent=1)
    )
    text = table(agg, names)
    (out / "language_agents.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
