"""ReAct vs StateAct vs ReAct + Q re-ranking on a BabyAI text level and on generated TextWorld games.

Per environment and agent: success rate, mean return, mean steps, the environment's invalid-action
flags, unreadable answers (parse failures, each replaced by the ``noop`` fallback), LM calls and
cache hits. The Q-models of the re-ranking agent are trained here first, offline, from scripted
trajectories (never from the evaluated episodes): on BabyAI, the BabyAI bot with random actions
mixed in (other seeds than the evaluation); on TextWorld, walkthrough prefixes followed by random
admissible commands on *other* generated games. Their held-out ranking accuracy (expert action
above a random other action; chance 0.5) is printed beside the results.

    # a served model (vLLM, llama.cpp server, TGI: any OpenAI-compatible endpoint)
    .venv/bin/python benchmarks/language_agents.py \\
        --backend 'openai:http://localhost:8000/v1#Qwen2.5-7B-Instruct' --episodes 20 --textworld-games 10
    # a local Hugging Face model directory (base models: add --no-chat)
    .venv/bin/python benchmarks/language_agents.py --backend hf:/path/to/model
    # smoke run with a tiny random GPT-2 built on the spot (answers are mostly unreadable)
    .venv/bin/python benchmarks/language_agents.py --backend tiny --episodes 3 --textworld-games 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gendm.envs.text_minigrid import make_text_minigrid
from gendm.envs.textworld_env import TextWorldEnv, make_textworld_game
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
from gendm.lm import CachedBackend, GenerationSettings, make_backend

WORDS = (
    "Thought Action Goal Current location Inventory Observation Mission You see In front of you are "
    "carrying nothing a the to go turn left right forward pick up drop toggle done look take open "
    "north south east west door key ball box red green blue purple yellow grey steps ahead I will"
)


def build_tiny_gpt2(path: Path) -> Path:
    """A 2-layer, 32-wide GPT-2 with random weights and a word-level vocabulary of the prompt words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    tok.train_from_iterator([WORDS, ": . , \n"], trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=4096, vocab_size=len(fast), bos_token_id=2, eos_token_id=3
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def make_lm(args: argparse.Namespace, workdir: Path) -> Any:
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens)
    if args.backend == "tiny":
        backend = make_backend(f"hf:{build_tiny_gpt2(workdir / 'tiny-gpt2')}", settings=settings)
    elif args.backend.startswith("hf:"):
        backend = make_backend(args.backend, settings=settings)
    else:
        backend = make_backend(args.backend)
    return CachedBackend(backend, args.cache) if args.cache else backend


def embed_fn(kind: str):
    if kind == "minilm":
        from gendm.lm import SentenceEmbedder

        return SentenceEmbedder.default().embed
    return hashed_ngram_embed


def train_q(data: list, held_out: list, args: argparse.Namespace, name: str) -> tuple[QModel, dict]:
    t0 = time.perf_counter()
    q = QModel(embed_fn(args.q_embed), seed=args.seed)
    q.fit([t for ep in data for t in ep], method=args.q_method, epochs=args.q_epochs)
    rate, pairs = ranking_accuracy(q, [t for ep in held_out for t in ep], seed=args.seed)
    print(
        f"[{name}] Q ({args.q_method}, {args.q_embed}): {sum(map(len, data))} transitions, held-out ranking "
        f"accuracy {rate:.3f} over {pairs} pairs (chance 0.5), {time.perf_counter() - t0:.1f} s"
    )
    return q, {"ranking_accuracy": rate, "pairs": pairs, "transitions": sum(map(len, data))}


def agents(lm: Any, q: QModel, args: argparse.Namespace) -> dict[str, Any]:
    cfg = LanguageAgentConfig(chat=args.chat, max_new_tokens=args.max_new_tokens, history=args.history)
    return {
        "react": ReActAgent(lm, cfg),
        "stateact": StateActAgent(lm, cfg),
        "react+q": QRerankAgent(
            ReActAgent(lm, cfg), q, num_candidates=args.num_candidates, proposal=args.proposal
        ),
    }


