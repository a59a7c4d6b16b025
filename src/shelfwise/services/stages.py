"""The declared request pipeline: every surface runs one list of named stages over a slate.

A request (feed, similar, search, rerank, cart) becomes a :class:`Slate` that the stages its
``[serve.stages]`` list names fill and reshape, in this order:

- ``candidates``: the surface's model, ranked (the blend or the two-stage pipeline, similar
  items, hybrid retrieval + the search ranker, the cart scorer); always first;
- ``rules``: business rules — unavailable items, items the request excludes (already bought or
  seen, the cart, the item itself), duplicates;
- ``diversity``: diversity re-ranking of the top ``[serve.diversity].pool`` items by the
  request's knob (:mod:`shelfwise.services.diversity_stage`); feed, search, similar;
- ``rerank``: the re-ranking slot, which also cuts the list to size;
- ``explore``: exploration slots from the feed's bandit, logged with propensities;
- ``explain``: one :class:`~shelfwise.serving.schemas.Explanation` per item;
- ``impressions``: the shown list queued for the impression log under the request id.

A new stage is one class with a ``name`` registered in :data:`STAGES`, and a name in the
config's lists; no surface changes. A stage may also have ``prepare(slate)``, run for every
listed stage before the first one (the diversity stage widens the candidate pool there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, field_validator

from shelfwise.experiments.model import Overrides
from shelfwise.retrieval.base import sorted_unique
from shelfwise.services.diversity_stage import Diversity
from shelfwise.services.recommender import Recommendation, RecommendationList
from shelfwise.services.search import SearchResult

if TYPE_CHECKING:
    from shelfwise.services.engine import Engine

Surface = Literal["feed", "similar", "search", "rerank", "cart"]


@dataclass
class Candidate:
    """One item of a slate, with what explains it."""

    item_id: str
    score: float
    reason: str
    source: str
    parts: dict[str, float] = field(default_factory=dict)
    related_item: str | None = None
    text: str | None = None
    propensity: float | None = None
    label: str | None = None
    """What the reason names besides an item: a profile tag, a category, query words."""
    named_share: float | None = None
    """Feed: the share of the item's history-driven score the named history item carries."""


@dataclass
class Slate:
    """One request's list on its way through the stages."""

    surface: Surface
    request_id: str
    n: int
    items: list[Candidate]
    user_id: str | None = None
    session_id: str | None = None
    history: NDArray[np.int64] = field(default_factory=lambda: np.empty(0, np.int64))
    exclude: set[str] = field(default_factory=set)
    explore_slots: int = 0
    exclude_seen: bool = True
    cold_start: bool = False
    log: dict[str, Any] = field(default_factory=dict)
    """Extra context stored with the impressions (the query, the cart, the item)."""
    query: str | None = None
    filters: Any = None
    given: list[str] = field(default_factory=list)
    """The request's own items: the cart (in add order) or the list to re-rank."""
    item_id: str | None = None
    """The item whose similar items are asked for."""
    meta: dict[str, Any] = field(default_factory=dict)
    """What the candidate stage reports beside the list (ranker, sources, personalized...)."""
    lang: str | None = None
    """Language of the explanations' sentences (``Accept-Language``); None: each item's."""
    diversity: float | None = None
    """The request's diversity knob in [0, 1] (None: the config default)."""
    pool: int = 0
    """Candidates to fetch when more than ``n`` are re-ranked (0: ``n``)."""
    explore: int | None = None
    """Feed: the exploration slots the request asked for (None: the config's or variant's)."""
    experiments: dict[str, str] = field(default_factory=dict)
    """Experiment id -> the variant this request's unit is in (logged with the impressions)."""
    overrides: Overrides = field(default_factory=Overrides)
    """What the request's variants change (merged over all its experiments)."""
    preview: bool = False
    """A look at the list that no shopper is shown (the dashboard): no experiment
    assignment or exposure, no exploration slots, no impressions logged."""


def from_recommendations(result: RecommendationList) -> list[Candidate]:
    return [Candidate(r.item_id, r.score, reason="explore" if r.stage == "explore" else r.source,
                      source=r.source if r.stage == "explore" else r.stage,
                      parts=dict(r.parts), propensity=r.propensity) for r in result.items]


class Stage(Protocol):
    name: ClassVar[str]

    def __call__(self, slate: Slate) -> None: ...


