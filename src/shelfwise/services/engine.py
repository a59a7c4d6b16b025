"""The engine: one services container per served bundle, behind HTTP, the CLI and Python.

:class:`Engine` owns the store, the loaded bundle, the live catalog and every service (feed,
search, similar items, cart, promotions, exploration, impressions). Its methods return the
same response objects the HTTP routes serialise, so ``shelfwise.open(...)`` in Python and the
server answer through one path. Stored events go to the subscribers registered here.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shelfwise.bundle.bundle import Bundle, load_bundle
from shelfwise.config import ShelfwiseConfig
from shelfwise.data.schemas import Event, Item, Promotion, User
from shelfwise.exceptions import InvalidRequestError, NotFoundError
from shelfwise.experiments.data import ExperimentData, collect
from shelfwise.experiments.report import Report, analyse
from shelfwise.experiments.service import ExperimentService, merge
from shelfwise.privacy.erasure import Erasures
from shelfwise.services.cart import CartService
from shelfwise.services.explain import Explainer
from shelfwise.services.exploration import FeedExplorer
from shelfwise.services.impressions import ImpressionLog
from shelfwise.services.profiles import UserProfile, build_profile
from shelfwise.services.promotions import PromotionService
from shelfwise.services.recommender import Recommender
from shelfwise.services.search import SearchFilters, SearchService
from shelfwise.services.stages import (
    Candidate,
    Slate,
    StageRunner,
)
from shelfwise.serving.schemas import (
    CartItem,
    CartResponse,
    ChosenPromotion,
    EventIn,
    EventsAccepted,
    Explanation,
    FeedResponse,
    ForgetResponse,
    PromotionsResponse,
    RecommendedItem,
    SearchItem,
    SearchResponse,
    SimilarResponse,
)
from shelfwise.storage import open_store
from shelfwise.storage.base import Store, WriteResult
from shelfwise.text.factory import warm_encoder
from shelfwise.text.native import query_threads

EventSubscriber = Callable[[Sequence[Event]], None]
logger = logging.getLogger(__name__)


class Engine:
    """Every serving surface over one store and one bundle (see module doc)."""

    def __init__(self, config: ShelfwiseConfig | None = None, *, store: Store | None = None,
                 bundle_path: Path | str | None = None, bundle: Bundle | None = None,
                 variant_of: Engine | None = None) -> None:
        self.config = config or ShelfwiseConfig()
        self.settings = self.config.serve
        self.store = store or open_store(self.config.storage.url,
                                         scrub_pii=self.config.privacy.scrub_pii)
        path = Path(bundle_path or self.config.storage.bundles)
        if bundle is None:
            bundle = load_bundle(path)
        # where other versions are (experiment variants): the directory, or a version's parent
        self.bundles_root = path.parent if (path / "manifest.json").is_file() else path
        limits = self.settings.limits
        self.recommender = Recommender(bundle, self.store, history_limit=limits.history_length,
                                       cache_size=limits.user_cache,
                                       cold_start=self.settings.cold_start,
                                       vector_index=self.settings.vector_index)
        self.search_service = SearchService(self.recommender, self.settings.search)
        self.cart_service = CartService(self.recommender, self.settings.cart)
        self.promotion_service = PromotionService(self.store, self.recommender,
                                                  self.settings.promotions)
        self.explorer = FeedExplorer(self.store, self.recommender, self.settings.exploration)
        self.impressions = ImpressionLog(self.store, self.settings.impressions)
        self.recommender.cold.pending_queries = self.impressions.pending_queries
        self.explainer = Explainer(self.recommender)
        self.stages = StageRunner(self, self.settings.stages)
        self.experiments = ExperimentService(self.store, self.settings.experiments,
                                             check_bundle=self._check_bundle)
        self.pseudonyms = self.config.privacy.pseudonymizer()
        storage = self.config.storage
        self.erasures = Erasures(
            self.store, {"histories": self.recommender, "queued_impressions": self.impressions,
                         "exploration_decisions": self.explorer,
                         "promotion_decisions": self.promotion_service,
                         "queued_exposures": self.experiments},
            sync_seconds=self.config.privacy.sync_seconds,
            retention_days=storage.retention_days,
            retention_every_seconds=storage.retention_every_minutes * 60)
        # scoring threads at once (serve.scoring_threads); a variant's runs inside its parent's
        self._scoring = threading.BoundedSemaphore(self.settings.scoring_threads)
        self._inflight, self._inflight_lock = 0, threading.Lock()  # requests in _run
        self._variants: dict[str, Engine] = {}  # bundles that experiment variants serve
        self._variants_lock = threading.Lock()
        if variant_of is None:  # a variant's engine leaves retention to the one it serves for
            self.erasures.start()  # retention before the first request, then on schedule
        late = self.erasures.forgotten_after(bundle.manifest.created_at)
        if late:
            logger.warning("%d users were forgotten after bundle %s was trained: none is "
                           "served from it, but its aggregate statistics still count their "
                           "events until the next `shelfwise train`", late, bundle.version)
        self._stop_sync = threading.Event()
        if variant_of is None:  # variants hear of synced items from the engine they serve for
            threading.Thread(target=_sync_catalog_loop, name="shelfwise-catalog", daemon=True,
                             args=(weakref.ref(self), self._stop_sync,
                                   self.settings.catalog_sync_seconds)).start()
        self._subscribers: list[EventSubscriber] = []
        for sub in (self.recommender.observe, self.promotion_service.notify,
                    self.explorer.notify):
            self.subscribe(sub)
        # build the search index and load the query encoder now, off the request path
        self._warming = threading.Thread(target=self._warm, name="shelfwise-warm", daemon=True)
        self._warming.start()

    def _warm(self) -> None:
        try:
            sem = self.recommender.semantic
            if sem is not None:
                warm_encoder(sem.encoder)
            self.search_service.warm()
        except Exception:  # the first search then says what is wrong
            logger.exception("warming the search index failed")

    def wait_warm(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the search index and query encoder to load (a server
        does before it listens, so its first request is as fast as the rest); whether they
        did."""
        self._warming.join(timeout)
        return not self._warming.is_alive()

    @property
    def ready(self) -> dict[str, bool]:
        """What is loaded: the search index (and with it the query encoder, if any), and
        the first count of attribute-conditioned popularity (attempted)."""
        return {"search_index": self.search_service.ready,
                "attribute_groups": self.recommender.cold.groups.ready}

    # ---- plumbing ------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self.recommender.bundle.version

    def subscribe(self, subscriber: EventSubscriber) -> None:
        """Call ``subscriber(events)`` after every durable write of client events."""
        self._subscribers.append(subscriber)

    def sync_catalog(self) -> int:
        """Apply the catalog writes other processes made since the last look (new items and
        changed ones; here and in the experiment variants' engines); how many items. Runs
        every ``[serve] catalog_sync_seconds`` on a daemon thread."""
        items = self.recommender.sync_catalog()
        if items:
            with self._variants_lock:
                children = list(self._variants.values())
            for child in children:
                child.recommender.catalog_updated(items)
            logger.info("applied %d item(s) another process wrote to the store", len(items))
        return len(items)

    def close(self) -> None:
        """Store the queued impressions and close the store."""
        self._stop_sync.set()
        self.erasures.close()
        self.recommender.close()
        self.impressions.close()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _check_n(self, n: int) -> None:
        if not 1 <= n <= self.settings.limits.max_results:
            raise InvalidRequestError(
                f"n = {n}: ask for 1 to {self.settings.limits.max_results} items "
                "(serve.limits.max_results)")

    # ---- privacy: ids at the boundary, forgetting, retention ------------------------------
    def user_key(self, user_id: str) -> str:
        """The id the store keeps for ``user_id``: its pseudonym when ``[privacy]
        pseudonymize`` is on, else the id itself. Every method taking a user id maps it here,
        so callers always use their own ids."""
        return user_id if self.pseudonyms is None else self.pseudonyms(user_id)

    def _user(self, user_id: str | None) -> str | None:
        return None if user_id is None else self.user_key(user_id)

    def _session(self, session_id: str | None) -> str | None:
        if session_id is None or self.pseudonyms is None:
            return session_id
        return self.pseudonyms.session(session_id)

    def forget_user(self, user_id: str) -> ForgetResponse:
        """Delete everything stored and held about ``user_id`` (see
        :class:`~shelfwise.privacy.erasure.Erasures`); the next feed is a cold start."""
        done = self.erasures.forget(self.user_key(user_id))
        return ForgetResponse(user_id=user_id, rows=done.rows, events=done.events,
                              memory=done.memory)

    def apply_retention(self) -> int:
        """Delete events older than ``[storage] retention_days`` now; how many."""
        return self.erasures.apply_retention()

    def profile(self, user_id: str, *, include_vector: bool = False) -> UserProfile:
        """What the recommender knows of ``user_id`` now (recent items, interests, tags)."""
        self.erasures.sync()
        profile = build_profile(self.recommender, self.user_key(user_id),
                                include_vector=include_vector)
        profile.user_id = user_id
        return profile

    # ---- the surfaces: a slate through the declared stages ------------------------------
    def _run(self, slate: Slate) -> Slate:
        if slate.surface != "rerank":  # a shop's own list is as long as the shop sent
            self._check_n(slate.n)
        with self._inflight_lock:
            self._inflight += 1
            alone = self._inflight == 1
        try:
            with self._scoring, query_threads(
                    min(self.settings.idle_query_threads, os.cpu_count() or 1) if alone else 1):
                return self._run_stages(slate)
        finally:
            with self._inflight_lock:
                self._inflight -= 1

    def _run_stages(self, slate: Slate) -> Slate:
        self.erasures.sync()  # users forgotten by another worker leave this one's memory
        slate.user_id, slate.session_id = self._user(slate.user_id), self._session(
            slate.session_id)
        if not slate.preview:
            self._assign(slate)
        if slate.surface == "feed" and not slate.preview:
            slate.explore_slots = self.explorer.slots_for(
                slate.n, slate.explore if slate.explore is not None else
                slate.overrides.explore) if "explore" in self.settings.stages.feed else 0
        engine = self
        if slate.overrides.bundle is not None and slate.overrides.bundle != self.version:
            engine = self._variant_engine(slate.overrides.bundle)
            engine.erasures.sync()
        slate.meta["model_version"] = engine.version
        return engine.stages.run(slate)

    def _variant_engine(self, version: str) -> Engine:
        """The engine serving bundle ``version`` for an experiment's variant: loaded once,
        on the same store; it hears every event this engine stores and every posted item."""
        with self._variants_lock:
            child = self._variants.get(version)
            if child is None:
                self._check_bundle(version)
                bundle = load_bundle(self.bundles_root / version)
                child = Engine(self.config, store=self.store, bundle=bundle, variant_of=self)
                for sub in child._subscribers:
                    self.subscribe(sub)
                self._variants[version] = child
            return child

    def _assign(self, slate: Slate) -> None:
        """The request's experiments and variants; their overrides go on the slate (an
        explicit request parameter wins) and their names into the impressions' context."""
        unit = slate.user_id or (f"anon:{slate.session_id}" if slate.session_id else None)
        surface = "search" if slate.surface == "rerank" else slate.surface
        chosen = self.experiments.assign(surface, unit)
        if not chosen or unit is None:
            return
        slate.experiments = {e.id: v.name for e, v in chosen}
        self.experiments.expose(unit, chosen)
        slate.overrides = merge([v.overrides for _, v in chosen])
        slate.log["experiments"] = dict(slate.experiments)
        if slate.diversity is None:
            slate.diversity = slate.overrides.diversity

    def _check_bundle(self, version: str) -> None:
        """A variant's bundle must be a published version in the bundles directory."""
        root = self.bundles_root
        if version != self.version and not (root / version / "manifest.json").is_file():
            raise NotFoundError(f"bundle {version!r} is not published under {root}; "
                                "train it first (`shelfwise train`) or fix the version")

    def feed(self, user_id: str, n: int = 10, *, exclude_seen: bool = True,
             explore: int | None = None, diversity: float | None = None,
             lang: str | None = None, preview: bool = False) -> FeedResponse:
        """The user's feed (a user id never seen is a cold start: popular items);
        ``diversity`` in [0, 1] is the re-ranking knob (None: the config default);
        ``preview``: a look that no shopper is shown (nothing logged, no experiment)."""
        slate = self._run(Slate("feed", uuid.uuid4().hex, n, [], user_id=user_id,
                                explore=explore, exclude_seen=exclude_seen,
                                diversity=diversity, lang=lang, preview=preview))
        return FeedResponse(request_id=slate.request_id, model_version=slate.meta["model_version"],
                            user_id=user_id, cold_start=slate.cold_start,
                            experiments=slate.experiments,
                            items=[self._item(c) for c in slate.items])

    def similar(self, item_id: str, n: int = 10, *, user_id: str | None = None,
                session_id: str | None = None, diversity: float | None = None,
                lang: str | None = None, preview: bool = False) -> SimilarResponse:
        """Items like ``item_id`` (an unknown id is a NotFoundError)."""
        slate = self._run(Slate("similar", uuid.uuid4().hex, n, [], user_id=user_id,
                                session_id=session_id, item_id=item_id,
                                log={"item": item_id}, diversity=diversity, lang=lang,
                                preview=preview))
        return SimilarResponse(request_id=slate.request_id,
                               model_version=slate.meta["model_version"],
                               item_id=item_id, cold_start=slate.cold_start,
                               experiments=slate.experiments,
                               items=[self._item(c) for c in slate.items])

    def _item(self, c: Candidate) -> RecommendedItem:
        return RecommendedItem(item_id=c.item_id, score=c.score, propensity=c.propensity,
                               title=self.recommender.catalog.title(c.item_id),
                               explanation=_explanation(c))

    # ---- search ----------------------------------------------------------------------------
    def search(self, query: str, user_id: str | None = None, n: int = 10,
               filters: SearchFilters | Mapping[str, Any] | None = None, *,
               session_id: str | None = None,
               diversity: float | None = None, lang: str | None = None) -> SearchResponse:
        """Search the whole catalog (personalized when ``user_id`` has a history)."""
        if filters is not None and not isinstance(filters, SearchFilters):
            filters = SearchFilters(**filters)
        return self._search(Slate("search", uuid.uuid4().hex, n, [], user_id=user_id,
                                  session_id=session_id, query=query, filters=filters,
                                  log={"query": query[:200]}, diversity=diversity,
                                  lang=lang),
                            user_id)

    def rerank(self, query: str, items: Sequence[str], user_id: str | None = None, *,
               session_id: str | None = None, lang: str | None = None) -> SearchResponse:
        """Re-order the shop's own result list for this query (and user)."""
        return self._search(Slate("rerank", uuid.uuid4().hex, max(1, len(items)), [],
                                  user_id=user_id, session_id=session_id, query=query,
                                  given=list(items), log={"query": query[:200]},
                                  lang=lang), user_id)

    def _search(self, slate: Slate, user_id: str | None) -> SearchResponse:
        slate = self._run(slate)
        assert slate.query is not None
        if slate.user_id:  # the search log the search ranker learns from (write-behind)
            self.impressions.log_search(slate.request_id, slate.user_id, slate.query,
                                        [c.item_id for c in slate.items[:50]], slate.surface)
        catalog = self.recommender.catalog
        return SearchResponse(
            request_id=slate.request_id, model_version=slate.meta["model_version"],
            query=slate.query,
            user_id=user_id, personalized=slate.meta["personalized"],
            ranker=slate.meta["ranker"], experiments=slate.experiments,
            items=[SearchItem(item_id=c.item_id, score=c.score, title=catalog.title(c.item_id),
                              explanation=_explanation(c)) for c in slate.items])

    # ---- cart ------------------------------------------------------------------------------
    def cart(self, items: Sequence[str], user_id: str | None = None, n: int = 10, *,
             session_id: str | None = None, lang: str | None = None,
             preview: bool = False) -> CartResponse:
        """Items to add next to a cart (ids in add order)."""
        slate = self._run(Slate("cart", uuid.uuid4().hex, n, [], user_id=user_id,
                                session_id=session_id, given=list(items),
                                log={"cart": list(items)[-50:]}, lang=lang, preview=preview))
        catalog = self.recommender.catalog
        meta = slate.meta
        return CartResponse(
            request_id=slate.request_id, model_version=slate.meta["model_version"], user_id=user_id,
            cold_start=slate.cold_start, personalized=meta["personalized"],
            sources=meta["sources"], cart=meta["cart"], unscored_items=meta["unscored"],
            experiments=slate.experiments,
            items=[CartItem(item_id=c.item_id, score=c.score, title=catalog.title(c.item_id),
                            explanation=_explanation(c)) for c in slate.items])

    # ---- promotions ----------------------------------------------------------------------
    def promotions(self, user_id: str, n: int = 1, *,
                   lang: str | None = None) -> PromotionsResponse:
        """The bandit's choice among the user's eligible promotions (logged before return),
        each explained: ``explore`` when the bandit explored, else what it served."""
        self.erasures.sync()
        key = self.user_key(user_id)
        request_id, chosen = self.promotion_service.choose(key, n)
        policy = self.promotion_service.policy_name
        history = self.recommender.history(key) if chosen else None
        return PromotionsResponse(
            request_id=request_id, user_id=user_id, policy=policy,
            promotions=[ChosenPromotion(
                promotion_id=c.promotion.id, text=c.promotion.text, position=c.position,
                propensity=c.propensity, score=c.score,
                explanation=_explanation(self.explainer.promotion(
                    c.promotion.text, c.score, c.propensity, c.explored, history, policy,
                    lang))) for c in chosen])

    # ---- experiments -----------------------------------------------------------------------
    def experiment_report(self, experiment_id: str) -> Report:
        """The experiment's report so far (:mod:`shelfwise.experiments.report`)."""
        return analyse(self.experiment_data(experiment_id))

    def experiment_data(self, experiment_id: str) -> ExperimentData:
        """Per-unit outcomes of a started experiment, with what this process has queued
        (impressions, exposures) stored first."""
        exp = self.experiments.get(experiment_id)
        if exp.started_at is None:
            raise InvalidRequestError(f"experiment {exp.id!r} was never started: nothing to "
                                      "report yet")
        self.impressions.flush()  # what this worker showed counts
        for child in self._variants.values():
            child.impressions.flush()
        self.experiments.flush()
        return collect(self.store, exp)

    # ---- writes ----------------------------------------------------------------------------
    def track(self, events: Iterable[EventIn | Event | Mapping[str, Any]]) -> EventsAccepted:
        """Store a batch of events durably (all or nothing), then tell the subscribers."""
        now = datetime.now(UTC)
        batch: list[Event] = []
        first: dict[str, int] = {}
        for row, e in enumerate(events):
            data = (e.model_dump() if isinstance(e, EventIn | Event) else dict(e))
            data["id"] = data.get("id") or uuid.uuid4().hex
            data["timestamp"] = data.get("timestamp") or now
            if self.pseudonyms is not None and isinstance(data.get("user_id"), str):
                try:
                    data["user_id"] = self.pseudonyms(data["user_id"])
                except InvalidRequestError as exc:
                    raise InvalidRequestError(f"events[{row}]: {exc}") from None
            if data["id"] in first:
                raise InvalidRequestError(
                    f"events[{row}].id: {data['id']!r} repeats events[{first[data['id']]}] in "
                    "this batch; give each event its own id (a retry of a whole batch is fine)")
            first[data["id"]] = row
            try:
                batch.append(Event(**data))
            except ValueError as exc:
                raise InvalidRequestError(f"events[{row}]: {exc}") from exc
        result = self.store.add_events(batch)
        for subscriber in self._subscribers:
            subscriber(batch)
        return EventsAccepted(accepted=result.written, duplicates=result.skipped,
                              event_ids=[e.id for e in batch])

    def add_items(self, items: Sequence[Item]) -> WriteResult:
        """Create or replace catalog items; they are recommendable and searchable at once."""
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("items: the same id appears twice in one batch")
        result = self.store.upsert_items(items)
        self.recommender.catalog_updated(items)
        for child in self._variants.values():
            child.recommender.catalog_updated(items)
        return result

    def add_users(self, users: Sequence[User]) -> WriteResult:
        if self.pseudonyms is not None:
            users = [u.model_copy(update={"id": self.user_key(u.id)}) for u in users]
        return self.store.upsert_users(users)

    def add_promotions(self, promotions: Sequence[Promotion]) -> WriteResult:
        ids = [p.id for p in promotions]
        if len(set(ids)) != len(ids):
            raise InvalidRequestError("promotions: the same id appears twice in one batch")
        return self.store.upsert_promotions(promotions)


def _sync_catalog_loop(ref: weakref.ref[Engine], stop: threading.Event, seconds: float
                       ) -> None:
    """:meth:`Engine.sync_catalog` every ``seconds`` until ``stop`` or the engine is gone
    (a weak reference: the thread does not keep an engine nobody closed alive)."""
    while not stop.wait(seconds):
        engine = ref()
        if engine is None:
            return
        try:
            engine.sync_catalog()
        except Exception:  # a closed or unreachable store: try again next time
            if not stop.is_set():
                logger.warning("looking for items added elsewhere failed", exc_info=True)
        del engine


def _explanation(c: Candidate) -> Explanation:
    return Explanation(reason=c.reason, source=c.source, parts=c.parts,
                       related_item=c.related_item, label=c.label, text=c.text)
