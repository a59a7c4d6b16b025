"""Generators by name, so configs and bundles can refer to them as strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shelfwise.exceptions import ConfigError
from shelfwise.retrieval.base import BaseGenerator
from shelfwise.retrieval.cooccurrence import Cooccurrence
from shelfwise.retrieval.ease import EASE
from shelfwise.retrieval.implicit_models import ALS, BPR
from shelfwise.retrieval.itemknn import ItemKNN
from shelfwise.retrieval.popular import Popularity
from shelfwise.retrieval.sasrec import SASRec
from shelfwise.retrieval.semantic import Semantic
from shelfwise.retrieval.text_sasrec import TextSASRec

GENERATORS: dict[str, type[BaseGenerator]] = {
    Popularity.name: Popularity,
    Cooccurrence.name: Cooccurrence,
    Semantic.name: Semantic,
    EASE.name: EASE,
    ALS.name: ALS,
    BPR.name: BPR,
    ItemKNN.name: ItemKNN,
    SASRec.name: SASRec,
    TextSASRec.name: TextSASRec,
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
