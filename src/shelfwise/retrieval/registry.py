"""Generators by name, so configs and bundles can refer to them as strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.popular import Popularity

GENERATORS: dict[str, type[BaseGenerator]] = {
    Popularity.name: Popularity,
    Cooccurrence.name: Cooccurrence,
}


def register(cls: type[BaseGenerator]) -> type[BaseGenerator]:
    """Make a generator class available by its ``name``."""
    GENERATORS[cls.name] = cls
    return cls


def make_generator(name: str, **params: Any) -> BaseGenerator:
    try:
        cls = GENERATORS[name]
    except KeyError:
        known = ", ".join(sorted(GENERATORS))
        raise ConfigError(f"unknown generator {name!r}; known: {known}") from None
    return cls(**params)


def load_generator(path: Path) -> BaseGenerator:
    import json

    name = json.loads((path / "config.json").read_text())["name"]
    if name not in GENERATORS:
        raise ConfigError(f"bundle uses generator {name!r}, which this version does not know")
    return GENERATORS[name].load(path)
