"""Options shared by CLI commands: the config file, ``--set`` and flags that map to keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import SQLAlchemyError

from shelfwise.config import LoadedConfig, load_config, parse_assignment
from shelfwise.exceptions import ShelfwiseError
from shelfwise.storage import Store, open_store

ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="the shelfwise TOML config (default: $SHELFWISE_CONFIG, else built-in "
    "defaults); see shelfwise.example.toml")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="override one config key, e.g. --set serve.exploration.slots=2 "
    "(repeatable)")]
StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="store URL (storage.url): sqlite:///path.db or "
    "postgresql+psycopg://user@host/db")]
BundlesOpt = Annotated[Path | None, typer.Option(
    "--bundles", help="bundles directory (storage.bundles): train writes a new version; "
    "serve loads LATEST")]


def resolve_config(config: Path | None, sets: list[str] | None,
                   flags: dict[str, tuple[str, Any]] | None = None) -> LoadedConfig:
    """The effective config: file, environment, then ``--set`` and flags (``flags`` maps a
    dotted key to (flag name, value or None when the flag was not given))."""
    overrides: dict[str, tuple[Any, str]] = {}
    for text in sets or []:
        key, value = parse_assignment(text)
        overrides[key] = (value, f"--set {key}")
    for key, (flag, value) in (flags or {}).items():
        if value is not None:
            overrides[key] = (str(value) if isinstance(value, Path) else value, flag)
    return load_config(config, overrides=overrides)


def store_url(store: str | None, config: Path | None = None) -> str:
    """``--store`` when given, else ``storage.url`` of the config (file, then environment)."""
    return store or load_config(config).config.storage.url


@contextmanager
def opened_store(config: Path | None, sets: list[str] | None, store: str | None) -> Iterator[Store]:
    """The configured store; any failure is one ``error:`` line and exit 2, no traceback."""
    opened: Store | None = None
    try:
        url = resolve_config(config, sets, {"storage.url": ("--store", store)}).config.storage.url
        opened = open_store(url)
        yield opened
    except (ShelfwiseError, SQLAlchemyError) as exc:
        msg = str(exc) if isinstance(exc, ShelfwiseError) else str(exc).splitlines()[0]
        Console(stderr=True).print(f"[red]error:[/red] {escape(msg)}")
        raise typer.Exit(2) from exc
    finally:
        if opened is not None:
            opened.close()
