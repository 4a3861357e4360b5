"""Command line: ``gendm train | bench | report | list``. Every option's help shows its default."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gendm.core.errors import GendmError

EPILOG_TRAIN = "Algorithm options: `gendm train ALGO --help` lists ALGO's config fields for --set."


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _algo_help(argv: list[str]) -> str:
    """When ``gendm train ALGO --help`` names a known algorithm, describe its config fields."""
    from gendm.agents import ALGOS
    from gendm.core.config import describe

    names = [a for a in argv if a in ALGOS]
    if not names:
        return EPILOG_TRAIN
    spec = ALGOS.get(names[0])
    return (
        f"{spec.name}: {spec.summary}. Config fields (set with --set key=value):\n{describe(spec.config_cls)}"
    )


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(
        prog="gendm", description="Generative models in decision making.", formatter_class=_Formatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,bench,report,list}")

    t = sub.add_parser(
        "train",
        help="train one agent on one environment",
        formatter_class=_Formatter,
        epilog=_algo_help(argv) if "train" in argv and ("-h" in argv or "--help" in argv) else EPILOG_TRAIN,
    )
    t.add_argument("algo", help="algorithm name (see `gendm list algos`)")
    t.add_argument("--env", required=True, help="Gymnasium environment id (see `gendm list envs`)")
    t.add_argument("--steps", type=int, default=100_000, help="environment steps to train for")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--device", default="cpu", help="cpu, cuda, or auto")
    t.add_argument("--out", type=Path, default=None, help="run directory (default: runs/ALGO-ENV-sSEED)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override an algorithm config field; repeatable",
    )
    t.add_argument("--eval-every", type=int, default=5_000, help="evaluate every N env steps")
    t.add_argument("--eval-episodes", type=int, default=10, help="deterministic episodes per evaluation")
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
        return {"train": _train, "bench": _bench, "report": _report, "list": _list}[args.command](args)
    except GendmError as e:
        print(f"gendm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gendm: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace) -> int:
    from gendm.core.config import parse_assignments
    from gendm.train import TrainSettings, train

    out = args.out or Path("runs") / f"{args.algo}-{args.env.replace('/', '_')}-s{args.seed}"
    summary = train(
        TrainSettings(
            args.algo,
            args.env,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            out_dir=out,
            overrides=parse_assignments(args.overrides),
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            resume=not args.no_resume,
            progress=not args.no_progress,
            threads=args.threads,
        )
    )
    print(
        f"final return (last checkpoint): {summary['final_return']:.2f} ± {summary['final_return_std']:.2f} "
        f"after {summary['env_steps']} env steps, {summary['grad_steps']} gradient steps, "
        f"{summary['wall_s']:.1f} s"
    )
    print(f"summary: {out / 'summary.json'}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from gendm.bench.report import format_summary_table
    from gendm.bench.runner import run_bench
    from gendm.bench.spec import load_spec

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
    from gendm.bench.report import format_summary_table
    from gendm.bench.reporting import write_report

    summary = write_report(args.dir, reps=args.reps)
    print(format_summary_table(summary))
    print(f"report: {(args.dir / 'report.html').resolve()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.what == "algos":
        from gendm.agents import ALGOS

        for name, spec in ALGOS.items():
            print(f"{name:<8} {spec.kind:<11} actions: {'/'.join(spec.action_spaces):<13} {spec.summary}")
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


if __name__ == "__main__":
    raise SystemExit(main())
