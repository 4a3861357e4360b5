"""Tiny language models built on the spot, for tests, CPU benchmarks and the demo: a word-level
tokenizer trained locally with ``tokenizers`` and a small GPT-2 from a config. Nothing is downloaded.

The tokenizer keeps words, punctuation runs and **newlines** as tokens (the agents' answer formats are
line-based: "Thought: ..." then "Action: ..."), and decodes by joining tokens with spaces, so a
generated "Action : go forward" on its own line is still read by the agents' parsers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
_TOKEN = r"\w+|[^\w\s]+|\n"


def word_tokenizer(texts: Iterable[str] = (), vocab: Iterable[str] | None = None) -> Any:
    """A word-level ``PreTrainedTokenizerFast``: the words of ``texts`` (trained), or exactly ``vocab``
    (in order, after the four special tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab is not None:
        words = list(dict.fromkeys([*SPECIALS, *vocab]))
        tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    else:
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_TOKEN), behavior="removed", invert=True)
    tok.decoder = decoders.WordPiece(prefix="##")  # joins tokens with spaces
    if vocab is None:
        tok.train_from_iterator(list(texts), trainers.WordLevelTrainer(special_tokens=list(SPECIALS)))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


def tiny_gpt2(
    tokenizer: Any,
    n_layer: int = 2,
    n_embd: int = 32,
    n_positions: int = 1024,
    n_head: int = 2,
    seed: int = 0,
) -> Any:
    """A randomly initialised GPT-2 (no dropout) for ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
        n_positions=n_positions,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def save_model_dir(model: Any, tokenizer: Any, path: str | Path) -> Path:
    """``save_pretrained`` both into ``path`` (a directory ``HFBackend`` loads)."""
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
