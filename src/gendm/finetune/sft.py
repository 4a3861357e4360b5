"""Supervised fine-tuning of a causal language model on (prompt, answer) pairs.

The loss is the answer's tokens and a final EOS only (the prompt is context), so the model learns to
answer and then stop. Prompts longer than ``max_length`` minus the answer are cut from the left: the
end of a prompt (the current observation) matters most to an agent. Used to imitate demonstrations
in a language agent's own answer format (:mod:`gendm.language_agents.imitation`) and as the starting
policy of RL fine-tuning (:mod:`gendm.finetune.loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from gendm.core.errors import ConfigError


def encode_pairs(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int
) -> list[tuple[list[int], int]]:
    """Token ids of ``prompt + answer + EOS`` (prompt cut from the left) and the prompt's length."""
    out = []
    for prompt, answer in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a = [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        if len(a) >= max_length:
            raise ConfigError(f"An answer of {len(a)} tokens does not fit max_length={max_length}.")
        p = p[-(max_length - len(a)) :]
        out.append((p + a, len(p)))
    return out


def supervised_finetune(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    max_length: int = 512,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train ``model`` in place on ``pairs``; returns the loss of every step (the model ends in eval mode)."""
    if not pairs:
        raise ConfigError("supervised_finetune needs at least one (prompt, answer) pair.")
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}.")
    rows = encode_pairs(tokenizer, pairs, max_length)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / 50))  # short warm-up
    pad = tokenizer.pad_token_id
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc="supervised fine-tuning", disable=not progress, mininterval=1.0):
        picked = [rows[i] for i in torch.randint(len(rows), (batch_size,), generator=gen).tolist()]
        width = max(len(ids) for ids, _ in picked)
        ids = torch.full((batch_size, width), pad)
        labels = torch.full((batch_size, width), -100)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for r, (seq, prompt_len) in enumerate(picked):
            ids[r, : len(seq)] = torch.tensor(seq)
            labels[r, prompt_len : len(seq)] = torch.tensor(seq[prompt_len:])
            mask[r, : len(seq)] = 1
        loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses
