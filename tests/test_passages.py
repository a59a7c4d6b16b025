"""Raw passage vectors kept as centred vectors plus a norm and a script per item."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import Interactions
from shelfwise.retrieval.passages import PassageVectors, centre
from shelfwise.retrieval.semantic import Semantic
from tests.test_semantic import CATALOG


def _raw(n: int = 50, dim: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(n, dim)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    scripts = rng.integers(0, 2, n)
    means = np.stack([raw[scripts == k].mean(axis=0) for k in (0, 1)]).astype(np.float32)
    raw[7] = 0.0  # an item without text
    raw[9] = means[scripts[9]]  # an item at its script's mean: a zero centred vector
    return raw, scripts, means


def test_rows_products_and_slices_give_the_raw_vectors_back() -> None:
    raw, scripts, means = _raw()
    centred, rows = centre(raw, scripts, means)
    assert rows.shape == raw.shape and len(rows) == len(raw)
    assert np.allclose(np.linalg.norm(centred[[0, 1, 2]], axis=1), 1.0, atol=1e-6)
    assert not centred[7].any() and not centred[9].any()
    np.testing.assert_allclose(rows[np.arange(len(raw))], raw, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rows), raw, atol=1e-6)
    assert not rows[np.array([7])].any(), "no text: still a zero vector"
    np.testing.assert_allclose(rows[9], raw[9], atol=1e-6)
    q = np.random.default_rng(4).normal(size=raw.shape[1]).astype(np.float32)
    np.testing.assert_allclose(rows @ q, raw @ q, atol=1e-5)
    queries = np.random.default_rng(5).normal(size=(raw.shape[1], 3)).astype(np.float32)
    np.testing.assert_allclose(rows @ queries, raw @ queries, atol=1e-5)
    head = rows[:20]
    assert isinstance(head, PassageVectors) and np.shares_memory(head.centred, centred)
    np.testing.assert_allclose(head @ q, raw[:20] @ q, atol=1e-5)
    np.testing.assert_allclose(rows[30:][np.array([0, 5])], raw[[30, 35]], atol=1e-6)
    plain = PassageVectors(raw)  # not centred: the rows are the matrix itself
    np.testing.assert_array_equal(plain[np.array([3])], raw[[3]])
    np.testing.assert_array_equal(plain @ q, raw @ q)


def _data() -> Interactions:
    return Interactions.from_frame(
        pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["runners", "yoga"]}),
        items=IdMap(CATALOG), item_text=CATALOG, has_time=False)


def test_the_semantic_generator_keeps_one_matrix_and_matches_its_encoder(
        tmp_path: Path) -> None:
    sem = Semantic().fit(_data())
    texts = list(CATALOG.values())
    raw = sem.embed(texts)
    assert isinstance(sem.raw_vectors_, PassageVectors)
    assert sem.raw_vectors_.centred is sem.vectors_
    np.testing.assert_allclose(np.asarray(sem.raw_vectors_), raw, atol=1e-5)
    sem.save(tmp_path / "sem")
    assert not (tmp_path / "sem" / "raw_vectors.npy").exists(), "no second matrix on disk"
    loaded = Semantic.load(tmp_path / "sem")
    np.testing.assert_array_equal(np.asarray(loaded.raw_vectors_), np.asarray(sem.raw_vectors_))
    query = "跑步鞋"
    np.testing.assert_array_equal(loaded.search_text(query, 3)[0], sem.search_text(query, 3)[0])
    new = ["Cast iron skillet, 26 cm", "绿茶 龙井 250克"]
    loaded.add_items(new)
    np.testing.assert_allclose(np.asarray(loaded.raw_vectors_[len(texts):]), loaded.embed(new),
                               atol=1e-5)
    assert loaded.raw_vectors_.centred is loaded.vectors_


def test_a_bundle_that_saved_raw_vectors_still_loads_and_grows(tmp_path: Path) -> None:
    sem = Semantic().fit(_data())
    raw = np.asarray(sem.raw_vectors_)
    sem.raw_vectors_ = PassageVectors(raw.copy())  # as bundles before passage norms saved it
    sem.save(tmp_path / "old")
    assert (tmp_path / "old" / "raw_vectors.npy").exists()
    old = Semantic.load(tmp_path / "old")
    np.testing.assert_array_equal(np.asarray(old.raw_vectors_), raw)
    old.add_items(["Cast iron skillet, 26 cm"])
    np.testing.assert_allclose(np.asarray(old.raw_vectors_)[-1],
                               old.embed(["Cast iron skillet, 26 cm"])[0], atol=1e-5)


def _rss_of(path: Path) -> int:
    """kB of ``path``'s mapping resident in this process (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_pages_read_once_leave_the_resident_set(tmp_path: Path) -> None:
    from shelfwise.search.columns import release_pages

    path = tmp_path / "blob.npy"
    np.save(path, np.arange(4_000_000, dtype=np.uint8))
    mapped = np.load(path, mmap_mode="r").view(np.ndarray)
    assert int(mapped.sum()) >= 0 and _rss_of(path) >= 3_000
    assert release_pages(mapped)
    assert _rss_of(path) < 100
    assert int(mapped[123]) == 123 % 256, "still readable"
    assert not release_pages(np.zeros(3))
