"""``shelfwise demo``: the main job on the bundled demo shop — import, train, evaluate, serve."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from shelfwise.bundle.bundle import TrainConfig, train_bundle
from shelfwise.cli.evaluate_cmd import DEFAULT_METRICS, build_models
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.presets import import_preset
from shelfwise.evaluation import LeaveLastOut, evaluate, format_table, parse_metric, write_records
from shelfwise.ranking.config import PipelineConfig
from shelfwise.storage import open_store

#: The two-stage feed the demo evaluates beside the blend: the blend's generators plus item-kNN
#: and EASE (the demo catalog is small enough for EASE's item-item matrix) as candidates,
#: LambdaMART on top. On the demo it ties the tuned blend, so the demo serves the blend.
DEMO_PIPELINE = PipelineConfig.from_dict({
    "generators": [{"name": "cooccurrence", "params": {"popularity_tiebreak": False}},
                   {"name": "itemknn"}, {"name": "ease"}, {"name": "semantic"},
                   {"name": "popularity"}],
    "candidates_per_generator": 50, "min_groups": 100}, source="demo pipeline")


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workdir: Annotated[Path, typer.Option(help="where the demo store and bundles go")] = Path(
            "var/demo"),
        host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        serve: Annotated[bool, typer.Option(help="serve after evaluating")] = True,
    ) -> None:
        """Import the bundled demo shop, train, evaluate (leave-last-out), then serve it."""
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        url = f"sqlite:///{workdir / 'shelfwise.db'}"
        store = open_store(url)
        typer.echo("== 1/4 import: bundled demo shop (Amazon Video Games slice)")
        typer.echo(import_preset(store, "demo").summary())
        typer.echo("== 2/4 train")
        data = interactions_from_store(store)
        bundle = train_bundle(data, workdir / "bundles", TrainConfig())
        typer.echo(f"bundle {bundle.version}: {data.n_users:,} users, {data.n_items:,} items, "
                   f"{len(data):,} interactions")
        weights = bundle.manifest.blend_weights
        typer.echo("feed blend weights (tuned on each user's second-to-last item): "
                   + ", ".join(f"{k} {v:g}" for k, v in weights.items()))
        typer.echo("== 3/4 evaluate: leave-last-out, full ranking over all items, seen excluded")
        tuned = TrainConfig(tune_weights=False, pipeline=DEMO_PIPELINE, generators=[
            spec.model_copy(update={"weight": weights.get(spec.name, 0.0)})
            for spec in TrainConfig().generators])
        typer.echo("('feed' is the served, tuned blend; 'pipeline' the two-stage LambdaMART "
                   "feed a [pipeline] train config would serve instead)")
        models = build_models(["popularity", "cooccurrence", "semantic", "feed", "pipeline"],
                              tuned)
        metrics = [parse_metric(m) for m in DEFAULT_METRICS.split(",")]
        records = evaluate(models, data, LeaveLastOut(), metrics, dataset="demo")
        typer.echo(format_table(records))
        write_records(records, workdir / "evaluation.jsonl")
        store.close()
        user = data.users.external(0)
        item = data.items.external(int(data.item_idx[0]))
        base = f"http://{host}:{port}"
        typer.echo("== 4/4 serve" + ("" if serve else " (skipped: --no-serve)"))
        typer.echo(
            "try:\n"
            f"  curl '{base}/v1/users/{user}/feed?n=5'\n"
            f"  curl '{base}/v1/users/someone-new/feed?n=5'      # cold start\n"
            f"  curl '{base}/v1/items/{item}/similar?n=5'\n"
            f"  curl -X POST {base}/v1/events -H 'content-type: application/json' \\\n"
            f"       -d '{{\"events\": [{{\"id\": \"demo-1\", \"type\": \"click\", "
            f"\"user_id\": \"someone-new\", \"item_id\": \"{item}\"}}]}}'\n"
            f"  open {base}/docs                                  # OpenAPI docs"
        )
        if serve:
            import uvicorn

            from shelfwise.serving.app import create_app

            app_ = create_app(url, workdir / "bundles")
            typer.echo(f"serving on {base} (Ctrl-C to stop)")
            uvicorn.run(app_, host=host, port=port, log_level="warning")
