"""``shelfwise serve``: load the latest bundle and answer HTTP requests."""

from __future__ import annotations

from typing import Annotated

import typer

from shelfwise.cli.common import BundlesOpt, ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.exceptions import ShelfwiseError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        store: StoreOpt = None,
        bundles: BundlesOpt = None,
        host: Annotated[str | None, typer.Option(
            help="bind address (serve.host; loopback by default)")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port (serve.port)")] = None,
        explore_slots: Annotated[int | None, typer.Option(
            min=0, max=20, help="feed slots given to the exploration bandit by default "
            "(serve.exploration.slots)")] = None,
        explore_policy: Annotated[str | None, typer.Option(
            help="exploration bandit: egreedy, linucb, thompson or uniform "
            "(serve.exploration.policy)")] = None,
    ) -> None:
        """Serve feeds, search, similar items, carts, promotions and event ingestion over HTTP
        (docs at /docs), configured by the storage and serve sections of the config."""
        import uvicorn

        from shelfwise.serving.app import create_app

        try:
            loaded = resolve_config(config, set_, {
                "storage.url": ("--store", store), "storage.bundles": ("--bundles", bundles),
                "serve.host": ("--host", host), "serve.port": ("--port", port),
                "serve.exploration.slots": ("--explore-slots", explore_slots),
                "serve.exploration.policy": ("--explore-policy", explore_policy)})
            cfg = loaded.config
            app = create_app(config=cfg)
        except ShelfwiseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        base = f"http://{cfg.serve.host}:{cfg.serve.port}"
        typer.echo(f"shelfwise serving bundle {app.state.recommender.bundle.version} "
                   f"on {base} (OpenAPI docs: {base}/docs)")
        uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="warning")
