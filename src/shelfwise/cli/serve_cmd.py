"""``shelfwise serve``: load the latest bundle and answer HTTP requests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.cli.common import BundlesOpt, ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.config import ShelfwiseConfig
from shelfwise.exceptions import ShelfwiseError
from shelfwise.storage import store_failure


def keyless_mode(url: str, host: str) -> bool:
    """True for local mode (no keys, loopback); no keys beyond loopback is a ConfigError."""
    from shelfwise.apikeys import check_exposure
    from shelfwise.storage import open_store

    store = open_store(url)
    try:
        return check_exposure(store, host)
    finally:
        store.close()


def load_bundle_manifest(cfg: ShelfwiseConfig) -> str:
    """The version of the bundle ``serve`` would load, read in full once here (then dropped;
    each worker loads its own) so a missing or damaged part is one error line, not a
    traceback in every worker."""
    from shelfwise.bundle.bundle import load_bundle

    return load_bundle(Path(cfg.storage.bundles)).version


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
        workers: Annotated[int | None, typer.Option(
            min=1, max=64, help="server processes on the port, sharing the store "
            "(serve.workers; one per core)")] = None,
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
        from shelfwise.serving.threads import limit_malloc_arenas, limit_threads

        try:
            loaded = resolve_config(config, set_, {
                "storage.url": ("--store", store), "storage.bundles": ("--bundles", bundles),
                "serve.host": ("--host", host), "serve.port": ("--port", port),
                "serve.workers": ("--workers", workers),
                "serve.exploration.slots": ("--explore-slots", explore_slots),
                "serve.exploration.policy": ("--explore-policy", explore_policy)})
            cfg = loaded.config
            limit_threads(cfg.serve.threads)  # here and, by the environment, in the workers
            limit_malloc_arenas(cfg.serve.malloc_arenas)  # likewise
            keyless = keyless_mode(cfg.storage.url, cfg.serve.host)  # before the bundle loads
            if cfg.serve.workers > 1:
                # no per-worker history cache: another worker may have stored the user's event
                limits = cfg.serve.limits.model_copy(update={"user_cache": 0})
                cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(
                    update={"limits": limits})})
                version = load_bundle_manifest(cfg)  # fail here, not in every worker
                app = None
            else:
                app = create_app(config=cfg)
                version = app.state.recommender.bundle.version
        except ShelfwiseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        except SQLAlchemyError as exc:  # opened, but unreadable (a damaged file)
            typer.echo(f"error: {store_failure(cfg.storage.url, exc)}", err=True)
            raise typer.Exit(2) from exc
        base = f"http://{cfg.serve.host}:{cfg.serve.port}"
        if keyless:
            typer.echo("warning: local mode: the store has no API keys, so every route is open "
                       "to any process on this machine; `shelfwise keys create --scope admin` "
                       "turns keys on (within serve.auth.cache_seconds)", err=True)
        typer.echo(f"shelfwise serving bundle {version} on {base} with {cfg.serve.workers} "
                   f"worker(s) (OpenAPI docs: {base}/docs)")
        if app is not None:
            uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level="warning",
                        timeout_keep_alive=cfg.serve.keep_alive_seconds)
            return
        from shelfwise.serving.metrics import share_between_workers
        from shelfwise.serving.workers import run_workers, worker_env

        share_between_workers()  # /metrics of any worker sums over all of them
        os.environ.update(worker_env(cfg))
        try:
            run_workers(cfg.serve.host, cfg.serve.port, cfg.serve.workers,
                        keep_alive=cfg.serve.keep_alive_seconds)
        except ShelfwiseError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
