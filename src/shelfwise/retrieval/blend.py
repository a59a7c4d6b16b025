"""A weighted blend of generators: the heuristic feed ranker used before a learned one."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.interactions import History, Interactions
from shelfwise.retrieval.base import CandidateGenerator, Scores

PartScorer = Callable[[str, CandidateGenerator, Sequence[History]], Scores]


def normalise_rows(scores: NDArray[np.floating]) -> NDArray[np.float32]:
    """Each row min-max scaled to [0, 1] (non-finite as 0; a constant row becomes 0)."""
    s = np.where(np.isfinite(scores), scores, 0.0).astype(np.float32)
    low = s.min(axis=1, keepdims=True)
    span = s.max(axis=1, keepdims=True) - low
    out: NDArray[np.float32] = np.divide(s - low, span, out=np.zeros_like(s), where=span > 0)
    return out


class Blend:
    """Sum of each part's scores, min-max normalised per row and weighted.

    Per-row min-max puts generators with different scales on one footing (counts, co-occurrence
    sums, and cosines that all sit in a narrow band such as 0.80-0.90); a part whose row is
    constant contributes nothing.
    """

    name: ClassVar[str] = "blend"

    def __init__(self, parts: Sequence[tuple[str, CandidateGenerator, float]]) -> None:
        if not parts:
            raise ValueError("a blend needs at least one generator")
        self.parts = list(parts)

    @property
    def n_items_(self) -> int:
        """Items scored: the largest part's count (parts that know fewer items, e.g. items
        posted after training, give those no score)."""
        return max(gen.n_items_ for _, gen, _ in self.parts)

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.parts]

    def fit(self, data: Interactions) -> Blend:
        for _, gen, _ in self.parts:
            gen.fit(data)
        return self

    def score_parts(self, histories: Sequence[History], score: PartScorer | None = None
                    ) -> tuple[Scores, NDArray[np.int64]]:
        """Blended scores, and per item the index of the part that contributed most.
        ``score(name, generator, histories)`` replaces ``generator.score`` (a caller that has
        the parts' raw scores already, e.g. memoised, need not compute them twice)."""
        total: Scores | None = None
        best: Scores | None = None
        label: NDArray[np.int64] | None = None
        n = self.n_items_
        for k, (name, gen, weight) in enumerate(self.parts):
            s = gen.score(histories) if score is None else score(name, gen, histories)
            if s.shape[1] < n:
                s = np.pad(s, ((0, 0), (0, n - s.shape[1])))
            s = weight * normalise_rows(s)
            if total is None or best is None or label is None:
                total, best = s.copy(), s
                label = np.zeros(s.shape, dtype=np.int64)
            else:
                total += s
                better = s > best
                label[better] = k
                best = np.where(better, s, best)
        assert total is not None and label is not None
        return total, label

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
