#!/usr/bin/env bash
# The SB3 / SBX comparisons of BENCHMARKS.md, with concurrent pairing (benchmarks/pairing.py): each
# gendm run starts together with the peer's run of the same seed, one pinned core and one thread each,
# cores swapped between rounds; the whole comparison is repeated ROUNDS times. About 6 hours on a
# 2-core AVX2 machine with the defaults (Pendulum ~3 h, HalfCheetah ~3 h, CartPole ~10 min; gendm-bf16,
# added where bf16 is native, doubles the SAC parts). Interrupted? Rerun: recorded pairs are skipped.
# Hyperparameters: RL Baselines3 Zoo's for SAC on Pendulum-v1 and HalfCheetah, CleanRL's PPO on CartPole.
# SBX needs the sbx extra: .venv/bin/pip install -e ".[sbx]" torch==2.13.0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=benchmarks/results
SEEDS=${SEEDS:-5}
ROUNDS=${ROUNDS:-3}
# gendm-bf16 only where gendm treats bf16 as native on this CPU (vs_sb3.py refuses it elsewhere).
BF16=$($PY -c "import torch; from gendm.core.precision import native_bf16; print(',gendm-bf16' if native_bf16(torch.device('cpu')) else '')")
# Add sb3-ftz (SB3 with the subnormals-as-zero flag gendm's loop sets) to separate the flag's share.
LIBS=${LIBS:-gendm$BF16,sb3,sbx}
$PY benchmarks/vs_sb3.py --algo sac --env Pendulum-v1 --steps 20000 --seeds "$SEEDS" --rounds "$ROUNDS" --libs "$LIBS" \
    --set learning_rate=1e-3 --set learning_starts=100 --out $R/sac_pendulum_paired.json
$PY benchmarks/vs_sb3.py --algo sac --env HalfCheetah-v5 --steps 30000 --seeds "$SEEDS" --rounds "$ROUNDS" --libs "$LIBS" \
    --set learning_starts=10000 --out $R/sac_halfcheetah_paired.json
$PY benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --steps 50000 --seeds "$SEEDS" --rounds "$ROUNDS" --libs gendm,sb3 \
    --out $R/ppo_cartpole_paired.json
$PY benchmarks/summarize.py $R/sac_pendulum_paired.json $R/sac_halfcheetah_paired.json $R/ppo_cartpole_paired.json
