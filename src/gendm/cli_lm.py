"""``gendm agent`` (play a language agent) and ``gendm finetune`` (RL fine-tuning of a language model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gendm.core.atomic import atomic_write_json
from gendm.lm.guard import BackendOptions


def add_parsers(sub: Any, formatter: type) -> None:
    a = sub.add_parser(
        "agent",
        help="play a language agent (ReAct, StateAct, ReAct + Q re-ranking) on a text environment",
        formatter_class=formatter,
        description="Play AGENT over a language model for --episodes episodes and write OUT/summary.json\n"
        "(success rate, return, steps, invalid actions, unreadable answers, LM calls, cache hits).",
    )
    a.add_argument("agent", choices=["react", "stateact", "react+q"], help="the prompting agent")
    a.add_argument(
        "--env",
        required=True,
        help="a BabyAI / MiniGrid level (BabyAI-GoToRedBall-v0 or gendm/BabyAI-GoToRedBall-Text-v0) or a "
        "TextWorld game file (.z8 / .ulx)",
    )
    a.add_argument(
        "--backend",
        required=True,
        help="language model: hf:/path/to/model-dir or openai:http://host:port/v1#model",
    )
    a.add_argument("--episodes", type=int, default=10, help="episodes (reset seeds SEED, SEED+1, ...)")
    a.add_argument("--seed", type=int, default=0, help="first reset seed")
    a.add_argument("--max-steps", type=int, default=None, help="episode step limit (default: the env's)")
    a.add_argument("--cache", default=None, help="SQLite response cache: repeated prompts cost nothing")
    a.add_argument("--history", type=int, default=6, help="past turns shown in the prompt")
    a.add_argument("--max-new-tokens", type=int, default=96, help="upper bound on one answer's tokens")
    a.add_argument(
        "--chat", action=argparse.BooleanOptionalAction, default=True, help="chat API (instruct models)"
    )
    a.add_argument("--num-candidates", type=int, default=4, help="react+q: actions proposed per step")
    a.add_argument(
        "--proposal", choices=["logprobs", "sample"], default="logprobs", help="react+q: proposals"
    )
    a.add_argument("--q-episodes", type=int, default=40, help="react+q: scripted BabyAI episodes for the Q")
    limit = BackendOptions()
    lm = "openai: backend only: "
    a.add_argument(
        "--timeout-s", type=float, default=limit.timeout_s, help=lm + "socket timeout of one attempt"
    )
    a.add_argument(
        "--max-retries", type=int, default=limit.max_retries, help=lm + "retries of a failed request"
    )
    a.add_argument(
        "--deadline-s", type=float, default=limit.deadline_s, help=lm + "total time of one request"
    )
    a.add_argument(
        "--max-failure-rate",
        type=float,
        default=limit.max_failure_rate,
        help="the run fails once more than this fraction of model calls failed",
    )
    a.add_argument(
        "--failure-min-calls",
        type=int,
        default=limit.failure_min_calls,
        help="model calls made before --max-failure-rate is checked",
    )
    a.add_argument("--out", type=Path, default=None, help="output directory (default: runs/agent-AGENT-ENV)")

    f = sub.add_parser(
        "finetune",
        help="RL fine-tuning of a language model (LOOP) on a text task",
        formatter_class=formatter,
        description="LOOP (leave-one-out PPO without a critic, built on group_advantage) on the addition\n"
        "task: prompts 'add a b =', reward 1 for the right sum. Without --model a tiny GPT-2 is built and\n"
        "pretrained on noisy answers first (runs in about a minute on a CPU core). Writes OUT/summary.json\n"
        "(success before and after and every --eval-every iterations, reward per iteration) and the\n"
        "fine-tuned model in OUT/model. OUT/checkpoint is saved at every measurement: rerun the same\n"
        "command to resume an interrupted run, or with more --iterations to continue a finished one.",
    )
    f.add_argument("method", choices=["loop"], help="the fine-tuning method")
    f.add_argument("--task", choices=["addition"], default="addition", help="the text task")
    f.add_argument("--model", default=None, help="a local Hugging Face model directory (default: tiny GPT-2)")
    f.add_argument("--iterations", type=int, default=150, help="LOOP iterations")
    f.add_argument(
        "--eval-every", type=int, default=25, help="measure success (and checkpoint) every N iterations"
    )
    f.add_argument("--seed", type=int, default=0, help="random seed")
    f.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a LOOPConfig field (group_size, learning_rate, kl_coef, ...); repeatable",
    )  # fmt: skip
    f.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/finetune-loop-sSEED)"
    )
    f.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def agent(args: argparse.Namespace) -> int:
    from gendm.language_agents import LanguageAgentConfig
    from gendm.language_agents.play import play

    config = LanguageAgentConfig(chat=args.chat, history=args.history, max_new_tokens=args.max_new_tokens)
    limits = ("timeout_s", "max_retries", "deadline_s", "max_failure_rate", "failure_min_calls")
    options = BackendOptions(**{k: getattr(args, k) for k in limits})
    stats, q_info = play(
        args.agent,
        args.env,
        args.backend,
        config,
        args.episodes,
        args.seed,
        q_seed=args.seed,
        max_steps=args.max_steps,
        cache=args.cache,
        num_candidates=args.num_candidates,
        proposal=args.proposal,
        q_episodes=args.q_episodes,
        options=options,
    )
    if q_info is not None:
        print(
            f"Q-model: held-out ranking accuracy {q_info['ranking_accuracy']:.3f} "
            f"over {q_info['pairs']} pairs"
        )
    out = args.out or Path("runs") / f"agent-{args.agent}-{Path(args.env).stem.replace('/', '_')}"
    out.mkdir(parents=True, exist_ok=True)
    summary = {"agent": args.agent, "env": args.env, "backend": args.backend, **stats, "q_model": q_info}
    summary["backend_options"] = {k: getattr(options, k) for k in limits}
    atomic_write_json(out / "summary.json", summary)
    print(
        f"{args.agent} on {args.env}: success {stats['success_rate']:.2f} over {stats['episodes']} episodes, "
        f"mean steps {stats['mean_steps']:.1f}, unreadable answers {stats['parse_failures']} "
        f"(backend failures among them {stats['backend_errors']}), "
        f"LM calls {stats['lm_calls']}, cache hits {stats['cache_hits']}, {stats['wall_s']:.1f} s"
    )
    if stats["backend_errors"]:
        print(f"warning: the language model failed on some turns: {stats['last_error']}", file=sys.stderr)
    print(f"summary: {out / 'summary.json'}")
    return 0


def finetune(args: argparse.Namespace) -> int:
    from gendm.core.config import parse_assignments
    from gendm.train import TrainSettings, make_trainer

    out = args.out or Path("runs") / f"finetune-{args.method}-s{args.seed}"
    trainer = make_trainer(
        TrainSettings(
            args.method,
            text_task=args.task,
            backend=f"hf:{args.model}" if args.model else None,
            steps=args.iterations,
            eval_every=args.eval_every,
            seed=args.seed,
            out_dir=out,
            overrides=parse_assignments(args.overrides),
            progress=not args.no_progress,
        )
    )
    summary = trainer.run()
    if summary["resumed_at"] is not None:
        print(f"resumed from {out / 'checkpoint'} at iteration {summary['resumed_at']}")
    trainer.agent.save(out / "model")
    print(
        f"LOOP on {summary['task']}: success {summary['initial_success']:.3f} -> "
        f"{summary['final_success']:.3f} "
        f"after {summary['iterations']} iterations ({summary['loop_s']:.1f} s); model: {out / 'model'}"
    )
    print(f"summary: {out / 'summary.json'}")
    return 0
