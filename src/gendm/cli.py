"""Command line: ``gendm train | bench | report | data | list | agent | finetune``. Every option's help
shows its default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gendm.core.atomic import check_out_dir
from gendm.core.errors import GendmError

EPILOG_TRAIN = "Algorithm options: `gendm train ALGO --help` lists ALGO's config fields for --set."


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # a help text that already says its default (a computed one) gets no second "(default: None)"
        if action.help and "(default:" in action.help:
            return action.help
        return super()._get_help_string(action)


def _algo_help(argv: list[str]) -> str:
    """When ``gendm train ALGO --help`` names a registered method, describe its config fields."""
    from gendm.core.config import describe
    from gendm.train import all_methods

    methods = all_methods()
    names = [a for a in argv if a in methods]
    if not names:
        return EPILOG_TRAIN
    m = methods.get(names[0])
    return f"{m.name}: {m.summary}. Config fields (set with --set key=value):\n{describe(m.config_cls)}"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        prog="gendm", description="Generative models in decision making.", formatter_class=_Formatter
    )
    sub = p.add_subparsers(
        dest="command", required=True, metavar="{train,bench,report,data,list,agent,finetune}"
    )

    t = sub.add_parser(
        "train",
        help="train one agent on one environment (online) or on one dataset (offline)",
        formatter_class=_Formatter,
        epilog=_algo_help(argv) if "train" in argv and ("-h" in argv or "--help" in argv) else EPILOG_TRAIN,
    )
    t.add_argument("algo", help="method name (see `gendm list algos`)")
    t.add_argument(
        "--env",
        default=None,
        help="Gymnasium environment id (see `gendm list envs`); offline algorithms default to the dataset's",
    )
    t.add_argument(
        "--dataset",
        default=None,
        help="offline algorithms: dataset id or path to learn from (see `gendm data list`)",
    )
    t.add_argument(
        "--text-task",
        default=None,
        help="fine-tuners of a language model (loop): the text task, e.g. addition",
    )
    t.add_argument(
        "--backend",
        default=None,
        help="language methods: the model, hf:/path/to/model-dir or openai:http://host:port/v1#model "
        "(loop without one: a tiny GPT-2)",
    )
    t.add_argument(
        "--steps",
        type=int,
        default=100_000,
        help="steps to train for: env steps (online algorithms), gradient steps (offline algorithms) "
        "or iterations (fine-tuners)",
    )
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    t.add_argument(
        "--out", type=Path, default=None, help="run directory (default: runs/ALGO-ENV_OR_DATASET-sSEED)"
    )
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an algorithm config field; repeatable",
    )
    t.add_argument(
        "--intrinsic",
        default=None,
        metavar="KIND[,key=value...]",
        help="online algorithms: add an exploration reward to the training env: rnd | ellm | lm, e.g. "
        "'lm,backend=openai:http://localhost:8000/v1#qwen,cache=runs/lm.sqlite' (fields: coef, beta, "
        "episodic, threshold, backend, cache, batch, chat; caption rewards need a "
        "gendm/MiniGrid-*-Captioned-* env)",
    )
    t.add_argument(
        "--eval-every",
        type=int,
        default=5_000,
        help="evaluate every N steps (env steps, or gradient steps offline)",
    )
    t.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes per evaluation")
    t.add_argument(
        "--eval-stochastic",
        action="store_true",
        help="evaluate with sampled (seeded) actions instead of the deterministic policy; for partially "
        "observed tasks such as MiniGrid, where an argmax policy can loop forever",
    )
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint in --out")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    b = sub.add_parser(
        "bench",
        help="run a benchmark spec (TOML) and write its report",
        formatter_class=_Formatter,
        description="Run every (method, task, seed) of SPEC not yet done in --out, then write "
        "results.sqlite, report.md, report.html and summary.json.\n\n" + _spec_format(),
    )
    b.add_argument("spec", help="path to a spec .toml, or a built-in spec name (demo)")
    b.add_argument("--out", type=Path, required=True, help="benchmark directory (rerun to resume)")
    b.add_argument("--workers", type=int, default=None, help="parallel runs (default: number of CPU cores)")
    b.add_argument("--backend", choices=["local", "ray"], default="local", help="local process pool or Ray")
    b.add_argument(
        "--address",
        default=None,
        help="Ray cluster address: auto or ray://HOST:PORT (default: start a local Ray instance)",
    )
    b.add_argument(
        "--threads-per-worker",
        type=int,
        default=None,
        help="torch threads per run (default: cores // workers)",
    )
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    r = sub.add_parser(
        "report", help="regenerate the reports of a benchmark directory", formatter_class=_Formatter
    )
    r.add_argument("dir", type=Path, help="benchmark directory written by `gendm bench`")
    r.add_argument("--reps", type=int, default=50_000, help="bootstrap replicates for confidence intervals")

    _add_data_parser(sub)
    from gendm import cli_lm

    cli_lm.add_parsers(sub, _Formatter)

    li = sub.add_parser(
        "list",
        help="list algorithms, environments (suites with references) or specs",
        formatter_class=_Formatter,
    )
    li.add_argument(
        "what", nargs="?", choices=["algos", "envs", "suites", "specs"], default="algos", help="what to list"
    )
    return p


def _spec_format() -> str:
    from gendm.bench import spec

    return "Spec format:\n" + spec.__doc__.split("\n\n", 1)[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        from gendm import cli_lm

        commands = {
            "train": _train,
            "bench": _bench,
            "report": _report,
            "data": _data,
            "list": _list,
            "agent": cli_lm.agent,
            "finetune": cli_lm.finetune,
        }
        return commands[args.command](args)
    except GendmError as e:
        print(f"gendm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gendm: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


def _run_train(settings) -> dict:
    """``train(settings)``; an unreadable checkpoint in --out says how to start the run over."""
    from gendm.core.checkpoint import CorruptCheckpointError
    from gendm.train import train

    try:
        return train(settings)
    except CorruptCheckpointError as e:
        if not settings.resume:
            raise
        raise e.with_hint(
            f"Rerun with --no-resume to start this run over in {settings.out_dir} (the checkpoint is "
            "replaced), or choose a new --out."
        ) from None


def _train(args: argparse.Namespace) -> int:
    from gendm.core.config import parse_assignments
    from gendm.train import TrainSettings

    source = args.env or args.dataset or args.text_task or "no-env"
    out = args.out or Path("runs") / f"{args.algo}-{source.strip('/').replace('/', '_')}-s{args.seed}"
    summary = _run_train(
        TrainSettings(
            args.algo,
            args.env,
            dataset=args.dataset,
            text_task=args.text_task,
            backend=args.backend,
            intrinsic=args.intrinsic,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            out_dir=out,
            overrides=parse_assignments(args.overrides),
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            eval_deterministic=not args.eval_stochastic,
            resume=not args.no_resume,
            progress=not args.no_progress,
            threads=args.threads,
        )
    )
    if summary["step_unit"] == "grad_steps":
        spent = (
            f"after {summary['grad_steps']} gradient steps on {summary['dataset_transitions']} transitions"
        )
    elif summary["step_unit"] == "iterations":
        spent = f"after {summary['iterations']} iterations, {summary['grad_steps']} gradient steps"
    else:
        spent = f"after {summary['env_steps']} env steps, {summary['grad_steps']} gradient steps"
    extra = "".join(
        f", {name} {summary[key]:.3f}"
        for key, name in (("final_score", "normalised score"), ("success_rate", "success rate"))
        if summary.get(key) is not None
    )
    std = summary.get("final_return_std")
    print(
        f"final return (last checkpoint): {summary['final_return']:.2f}"
        + (f" ± {std:.2f}" if std is not None else "")
        + f" {spent}, {summary['wall_s']:.1f} s{extra}"
        + (f", precision {summary['precision']}" if summary.get("precision") else "")
    )
    for warning in summary.get("warnings") or []:
        print(f"warning: {warning}")
    print(f"summary: {out / 'summary.json'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from gendm.bench.report import format_summary_table
    from gendm.bench.runner import run_bench
    from gendm.bench.spec import load_spec

    check_out_dir(args.out, "benchmark")
    spec = load_spec(args.spec)
    for reason in spec.skipped:
        print(f"skipped: {reason}")
    summary = run_bench(
        spec,
        args.out,
        workers=args.workers,
        backend=args.backend,
        address=args.address,
        threads_per_worker=args.threads_per_worker,
        progress=not args.no_progress,
    )
    print(format_summary_table(summary))
    print(f"report: {(args.out / 'report.html').resolve()}")
    return 0 if summary["runs"]["failed"] == 0 else 1


def _report(args: argparse.Namespace) -> int:
    from gendm.bench.report import format_summary_table, write_report

    summary = write_report(args.dir, reps=args.reps)
    print(format_summary_table(summary))
    print(f"report: {(args.dir / 'report.html').resolve()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.what == "algos":
        from gendm.core.methods import FAMILIES
        from gendm.train import all_methods

        methods = all_methods().items()
        for family, what in FAMILIES.items():
            members = [(name, m) for name, m in methods if m.family == family]
            if members:
                print(f"{family} ({what}):")
            for name, m in members:
                actions = f"actions: {'/'.join(m.action_spaces):<13} " if m.action_spaces else ""
                print(f"  {name:<16} {actions}{m.summary}")
    elif args.what in ("envs", "suites"):
        from gendm.envs.references import REFERENCES, SUITES

        for suite, tasks in SUITES.items():
            print(f"{suite}:")
            for task in tasks:
                ref = REFERENCES[task]
                print(f"  {task:<26} random {ref.random_return:>9.1f}   expert {ref.expert_return:>9.1f}")
        if args.what == "envs":
            print(
                "Any registered Gymnasium id works too; tasks outside the suites are normalised by "
                "observed min-max."
            )
    else:
        from gendm.bench.spec import builtin_specs

        for name, path in sorted(builtin_specs().items()):
            print(f"{name:<10} {path}")
    return 0


# ------------------------------------------------------------------------------------- gendm data
_ROOT_HELP = "datasets root; unset means Minari's: $MINARI_DATASETS_PATH, else ~/.minari/datasets"


def _add_data_parser(sub) -> None:
    d = sub.add_parser(
        "data",
        help="collect, inspect and list offline datasets (Minari format)",
        formatter_class=_Formatter,
        description="Offline datasets in Minari's format: `minari.load_dataset(ID)` reads what gendm\n"
        "writes, and gendm reads any local Minari dataset (HDF5).",
    )
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="{collect,info,list}")
    c = dsub.add_parser(
        "collect",
        help="roll out a policy and save the transitions as a dataset",
        formatter_class=_Formatter,
        description="Roll out a policy on one environment and save the transitions as Minari dataset --out.\n"
        "A checkpoint policy acts deterministically; --noise and --epsilon perturb any policy.",
    )
    c.add_argument("--env", required=True, help="Gymnasium environment id")
    c.add_argument(
        "--policy",
        default="random",
        help="random, expert (a scripted expert from gendm.envs.experts), or the --out directory of "
        "`gendm train` (or its checkpoint subdirectory)",
    )
    c.add_argument(
        "--noise", type=float, default=0.0, help="std of Gaussian noise on the action scaled to [-1, 1]"
    )
    c.add_argument(
        "--epsilon", type=float, default=0.0, help="probability of a uniformly random action instead"
    )
    size = c.add_mutually_exclusive_group(required=True)
    size.add_argument("--episodes", type=int, default=None, help="complete episodes to collect")
    size.add_argument(
        "--steps",
        type=int,
        default=None,
        help="transitions to collect (the last episode is marked truncated)",
    )
    c.add_argument(
        "--out",
        required=True,
        metavar="DATASET_ID",
        help="dataset id namespace/name-vN, e.g. gendm/pendulum/expert-v0",
    )
    c.add_argument("--seed", type=int, default=0, help="seeds the environment, the policy and the noise")
    c.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
    c.add_argument("--overwrite", action="store_true", help="replace an existing dataset of the same id")
    c.add_argument("--device", default="cpu", help="device of a checkpoint policy")
    c.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    i = dsub.add_parser("info", help="print a dataset's statistics", formatter_class=_Formatter)
    i.add_argument("dataset", help="dataset id (or path to its directory)")
    i.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)
    li = dsub.add_parser("list", help="list the local datasets", formatter_class=_Formatter)
    li.add_argument("--root", type=Path, default=None, help=_ROOT_HELP)


def _data(args: argparse.Namespace) -> int:
    from gendm.data.minari_io import (
        empty_root_message,
        list_datasets,
        load_dataset,
        metadata_env_id,
        read_metadata,
        save_dataset,
    )

    if args.data_command == "collect":
        from gendm.data.collect import collect

        policy, policy_info = args.policy, None
        if Path(args.policy).is_dir():  # a training run: its agent is rebuilt by the agents layer
            from gendm.agents.loading import checkpoint_policy

            policy, policy_info = checkpoint_policy(args.policy, args.device, env_id=args.env)
        ds = collect(
            args.env,
            policy,
            episodes=args.episodes,
            steps=args.steps,
            noise=args.noise,
            epsilon=args.epsilon,
            seed=args.seed,
            progress=not args.no_progress,
            command=_collect_command(args),
            policy_info=policy_info,
        )
        path = save_dataset(ds, args.out, root=args.root, overwrite=args.overwrite)
        returns = ds.episode_returns()
        print(
            f"wrote {args.out}: {len(ds)} transitions, {ds.num_episodes} episodes, return "
            f"{returns.mean():.2f} ± {returns.std():.2f}"
        )
        print(f"path: {path}")
    elif args.data_command == "info":
        print(_format_info(load_dataset(args.dataset, root=args.root)))
    else:
        ids = list_datasets(args.root)
        if not ids:
            print(f"No datasets: {empty_root_message(args.root)}")
        for dataset_id in ids:
            try:
                m = read_metadata(dataset_id, args.root)
                policy = m.get("provenance", {}).get("policy") or m.get("algorithm_name", "-")
                print(
                    f"{dataset_id:<40} {metadata_env_id(m) or '-':<26} {m.get('total_steps', '?'):>9} steps "
                    f"{m.get('total_episodes', '?'):>7} episodes  {policy}"
                )
            except GendmError as e:
                print(f"{dataset_id:<40} unreadable: {e}")
    return 0


def _collect_command(args: argparse.Namespace) -> str:
    """The collect command with every setting spelled out (for the dataset's provenance)."""
    size = f"--episodes {args.episodes}" if args.episodes is not None else f"--steps {args.steps}"
    return (
        f"gendm data collect --env {args.env} --policy {args.policy} {size} --noise {args.noise} "
        f"--epsilon {args.epsilon} --seed {args.seed} --out {args.out}"
    )


def _format_info(ds) -> str:
    s, m = ds.stats(), ds.metadata
    r, n = s["return"], s["length"]
    lines = [
        f"dataset:      {m.get('dataset_id', '-')}  ({m.get('path', '-')})",
        f"environment:  {ds.env_id}",
        f"description:  {m.get('description', '-')}",
        f"provenance:   {m.get('provenance', '-')}",
        f"transitions:  {s['transitions']}  episodes: {s['episodes']}  terminations: {s['terminations']}  "
        f"truncations: {s['truncations']}",
        f"return:       {r['mean']:.2f} ± {r['std']:.2f}  [min {r['min']:.2f}, max {r['max']:.2f}]",
        f"length:       {n['mean']:.1f} ± {n['std']:.1f}  [min {n['min']:.0f}, max {n['max']:.0f}]",
    ]
    lo, hi = m.get("ref_min_score"), m.get("ref_max_score")
    if lo is not None and hi is not None and hi != lo:
        score = 100 * (r["mean"] - lo) / (hi - lo)
        lines.append(f"normalised:   {score:.1f}  (0 = ref_min_score {lo:g}, 100 = ref_max_score {hi:g})")
    for key in ("observations", "actions"):
        st = s[key]
        lines.append(f"{key} per dimension (mean / std / min / max):")
        for d in range(len(st["mean"])):
            values = " ".join(f"{st[k][d]:>11.4g}" for k in ("mean", "std", "min", "max"))
            lines.append(f"  [{d:>3}] {values}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
