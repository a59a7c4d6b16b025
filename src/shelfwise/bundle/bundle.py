"""Model bundles: the versioned directory that ``train`` writes and ``serve`` loads.

A bundle is built in memory (:func:`shelfwise.bundle.train.build_bundle`), every learned part
attached to it (generators, blend weights, the two-stage feed, the search ranker, the search
index), and only then published by :func:`publish_bundle`: written to a hidden directory,
renamed into place and named by ``LATEST``, so a reader sees a complete bundle or the previous
one, never a mix.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shelfwise.bundle.config import TrainConfig
from shelfwise.data.ids import IdMap
from shelfwise.exceptions import ConfigError, NotFoundError, ShelfwiseError
from shelfwise.pipeline import Pipeline
from shelfwise.ranking.ranker import LambdaMART
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.registry import load_generator
from shelfwise.search.part import SearchPart

LATEST = "LATEST"
PIPELINE_DIR = "pipeline"
SEARCH_RANKER_DIR = "search_ranker"
SEARCH_INDEX_DIR = "search_index"


class Manifest(BaseModel):
    """What a bundle holds and how it was made (``manifest.json``)."""

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
    search_ranker: dict[str, Any] | None = None
    """How the search ranker was learned from logged searches (trained or why not)."""
    search_index: dict[str, Any] | None = None
    """The prebuilt search index (items, n-gram size, build seconds, size), when trained
    with a store; a bundle without it builds the index when the server starts."""
    parts: list[str] = Field(default_factory=list)
    """Every file or folder of the bundle, written before it was published."""


@dataclass
class Bundle:
    """A bundle: its manifest, the item index, fitted generators and, when trained, the
    two-stage feed, the search ranker and the search index. ``path`` is None until it is
    published."""

    path: Path | None
    manifest: Manifest
    items: IdMap
    generators: dict[str, BaseGenerator]
    pipeline: Pipeline | None = None
    search_ranker: LambdaMART | None = None
    search_index: SearchPart | None = None

    @property
    def version(self) -> str:
        return self.manifest.version


def feed_blend(bundle: Bundle) -> Blend:
    """The heuristic feed ranker: the bundle's generators with its (tuned) blend weights."""
    weights = bundle.manifest.blend_weights or {
        s.key: s.weight for s in bundle.manifest.config.generators}
    return Blend.fitted(bundle.generators, weights)


def publish_bundle(bundle: Bundle, out_dir: Path) -> Bundle:
    """Write every part of ``bundle`` under ``out_dir/<version>`` and point ``LATEST`` at it;
    the directory appears complete (rename) or not at all."""
    out_dir = Path(out_dir)
    version = bundle.version
    path = out_dir / version
    tmp = out_dir / f".{version}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    parts = ["items.json"]
    bundle.items.save(tmp / "items.json")
    for name, gen in bundle.generators.items():
        gen.save(tmp / "generators" / name)
        parts.append(f"generators/{name}")
    if bundle.pipeline is not None:
        bundle.pipeline.save(tmp / PIPELINE_DIR)
        parts.append(PIPELINE_DIR)
    if bundle.search_ranker is not None:
        bundle.search_ranker.save(tmp / SEARCH_RANKER_DIR)
        parts.append(SEARCH_RANKER_DIR)
    if bundle.search_index is not None:
        bundle.search_index.save(tmp / SEARCH_INDEX_DIR)
        parts.append(SEARCH_INDEX_DIR)
    bundle.manifest = bundle.manifest.model_copy(update={"parts": parts})
    (tmp / "manifest.json").write_text(bundle.manifest.model_dump_json(indent=2))
    tmp.rename(path)
    (out_dir / f".{LATEST}.tmp").write_text(version)
    (out_dir / f".{LATEST}.tmp").replace(out_dir / LATEST)
    bundle.path = path
    return bundle


def resolve_bundle_path(path: Path) -> Path:
    """A bundle directory, or a bundles root whose ``LATEST`` names one."""
    if (path / "manifest.json").is_file():
        return path
    latest = path / LATEST
    if latest.is_file():
        named = path / latest.read_text().strip()
        if not (named / "manifest.json").is_file():
            raise NotFoundError(
                f"{latest} names the bundle {named.name!r}, which is missing or incomplete: "
                f"run `shelfwise train --bundles {path}` or write an existing version into it")
        return named
    raise NotFoundError(
        f"no model bundle at {path}: run `shelfwise train --bundles {path}` first"
    )


def load_bundle(path: Path) -> Bundle:
    """The bundle at ``path`` (a bundle directory, or a bundles root: its ``LATEST``). Any part
    that cannot be read (missing, truncated, not what its reader expects) is a ConfigError
    naming the part and the fix, so ``serve`` says one line instead of a library traceback."""
    path = resolve_bundle_path(Path(path))
    part = "manifest.json"
    try:
        manifest = Manifest.model_validate_json((path / part).read_text())
        part = "items.json"
        items = IdMap.load(path / part)
        gens: dict[str, BaseGenerator] = {}
        for spec in manifest.config.generators:
            if spec.key not in manifest.skipped:
                part = f"generators/{spec.key}"
                gens[spec.key] = load_generator(path / part)
        part = PIPELINE_DIR
        pipeline = (Pipeline.load(path / part, shared=gens)
                    if manifest.pipeline is not None else None)
        part = SEARCH_RANKER_DIR
        ranker = LambdaMART.load(path / part) if (path / part).is_dir() else None
        part = SEARCH_INDEX_DIR  # memory-mapped; older bundles have none (built at start)
        search_index = (SearchPart.load(path / part) if part in manifest.parts
                        or (path / part).exists() else None)
    except ShelfwiseError:
        raise
    except Exception as exc:  # whatever numpy, json, faiss, lightgbm or torch raise on bad bytes
        reason = "; ".join(e["msg"] for e in exc.errors()) if isinstance(
            exc, ValidationError) else " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(
            f"bundle {path} is damaged: {part} cannot be read ({reason}); run `shelfwise train` "
            f"to write a new one, or point LATEST in {path.parent} at an earlier version"
        ) from exc
    for name, gen in gens.items():
        if gen.n_items_ != len(items):
            raise ConfigError(f"bundle {path}: generator {name!r} has {gen.n_items_} items, "
                              f"the item index {len(items)}; the bundle is corrupt")
    if pipeline is not None and pipeline.n_items_ != len(items):
        raise ConfigError(f"bundle {path}: the pipeline has {pipeline.n_items_} items, the "
                          f"item index {len(items)}; the bundle is corrupt")
    if search_index is not None and search_index.n_items != len(items):
        raise ConfigError(f"bundle {path}: {SEARCH_INDEX_DIR} has {search_index.n_items} items, "
                          f"the item index {len(items)}; the bundle is corrupt")
    return Bundle(path, manifest, items, gens, pipeline, ranker, search_index)
