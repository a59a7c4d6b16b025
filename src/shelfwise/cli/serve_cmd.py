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
        explore_slots: Annotated[int, typer.Option(
            min=0, max=20, help="feed slots given to the exploration bandit by default")] = 0,
        explore_policy: Annotated[str, typer.Option(
            help="exploration bandit: egreedy, linucb, thompson or uniform")] = "egreedy",
    ) -> None:
        """Serve feeds, similar items and event ingestion over HTTP (docs at /docs)."""
        import uvicorn

        from shelfwise.services.exploration import ExplorationConfig
        from shelfwise.serving.app import create_app

        params = {"epsilon": 0.2} if explore_policy == "egreedy" else {}
        app = create_app(store, bundles, ExplorationConfig(
            slots=explore_slots, policy=explore_policy, params=params))
        typer.echo(f"shelfwise serving bundle {app.state.recommender.bundle.version} "
                   f"on http://{host}:{port} (OpenAPI docs: http://{host}:{port}/docs)")
        uvicorn.run(app, host=host, port=port, log_level="warning")
