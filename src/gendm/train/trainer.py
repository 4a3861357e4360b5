"""The one run skeleton of every method family: settings, run identity, resume, checkpoints, the
evaluation cadence, the stop on divergence, interrupts and ``summary.json``. A family's trainer
(``online``, ``offline``, ``language``, ``lm_finetune``) subclasses :class:`Trainer` and contributes
its loop and its measurement; ``gendm.train.dispatch.train`` picks it by the method's family.

Protocol (fixed here, before any number is produced): evaluate at step 0 and every ``eval_every``
steps, and once more at the end, with ``eval_episodes`` deterministic episodes (sampled, seeded ones
with ``eval_deterministic=False``) on a separate environment reset with the same seed each time; the
reported ``final_return`` is the mean return of the **last** evaluation (the last checkpoint), never
the best. A checkpoint is written after every evaluation; a rerun with the same ``out_dir`` resumes
from it. Steps are env steps for the online loop, gradient steps for the offline loop and
iterations for a fine-tuner (``Trainer.step_unit``).
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

import gendm
from gendm.core.atomic import atomic_write_json, check_out_dir
from gendm.core.checkpoint import find_checkpoint_dir, load_checkpoint, save_checkpoint_dir
from gendm.core.config import to_dict
from gendm.core.device import flush_denormals
from gendm.core.errors import CheckpointError, ConfigError, TrainingDivergedError
from gendm.core.methods import METHODS, Method, run_option_problem
from gendm.core.provenance import provenance
from gendm.core.seeding import MAX_SEED
from gendm.train.logger import MetricLogger

EVAL_SEED_OFFSET = 10_000


@dataclass
class TrainSettings:
    """Everything about a run that is not the algorithm's own config."""

    algo: str
    env_id: str | None = None
    """Gymnasium id (a language agent's text env: a MiniGrid / BabyAI level or a TextWorld game file);
    offline runs may leave it out (the dataset's env is used)."""
    steps: int = 100_000
    """Env steps (online algorithms), gradient steps (offline algorithms) or iterations (fine-tuners)."""
    seed: int = 0
    device: str = "cpu"
    out_dir: Path = Path("runs/train")
    overrides: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 5_000
    eval_episodes: int = 10
    eval_deterministic: bool = True
    """False: evaluation samples the policy's actions (seeded), for partially observed tasks like MiniGrid."""
    log_every: int = 1_000
    resume: bool = True
    progress: bool = True
    tensorboard: bool = True
    threads: int | None = None
    flush_denormals: bool = True
    """Treat subnormal floats as zero while training (``gendm.core.device.flush_denormals``): a 4-5x
    faster Adam step on x86 CPUs once its moment estimates decay that far (BENCHMARKS.md section 3)."""
    dataset: str | None = None
    """Offline algorithms: dataset name or path (see ``gendm.data.minari_io.load_dataset``)."""
    intrinsic: str | dict[str, Any] | None = None
    """Online algorithms: an intrinsic exploration reward (``gendm.rewards.factory``), e.g. ``"rnd"``."""
    text_task: str | None = None
    """Fine-tuners of a language model: the text task, ``addition`` (or ``text:addition``)."""
    backend: str | None = None
    """Language methods: the model, ``hf:DIR`` or ``openai:URL#MODEL`` (LOOP without one: a tiny GPT-2)."""
    backend_options: dict[str, Any] | None = None
    """Language agents: ``gendm.lm.BackendOptions`` fields (timeouts, retries, failure threshold)."""

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        for name in ("steps", "eval_every", "eval_episodes", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(
                f"--seed must be in 0..{MAX_SEED} (seeds every random source), got {self.seed}."
            )
        if self.threads is not None and self.threads < 1:
            raise ConfigError(
                f"--threads must be >= 1, got {self.threads}; leave it unset for torch's choice."
            )
        if self.text_task is not None and not self.text_task.startswith("text:"):
            self.text_task = f"text:{self.text_task}"
        check_out_dir(self.out_dir, "run")


class Trainer:
    """The run skeleton. A family's subclass calls ``_begin(settings)`` first, builds ``config``,
    ``device``, ``agent`` (whatever is trained: an RL agent, a fine-tuner) and ``env_id`` (the task's
    id), calls ``_init_loop()``, and implements ``_loop()`` (train until ``settings.steps``, calling
    ``_after_step()`` after each step) and ``_measure()`` (one evaluation). The ``_extra_*`` hooks add
    what only it has to checkpoints, identity and summary; ``_start()`` is first-session work (it does
    not run on resume)."""

    step_unit = "env_steps"
    """The counter that ``steps``, ``eval_every`` and ``log_every`` refer to."""
    step_name = "env step"
    checkpoints = True
    """False: the run keeps no state to resume (a language agent replays its episodes)."""

    s: TrainSettings
    method: Method
    config: Any
    device: torch.device
    agent: Any
    env_id: str

    def _begin(self, s: TrainSettings) -> None:
        """Settings, threads, the registered method, and the run options it does not take refused."""
        self.s = s
        if s.threads:
            torch.set_num_threads(s.threads)
        self.method = METHODS.get(s.algo)
        problem = run_option_problem(
            self.method,
            intrinsic=s.intrinsic is not None,
            backend=s.backend,
            backend_options=s.backend_options is not None,
        )
        if problem is not None:
            raise ConfigError(problem[1])

    def _init_loop(self) -> None:
        self.env_steps = self.grad_steps = 0
        self.curve: list[dict[str, Any]] = []
        self.elapsed_before = 0.0  # wall-clock of earlier sessions of this run (resume)
        self.eval_s = 0.0
        self.pending: list[dict[str, torch.Tensor]] = []
        self.episodes: list[float] = []
        self.next_log = self.s.log_every
        self.ckpt_dir = self.s.out_dir / "checkpoint"
        self.resumed_at: int | None = None

    @property
    def progress(self) -> int:
        return getattr(self, self.step_unit)

    def _describe(self) -> str:
        return f"{self.s.algo} {self.env_id} seed {self.s.seed}"

    # ----------------------------------------------------------------------------------- the run
    def run(self) -> dict[str, Any]:
        s = self.s
        s.out_dir.mkdir(parents=True, exist_ok=True)
        resumed = s.resume and self.checkpoints and self._try_resume()
        self.resumed_at = self.progress if resumed else None
        self.logger = MetricLogger(s.out_dir, s.tensorboard, step_key=self.step_unit)
        self.t0 = time.perf_counter()
        self.bar = tqdm(
            total=s.steps,
            initial=min(self.progress, s.steps),
            unit="step",
            disable=not s.progress,
            desc=self._describe(),
            mininterval=1.0,
            dynamic_ncols=True,
        )
        if resumed:
            self.bar.write(f"Resumed {s.out_dir} at {self.step_name} {self.progress}.")
        status, error = "ok", None
        try:
            with flush_denormals(s.flush_denormals):
                if not resumed:
                    self._start()
                if not self.curve:
                    self._evaluate_and_checkpoint()
                if self.progress < s.steps:
                    self._loop()
                if self.curve[-1][self.step_unit] != self.progress:
                    self._evaluate_and_checkpoint()
        except TrainingDivergedError as e:
            status, error = "failed", str(e)
            raise
        except KeyboardInterrupt:
            status, error = "interrupted", "interrupted by the user; rerun the same command to resume"
            if self.curve and self._finite():
                self._save()  # keep the work since the last evaluation
            raise
        except Exception as e:  # a crash is a failed run, never an "ok" one with the last evaluation
            status, error = "failed", f"{type(e).__name__}: {e}"
            raise
        finally:
            self.bar.close()
            self.logger.close()
            summary = self._summary(status, error)
            if status != "interrupted":
                atomic_write_json(s.out_dir / "summary.json", summary)
        return summary

    def _start(self) -> None:
        """Hook: work of a fresh run before its first evaluation (not run on resume)."""

    def _loop(self) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        """Log and evaluate on the fixed cadence (in ``step_unit``)."""
        if self.progress >= self.next_log:
            self._log()
            self.next_log += self.s.log_every
        if self.progress >= self.curve[-1][self.step_unit] + self.s.eval_every:
            self._evaluate_and_checkpoint()

    def _log(self) -> None:
        """Turn the pending metric tensors into floats (one host sync per interval); stop on NaN/Inf."""
        row: dict[str, float] = {}
        keys = list(dict.fromkeys(k for m in self.pending for k in m))
        if keys:  # an agent may return no metrics from some updates
            means = torch.stack(
                [torch.stack([m[k].float() for m in self.pending if k in m]).mean() for k in keys]
            )
            row = dict(zip(keys, means.tolist()))
            bad = [k for k, v in row.items() if not np.isfinite(v)]
            if bad:
                self._diverged(f"{', '.join(bad)} became non-finite")
        self.pending.clear()
        if self.episodes:
            row["charts/episodic_return"] = float(np.mean(self.episodes))
            self.episodes.clear()
        seconds = max(self._train_seconds(), 1e-9)
        row[f"charts/{self.step_unit}_per_s"] = self.progress / seconds
        row["charts/grad_steps"] = self.grad_steps
        self.logger.log(self.progress, row)

    def _diverged(self, what: str) -> None:
        last = find_checkpoint_dir(self.ckpt_dir)
        where = (
            f"the last good checkpoint ({last}) was kept" if last else "no checkpoint had been written yet"
        )
        raise TrainingDivergedError(
            f"Training diverged at {self.step_name} {self.progress}: {what}; {where}. "
            "Try a lower learning rate, gradient clipping or reward normalisation."
        )

    def _train_seconds(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0 - self.eval_s

    def _wall_s(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def _finite(self) -> bool:
        """Hook: True when no trained parameter holds NaN/Inf (one host sync)."""
        return self.agent.parameters_finite()

    # --------------------------------------------------------------------- evaluation, checkpoints
    def _measure(self) -> dict[str, Any]:
        """Hook: one evaluation, ``{"return_mean": ..., "return_std": ...}`` plus optional entries
        (``success_rate``, only when known)."""
        raise NotImplementedError

    def _evaluate_and_checkpoint(self) -> None:
        t = time.perf_counter()
        if not self._finite():
            self._diverged("a parameter became NaN/Inf")
        measured = self._measure()
        self.eval_s += time.perf_counter() - t
        point: dict[str, Any] = {"env_steps": self.env_steps, "return_mean": measured["return_mean"]}
        if "return_std" in measured:
            point["return_std"] = measured["return_std"]
        point |= {"wall_s": round(self._wall_s(), 3), "grad_steps": self.grad_steps}
        point |= {k: v for k, v in measured.items() if k not in point}
        point.setdefault(self.step_unit, self.progress)
        logged = {f"eval/{k}": point[k] for k in ("return_mean", "return_std", "success_rate") if k in point}
        self.curve.append(point)
        self.logger.log(self.progress, logged)
        self.bar.set_postfix(eval_return=f"{point['return_mean']:.1f}", refresh=False)
        t = time.perf_counter()
        self._save()
        self.eval_s += time.perf_counter() - t

    def _identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be resumed by this run."""
        return {
            "algo": self.s.algo,
            "env_id": self.env_id,
            "seed": self.s.seed,
            **self._extra_identity(),
            **({} if self.s.eval_deterministic else {"eval_deterministic": False}),
            "config": self._identity_config(),
        }

    def _identity_config(self) -> dict[str, Any]:
        return to_dict(self.config)

    def _extra_identity(self) -> dict[str, Any]:
        return {}

    def _extra_state(self) -> dict[str, Any]:
        """Hook: checkpoint entries besides the agent and the loop counters."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Hook: restore what ``_extra_state`` saved (KeyError/RuntimeError/ValueError = does not fit)."""

    def _save(self) -> None:
        if not self.checkpoints:
            return
        state = {
            "agent": self.agent.state_dict(),
            "loop": {
                "env_steps": self.env_steps,
                "grad_steps": self.grad_steps,
                "curve": self.curve,
                "wall_s": self._wall_s(),
                "eval_s": self.eval_s,
                "torch_rng": torch.get_rng_state(),
            },
            **self._extra_state(),
        }
        save_checkpoint_dir(self.ckpt_dir, state, self._identity() | {"gendm_version": gendm.__version__})

    def _try_resume(self) -> bool:
        path = find_checkpoint_dir(self.ckpt_dir)
        if path is None:
            return False
        state, meta = load_checkpoint(path, self.device)
        mine = self._identity()
        optional = [k for k in ("eval_deterministic", "intrinsic") if k in meta and k not in mine]
        diff = [k for k in [*mine, *optional] if k != "config" and meta.get(k) != mine.get(k)]
        diff += [f"config.{k}" for k, v in mine["config"].items() if meta.get("config", {}).get(k) != v]
        if diff:
            raise CheckpointError(
                f"{self.s.out_dir} holds a checkpoint of a different run (differs in: {', '.join(diff)}). "
                "Use a new --out directory, or --no-resume to overwrite it."
            )
        try:
            self.agent.load_state_dict(state["agent"])
            self._load_extra_state(state)
            loop = state["loop"]
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                f"Checkpoint {path} does not fit this agent: {e}. Use a new --out directory, or "
                "--no-resume to overwrite it."
            ) from e
        self.env_steps, self.grad_steps = int(loop["env_steps"]), int(loop["grad_steps"])
        self.agent.env_steps = self.env_steps
        self.curve = list(loop["curve"])
        self.elapsed_before, self.eval_s = float(loop["wall_s"]), float(loop["eval_s"])
        self.next_log = (self.progress // self.s.log_every + 1) * self.s.log_every
        torch.set_rng_state(loop["torch_rng"].cpu())
        return True

    # -------------------------------------------------------------------------------- summary
    def _summary(self, status: str, error: str | None) -> dict[str, Any]:
        last = self.curve[-1] if self.curve and status == "ok" else None
        train_s = self._train_seconds()
        summary = {
            "algo": self.s.algo,
            "env_id": self.env_id,
            "seed": self.s.seed,
            "status": status,
            "error": error,
            "final_return": last["return_mean"] if last else None,
            "final_return_std": last.get("return_std") if last else None,
            "final_score": self._score(last["return_mean"]) if last else None,
            "success_rate": last.get("success_rate") if last else None,
            "env_steps": self.env_steps,
            "grad_steps": self.grad_steps,
            "step_unit": self.step_unit,
            "wall_s": round(self._wall_s(), 3),
            "train_s": round(train_s, 3),
            "eval_s": round(self.eval_s, 3),
            "env_steps_per_s": self.env_steps / train_s if train_s > 0 else None,
            "grad_steps_per_s": self.grad_steps / train_s if train_s > 0 else None,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "curve": self.curve,
            "eval_protocol": self._eval_protocol(),
            **self._extra_summary(),
            "config": to_dict(self.config),
            "settings": {
                k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self.s).items()
            },
            "versions": versions(),
            "provenance": provenance(self.s.threads),
            "device": str(self.device),
            "precision": getattr(self.agent, "precision", None),
            "torch_threads": torch.get_num_threads(),
            "flush_denormals": self.s.flush_denormals,
        }
        return summary

    def _eval_protocol(self) -> dict[str, Any]:
        return {
            "eval_every": self.s.eval_every,
            "every_unit": self.step_unit,
            "episodes": self.s.eval_episodes,
            "deterministic": self.s.eval_deterministic,
            "reported": "last checkpoint",
        }

    def _score(self, ret: float) -> float | None:
        """Normalised score of a return: (return - random) / (expert - random), None without references."""
        from gendm.envs.references import normalised_score

        return normalised_score(self.env_id, ret)

    def _extra_summary(self) -> dict[str, Any]:
        return {}


def versions() -> dict[str, str]:
    return {
        "gendm": gendm.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "git_commit": git_commit(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(gendm.__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
