"""The weighted blend of generators: the heuristic feed ranker, its one normalisation and its
weight tuning.

Every blend in shelfwise (the served feed, the pipeline's fallback and the order it gives items
outside its candidates) is :func:`blend_scores` over per-row min-max normalised scores, and
every weight choice goes through :func:`grid_weights` or :func:`coordinate_weights` over score
rows computed once per generator.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.base import (
    BaseGenerator,
    CandidateGenerator,
    Scores,
    SparseRow,
    best_unordered,
    top_k,
)
from shelfwise.retrieval.registry import make_generator
from shelfwise.retrieval.spec import GeneratorSpec

Focus = list[NDArray[np.int64]]
"""Per history, items a part must score exactly (see :meth:`Blend.score_parts`)."""
PartScorer = Callable[[str, CandidateGenerator, Sequence[History], Focus | None], Scores]
RowScorer = Callable[[str, CandidateGenerator, NDArray[np.int64] | None], Scores | SparseRow]
"""One history's raw row of a part (dense or sparse), exact also on the focus items."""

#: Relative weights tried per generator (the grid is their product, all-zero excluded).
WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
#: Fewer validation users than this: the configured weights are kept.
MIN_VALIDATION_USERS = 50


TUNE_CHUNK_BYTES = 256 * 2**20
"""Score memory per chunk of validation users while tuning blend weights."""


FOCUS = 300
"""Items of the other parts' blend that a focused part scores exactly, per history. Games
(``bench_semantic_ann --candidates 400 --focus 1000,300,150``): blend NDCG@10 0.0622 at each;
on the 100k bench shop 300 instead of 1,000 saves ~0.45 ms of a feed or similar request."""


def focused(gen: CandidateGenerator) -> bool:
    """Whether ``gen`` scores exactly only a top list of its own (and what it is asked to)."""
    return bool(getattr(gen, "approximate", False))


def normalise_rows(scores: NDArray[np.floating]) -> NDArray[np.float32]:
    """Each row min-max scaled to [0, 1] (non-finite as 0; a constant row becomes 0)."""
    out: NDArray[np.float32] = np.array(scores, dtype=np.float32)  # in place from here on
    bad = ~np.isfinite(out)
    if bad.any():
        out[bad] = 0.0
    low = out.min(axis=1, keepdims=True)
    span = out.max(axis=1, keepdims=True) - low
    out -= low
    np.divide(out, span, out=out, where=span > 0)
    out[(span <= 0)[:, 0]] = 0.0
    return out


def _scaled(s: Scores, n: int, weight: float) -> NDArray[np.float32]:
    """A part's rows as the blend adds them: padded to ``n`` items with 0, min-max scaled,
    weighted."""
    if s.shape[1] < n:
        s = np.pad(s, ((0, 0), (0, n - s.shape[1])))
    out = normalise_rows(s)
    out *= weight
    return out


def normalise_sparse(row: SparseRow) -> tuple[np.float32, NDArray[np.float32]]:
    """:func:`normalise_rows` of a sparse row: its fill's and its entries' scaled values,
    the same bits as the dense row's."""
    vals = np.array(row.vals, dtype=np.float32)
    bad = ~np.isfinite(vals)
    if bad.any():
        vals[bad] = 0.0
    fill = row.fill if np.isfinite(row.fill) else np.float32(0.0)
    low = vals.min() if vals.size else fill
    high = vals.max() if vals.size else fill
    if not row.covered:
        low, high = min(low, fill), max(high, fill)
    span = np.float32(high - low)
    if not span > 0:
        return np.float32(0.0), np.zeros_like(vals)
    vals -= low
    vals /= span
    return np.float32((fill - low) / span), vals


class PartLabels:
    """Which part contributed most to an item's blend score (:meth:`Blend.score_row`),
    worked out only for the items asked about: the first part, in scoring order, with the
    largest weighted share."""

    def __init__(self, order: list[int], parts: list[NDArray[np.float32] | SparseRow]) -> None:
        self._order = np.asarray(order, np.int64)
        self._parts = parts  # each part's weighted, scaled row, in scoring order

    def __call__(self, items: NDArray[np.int64]) -> NDArray[np.int64]:
        items = np.asarray(items, np.int64)
        shares = np.vstack([p.at(items) if isinstance(p, SparseRow) else p[items]
                            for p in self._parts])
        out: NDArray[np.int64] = self._order[shares.argmax(axis=0)]
        return out


