"""Tuned sequential generators per dataset, for ``bench_sequential`` and ``bench_peers``.

Hyperparameters other than ``epochs`` were fixed a priori (SASRec paper / SASRec+CE
reproducibility defaults, shrunk to fit a CPU budget); ``epochs`` is the validation-best epoch
count that ``benchmarks/bench_sequential.py`` found (second-to-last item of each user, see
``benchmarks/results/sequential.json``). Retraining on ``LeaveLastOut(validation=True).train``
with these constructors reproduces the reported models (training is seeded and deterministic
on CPU).

The Games text model uses the USE-m encoder, not the e5 default: when it was trained, e5 int8
ran ~50x slow on this AVX2-only CPU (``torch._int_mm`` without VNNI; ``text/int8.py`` now
falls back to fp32 GEMM there), while USE encoded 512 titles in ~12 s. e5 runs the same code
path (``encoder="e5"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shelfwise.exceptions import ConfigError
from shelfwise.retrieval import SASRec, TextSASRec
from shelfwise.retrieval.base import CandidateGenerator

COMMON: dict[str, Any] = {"max_len": 50, "hidden": 64, "layers": 2, "heads": 2,
                          "batch_size": 128, "seed": 0, "threads": 1}

# dataset -> model name -> params (epochs = validation-best count from bench_sequential)
PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    # all four were still improving on validation when the wall-clock budget stopped them
    "beauty": {"sasrec": {**COMMON, "dropout": 0.3, "lr": 2e-3, "epochs": 6}},
    "sports": {"sasrec": {**COMMON, "dropout": 0.3, "lr": 2e-3, "epochs": 3}},
    "games": {  # 40k users: bigger batches halve the per-step cost of the text projection
        "sasrec": {**COMMON, "dropout": 0.3, "lr": 2e-3, "batch_size": 256, "epochs": 6},
        "sasrec_text": {**COMMON, "dropout": 0.3, "lr": 2e-3, "batch_size": 256, "epochs": 8,
                        "encoder": "use"},
    },
}

CLASSES: dict[str, type[SASRec]] = {"sasrec": SASRec, "sasrec_text": TextSASRec}


def params(dataset: str, model: str, **overrides: Any) -> dict[str, Any]:
    """The tuned parameters of ``model`` on ``dataset`` (with ``overrides`` applied)."""
    if dataset not in PARAMS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(PARAMS)}")
    if model not in PARAMS[dataset]:
        raise ConfigError(f"no {model!r} for {dataset!r}; known: {', '.join(PARAMS[dataset])}")
    return {**PARAMS[dataset][model], **overrides}


def models(dataset: str) -> dict[str, Callable[[], CandidateGenerator]]:
    """Constructors of the tuned sequential models for ``dataset`` ("beauty", "sports",
    "games"); the text model only where the data has item text (games)."""
    if dataset not in PARAMS:
        raise ConfigError(f"unknown dataset {dataset!r}; known: {', '.join(PARAMS)}")

    def make(name: str) -> Callable[[], CandidateGenerator]:
        return lambda: CLASSES[name](**PARAMS[dataset][name])

    return {name: make(name) for name in PARAMS[dataset]}