class Candidates:
    """The surface's model: ranked candidates from the feed's blend or two-stage pipeline,
    similar items, hybrid retrieval with the search ranker, or the cart scorer."""

    name: ClassVar[str] = "candidates"

    def __init__(self, engine: Engine) -> None:
        self.rec = engine.recommender
        self.search = engine.search_service
        self.cart = engine.cart_service

    def __call__(self, slate: Slate) -> None:
        getattr(self, f"_{slate.surface}")(slate)

    def _feed(self, slate: Slate) -> None:
        assert slate.user_id is not None
        size = slate.n - slate.explore_slots
        slate.history = self.rec.history(slate.user_id)  # one read serves every stage
        result = self.rec.feed(slate.user_id, max(size, slate.pool),
                               exclude_seen=slate.exclude_seen,
                               pipeline=slate.overrides.pipeline is not False,
                               history=slate.history) \
            if size > 0 else RecommendationList([])
        if slate.exclude_seen:
            slate.exclude |= set(self.rec.items.externals(sorted_unique(slate.history)))
        slate.items, slate.cold_start = from_recommendations(result), result.cold_start

    def _similar(self, slate: Slate) -> None:
        assert slate.item_id is not None
        result = self.rec.similar(slate.item_id, max(slate.n, slate.pool))
        idx = self.rec.items.get(slate.item_id)
        if idx is not None and idx < self.rec.n_model_items:
            slate.history = np.asarray([idx], np.int64)
        slate.items, slate.cold_start = from_recommendations(result), result.cold_start
        item = self.rec.catalog.get(slate.item_id)
        if result.cold_start and item is not None and item.title:
            # no model places it yet (new item, or a shop without events): its text does
            hits = self.search.search(item.title, None, slate.n + 1).hits
            slate.items = [Candidate(h.item_id, h.score, "similar_text", "search",
                                     dict(h.scores)) for h in hits
                           if h.item_id != slate.item_id] or slate.items
        for c in slate.items:
            c.related_item = slate.item_id
        slate.exclude.add(slate.item_id)

    def _search(self, slate: Slate) -> None:
        assert slate.query is not None
        self._hits(slate, self.search.search(
            slate.query, slate.user_id, max(slate.n, slate.pool), slate.filters,
            use_ranker=slate.overrides.search_ranker is not False))

    def _rerank(self, slate: Slate) -> None:
        assert slate.query is not None
        self._hits(slate, self.search.rerank(
            slate.query, slate.given, slate.user_id,
            use_ranker=slate.overrides.search_ranker is not False))

    def _hits(self, slate: Slate, result: SearchResult) -> None:
        source = f"search:{result.ranker}"
        slate.items = [Candidate(h.item_id, h.score, "query_match", source, dict(h.scores))
                       for h in result.hits]
        slate.meta.update(personalized=result.personalized, ranker=result.ranker)

    def _cart(self, slate: Slate) -> None:
        result = self.cart.recommend(slate.given, slate.user_id, slate.n,
                                     weights=slate.overrides.cart)
        slate.items = [Candidate(r.item_id, r.score, r.source, "cart", {r.source: r.score},
                                 related_item=r.because_of, text=r.reason)
                       for r in result.items]
        slate.exclude |= set(slate.given)
        if slate.user_id:  # the history a user_cooccurrence reason names an item of
            slate.history = self.rec.history(slate.user_id)
        slate.cold_start = result.cold_start
        slate.meta.update(personalized=result.personalized, sources=result.sources,
                          cart=result.cart, unscored=result.unscored)


class Rules:
    """Business rules every surface obeys, whatever its model proposed."""

    name: ClassVar[str] = "rules"

    def __init__(self, engine: Engine) -> None:
        self.catalog = engine.recommender.catalog

    def __call__(self, slate: Slate) -> None:
        seen: set[str] = set()
        kept = []
        for c in slate.items:
            if c.item_id in seen or c.item_id in slate.exclude or (
                    self.catalog.available(c.item_id) is False):
                continue
            seen.add(c.item_id)
            kept.append(c)
        slate.items = kept


class Rerank:
    """The re-ranking slot: ``none`` keeps the model's order; the list is cut to the size the
    later stages expect (``n`` less the exploration slots)."""

    name: ClassVar[str] = "rerank"

    def __init__(self, engine: Engine) -> None:
        self.method = engine.settings.stages.rerank

    def __call__(self, slate: Slate) -> None:
        slate.items = slate.items[: max(0, slate.n - slate.explore_slots)]


