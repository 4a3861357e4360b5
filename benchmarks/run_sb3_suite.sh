#!/usr/bin/env bash
# The SB3 comparisons recorded in BENCHMARKS.md (about 75 minutes on the 2-core dev box).
# Hyperparameters: RL Baselines3 Zoo's for SAC on Pendulum-v1 and HalfCheetah, CleanRL's PPO on CartPole.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=benchmarks/results
$PY benchmarks/vs_sb3.py --algo sac --env Pendulum-v1 --steps 20000 --seeds 5 --libs gendm,gendm-bf16,sb3 \
    --set learning_rate=1e-3 --set learning_starts=100 --out $R/sac_pendulum.json
$PY benchmarks/vs_sb3.py --algo sac --env HalfCheetah-v5 --steps 30000 --seeds 5 --libs gendm,gendm-bf16,sb3 \
    --set learning_starts=10000 --out $R/sac_halfcheetah.json
$PY benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --steps 50000 --seeds 5 --libs gendm,sb3 \
    --out $R/ppo_cartpole.json
