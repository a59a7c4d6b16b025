"""Policies by name, so configs, the CLI and saved bundles can refer to them as strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shelfwise.exceptions import ConfigError
from shelfwise.policies.bandits import POLICIES
from shelfwise.policies.base import BasePolicy


def make_policy(name: str, **params: Any) -> BasePolicy:
    """A new policy of kind ``name`` (uniform, egreedy, linucb, thompson)."""
    try:
        cls = POLICIES[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown policy {name!r}; known: {', '.join(POLICIES)}") from None
    return cls(**params)


def load_policy(path: Path) -> BasePolicy:
    """A policy saved with ``save(path)``, whatever its kind."""
    config = Path(path) / "config.json"
    if not config.exists():
        raise ConfigError(f"no saved policy at {path} (config.json missing)")
    name = json.loads(config.read_text()).get("name")
    if name not in POLICIES:
        raise ConfigError(f"{path} holds policy {name!r}, which this version does not know")
    return POLICIES[name].load(Path(path))
