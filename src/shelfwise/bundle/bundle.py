"""Model bundles: the versioned directory that ``train`` writes and ``serve`` loads."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from shelfwise import __version__
from shelfwise.bundle.tuning import tune_blend_weights
from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFoundError
from shelfwise.pipeline import Pipeline
from shelfwise.ranking.config import PipelineConfig
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.registry import load_generator, make_generator

LATEST = "LATEST"
PIPELINE_DIR = "pipeline"


class GeneratorSpec(BaseModel):
    """One generator in the bundle and its weight in the heuristic feed blend."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0)
    required: bool = Field(
        default=True, description="False: skip (and record why) when the data cannot feed it"
    )


class TrainConfig(BaseModel):
    """What ``shelfwise train`` builds (read from TOML; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")
    generators: list[GeneratorSpec] = Field(
        default_factory=lambda: [
            # popularity is its own part of the blend: no tie-break inside co-occurrence
            GeneratorSpec(name="cooccurrence", weight=1.0,
                          params={"popularity_tiebreak": False}),
            GeneratorSpec(name="semantic", weight=0.3, required=False),
            GeneratorSpec(name="popularity", weight=0.05),
        ]
    )
    cold_start: str = Field(default="popularity", description="generator for empty histories")
    pipeline: PipelineConfig | None = Field(
        default=None,
        description="serve the feed from the two-stage pipeline (candidates from these "
        "generators, LambdaMART on top) instead of the blend; the blend of `generators` still "
        "serves similar items, exploration sources and the cart")
    tune_weights: bool = Field(
        default=True,
        description="choose blend weights on a validation split (each user's second-to-last "
        "item); the configured weights are the fallback when there is too little data",
    )

    def config_hash(self) -> str:
        raw = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    def check(self) -> None:
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ConfigError(f"generators listed twice in the train config: {names}")
        if self.cold_start not in names:
            raise ConfigError(
                f"cold_start generator {self.cold_start!r} is not among the generators {names}"
            )


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str
    created_at: datetime
    shelfwise_version: str
    config: TrainConfig
    config_hash: str
    n_users: int
    n_items: int
    n_interactions: int
    has_time: bool
    fit_seconds: dict[str, float]
    skipped: dict[str, str] = Field(default_factory=dict)
    """Optional generators left out, with the reason."""
    blend_weights: dict[str, float] = Field(default_factory=dict)
    """Weights the feed blend uses (tuned on validation, or the configured ones)."""
    tuning: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    """The feed pipeline's mode (ranker or blend fallback) and training report, when built."""


@dataclass
class Bundle:
    """A loaded bundle: its manifest, the item index, fitted generators and, when configured,
    the feed pipeline."""

    path: Path
    manifest: Manifest
    items: IdMap
    generators: dict[str, BaseGenerator]
    pipeline: Pipeline | None = None

    @property
    def version(self) -> str:
        return self.manifest.version


def train_bundle(data: Interactions, out_dir: Path, config: TrainConfig | None = None, *,
                 item_categories: NDArray[np.int64] | None = None) -> Bundle:
    """Fit every configured generator on ``data`` and write a new bundle version under
    ``out_dir`` (``out_dir/LATEST`` then names it). ``item_categories`` (one code per item,
    -1 = none; :func:`~shelfwise.data.loading.item_category_codes`) turns on the pipeline's
    category features."""
    config = config or TrainConfig()
    config.check()
    gens: dict[str, BaseGenerator] = {}
    fit_seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for spec in config.generators:
        gen = make_generator(spec.name, **spec.params)
        start = time.perf_counter()
        try:
            gen.fit(data)
        except ConfigError as exc:
            if spec.required:
                raise
            skipped[spec.name] = str(exc)
            continue
        fit_seconds[spec.name] = round(time.perf_counter() - start, 3)
        gens[spec.name] = gen
    if config.cold_start not in gens:
        raise ConfigError(f"the cold-start generator {config.cold_start!r} could not be fitted")
    weights = {s.name: s.weight for s in config.generators if s.name in gens}
    tuning = None
    if config.tune_weights and len(gens) > 1:
        start = time.perf_counter()
        specs = {s.name: s for s in config.generators if s.name in gens}
        result = tune_blend_weights(
            data, {n: make_generator(n, **specs[n].params) for n in gens})
        if result is not None:
            weights = result.weights
            tuning = {"validation_ndcg10": result.validation_ndcg10,
                      "n_users": result.n_users,
                      "seconds": round(time.perf_counter() - start, 2)}
    pipeline = None
    if config.pipeline is not None:
        start = time.perf_counter()
        pipeline = Pipeline(config.pipeline, item_categories=item_categories).fit(data)
        fit_seconds["pipeline"] = round(time.perf_counter() - start, 3)
    now = datetime.now(UTC)
    version = f"{now:%Y%m%dT%H%M%S%f}-{config.config_hash()[:8]}"
    manifest = Manifest(
        version=version,
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
        blend_weights=weights,
        tuning=tuning,
        pipeline=None if pipeline is None else {"mode": pipeline.mode_,
                                                "report": pipeline.report_},
    )
    path = out_dir / version
    tmp = out_dir / f".{version}.tmp"
    tmp.mkdir(parents=True)
    data.items.save(tmp / "items.json")
    for name, gen in gens.items():
        gen.save(tmp / "generators" / name)
    if pipeline is not None:
        pipeline.save(tmp / PIPELINE_DIR)
    (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    tmp.rename(path)  # a bundle directory is complete or absent
    (out_dir / f".{LATEST}.tmp").write_text(version)
    (out_dir / f".{LATEST}.tmp").replace(out_dir / LATEST)
    return Bundle(path, manifest, data.items, gens, pipeline)


def feed_blend(bundle: Bundle) -> Blend:
    """The heuristic feed ranker: the bundle's generators, weighted as configured."""
    weights = bundle.manifest.blend_weights or {
        s.name: s.weight for s in bundle.manifest.config.generators}
    parts = [(n, bundle.generators[n], w) for n, w in weights.items()
             if w > 0 and n in bundle.generators]
    return Blend(parts)


def resolve_bundle_path(path: Path) -> Path:
    """A bundle directory, or a bundles root whose ``LATEST`` names one."""
    if (path / "manifest.json").is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        return path / latest.read_text().strip()
    raise NotFoundError(
        f"no model bundle at {path}: run `shelfwise train --out {path}` first"
    )


def load_bundle(path: Path) -> Bundle:
    path = resolve_bundle_path(Path(path))
    manifest = Manifest.model_validate_json((path / "manifest.json").read_text())
    items = IdMap.load(path / "items.json")
    gens = {
        spec.name: load_generator(path / "generators" / spec.name)
        for spec in manifest.config.generators
        if spec.name not in manifest.skipped
    }
    for name, gen in gens.items():
        if gen.n_items_ != len(items):
            raise ConfigError(f"bundle {path}: generator {name!r} has {gen.n_items_} items, "
                              f"the item index {len(items)}; the bundle is corrupt")
    pipeline = None
    if manifest.pipeline is not None:
        pipeline = Pipeline.load(path / PIPELINE_DIR)
        if pipeline.n_items_ != len(items):
            raise ConfigError(f"bundle {path}: the pipeline has {pipeline.n_items_} items, the "
                              f"item index {len(items)}; the bundle is corrupt")
    return Bundle(path, manifest, items, gens, pipeline)


