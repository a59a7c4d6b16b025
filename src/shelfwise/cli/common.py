"""Options shared by CLI commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_STORE = "sqlite:///var/shelfwise.db"
DEFAULT_BUNDLES = Path("var/bundles")


def default_store() -> str:
    return os.environ.get("SHELFWISE_STORE", DEFAULT_STORE)


StoreOpt = Annotated[
    str,
    typer.Option("--store", envvar="SHELFWISE_STORE",
                 help="store URL: sqlite:///path.db or postgresql+psycopg://user@host/db"),
]
BundlesOpt = Annotated[
    Path,
    typer.Option("--bundles", envvar="SHELFWISE_BUNDLES",
                 help="bundles directory (train writes a new version; serve loads LATEST)"),
]
