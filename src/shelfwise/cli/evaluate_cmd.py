"""``shelfwise evaluate``: offline comparison of generators on one split, one table out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from numpy.typing import NDArray
from rich.console import Console
from rich.markup import escape

from shelfwise.bundle import TrainConfig
from shelfwise.cli.common import ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.data.ids import IdMap
from shelfwise.data.importers import validate_frame
from shelfwise.data.interactions import Interactions
from shelfwise.data.loading import catalog_texts, interactions_from_store
from shelfwise.data.presets import load_preset
from shelfwise.data.schemas import INTERACTION_TYPES
from shelfwise.evaluation import (
    LeaveLastOut,
    TemporalSplit,
    evaluate,
    format_table,
    parse_metric,
    write_records,
)
from shelfwise.evaluation.metrics import ItemContext
from shelfwise.exceptions import ConfigError, ShelfwiseError
from shelfwise.pipeline import Pipeline
from shelfwise.retrieval.base import CandidateGenerator
from shelfwise.retrieval.blend import Blend
from shelfwise.retrieval.registry import make_generator
from shelfwise.storage import open_store


def load_data(store: str | None, preset: str | None, path: Path | None) -> tuple[Interactions, str]:
    """Interactions from a store URL or straight from a preset's files (no store needed)."""
    data, name, _ = load_with_catalog(store, preset, path)
    return data, name


def category_codes(catalog: pd.DataFrame, items: IdMap) -> NDArray[np.int64] | None:
    """Each item's category path as an integer label in ``items``' order (-1 = none), for
    the category metrics; None when the catalog has no categories."""
    if "category" not in catalog.columns:
        return None
    id_col = "id" if "id" in catalog.columns else "item_id"
    path = {str(i): tuple(c) if isinstance(c, list | tuple | np.ndarray) else
            ((str(c),) if isinstance(c, str) and c else ())
            for i, c in zip(catalog[id_col], catalog["category"], strict=True)}
    codes: dict[tuple[str, ...], int] = {}
    out = np.asarray([codes.setdefault(p, len(codes)) if (p := path.get(e, ())) else -1
                      for e in items.ids], np.int64)
    return out if (out >= 0).any() else None


def load_with_catalog(store: str | None, preset: str | None, path: Path | None
                      ) -> tuple[Interactions, str, pd.DataFrame]:
    """:func:`load_data` plus the catalog frame (categories for beyond-accuracy metrics)."""
    if preset is not None:
        data = load_preset(preset, path)
        if data.events is None:
            raise ConfigError(f"preset {preset!r} has no behaviour events to evaluate on")
        # Same checks as an import: a bad row stops the run with its row and field named.
        validate_frame("events", data.events, source=data.sources.get("events", str(data.path)),
                       progress=False)
        events = data.events
        if "type" in events.columns:
            events = events[events["type"].astype(str).isin([t.value for t in INTERACTION_TYPES])]
        frame = events[[c for c in ("user_id", "item_id", "timestamp", "type")
                        if c in events.columns]]
        id_col = "item_id" if "item_id" in data.items.columns else "id"
        items = IdMap(data.items[id_col].astype(str).tolist())
        name = preset if path is None else f"{preset}:{Path(path).stem}"
        texts = catalog_texts(data.items) if "title" in data.items.columns else None
        return Interactions.from_frame(frame, items=items, has_time=data.time_kind == "real",
                                       item_text=texts), name, data.items
    if store is None:
        raise ConfigError("give --store URL or --preset NAME")
    opened = open_store(store)
    return (interactions_from_store(opened), store.rsplit("/", 1)[-1],
            opened.items_frame())


