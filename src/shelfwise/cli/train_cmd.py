"""``shelfwise train``: fit the configured generators on the store and write a bundle."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.cli.common import BundlesOpt, ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.exceptions import ShelfwiseError
from shelfwise.storage import store_failure


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        store: StoreOpt = None,
        bundles: BundlesOpt = None,
    ) -> None:
        """Fit the train section of the config on every stored event and publish a new
        versioned bundle: generators and tuned blend weights, the two-stage feed when
        configured, the search index over the catalog, and, with enough logged searches that
        led to clicks or purchases, the search ranker."""
        from shelfwise.bundle import train_bundle
        from shelfwise.data.loading import interactions_from_store, item_category_codes
        from shelfwise.storage import open_store

        console = Console(stderr=True)
        try:
            cfg = resolve_config(config, set_, {"storage.url": ("--store", store),
                                                "storage.bundles": ("--bundles", bundles)})
            settings = cfg.config
            opened = open_store(settings.storage.url)
            data = interactions_from_store(opened)
            if data.n_items == 0:
                raise ShelfwiseError(
                    f"the store {settings.storage.url} holds no items: run `shelfwise import` "
                    "(the catalog alone is enough to start: search, similar items from text "
                    "and new arrivals; events make it personal)")
            categories = (item_category_codes(opened, data.items)
                          if settings.train.serves_pipeline else None)
            bundle = train_bundle(data, settings.storage.bundles, settings.train,
                                  item_categories=categories, store=opened,
                                  search=settings.serve.search)
        except ShelfwiseError as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(2) from exc
        except SQLAlchemyError as exc:  # opened, but unreadable (a damaged file)
            console.print(f"[red]error:[/red] {escape(store_failure(settings.storage.url, exc))}",
                          soft_wrap=True)
            raise typer.Exit(2) from exc
        m = bundle.manifest
        fits = ", ".join(f"{k} {v:.2f}s" for k, v in m.fit_seconds.items())
        weights = ", ".join(f"{k} {v:g}" for k, v in m.blend_weights.items())
        how = (f"tuned on {m.tuning['n_users']} validation users, NDCG@10 "
               f"{m.tuning['validation_ndcg10']:.4f}" if m.tuning else "configured")
        feed = (f"two-stage pipeline ({m.pipeline['mode']})" if m.pipeline else "blend")
        typer.echo(
            f"bundle {m.version} written to {bundle.path} "
            f"({m.n_users} users, {m.n_items} items, {m.n_interactions} interactions; fit: {fits})"
            f"\nfeed blend weights ({how}): {weights}"
            f"\nfeed served by: {feed}"
            f"\n{search_line(m.search_ranker)}"
            f"\n{index_line(m.search_index)}"
            f"\nparts: {', '.join(m.parts)}"
        )


def index_line(summary: dict[str, Any] | None) -> str:
    """The prebuilt search index in one line."""
    if not summary:
        return "search index: not prebuilt (the server builds it at start)"
    return (f"search index: {summary['items']} items, {summary['array_mb']} MB of arrays "
            f"(memory-mapped by serve), built in {summary.get('seconds', 0):.1f} s")


def search_line(report: dict[str, Any] | None) -> str:
    """The search ranker's training outcome in one line."""
    if not report:
        return "search ranker: not trained (no store given)"
    if not report.get("trained"):
        return f"search ranker: not trained ({report.get('reason')})"
    h = report.get("holdout_ndcg10", {})
    return (f"search ranker: trained on {report['labelled']} logged searches "
            f"({report['trees']} trees); newest {report['holdout_searches']} held out: NDCG@10 "
            f"{h.get('lambdamart', 0):.4f} against {h.get('rrf', 0):.4f} for the fused order")
