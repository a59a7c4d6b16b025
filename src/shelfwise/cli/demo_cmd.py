"""``shelfwise demo``: the main job on the bundled demo shop — import, train, evaluate, serve."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from shelfwise.cli.common import ConfigOpt, SetOpt, resolve_config

DEMO_CONFIG = "demo.toml"


def demo_config_path() -> Path:
    """The packaged config the demo runs with unless ``--config`` names another."""
    return Path(str(resources.files("shelfwise") / "configs" / DEMO_CONFIG))


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workdir: Annotated[Path, typer.Option(help="where the demo store and bundles go")] = Path(
            "var/demo"),
        host: Annotated[str | None, typer.Option(help="bind address (serve.host)")] = None,
        port: Annotated[int | None, typer.Option(help="TCP port (serve.port)")] = None,
        serve: Annotated[bool, typer.Option(help="serve after evaluating")] = True,
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Import the bundled demo shop, train, evaluate (leave-last-out), then serve it, all
        from one config (default: the packaged demo.toml)."""
        from shelfwise.bundle import train_bundle
        from shelfwise.cli.evaluate_cmd import build_models
        from shelfwise.data.loading import interactions_from_store
        from shelfwise.data.presets import import_preset
        from shelfwise.evaluation import (
            LeaveLastOut,
            evaluate,
            format_table,
            parse_metric,
            write_records,
        )
        from shelfwise.storage import open_store

        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        url = f"sqlite:///{workdir / 'shelfwise.db'}"
        loaded = resolve_config(config or demo_config_path(), set_, {
            "storage.url": ("--workdir", url),
            "storage.bundles": ("--workdir", str(workdir / "bundles")),
            "serve.host": ("--host", host), "serve.port": ("--port", port)})
        cfg = loaded.config
        store = open_store(cfg.storage.url, scrub_pii=cfg.privacy.scrub_pii)
        typer.echo(f"config: {loaded.path} (bundle hash {cfg.bundle_hash()})")
        typer.echo("== 1/4 import: bundled demo shop (Amazon Video Games slice)")
        typer.echo(import_preset(store, "demo", user_key=cfg.privacy.pseudonymizer()).summary())
        typer.echo("== 2/4 train")
        data = interactions_from_store(store)
        bundle = train_bundle(data, cfg.storage.bundles, cfg.train, store=store)
        typer.echo(f"bundle {bundle.version}: {data.n_users:,} users, {data.n_items:,} items, "
                   f"{len(data):,} interactions")
        weights = bundle.manifest.blend_weights
        typer.echo("feed blend weights (tuned on each user's second-to-last item): "
                   + ", ".join(f"{k} {v:g}" for k, v in weights.items()))
        typer.echo("== 3/4 evaluate: leave-last-out, full ranking over all items, seen excluded")
        typer.echo("('feed' is the served blend, its weights tuned inside its fit as train does; "
                   "'pipeline' the two-stage LambdaMART feed of [train.pipeline])")
        models = build_models(cfg.evaluate.models, cfg.train)
        metrics = [parse_metric(m) for m in cfg.evaluate.metrics]
        records = evaluate(models, data, LeaveLastOut(), metrics, dataset="demo",
                           exclude_seen=cfg.evaluate.exclude_seen)
        typer.echo(format_table(records))
        write_records(records, workdir / "evaluation.jsonl")
        user = data.users.external(0)
        item = data.items.external(int(data.item_idx[0]))
        base = f"http://{cfg.serve.host}:{cfg.serve.port}"
        typer.echo("== 4/4 serve" + ("" if serve else " (skipped: --no-serve)"))
        typer.echo(
            "try:\n"
            f"  curl '{base}/v1/users/{user}/feed?n=5'\n"
            f"  curl '{base}/v1/users/someone-new/feed?n=5'      # cold start\n"
            f"  curl '{base}/v1/items/{item}/similar?n=5'\n"
            f"  curl -X POST {base}/v1/events -H 'content-type: application/json' \\\n"
            f"       -d '{{\"events\": [{{\"id\": \"demo-1\", \"type\": \"click\", "
            f"\"user_id\": \"someone-new\", \"item_id\": \"{item}\"}}]}}'\n"
            f"  open {base}/docs                                  # OpenAPI docs\n"
            f"  open {base}/dashboard                             # the dashboard"
        )
        store.close()
        if serve:
            import uvicorn

            from shelfwise.serving.app import create_app
            from shelfwise.serving.threads import limit_threads

            limit_threads(cfg.serve.threads)  # training is done: one thread per request now
            app_ = create_app(config=cfg)
            typer.echo(f"serving on {base} (Ctrl-C to stop)")
            uvicorn.run(app_, host=cfg.serve.host, port=cfg.serve.port, log_level="warning")
