"""Shared fixtures: small synthetic logs with known structure, and paths to real data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.storage import SqlStore, open_store
from tests.pg import pg_cluster, pg_url  # noqa: F401  (fixtures: a private PostgreSQL)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHELFWISE_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(*parts: str) -> Path:
    """Path into ../shared/data, or skip the test naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not found at {path} (set SHELFWISE_SHARED_DATA)")
    return path


def two_group_frame() -> pd.DataFrame:
    """Group A users walk a1→a2→a3→a4; group B users walk b1→b2→b3; a few do both."""
    rows = []
    t = 0
    for u in range(12):
        seq = ["a1", "a2", "a3", "a4"] if u % 2 == 0 else ["b1", "b2", "b3"]
        for it in seq:
            rows.append((f"u{u}", it, float(t)))
            t += 1
    rows += [("mix", "a1", float(t)), ("mix", "b1", float(t + 1))]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


TWO_GROUP_TEXT = {
    "a1": "Elven Saga: fantasy role-playing game for PC",
    "a2": "Dragon Quest strategy guide, fantasy RPG",
    "a3": "Gaming mouse with RGB lights",
    "a4": "Mechanical gaming keyboard",
    "b1": "Stainless steel chef knife 20 cm",
    "b2": "Bamboo cutting board",
    "b3": "Cast iron frying pan, 28 cm",
}


@pytest.fixture
def two_groups() -> Interactions:
    return Interactions.from_frame(two_group_frame(), item_text=TWO_GROUP_TEXT)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """An empty SQLite store in a temporary file."""
    s = open_store(f"sqlite:///{tmp_path / 'shop.db'}")
    yield s
    s.close()