def blend_scores(scores: Mapping[str, NDArray[np.float32]],
                 weights: Mapping[str, float]) -> NDArray[np.float32]:
    """Weighted sum of the row-normalised scores, divided by the weight total (so in [0, 1])."""
    total = float(sum(w for a, w in weights.items() if a in scores and w > 0))
    first = next(iter(scores.values()))
    out = np.zeros(first.shape, dtype=np.float32)
    for alias, s in scores.items():
        w = float(weights.get(alias, 0.0))
        if w > 0:
            out += w * normalise_rows(s)
    if total > 0:
        out /= total
    return out


_DISCOUNT = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(10) + 2.0))])
"""``_DISCOUNT[p]``: the summed NDCG@10 gains of ranks 0..p-1 (one relevant item)."""


def _ndcg(normed: Mapping[str, NDArray[np.float32]], weights: Mapping[str, float],
          histories: Sequence[History], targets: Sequence[NDArray[np.int64]]) -> float:
    """Mean NDCG@10 of the blend, seen items excluded. With one target per user (the
    validation item) it reads the target's rank off one comparison per item instead of a top-k
    sort, ties counted at their expected rank; otherwise the full top-k path."""
    from shelfwise.evaluation.metrics import NDCG

    if not any(w > 0 for w in weights.values()):
        return -1.0
    first = next(iter(normed.values()))
    total = np.zeros(first.shape, dtype=np.float32)
    for alias, s in normed.items():
        if weights.get(alias, 0.0) > 0:
            total += weights[alias] * s
    if not targets or any(len(t) != 1 for t in targets):
        reco, _ = top_k(total, 10, exclude=histories)
        return NDCG(10).calc(reco, targets)
    for row, seen in enumerate(histories):
        if len(seen):
            total[row, seen] = -np.inf
    target = np.fromiter((int(t[0]) for t in targets), np.int64, count=len(targets))
    at = total[np.arange(len(targets)), target][:, None]
    above = (total > at).sum(axis=1)
    tied = np.maximum((total == at).sum(axis=1), 1)
    gain = (_DISCOUNT[np.minimum(above + tied, 10)] - _DISCOUNT[np.minimum(above, 10)]) / tied
    return float(np.where(np.isfinite(at[:, 0]), gain, 0.0).mean())


def grid_weights(scores: Mapping[str, NDArray[np.float32]], histories: Sequence[History],
                 targets: Sequence[NDArray[np.int64]], grid: Sequence[float] = WEIGHT_GRID
                 ) -> tuple[dict[str, float], float]:
    """Every weight combination from ``grid`` (largest weight 1: weights are relative), by
    NDCG@10 of the blend with seen items excluded; the first best combination wins."""
    names = list(scores)
    combos = _combos(len(names), grid)
    totals = _grid_totals({a: normalise_rows(s) for a, s in scores.items()}, names, combos,
                          histories, targets)
    return _best(names, combos, totals, len(histories))


def grid_weights_chunked(score: Callable[[Sequence[History]], dict[str, NDArray[np.float32]]],
                         histories: Sequence[History], targets: Sequence[NDArray[np.int64]],
                         rows_per_chunk: int, grid: Sequence[float] = WEIGHT_GRID
                         ) -> tuple[dict[str, float], float]:
    """:func:`grid_weights` over users in chunks of ``rows_per_chunk``, with ``score`` giving
    each chunk's score matrices: memory follows the chunk, not users x items (at 100k items
    3,000 users' scores are 1.2 GB per generator)."""
    names: list[str] = []
    combos: list[tuple[float, ...]] = []
    totals = np.zeros(0)
    for start in range(0, len(histories), rows_per_chunk):
        part = histories[start : start + rows_per_chunk]
        normed = {a: normalise_rows(s) for a, s in score(part).items()}
        if not combos:
            names = list(normed)
            combos = _combos(len(names), grid)
            totals = np.zeros(len(combos))
        totals += _grid_totals(normed, names, combos, part,
                               targets[start : start + rows_per_chunk])
    return _best(names, combos, totals, len(histories))


