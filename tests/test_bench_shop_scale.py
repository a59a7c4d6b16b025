"""What ``bench_shop_scale`` measures rests on: a run's embedding cache starts empty."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.bench_shop_scale import cold_cache


def test_cold_cache_drops_a_stopped_runs_vectors_and_keeps_the_shared_models(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared_cache"
    (shared / "models" / "e5").mkdir(parents=True)
    (shared / "models" / "e5" / "weights.bin").write_bytes(b"converted")
    monkeypatch.setenv("SHELFWISE_CACHE", str(shared))
    work = tmp_path / "work"
    first = cold_cache(work)
    (first / "embeddings.sqlite").write_bytes(b"vectors of a stopped run")
    again = cold_cache(work)
    assert sorted(p.name for p in again.iterdir()) == ["models"]
    assert (again / "models").is_symlink()
    assert (again / "models" / "e5" / "weights.bin").read_bytes() == b"converted"