def merge(parts: list[dict]) -> dict:
    """Per-game results (one episode each) into one summary."""
    n = sum(p["episodes"] for p in parts)
    out = {"episodes": n}
    for k in ("success_rate", "mean_return", "mean_steps"):
        out[k] = sum(p[k] * p["episodes"] for p in parts) / max(n, 1)
    for k in ("invalid_actions", "lm_calls", "parse_failures", "retried", "cache_hits", "wall_s"):
        out[k] = sum(p[k] for p in parts)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--backend", required=True, help="'tiny', or a gendm.lm.make_backend spec (hf:DIR, openai:URL#MODEL)"
    )
    p.add_argument("--cache", default=None, help="SQLite response cache (gendm.lm.CachedBackend)")
    p.add_argument("--babyai-level", default="BabyAI-GoToRedBallNoDists-v0")
    p.add_argument("--episodes", type=int, default=5, help="BabyAI evaluation episodes per agent")
    p.add_argument("--textworld-games", type=int, default=2, help="generated TextWorld games to evaluate on")
    p.add_argument(
        "--textworld-train-games", type=int, default=3, help="other games to train the TextWorld Q"
    )
    p.add_argument("--textworld-max-steps", type=int, default=30)
    p.add_argument("--games-dir", default=str(Path(tempfile.gettempdir()) / "gendm-textworld-games"))
    p.add_argument("--q-embed", choices=("minilm", "hashed"), default="minilm")
    p.add_argument("--q-method", choices=("mc", "fqi"), default="fqi")
    p.add_argument("--q-episodes", type=int, default=40, help="bot+random BabyAI episodes for the Q")
    p.add_argument("--q-epochs", type=int, default=40)
    p.add_argument("--num-candidates", type=int, default=4)
    p.add_argument("--proposal", choices=("logprobs", "sample"), default="logprobs")
    p.add_argument("--history", type=int, default=6)
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument(
        "--chat", action=argparse.BooleanOptionalAction, default=None, help="default: off for tiny"
    )
    p.add_argument("--skip-textworld", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    if args.chat is None:
        args.chat = args.backend != "tiny"
    torch.set_num_threads(1)
    results: dict[str, Any] = {"args": vars(args), "q": {}, "runs": {}}

    with tempfile.TemporaryDirectory() as tmp:
        lm = make_lm(args, Path(tmp))
        # -- BabyAI ------------------------------------------------------------------------------------
        train = collect_babyai_transitions(args.babyai_level, args.q_episodes, seed=args.seed + 100_000)
        held = collect_babyai_transitions(args.babyai_level, 15, seed=args.seed + 200_000)
        q, results["q"]["babyai"] = train_q(train, held, args, "babyai")
        env = make_text_minigrid(args.babyai_level)
        for name, agent in agents(lm, q, args).items():
            stats = run_episodes(agent, env, args.episodes, seed=args.seed)
            stats.pop("episodes_detail")
            results["runs"][f"babyai/{name}"] = stats
            print(f"babyai/{name}: {fmt(stats)}", flush=True)
        env.close()
        # -- TextWorld ---------------------------------------------------------------------------------
        if not args.skip_textworld:
            make = lambda s: str(make_textworld_game(args.games_dir, seed=s, world_size=3, nb_objects=5))  # noqa: E731
            evals = [make(args.seed + i) for i in range(args.textworld_games)]
            trains = [make(args.seed + 1000 + i) for i in range(args.textworld_train_games)]
            data = collect_textworld_transitions(trains, args.textworld_max_steps, seed=args.seed)
            held = collect_textworld_transitions(evals, args.textworld_max_steps, seed=args.seed + 1)
            q, results["q"]["textworld"] = train_q(data, held, args, "textworld")
            for name, agent in agents(lm, q, args).items():
                parts = []
                for game in evals:
                    env = TextWorldEnv(game, max_steps=args.textworld_max_steps)
                    parts.append(run_episodes(agent, env, 1, seed=args.seed))
                    env.close()
                stats = merge(parts)
                results["runs"][f"textworld/{name}"] = stats
                print(f"textworld/{name}: {fmt(stats)}", flush=True)
        if isinstance(lm, CachedBackend):
            lm.close()
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def fmt(s: dict) -> str:
    return (
        f"success {s['success_rate']:.2f}  return {s['mean_return']:.3f}  steps {s['mean_steps']:.1f}  "
        f"invalid {s['invalid_actions']}  unreadable {s['parse_failures']}  LM calls {s['lm_calls']}  "
        f"cache hits {s['cache_hits']}  {s['wall_s']:.0f} s"
    )


if __name__ == "__main__":
    main()
