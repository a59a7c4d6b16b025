"""``shelfwise train``: fit the configured generators on the store and write a bundle."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from shelfwise.bundle.bundle import TrainConfig, train_bundle
from shelfwise.cli.common import DEFAULT_BUNDLES, DEFAULT_STORE, BundlesOpt, StoreOpt
from shelfwise.data.loading import interactions_from_store, item_category_codes
from shelfwise.exceptions import ConfigError, ShelfwiseError, describe_validation_error
from shelfwise.storage import open_store


def load_train_config(path: Path | None) -> TrainConfig:
    if path is None:
        return TrainConfig()
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"train config {path}: {exc}") from None
    try:
        return TrainConfig.model_validate(raw.get("train", raw))
    except ValidationError as exc:
        raise ConfigError(f"train config {path} is invalid:\n"
                          f"{describe_validation_error(exc)}") from None


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        store: StoreOpt = DEFAULT_STORE,
        bundles: BundlesOpt = DEFAULT_BUNDLES,
        config: Annotated[Path | None, typer.Option(help="TOML train config")] = None,
    ) -> None:
        """Fit the generators on every stored event and write a new versioned bundle; with
        enough logged searches that led to clicks or purchases, learn the search ranker too."""
        from shelfwise.services.recommender import Recommender
        from shelfwise.services.search_training import train_search_ranker

        console = Console(stderr=True)
        try:
            cfg = load_train_config(config)
            opened = open_store(store)
            data = interactions_from_store(opened)
            if len(data) == 0:
                raise ShelfwiseError(
                    f"the store {store} holds no view/click/cart/purchase events: "
                    "run `shelfwise import` first"
                )
            categories = (item_category_codes(opened, data.items) if cfg.pipeline is not None
                          else None)
            bundle = train_bundle(data, bundles, cfg, item_categories=categories)
            search = train_search_ranker(opened, Recommender(bundle, opened))
        except ShelfwiseError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
        m = bundle.manifest
        fits = ", ".join(f"{k} {v:.2f}s" for k, v in m.fit_seconds.items())
        weights = ", ".join(f"{k} {v:g}" for k, v in m.blend_weights.items())
        how = (f"tuned on {m.tuning['n_users']} validation users, NDCG@10 "
               f"{m.tuning['validation_ndcg10']:.4f}" if m.tuning else "configured")
        typer.echo(
            f"bundle {m.version} written to {bundle.path} "
            f"({m.n_users} users, {m.n_items} items, {m.n_interactions} interactions; fit: {fits})"
            f"\nfeed blend weights ({how}): {weights}"
            f"\n{search.summary()}"
        )