def build_models(names: list[str], config: TrainConfig) -> dict[str, CandidateGenerator]:
    """Each named generator with the params the train config gives it; ``feed`` is the blend
    the server would use (its weights tuned inside its own ``fit``, optional generators the
    data cannot feed left out, exactly as ``train`` builds it) and ``pipeline`` the config's
    two-stage feed."""
    params = {g.key: g for g in config.generators}
    models: dict[str, CandidateGenerator] = {}
    for name in names:
        if name == "feed":
            models["feed"] = Blend.from_specs(config.generators, tune=config.tune_weights)
        elif name == "pipeline":
            if config.pipeline is None:
                raise ConfigError("evaluate.models: 'pipeline' needs a [train.pipeline] table "
                                  "in the config")
            models["pipeline"] = Pipeline(config.pipeline)
        elif name in params:
            models[name] = make_generator(params[name].name, **params[name].params)
        else:
            models[name] = make_generator(name)
    return models


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    def evaluate_command(
        config: ConfigOpt = None,
        set_: SetOpt = None,
        store: StoreOpt = None,
        preset: Annotated[str | None, typer.Option(help="evaluate on a dataset preset")] = None,
        path: Annotated[Path | None, typer.Option(help="the preset's file or folder")] = None,
        models: Annotated[str | None, typer.Option(
            help="comma-separated generators (evaluate.models); 'feed' = the served blend, "
            "'pipeline' = train.pipeline")] = None,
        split: Annotated[str | None, typer.Option(
            help="leave-last-out | temporal:<quantile> (evaluate.split)")] = None,
        validation: Annotated[bool | None, typer.Option(
            "--validation/--no-validation",
            help="hold out the second-to-last item too (train = all but the last two)")] = None,
        metrics: Annotated[str | None, typer.Option(
            help="comma-separated, e.g. HR@10,NDCG@10 (evaluate.metrics); beyond accuracy: "
            "ILD@10 (item vectors), CatILD@10, CatCoverage@10, Novelty@10, "
            "Miscalibration@10")] = None,
        exclude_seen: Annotated[bool | None, typer.Option(
            "--exclude-seen/--no-exclude-seen",
            help="drop items in the user's history from the ranking")] = None,
        out: Annotated[Path | None, typer.Option(help="append JSON-lines records here")] = None,
        dataset: Annotated[str | None, typer.Option(help="dataset name for the records")] = None,
    ) -> None:
        """Fit each model on the training part of a split and rank ALL items for each held-out
        user (no sampled negatives); print a table and optionally write JSON records."""
        console = Console(stderr=True)
        split_list = None if models is None else [m.strip() for m in models.split(",")
                                                  if m.strip()]
        metric_list = None if metrics is None else [m.strip() for m in metrics.split(",")
                                                    if m.strip()]
        try:
            loaded = resolve_config(config, set_, {
                "storage.url": ("--store", store), "evaluate.models": ("--models", split_list),
                "evaluate.split": ("--split", split),
                "evaluate.validation": ("--validation", validation),
                "evaluate.metrics": ("--metrics", metric_list),
                "evaluate.exclude_seen": ("--exclude-seen", exclude_seen)})
            ev = loaded.config.evaluate
            data, name, catalog = load_with_catalog(
                None if preset else loaded.config.storage.url, preset, path)
            if ev.split == "leave-last-out":
                splitter: LeaveLastOut | TemporalSplit = LeaveLastOut(validation=ev.validation)
            elif ev.split.startswith("temporal:"):
                splitter = TemporalSplit(quantile=float(ev.split.split(":", 1)[1]))
            else:
                raise ConfigError(f"evaluate.split = {ev.split!r}: use leave-last-out or "
                                  "temporal:<quantile>")
            built = build_models(ev.models, loaded.config.train)
            mets = [parse_metric(m) for m in ev.metrics]
            context = ItemContext(categories=category_codes(catalog, data.items))
            records = evaluate(built, data, splitter, mets, dataset=dataset or name,
                               exclude_seen=ev.exclude_seen, context=context)
        except (ShelfwiseError, ValueError) as exc:
            console.print(f"[red]error:[/red] {escape(str(exc))}")
            raise typer.Exit(2) from exc
        typer.echo(format_table(records))
        if out is not None:
            write_records(records, out, append=True)
            typer.echo(f"records appended to {out}")