class Explore:
    """The feed's exploration slots (a bandit over the bundle's generators)."""

    name: ClassVar[str] = "explore"

    def __init__(self, engine: Engine) -> None:
        self.explorer = engine.explorer

    def __call__(self, slate: Slate) -> None:
        if slate.explore_slots <= 0 or slate.user_id is None:
            return
        base = RecommendationList([Recommendation(c.item_id, c.score, c.reason)
                                   for c in slate.items])
        by_id = {c.item_id: c for c in slate.items}
        out = self.explorer.explore(slate.request_id, slate.user_id, base, slate.explore_slots,
                                    exclude_seen=slate.exclude_seen)
        slate.items = [by_id[r.item_id] if r.stage != "explore" else
                       Candidate(r.item_id, r.score, "explore", r.source,
                                 propensity=r.propensity) for r in out.items]


class Explain:
    """Every item's reason code, contributing parts, named item or label and sentence (see
    :mod:`shelfwise.services.explain`)."""

    name: ClassVar[str] = "explain"

    def __init__(self, engine: Engine) -> None:
        self.explainer = engine.explainer

    def __call__(self, slate: Slate) -> None:
        self.explainer(slate)


class LogImpressions:
    """Queues the shown list for the impression log (exploration slots are logged by the
    explorer itself, with their propensities, before the answer)."""

    name: ClassVar[str] = "impressions"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self, slate: Slate) -> None:
        if slate.preview:
            return
        shown = [c.item_id for c in slate.items if c.reason != "explore"]
        self.engine.impressions.log(slate.surface, slate.request_id, slate.user_id, shown,
                                    session_id=slate.session_id, bundle=self.engine.version,
                                    extra=slate.log)


STAGES: dict[str, Callable[[Engine], Stage]] = {
    cls.name: cls for cls in (Candidates, Rules, Diversity, Rerank, Explore, Explain,
                              LogImpressions)}
ORDER = ["candidates", "rules", "diversity", "rerank", "explore", "explain", "impressions"]
_LIST = ["candidates", "rules", "diversity", "rerank", "explain", "impressions"]


def _check_list(names: list[str], surface: str) -> list[str]:
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; known: {', '.join(ORDER)}")
    if len(set(names)) != len(names):
        raise ValueError("a stage is listed twice")
    if not names or names[0] != "candidates":
        raise ValueError("the first stage is 'candidates' (the surface's model)")
    if "explain" not in names:
        raise ValueError("'explain' is required: every returned item carries an explanation")
    if "explore" in names and surface != "feed":
        raise ValueError("'explore' runs on the feed only")
    if [s for s in ORDER if s in names] != names:
        raise ValueError(f"stages run in the order {' → '.join(ORDER)}")
    return names


class StagesConfig(BaseModel):
    """The stages each surface runs, in order (``[serve.stages]``)."""

    model_config = ConfigDict(extra="forbid")

    feed: list[str] = Field(default_factory=lambda: list(ORDER))
    similar: list[str] = Field(default_factory=lambda: [*_LIST])
    search: list[str] = Field(default_factory=lambda: [*_LIST])
    rerank_list: list[str] = Field(
        default_factory=lambda: ["candidates", "explain", "impressions"],
        description="POST /v1/rerank: the shop's own list, so no rules drop items by default")
    cart: list[str] = Field(default_factory=lambda: [s for s in _LIST if s != "diversity"])
    rerank: Literal["none"] = Field(default="none", description="the re-ranking method")

    @field_validator("feed", "similar", "search", "rerank_list", "cart")
    @classmethod
    def _valid(cls, names: list[str], info: Any) -> list[str]:
        return _check_list(names, info.field_name)

    def for_surface(self, surface: Surface) -> list[str]:
        return list(getattr(self, "rerank_list" if surface == "rerank" else surface))


class StageRunner:
    """Each surface's stage instances, built once per engine."""

    def __init__(self, engine: Engine, config: StagesConfig) -> None:
        built = {name: factory(engine) for name, factory in STAGES.items()}
        self.stages: dict[str, list[Stage]] = {
            s: [built[name] for name in config.for_surface(s)]
            for s in ("feed", "similar", "search", "rerank", "cart")}

    def run(self, slate: Slate) -> Slate:
        stages = self.stages[slate.surface]
        for stage in stages:
            prepare = getattr(stage, "prepare", None)
            if prepare is not None:
                prepare(slate)
        for stage in stages:
            stage(slate)
        return slate