def _combos(n: int, grid: Sequence[float]) -> list[tuple[float, ...]]:
    return [c for c in itertools.product(grid, repeat=n) if max(c) >= 1.0]


def _grid_totals(normed: Mapping[str, NDArray[np.float32]], names: list[str],
                 combos: list[tuple[float, ...]], histories: Sequence[History],
                 targets: Sequence[NDArray[np.int64]]) -> NDArray[np.float64]:
    """Per combination, the NDCG@10 summed over these users."""
    return np.array([_ndcg(normed, dict(zip(names, c, strict=True)), histories, targets)
                     * len(histories) for c in combos])


def _best(names: list[str], combos: list[tuple[float, ...]], totals: NDArray[np.float64],
          n: int) -> tuple[dict[str, float], float]:
    if not combos:
        return {}, -1.0
    k = int(np.argmax(totals))  # the first best
    return dict(zip(names, combos[k], strict=True)), float(totals[k] / max(n, 1))


def coordinate_weights(scores: Mapping[str, NDArray[np.float32]],
                       histories: Sequence[History], targets: Sequence[NDArray[np.int64]], *,
                       start: Mapping[str, float], rounds: int = 2
                       ) -> tuple[dict[str, float], float]:
    """Coordinate ascent over :data:`WEIGHT_GRID` (and 2.0) per generator from ``start``,
    maximising NDCG@10 of the blend, seen items excluded (for many generators, where the full
    grid is too large)."""
    normed = {a: normalise_rows(s) for a, s in scores.items()}
    weights = {a: float(start.get(a, 1.0)) for a in scores}
    best = _ndcg(normed, weights, histories, targets)
    for _ in range(rounds):
        improved = False
        for alias in scores:
            for w in (*WEIGHT_GRID, 2.0):
                if w == weights[alias]:
                    continue
                trial = {**weights, alias: float(w)}
                value = _ndcg(normed, trial, histories, targets)
                if value > best + 1e-9:
                    best, weights, improved = value, trial, True
        if not improved:
            break
    return weights, best


class Frozen:
    """A fitted generator whose ``fit`` does nothing, so many blends can share it."""

    name: ClassVar[str] = "frozen"

    def __init__(self, gen: CandidateGenerator) -> None:
        self.gen = gen

    @property
    def n_items_(self) -> int:
        return self.gen.n_items_

    def fit(self, data: Interactions) -> Frozen:
        return self

    def score(self, histories: Sequence[History]) -> Scores:
        return self.gen.score(histories)

    def to_config(self) -> dict[str, Any]:
        return self.gen.to_config()

    def save(self, path: Path) -> None:
        self.gen.save(path)


def fit_specs(specs: Sequence[GeneratorSpec], data: Interactions
              ) -> tuple[dict[str, BaseGenerator], dict[str, float], dict[str, str]]:
    """Fit each spec's generator on ``data``: the fitted ones by key, their fit seconds, and the
    optional ones skipped because the data cannot feed them (with the reason)."""
    gens: dict[str, BaseGenerator] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for spec in specs:
        gen = make_generator(spec.name, **spec.params)
        start = time.perf_counter()
        try:
            gen.fit(data)
        except ConfigError as exc:
            if spec.required:
                raise
            skipped[spec.key] = str(exc)
            continue
        seconds[spec.key] = round(time.perf_counter() - start, 3)
        gens[spec.key] = gen
    return gens, seconds, skipped


