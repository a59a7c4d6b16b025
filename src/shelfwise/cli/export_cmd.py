"""``shelfwise export popularity --epsilon E``: item popularity with differential privacy.

The counts are what :func:`shelfwise.privacy.dp.private_popularity` publishes (every catalog
item, each user counted at most ``--per-user-cap`` times per item, Laplace noise of scale
sensitivity / ε); see that module for the guarantee. CSV (``item_id,count``) on stdout or in
``--out``; the privacy parameters go to stderr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shelfwise.cli.common import ConfigOpt, SetOpt, StoreOpt, resolve_config
from shelfwise.data.schemas import EventType
from shelfwise.exceptions import ShelfwiseError

export_app = typer.Typer(help="Publish aggregates of the store with differential privacy.",
                         no_args_is_help=True)


@export_app.command("popularity")
def popularity(
    epsilon: Annotated[float, typer.Option(
        help="privacy budget ε (> 0; smaller = more noise: scale sensitivity/ε)")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    store: StoreOpt = None,
    types: Annotated[list[EventType] | None, typer.Option(
        "--type", help="event types counted (repeatable; default view, click, cart, "
        "purchase)")] = None,
    per_user_cap: Annotated[int, typer.Option(
        min=1, help="most a user adds to one item's count")] = 1,
    max_items_per_user: Annotated[int | None, typer.Option(
        min=1, help="count each user towards at most this many items (their most recent): "
        "the whole table is then ε-DP, with this many times the noise")] = None,
    seed: Annotated[int | None, typer.Option(
        help="seed of the noise (only for reproducible tests: a published seed lets anyone "
        "subtract the noise)")] = None,
    out: Annotated[Path | None, typer.Option(help="write the CSV here, not stdout")] = None,
) -> None:
    """Every catalog item's noisy popularity count (Laplace mechanism), most popular first."""
    from shelfwise.privacy.dp import private_popularity
    from shelfwise.storage import open_store

    try:
        cfg = resolve_config(config, set_, {"storage.url": ("--store", store)}).config
        db = open_store(cfg.storage.url)
        try:
            table = private_popularity(db, epsilon, types=types, per_user_cap=per_user_cap,
                                       max_items_per_user=max_items_per_user, rng=seed)
        finally:
            db.close()
    except ShelfwiseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    sensitivity = per_user_cap * (max_items_per_user or 1)
    scope = "the whole table" if max_items_per_user else "each item's count"
    typer.echo(f"epsilon {epsilon:g}, sensitivity {sensitivity} ({scope} is epsilon-DP), "
               f"Laplace scale {sensitivity / epsilon:g}; {len(table)} items", err=True)
    text = table.to_csv(index=False)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
