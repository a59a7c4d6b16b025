"""``shelfwise serve``: load the latest bundle and answer HTTP requests."""

from __future__ import annotations

from typing import Annotated

import typer

from shelfwise.cli.common import DEFAULT_BUNDLES, DEFAULT_STORE, BundlesOpt, StoreOpt


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        store: StoreOpt = DEFAULT_STORE,
        bundles: BundlesOpt = DEFAULT_BUNDLES,
        host: Annotated[str, typer.Option(help="bind address (loopback by default)")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    ) -> None:
        """Serve feeds, similar items and event ingestion over HTTP (docs at /docs)."""
        import uvicorn

        from shelfwise.serving.app import create_app

        app = create_app(store, bundles)
        typer.echo(f"shelfwise serving bundle {app.state.recommender.bundle.version} "
                   f"on http://{host}:{port} (OpenAPI docs: http://{host}:{port}/docs)")
        uvicorn.run(app, host=host, port=port, log_level="warning")
