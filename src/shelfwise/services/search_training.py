"""Learn the search ranker from the shop's own logged searches.

Every search by a known user is stored as a ``search`` event with the items it showed (see
``serving/app.py``); clicks, cart adds and purchases that cite its ``request_id`` grade those
items (purchase 3, cart 2, click 1, shown and ignored 0). Features are rebuilt the way serving
builds them, with the user's history as it stood *before* the search, so the items a search led
to are not already "seen". The ranker trains on the older 80% of labelled searches and is kept
only if it beats the fused (RRF) order on the newest 20%; it is then refit on all of them and
put into the bundle (``search_ranker/``) before the bundle is published.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.schemas import EventType
from shelfwise.ranking.ranker import LambdaMART, LambdaMARTConfig
from shelfwise.search.features import FEATURES
from shelfwise.search.training_config import SearchTrainingConfig
from shelfwise.services.recommender import Recommender
from shelfwise.services.search import SearchService
from shelfwise.storage.base import Store
from shelfwise.text.pairs import graded_ndcg

GRADES: dict[EventType, int] = {EventType.CLICK: 1, EventType.CART: 2, EventType.PURCHASE: 3}


@dataclass
class LoggedSearch:
    """One logged search: what was asked, by whom, when, what it showed and what followed."""

    request_id: str
    user_id: str
    query: str
    timestamp: datetime
    shown: list[str]
    grades: dict[str, int] = field(default_factory=dict)
    reranked: bool = False
    """A ``/v1/rerank`` of the shop's own list rather than a catalog search."""


@dataclass
class SearchTrainingReport:
    searches: int
    labelled: int
    trained: bool
    reason: str
    holdout_searches: int = 0
    holdout_ndcg10: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    trees: int = 0
    ranker: LambdaMART | None = None
    """The trained ranker; the caller puts it into the bundle before it is published."""

    def summary(self) -> str:
        if not self.trained:
            return f"search ranker: not trained ({self.reason})"
        h = self.holdout_ndcg10
        return (f"search ranker: trained on {self.labelled} logged searches ({self.trees} "
                f"trees); newest "
                f"{self.holdout_searches} held out: NDCG@10 {h['lambdamart']:.4f} against "
                f"{h['rrf']:.4f} for the fused order ({self.seconds:.1f} s)")


def logged_searches(store: Store) -> list[LoggedSearch]:
    """Every stored search event with its shown items and graded outcomes, oldest first."""
    out: dict[str, LoggedSearch] = {}
    for e in sorted(store.events_of_type(EventType.SEARCH), key=lambda e: e.timestamp):
        if not e.request_id or not e.query:
            continue
        shown = [str(i) for i in (e.context or {}).get("items", [])]
        out[e.request_id] = LoggedSearch(e.request_id, e.user_id, e.query, e.timestamp, shown,
                                         reranked=(e.context or {}).get("endpoint") == "rerank")
    outcomes = store.events_for_requests(list(out), types=sorted(GRADES))
    for o in outcomes:
        s = out.get(o.request_id or "")
        if s is None or not o.item_id or o.user_id != s.user_id:
            continue
        s.grades[o.item_id] = max(s.grades.get(o.item_id, 0), GRADES[o.type])
    return list(out.values())


def train_search_ranker(store: Store, recommender: Recommender,
                        config: SearchTrainingConfig | None = None) -> SearchTrainingReport:
    """Fit and check the search ranker for ``recommender``'s (unpublished) bundle; the report
    carries it when it beats the fused order (see module doc)."""
    cfg = config or SearchTrainingConfig()
    start = time.perf_counter()
    searches = logged_searches(store)
    labelled = [s for s in searches if any(g > 0 for g in s.grades.values())]
    report = SearchTrainingReport(len(searches), len(labelled), False, "")
    if len(labelled) < cfg.min_searches:
        report.reason = (f"{len(labelled)} logged searches with a click, cart or purchase; "
                         f"needs {cfg.min_searches}")
        return report
    service = SearchService(recommender)
    groups = [g for g in (_group(service, recommender, s) for s in labelled)
              if g is not None]
    if len(groups) < cfg.min_searches:
        report.reason = (f"{len(groups)} labelled searches still show items of the catalog; "
                         f"needs {cfg.min_searches}")
        return report
    cut = max(1, min(len(groups) - 1, round(len(groups) * (1 - cfg.holdout))))
    fit, held = groups[:cut], groups[cut:]
    inner = round(len(fit) * (1 - cfg.holdout))  # trees are counted on the fit part's newest
    ranker = (_fit(fit[:inner], cfg.ranker, valid=fit[inner:]) if len(fit) - inner >= 5
              else _fit(fit, cfg.ranker))
    trees = max(ranker.best_iteration_, 10)
    ndcg = {"lambdamart": _ndcg(held, lambda x, f: ranker.predict(x)),
            "rrf": _ndcg(held, lambda x, f: f)}
    report.holdout_searches, report.holdout_ndcg10 = len(held), ndcg
    if ndcg["lambdamart"] <= ndcg["rrf"]:
        report.reason = (f"LambdaMART NDCG@10 {ndcg['lambdamart']:.4f} on the newest "
                         f"{len(held)} searches does not beat the fused order's "
                         f"{ndcg['rrf']:.4f}; search keeps the fused order")
        report.seconds = round(time.perf_counter() - start, 2)
        return report
    final = _fit(groups, cfg.ranker.model_copy(update={"n_estimators": trees}))
    report.trained, report.ranker, report.reason = True, final, "beats the fused order"
    report.trees = trees
    report.seconds = round(time.perf_counter() - start, 2)
    return report


@dataclass
class _Group:
    x: NDArray[np.float32]
    fused: NDArray[np.float64]
    grades: NDArray[np.int64]


def _group(service: SearchService, rec: Recommender, s: LoggedSearch) -> _Group | None:
    items = list(dict.fromkeys([*s.shown, *s.grades]))
    known = [i for i, k in zip(items, rec.items.indices(items), strict=True)
             if 0 <= k < rec.n_model_items]
    if len(known) < 2:
        return None
    grades = np.array([s.grades.get(i, 0) for i in known], np.int64)
    if grades.max() == 0:
        return None
    # the history as it stood before the search, so what it led to is not already "seen"
    user = service.context(rec.history_before(s.user_id, s.timestamp))
    x, fused = service.feature_rows(s.query, known, user, retrieved=not s.reranked)
    return _Group(x, fused, grades)


def _fit(groups: Sequence[_Group], config: LambdaMARTConfig,
         valid: Sequence[_Group] | None = None) -> LambdaMART:
    held = None if not valid else _stack(valid)
    return LambdaMART(config).fit(*_stack(groups), FEATURES, valid=held)


def _stack(groups: Sequence[_Group]) -> tuple[NDArray[np.float32], NDArray[np.int64],
                                               list[int]]:
    return (np.concatenate([g.x for g in groups]), np.concatenate([g.grades for g in groups]),
            [len(g.grades) for g in groups])


def _ndcg(groups: Sequence[_Group], score: Any) -> float:
    """Mean NDCG@10 (gain 2^grade - 1) of each group's items ordered by ``score(x, fused)``."""
    values = [graded_ndcg(score(g.x, g.fused), g.grades, 10, min_grade=0.0) for g in groups]
    return float(np.mean([v for v in values if v is not None])) if groups else 0.0
