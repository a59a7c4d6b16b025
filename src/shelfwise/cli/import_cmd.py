"""``shelfwise import``: load a dataset preset, or one CSV/TSV/Parquet/JSONL file, into a store.

All-or-nothing: every row is validated first; on any problem nothing is written, the problems
(file, row, field, what was expected) go to stderr and the exit code is 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.cli.common import ConfigOpt, StoreOpt, resolve_config
from shelfwise.data.importers import KINDS, Kind, TimeKind, import_file
from shelfwise.data.presets import PRESETS, import_preset
from shelfwise.exceptions import ShelfwiseError
from shelfwise.storage import open_store, store_failure

__all__ = ["import_command", "parse_mapping", "register"]

_EPILOG = (
    "Examples: shelfwise import --preset demo | "
    "shelfwise import --preset amazon_sequences --path ../shared/data/amazon_sequences/"
    "Sports_and_Outdoors.txt | "
    "shelfwise import --kind events clicks.csv --map user_id=customer --map item_id=sku "
    "--default-type click"
)

_HELP = {
    "file": "CSV, TSV, Parquet or JSONL file to import (with --kind)",
    "preset": f"dataset preset: {', '.join(PRESETS)}",
    "path": "read the preset from here instead of its default location",
    "kind": f"what FILE holds: {', '.join(KINDS)} (default: from a name like events.csv)",
    "map": "our_field=their_column, repeatable (e.g. --map item_id=sku)",
    "default_type": "event type for files without a type column (e.g. purchase)",
    "time_kind": "events: 'real' dates or 'ordinal' (times only encode order); default real",
}


def register(app: typer.Typer) -> None:
    """Add the ``import`` command to the shelfwise app."""
    app.command("import", epilog=_EPILOG)(import_command)


def parse_mapping(pairs: list[str] | None) -> dict[str, str]:
    """``["item_id=sku", ...]`` -> ``{"item_id": "sku"}`` (our field = their column)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise typer.BadParameter(f"expected field=column, got {pair!r}", param_hint="--map")
        out[ours.strip()] = theirs.strip()
    return out


def import_command(
    file: Annotated[Path | None, typer.Argument(help=_HELP["file"], show_default=False)] = None,
    store: StoreOpt = None,
    preset: Annotated[str | None, typer.Option(
        metavar="NAME", help=_HELP["preset"], show_default=False)] = None,
    path: Annotated[Path | None, typer.Option(help=_HELP["path"], show_default=False)] = None,
    kind: Annotated[str | None, typer.Option(
        metavar="KIND", help=_HELP["kind"], show_default=False)] = None,
    mapping: Annotated[list[str] | None, typer.Option(
        "--map", metavar="FIELD=COLUMN", help=_HELP["map"], show_default=False)] = None,
    default_type: Annotated[str | None, typer.Option(
        metavar="TYPE", help=_HELP["default_type"], show_default=False)] = None,
    time_kind: Annotated[str | None, typer.Option(
        metavar="real|ordinal", help=_HELP["time_kind"], show_default=False)] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars on a terminal")] = True,
    config: ConfigOpt = None,
) -> None:
    """Import a dataset preset, or one file of items, users, events or promotions. With
    privacy.pseudonymize, user ids are stored as their keyed pseudonyms."""
    if preset is not None and (file is not None or kind is not None or mapping):
        raise typer.BadParameter("use either --preset [--path] or --kind FILE [--map ...]",
                                 param_hint="--preset")
    if preset is None and path is not None:
        raise typer.BadParameter("--path goes with --preset; give a file as FILE",
                                 param_hint="--path")
    if preset is None and file is None:
        raise typer.BadParameter("give --preset NAME or a FILE to import", param_hint="FILE")
    if file is not None and kind is None:
        kind = file.name.split(".")[0] if file.name.split(".")[0] in KINDS else None
        if kind is None:
            raise typer.BadParameter(f"say what {file.name} holds: {', '.join(KINDS)}",
                                     param_hint="--kind")
    if time_kind is not None and time_kind not in ("real", "ordinal"):
        raise typer.BadParameter("use real or ordinal", param_hint="--time-kind")
    columns = parse_mapping(mapping)
    try:
        cfg = resolve_config(config, None, {"storage.url": ("--store", store)}).config
        user_key = cfg.privacy.pseudonymizer()
        db = open_store(cfg.storage.url, scrub_pii=cfg.privacy.scrub_pii)
        try:
            if preset is not None:
                summary = import_preset(db, preset, path, progress=progress,
                                        user_key=user_key).summary()
            else:
                assert file is not None and kind is not None
                summary = import_file(
                    db, cast(Kind, kind), file, mapping=columns, default_type=default_type,
                    time_kind=cast(TimeKind | None, time_kind), progress=progress,
                    user_key=user_key,
                ).summary()
        finally:
            db.close()
    except ShelfwiseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except SQLAlchemyError as exc:  # opened, but unreadable (a damaged file)
        typer.echo(f"error: {store_failure(cfg.storage.url, exc)}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{summary} -> {store}")
