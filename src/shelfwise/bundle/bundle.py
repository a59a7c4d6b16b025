"""Model bundles: the versioned directory that ``train`` writes and ``serve`` loads."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shelfwise import __version__
from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.exceptions import ConfigError, NotFoundError
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.registry import load_generator, make_generator

LATEST = "LATEST"


class GeneratorSpec(BaseModel):
    """One generator in the bundle and its weight in the heuristic feed blend."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, ge=0)


class TrainConfig(BaseModel):
    """What ``shelfwise train`` builds (read from TOML; unknown keys are an error)."""

    model_config = ConfigDict(extra="forbid")
    generators: list[GeneratorSpec] = Field(
        default_factory=lambda: [
            GeneratorSpec(name="cooccurrence", weight=1.0),
            GeneratorSpec(name="popularity", weight=0.05),
        ]
    )
    cold_start: str = Field(default="popularity", description="generator for empty histories")

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


@dataclass
class Bundle:
    """A loaded bundle: its manifest, the item index and fitted generators."""

    path: Path
    manifest: Manifest
    items: IdMap
    generators: dict[str, BaseGenerator]

    @property
    def version(self) -> str:
        return self.manifest.version


def train_bundle(data: Interactions, out_dir: Path, config: TrainConfig | None = None) -> Bundle:
    """Fit every configured generator on ``data`` and write a new bundle version under
    ``out_dir`` (``out_dir/LATEST`` then names it)."""
    config = config or TrainConfig()
    config.check()
    gens: dict[str, BaseGenerator] = {}
    fit_seconds: dict[str, float] = {}
    for spec in config.generators:
        gen = make_generator(spec.name, **spec.params)
        start = time.perf_counter()
        gen.fit(data)
        fit_seconds[spec.name] = round(time.perf_counter() - start, 3)
        gens[spec.name] = gen
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
    )
    path = out_dir / version
    tmp = out_dir / f".{version}.tmp"
    tmp.mkdir(parents=True)
    data.items.save(tmp / "items.json")
    for name, gen in gens.items():
        gen.save(tmp / "generators" / name)
    (tmp / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    tmp.rename(path)  # a bundle directory is complete or absent
    (out_dir / f".{LATEST}.tmp").write_text(version)
    (out_dir / f".{LATEST}.tmp").replace(out_dir / LATEST)
    return Bundle(path, manifest, data.items, gens)


def feed_blend(bundle: Bundle) -> Blend:
    """The heuristic feed ranker: the bundle's generators, weighted as configured."""
    specs = [s for s in bundle.manifest.config.generators if s.weight > 0]
    return Blend([(s.name, bundle.generators[s.name], s.weight) for s in specs])


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
    }
    for name, gen in gens.items():
        if gen.n_items_ != len(items):
            raise ConfigError(f"bundle {path}: generator {name!r} has {gen.n_items_} items, "
                              f"the item index {len(items)}; the bundle is corrupt")
    return Bundle(path, manifest, items, gens)


