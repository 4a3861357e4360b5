import os

import minari
import pytest
import torch

from gendm.core.precision import force_native_bf16, hardware_native_bf16

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The bf16 fast path (oneDNN kernels that need native bf16) and the portable path (plain ops) are
# chosen by one check, gendm.core.precision.native_bf16. Tests of bf16 code take `bf16_path` to run
# on both: the portable path everywhere, the native one where this CPU has native bf16.
BF16_PATHS = [
    pytest.param(False, id="portable"),
    pytest.param(
        None,
        id="native",
        marks=pytest.mark.skipif(
            not hardware_native_bf16("cpu"), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)"
        ),
    ),
]


@pytest.fixture(params=BF16_PATHS)
def bf16_path(request):
    with force_native_bf16(request.param):
        yield "portable" if request.param is False else "native"


def minari_episode_buffers(env, episodes):
    """Episodes as minari's EpisodeBuffers (what its DataCollector records), without jax."""
    env.action_space.seed(0)
    buffers = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        steps = {"observations": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
        done = False
        while not done:
            action = env.action_space.sample()
            obs, reward, term, trunc, _ = env.step(action)
            for key, value in zip(steps, (obs, action, reward, term, trunc)):
                steps[key].append(value)
            done = term or trunc
        buffers.append(minari.data_collector.EpisodeBuffer(id=ep, seed=ep, **steps))
    return buffers
