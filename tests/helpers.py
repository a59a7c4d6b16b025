"""Test helpers that build a real store and bundle from synthetic data."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from shelfwise.bundle import train_bundle
from shelfwise.data.loading import interactions_from_store
from shelfwise.data.schemas import Event, EventType, Item
from shelfwise.storage import SqlStore, open_store

BASE = datetime(2024, 1, 1, tzinfo=UTC)


@contextmanager
def counted_queries(encoder: object) -> Iterator[list[str]]:
    """The queries ``encoder`` embeds inside the block, in order."""
    calls: list[str] = []
    real = encoder.encode_queries  # type: ignore[attr-defined]

    def counted(texts: list[str]) -> object:
        calls.extend(texts)
        return real(texts)

    encoder.encode_queries = counted  # type: ignore[attr-defined]
    try:
        yield calls
    finally:
        del encoder.encode_queries  # type: ignore[attr-defined]


def store_from_frame(frame: pd.DataFrame, url: str, titles: bool = True) -> SqlStore:
    """Write a frame of (user_id, item_id, timestamp seconds) as purchase events + items."""
    store = open_store(url)
    items = sorted(set(frame["item_id"]))
    from tests.conftest import TWO_GROUP_TEXT

    store.upsert_items(
        [Item(id=i, title=TWO_GROUP_TEXT.get(i, f"Item {i}") if titles else "",
              category=[i[0].upper()]) for i in items]
    )
    store.add_events(
        [
            Event(
                id=f"e{k}", type=EventType.PURCHASE, user_id=r.user_id, item_id=r.item_id,
                timestamp=BASE + timedelta(seconds=float(r.timestamp)),
            )
            for k, r in enumerate(frame.itertuples())
        ]
    )
    return store


def build(frame: pd.DataFrame, tmp: Path) -> tuple[str, Path]:
    """A store and a trained bundle under ``tmp``; returns (store URL, bundles dir)."""
    url = f"sqlite:///{tmp / 'shop.db'}"
    store = store_from_frame(frame, url)
    train_bundle(interactions_from_store(store), tmp / "bundles")
    store.close()
    return url, tmp / "bundles"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_health(base: str, proc: subprocess.Popen[bytes], timeout: float,
                    log: Callable[[], str]) -> None:
    """Poll ``base``/health until it answers 200; fail with the process output otherwise."""
    import httpx
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"server did not start (exit {proc.poll()}):\n{log()}")
        time.sleep(0.3)
