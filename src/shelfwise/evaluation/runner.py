"""Fit models on a split, rank for every evaluated user, and return flat metric records.

One record per (model, metric) with the columns of :data:`RECORD_COLUMNS`, so runs over models,
datasets and protocols concatenate into one table. The protocol is part of ``split``: the
splitter's name (``leave-last-out``), with ``/with-seen`` when the user's history was not removed
from the ranking and ``/sampled-N`` for sampled-candidate ranking; plain = full ranking over all
items with seen items excluded, the default.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation.metrics import ContextMetric, ItemContext, Metric, Targets
from shelfwise.evaluation.sampled import candidate_lists, rank_candidates, sample_negatives
from shelfwise.evaluation.splitters import Split, Splitter
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.base import CandidateGenerator, recommend

RECORD_COLUMNS = ["model", "dataset", "split", "metric", "k", "value", "fit_seconds", "n_users"]


def _prepare(
    data: Interactions, splitter: Splitter | Split, metrics: Sequence[Metric], k_max: int | None
) -> tuple[Split, int]:
    if not metrics:
        raise ConfigError("evaluate: give at least one metric")
    need = max(m.k for m in metrics)
    if k_max is not None and k_max < need:
        raise ConfigError(f"evaluate: k_max={k_max} is below the largest metric k={need}")
    split = splitter if isinstance(splitter, Split) else splitter.split(data)
    if len(split.test) == 0:
        raise ConfigError(f"split {split.name!r} left no user to evaluate")
    return split, k_max if k_max is not None else need


def _fit(model: CandidateGenerator, train: Interactions) -> float:
    start = time.perf_counter()
    model.fit(train)
    return time.perf_counter() - start


def _records(
    model: str,
    dataset: str,
    split: str,
    metrics: Sequence[Metric],
    reco: NDArray[np.int64],
    targets: Targets,
    *,
    n_items: int,
    fit_seconds: float,
    context: ItemContext | None = None,
) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "dataset": dataset,
            "split": split,
            "metric": m.name,
            "k": m.k,
            "value": m.calc(reco, targets, n_items=n_items, context=context)
            if isinstance(m, ContextMetric) else m.calc(reco, targets, n_items=n_items),
            "fit_seconds": fit_seconds,
            "n_users": reco.shape[0],
        }
        for m in metrics
    ]


def evaluate(
    models: Mapping[str, CandidateGenerator],
    data: Interactions,
    splitter: Splitter | Split,
    metrics: Sequence[Metric],
    *,
    dataset: str,
    exclude_seen: bool = True,
    k_max: int | None = None,
    context: ItemContext | None = None,
) -> pd.DataFrame:
    """Full-ranking evaluation: fit each model (in place) on ``split.train``, rank all items for
    every test user from their test history, and score the top ``k_max`` (default: the largest
    metric ``k``) against their targets.

    ``exclude_seen`` removes the items of the fed history from each ranking (a repeat target then
    counts as a miss). ``splitter`` may be a ready :class:`Split` to reuse one split across calls.
    Returns one row per (model, metric), columns :data:`RECORD_COLUMNS`; ``fit_seconds`` is the
    wall time of ``fit``.

    Beyond-accuracy metrics read ``context`` (item categories, vectors); the training
    counts, the fed histories and, when not given, item vectors are filled in here: those of
    the first fitted model that has some (``vectors_`` of it or a blended generator), the
    same for every model so that their ILD compares.
    """
    split, k = _prepare(data, splitter, metrics, k_max)
    name = split.name if exclude_seen else f"{split.name}/with-seen"
    rows: list[dict[str, Any]] = []
    fit_seconds = {model_name: _fit(model, split.train) for model_name, model in models.items()}
    context = _context(context, models.values(), split)
    for model_name, model in models.items():
        seconds = fit_seconds[model_name]
        reco, _ = recommend(model, split.test.histories, k, exclude_seen=exclude_seen)
        rows += _records(
            model_name,
            dataset,
            name,
            metrics,
            reco,
            split.test.targets,
            n_items=data.n_items,
            fit_seconds=seconds,
            context=context,
        )
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def item_vectors(model: object) -> NDArray[np.floating[Any]] | None:
    """The item vectors of a fitted model, or of the first blended generator with some."""
    for m in [model, *(gen for _name, gen, _w in getattr(model, "parts", []))]:
        vec = getattr(m, "vectors_", None)
        if isinstance(vec, np.ndarray):
            return vec
    return None


def _context(given: ItemContext | None, models: Iterable[object], split: Split) -> ItemContext:
    ctx = given or ItemContext()
    pop = ctx.popularity if ctx.popularity is not None else np.bincount(
        split.train.item_idx, minlength=split.train.n_items)
    vec = ctx.vectors if ctx.vectors is not None else next(
        (v for v in map(item_vectors, models) if v is not None), None)
    return replace(ctx, popularity=pop, vectors=vec, histories=split.test.histories)


def evaluate_sampled(
    models: Mapping[str, CandidateGenerator],
    data: Interactions,
    splitter: Splitter | Split,
    metrics: Sequence[Metric],
    *,
    dataset: str,
    n_negatives: int = 20,
    negatives: Sequence[ArrayLike] | None = None,
    seed: int = 0,
    batch_size: int = 1024,
) -> pd.DataFrame:
    """Sampled-candidate evaluation (LLMRank protocol): each test user's targets are ranked
    among ``n_negatives`` other items by the model's scores.

    Negatives are drawn uniformly from items outside the user's history and targets, the same
    for every model (``seed``), unless ``negatives`` gives them per test user (aligned with
    ``split.test``, e.g. a published candidate file; the first ``n_negatives`` of each are used).
    Records as :func:`evaluate`, with ``split`` = ``"<split>/sampled-<n_negatives>"``.
    Not comparable with full-ranking numbers.
    """
    split, k = _prepare(data, splitter, metrics, None)
    test = split.test
    neg: Sequence[ArrayLike] | NDArray[np.int64]
    if negatives is None:
        seen = [np.concatenate((h, t)) for h, t in zip(test.histories, test.targets, strict=True)]
        neg = sample_negatives(data.n_items, seen, n_negatives, seed=seed)
    else:
        if len(negatives) != len(test):
            raise ValueError(f"negatives has {len(negatives)} rows, the split {len(test)} users")
        neg = [np.asarray(r, dtype=np.int64).reshape(-1)[:n_negatives] for r in negatives]
    pools = candidate_lists(test.targets, neg, seed=seed)
    name = f"{split.name}/sampled-{n_negatives}"
    rows: list[dict[str, Any]] = []
    for model_name, model in models.items():
        seconds = _fit(model, split.train)
        parts = []
        for start in range(0, len(test), batch_size):
            stop = start + batch_size
            scores = model.score(test.histories[start:stop])
            parts.append(rank_candidates(scores, pools[start:stop], k))
        reco = np.vstack(parts)
        rows += _records(
            model_name,
            dataset,
            name,
            metrics,
            reco,
            test.targets,
            n_items=data.n_items,
            fit_seconds=seconds,
        )
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def _fmt(value: object, digits: int) -> str:
    if isinstance(value, float | np.floating):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return str(value)


def format_table(records: pd.DataFrame, *, digits: int = 4) -> str:
    """Models as rows, metrics as columns (in order of first appearance), plus fit time and
    user count; dataset and split become columns only when they vary, else a caption line."""
    if records.empty:
        return "(no records)"
    keys = [c for c in ("dataset", "split") if records[c].nunique() > 1] + ["model"]
    caption = "  ".join(f"{c}: {records[c].iloc[0]}" for c in ("dataset", "split") if c not in keys)
    metric_names = list(dict.fromkeys(records["metric"]))
    header = [*keys, *metric_names, "fit s", "users"]
    body: list[list[str]] = []
    for key, group in records.groupby(keys, sort=False):
        values = dict(zip(group["metric"], group["value"], strict=True))
        key_t = key if isinstance(key, tuple) else (key,)
        body.append(
            [str(x) for x in key_t]
            + [_fmt(float(values.get(m, float("nan"))), digits) for m in metric_names]
            + [f"{float(group['fit_seconds'].iloc[0]):.2f}", _fmt(group["n_users"].iloc[0], 0)]
        )
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    n_text = len(keys)

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < n_text else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [line(header), rule, *(line(r) for r in body)]
    return "\n".join(([caption] if caption else []) + out)


def write_records(records: pd.DataFrame, path: str | Path, *, append: bool = False) -> Path:
    """Write (or append) records as JSON lines, one record per line; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = records.to_json(orient="records", lines=True, force_ascii=False) or ""
    if text and not text.endswith("\n"):
        text += "\n"
    with p.open("a" if append else "w", encoding="utf-8") as f:
        f.write(text)
    return p


def read_records(path: str | Path) -> pd.DataFrame:
    """Records written by :func:`write_records`."""
    p = Path(path)
    if p.stat().st_size == 0:
        return pd.DataFrame(columns=RECORD_COLUMNS)
    return pd.read_json(p, orient="records", lines=True)
