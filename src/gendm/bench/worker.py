"""One benchmark run in its own process: ``python -m gendm.bench.worker RUN_DIR``.

Reads ``RUN_DIR/run.json`` (a RunSpec), trains with resume, and leaves ``RUN_DIR/summary.json``.
Exit status: 0 done, 3 failed (the summary says why), anything else a crash (see worker.log).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from gendm.bench.spec import RunSpec


def execute(spec: RunSpec, run_dir: Path, threads: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """Train one run (resuming from ``run_dir`` if a checkpoint is there) with ``gendm.train.train``;
    return its summary. The task goes to the settings field the method's family reads it from
    (an offline method's dataset, a fine-tuner's text task, else the env)."""
    from gendm.core.checkpoint import CorruptCheckpointError

    try:
        summary = _run(spec, run_dir, threads, device)
    except CorruptCheckpointError as e:  # resuming cannot read the run's checkpoint: say how to redo it
        hint = f"Delete {run_dir / 'checkpoint'} and rerun `gendm bench` to redo this run from the start."
        summary = {"status": "failed", "error": f"{type(e).__name__}: {e.with_hint(hint)}"}
    except Exception as e:  # the run is marked failed with the reason; the bench goes on
        summary = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    return summary | {"run_id": spec.run_id}


def _run(spec: RunSpec, run_dir: Path, threads: int | None, device: str) -> dict[str, Any]:
    from gendm.train import settings_for_task, train

    settings = settings_for_task(
        spec.algo,
        spec.task,
        intrinsic=spec.intrinsic,
        backend=spec.backend,
        backend_options=spec.backend_options,
        steps=spec.steps,
        seed=spec.seed,
        device=device,
        out_dir=run_dir,
        overrides=spec.overrides,
        eval_every=spec.eval_every,
        eval_episodes=spec.eval_episodes,
        eval_deterministic=spec.eval_deterministic,
        resume=True,
        progress=False,
        threads=threads,
    )
    return train(settings)


def main() -> int:
    run_dir = Path(sys.argv[1])
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else None
    spec = RunSpec.from_json((run_dir / "run.json").read_text())
    summary = execute(spec, run_dir, threads)
    if summary["status"] != "ok":
        print(summary["error"], file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
