#!/usr/bin/env bash
# The SB3 comparisons recorded in BENCHMARKS.md (about 95 minutes on the 2-core dev box).
# Hyperparameters: RL Baselines3 Zoo's for SAC on Pendulum-v1 and HalfCheetah, CleanRL's PPO on CartPole.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=benchmarks/results
# sb3-ftz: SB3 with the subnormals-as-zero flag gendm's training loop sets, to separate the flag's share.
$PY benchmarks/vs_sb3.py --algo sac --env Pendulum-v1 --steps 20000 --seeds 5 --libs gendm,gendm-bf16,sb3,sb3-ftz \
    --set learning_rate=1e-3 --set learning_starts=100 --out $R/sac_pendulum_handgrad.json
$PY benchmarks/vs_sb3.py --algo sac --env HalfCheetah-v5 --steps 30000 --seeds 5 --libs gendm,gendm-bf16,sb3 \
    --set learning_starts=10000 --out $R/sac_halfcheetah_loop.json
# The replication: each bf16 run beside the SB3 run of the same seed.
$PY benchmarks/vs_sb3.py --algo sac --env HalfCheetah-v5 --steps 30000 --seeds 5 --libs gendm-bf16,sb3 \
    --set learning_starts=10000 --out $R/sac_halfcheetah_loop_rep.json
$PY benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --steps 50000 --seeds 5 --libs gendm,sb3 \
    --out $R/ppo_cartpole.json