class Blend:
    """Sum of each part's scores, min-max normalised per row and weighted.

    Per-row min-max puts generators with different scales on one footing (counts, co-occurrence
    sums, and cosines that all sit in a narrow band such as 0.80-0.90); a part whose row is
    constant contributes nothing.

    Built from fitted or unfitted generators (``Blend(parts)``), or from specs
    (:meth:`from_specs`): then ``fit`` fits every spec (skipping optional ones the data cannot
    feed), and with ``tune`` chooses the weights itself on a validation split (each user's
    second-to-last item, generators fitted without the last two), so evaluating this object
    measures exactly the blend that is served.
    """

    name: ClassVar[str] = "blend"

    def __init__(self, parts: Sequence[tuple[str, CandidateGenerator, float]]) -> None:
        if not parts:
            raise ValueError("a blend needs at least one generator")
        self.parts = list(parts)
        self.specs: list[GeneratorSpec] | None = None
        self.tune = False
        self.tune_users = 3000
        self.focus = FOCUS
        """How many of the other parts' best items a focused part also scores exactly."""
        self.generators_: dict[str, CandidateGenerator] = {n: g for n, g, _ in self.parts}
        self.weights_: dict[str, float] = {n: w for n, _, w in self.parts}
        self.tuning_: dict[str, Any] | None = None
        self.skipped_: dict[str, str] = {}
        self.fit_seconds_: dict[str, float] = {}

    @classmethod
    def from_specs(cls, specs: Sequence[GeneratorSpec], *, tune: bool = True,
                   tune_users: int = 3000) -> Blend:
        """An unfitted blend of ``specs`` (weights = the specs' until ``fit`` tunes them)."""
        blend = cls([(s.key, make_generator(s.name, **s.params), s.weight) for s in specs])
        blend.specs = list(specs)
        blend.tune = tune
        blend.tune_users = tune_users
        return blend

    @classmethod
    def fitted(cls, generators: Mapping[str, CandidateGenerator],
               weights: Mapping[str, float]) -> Blend:
        """The blend of already fitted ``generators`` with the given weights (zero-weight
        generators are kept in :attr:`generators_` but not scored)."""
        parts = [(n, generators[n], float(w)) for n, w in weights.items()
                 if w > 0 and n in generators]
        if not parts:
            raise ConfigError(f"the feed blend has no generator with a weight > 0 among "
                              f"{sorted(generators)}")
        blend = cls(parts)
        blend.generators_ = dict(generators)
        blend.weights_ = {n: float(w) for n, w in weights.items() if n in generators}
        return blend

    @property
    def n_items_(self) -> int:
        """Items scored: the largest part's count (parts that know fewer items, e.g. items
        posted after training, give those no score)."""
        return max(gen.n_items_ for _, gen, _ in self.parts)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.parts]

    def fit(self, data: Interactions) -> Blend:
        if self.specs is None:
            for _, gen, _ in self.parts:
                gen.fit(data)
            return self
        gens, self.fit_seconds_, self.skipped_ = fit_specs(self.specs, data)
        weights = {s.key: s.weight for s in self.specs if s.key in gens}
        self.tuning_ = None
        if self.tune and len(gens) > 1:
            start = time.perf_counter()
            tuned = self._tune(data, [s for s in self.specs if s.key in gens])
            if tuned is not None:
                weights, ndcg, n_users = tuned
                self.tuning_ = {"validation_ndcg10": round(ndcg, 6), "n_users": n_users,
                                "seconds": round(time.perf_counter() - start, 2)}
        fitted = Blend.fitted(gens, weights)
        self.parts, self.generators_, self.weights_ = (fitted.parts, fitted.generators_,
                                                       fitted.weights_)
        return self

    def _tune(self, data: Interactions, specs: Sequence[GeneratorSpec]
              ) -> tuple[dict[str, float], float, int] | None:
        from shelfwise.evaluation.splitters import LeaveLastOut

        split = LeaveLastOut(validation=True).split(data)
        if split.valid is None or len(split.valid.users) < MIN_VALIDATION_USERS:
            return None
        rng = np.random.default_rng(0)
        n_valid = len(split.valid.users)
        rows = np.sort(rng.choice(n_valid, size=min(self.tune_users, n_valid), replace=False))
        histories = [split.valid.histories[r] for r in rows]
        targets = [split.valid.targets[r] for r in rows]
        gens, _, _ = fit_specs(specs, split.train)
        n = max(g.n_items_ for g in gens.values())

        def score(part: Sequence[History]) -> dict[str, NDArray[np.float32]]:
            out = {}
            for key, gen in gens.items():
                s = gen.score(part)
                out[key] = np.pad(s, ((0, 0), (0, n - s.shape[1]))) if s.shape[1] < n else s
            return out

        # raw + normalised per generator, plus the blend and a mask: ~256 MB per chunk
        per_row = n * 4 * (2 * len(gens) + 2)
        weights, ndcg = grid_weights_chunked(score, histories, targets,
                                             max(50, TUNE_CHUNK_BYTES // per_row))
        return weights, ndcg, len(rows)

    def score_parts(self, histories: Sequence[History], score: PartScorer | None = None
                    ) -> tuple[Scores, NDArray[np.int64]]:
        """Blended scores, and per item the index of the part that contributed most.
        ``score(name, generator, histories, focus)`` replaces ``generator.score`` (a caller
        that has the parts' raw scores already, e.g. memoised, need not compute them twice).

        A part that scores only its own top list exactly (the semantic generator on a large
        catalog, :func:`focused`) is scored after the others and also exactly on their
        blend's best :attr:`focus` items, so every item that can reach the top keeps its
        exact score."""
        total: Scores | None = None
        best: Scores | None = None
        label: NDArray[np.integer[Any]] | None = None
        small = np.int8 if len(self.parts) < 128 else np.int64
        n = self.n_items_
        order = sorted(range(len(self.parts)), key=lambda k: focused(self.parts[k][1]))
        for k in order:
            name, gen, weight = self.parts[k]
            focus = None
            if focused(gen) and total is not None:
                m = min(self.focus, total.shape[1])
                focus = [best_unordered(row, m) for row in total]
            if score is not None:
                s = score(name, gen, histories, focus)
            elif focus is not None:
                s = gen.score_focused(histories, focus)  # type: ignore[attr-defined]
            else:
                s = gen.score(histories)
            s = _scaled(s, n, weight)
            if total is None or best is None or label is None:
                total, best = s.copy(), s
                label = np.full(s.shape, k, dtype=small)  # the first part scored
            else:
                total += s
                # label = k where this part beats the best so far: arithmetic, as a masked
                # store of a random half of 100k items costs ~0.35 ms per part
                better = (s > best).view(np.int8)
                label += better * (small(k) - label)
                np.maximum(best, s, out=best)
        assert total is not None and label is not None
        return total, label.astype(np.int64)

    def score_row(self, score: RowScorer) -> tuple[NDArray[np.float32], PartLabels]:
        """One history's blended row (the same bits as :meth:`score_parts`) and its
        :class:`PartLabels`. ``score(name, generator, focus)`` returns the part's raw row,
        dense or a :class:`SparseRow`; a sparse part costs the blend a pass over the
        catalog instead of the dozen a dense row's scaling, weighting and adding take."""
        n = self.n_items_
        total: NDArray[np.float32] | None = None
        kept: list[NDArray[np.float32] | SparseRow] = []
        order = sorted(range(len(self.parts)), key=lambda k: focused(self.parts[k][1]))
        for k in order:
            name, gen, weight = self.parts[k]
            focus = (best_unordered(total, min(self.focus, n))
                     if focused(gen) and total is not None else None)
            row = score(name, gen, focus)
            if isinstance(row, SparseRow) and row.n < n:  # padded with raw zeros: dense
                row = row.dense()
            if isinstance(row, SparseRow):
                fill, vals = normalise_sparse(row)
                fill *= weight
                vals *= weight
                if total is None:
                    total = np.full(n, fill, np.float32)
                    total[row.idx] = vals
                else:
                    before = total[row.idx]
                    total += fill
                    total[row.idx] = before + vals
                kept.append(SparseRow(n, fill, row.idx, vals))
            else:
                s = _scaled(np.asarray(row, np.float32)[None, :], n, weight)[0]
                if total is None:
                    total = s.copy()
                else:
                    total += s
                kept.append(s)
        assert total is not None
        return total, PartLabels(order, kept)

    def score(self, histories: Sequence[History]) -> Scores:
        return self.score_parts(histories)[0]

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name,
                "parts": [{"name": n, "weight": w, "config": g.to_config()}
                          for n, g, w in self.parts]}

    def save(self, path: Path) -> None:
        """Each part in its own folder, plus the weights."""
        path.mkdir(parents=True, exist_ok=True)
        for name, gen, _ in self.parts:
            gen.save(path / name)
        (path / "blend.json").write_text(json.dumps(self.to_config()))
