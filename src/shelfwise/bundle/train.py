"""``train`` as one transaction: fit every learned part in memory, then publish the bundle."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from shelfwise import __version__
from shelfwise.bundle.bundle import Bundle, Manifest, publish_bundle
from shelfwise.bundle.config import TrainConfig
from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError
from shelfwise.pipeline import Pipeline
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.blend import Blend

if TYPE_CHECKING:
    from shelfwise.search.index import SearchConfig
    from shelfwise.storage.base import Store


def build_bundle(data: Interactions, config: TrainConfig | None = None, *,
                 item_categories: NDArray[np.int64] | None = None) -> Bundle:
    """Fit the feed blend (its generators, weights tuned inside its ``fit``) and, when the
    config serves it, the two-stage feed reusing the blend's fitted generators; nothing is
    written. ``item_categories`` (one code per item, -1 = none) turns on the pipeline's
    category features."""
    config = config or TrainConfig()
    config.check()
    blend = Blend.from_specs(config.generators, tune=config.tune_weights).fit(data)
    gens: dict[str, BaseGenerator] = {k: g for k, g in blend.generators_.items()
                                      if isinstance(g, BaseGenerator)}
    if config.cold_start not in gens:
        raise ConfigError(f"the cold-start generator {config.cold_start!r} could not be fitted")
    fit_seconds = dict(blend.fit_seconds_)
    pipeline = None
    skipped = dict(blend.skipped_)
    if config.serves_pipeline and len(data) == 0:
        skipped["pipeline"] = "no interactions yet: the feed is the blend until events arrive"
    elif config.serves_pipeline:
        assert config.pipeline is not None
        start = time.perf_counter()
        specs = {s.key: s for s in config.generators}
        pipeline = Pipeline(config.pipeline, item_categories=item_categories).fit(
            data, fitted=[(specs[k], g) for k, g in gens.items()])
        fit_seconds["pipeline"] = round(time.perf_counter() - start, 3)
    now = datetime.now(UTC)
    manifest = Manifest(
        version=f"{now:%Y%m%dT%H%M%S%f}-{config.config_hash()[:8]}",
        created_at=now,
        shelfwise_version=__version__,
        config=config,
        config_hash=config.config_hash(),
        n_users=data.n_users,
        n_items=data.n_items,
        n_interactions=len(data),
        has_time=data.has_time,
        fit_seconds=fit_seconds,
        skipped=skipped,
        blend_weights=blend.weights_,
        tuning=blend.tuning_,
        pipeline=None if pipeline is None else {"mode": pipeline.mode_,
                                                "report": pipeline.report_},
    )
    return Bundle(None, manifest, data.items, gens, pipeline)


def train_bundle(data: Interactions, out_dir: Path, config: TrainConfig | None = None, *,
                 item_categories: NDArray[np.int64] | None = None,
                 store: Store | None = None, search: SearchConfig | None = None) -> Bundle:
    """Build a bundle on ``data``; with ``store``, also build the search index over its
    catalog (``search``: the serving config, whose n-gram size it is built with) and learn the
    search ranker from the searches logged there; then publish it under ``out_dir``
    (``out_dir/LATEST`` names it). Every learned part is in the bundle before it becomes
    visible."""
    bundle = build_bundle(data, config, item_categories=item_categories)
    if store is not None:
        from shelfwise.services.recommender import Recommender
        from shelfwise.services.search import SearchService
        from shelfwise.services.search_training import train_search_ranker

        recommender = Recommender(bundle, store)
        start = time.perf_counter()
        bundle.search_index = SearchService(recommender, search).export()
        seconds = time.perf_counter() - start
        bundle.manifest.fit_seconds["search_index"] = round(seconds, 3)
        if recommender.semantic is not None:  # the server's query engine files, built here
            from shelfwise.text.factory import prepare_queries  # rather than at its start

            prepare_queries(recommender.semantic.encoder)
        cfg = bundle.manifest.config
        report = train_search_ranker(store, recommender, cfg.search_ranker)
        bundle.search_ranker = report.ranker
        summary = {k: v for k, v in dataclasses.asdict(report).items() if k != "ranker"}
        bundle.manifest = bundle.manifest.model_copy(update={
            "search_ranker": summary,
            "search_index": bundle.search_index.summary(seconds)})
    return publish_bundle(bundle, out_dir)
