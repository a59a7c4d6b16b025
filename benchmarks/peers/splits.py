"""The one split per dataset that every model of the peer table trains and is scored on.

Leave-last-out on each user's ordered sequence ``s`` (users with at least 3 items are evaluated;
shorter ones only train):

* ``train_items``/``train_offsets``: per user ``s[:-1]`` (evaluated users) or ``s`` (others);
  what every model fits on for the test, and the history each test user is fed;
* ``valid_targets[u] = s[-2]``: validation = the training sequence minus its last item, fed
  ``s[:-2]``, target ``s[-2]`` (tuning and, for RecBole, epoch choice);
* ``test_users``/``test_targets``: target ``s[-1]``.

It is written once as ``.npz`` (numpy only, so RecBole's venv reads the same file) together with
a sha256 over its arrays; results record that hash so a changed split invalidates the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.common import SHARED_DATA
from shelfwise.data.ids import IdMap
from shelfwise.data.interactions import History, Interactions

WORK = Path(os.environ.get("SHELFWISE_PEERS_WORK", Path(__file__).resolve().parent / "work"))
DATASETS = {
    "beauty": "amazon_sequences/Beauty.txt",
    "sports": "amazon_sequences/Sports_and_Outdoors.txt",
    "games": "amazon_games (Games.test.inter: history + target)",
}
COLD_BELOW = 5  # cold slice: test targets with fewer training interactions than this
_ARRAYS = ("item_ids", "user_ids", "train_items", "train_offsets", "valid_targets",
           "test_users", "test_targets")


def _read_sequences(name: str) -> tuple[list[str], list[list[str]], list[str], list[str] | None]:
    """(user ids, item-id sequences oldest first, catalog item ids, item texts or None)."""
    if name in ("beauty", "sports"):
        path = SHARED_DATA / DATASETS[name]
        users, seqs = [], []
        with path.open() as fh:
            for line in fh:
                user, *seq = line.split()
                users.append(user)
                seqs.append(seq)
        catalog = list(dict.fromkeys(i for s in seqs for i in s))
        return users, seqs, catalog, None
    if name == "games":
        from shelfwise.cli.evaluate_cmd import load_data

        data, _ = load_data(None, "amazon_games", None)
        ids = data.items.ids
        hist = data.histories()
        return (list(data.users.ids), [[ids[i] for i in h] for h in hist], list(ids),
                data.item_text)
    raise SystemExit(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def write_split(name: str) -> Path:
    """Build and write ``<WORK>/<name>/split.npz`` (+ ``split.json`` with hash and sizes)."""
    users, seqs, catalog, texts = _read_sequences(name)
    items = IdMap(catalog)
    idx = [items.add(s) for s in seqs]
    evaluated = np.array([len(s) >= 3 for s in idx])
    train = [s[:-1] if ev else s for s, ev in zip(idx, evaluated, strict=True)]
    offsets = np.zeros(len(train) + 1, np.int64)
    offsets[1:] = np.cumsum([len(t) for t in train])
    arrays: dict[str, NDArray[np.generic]] = {
        "item_ids": np.asarray(items.ids, dtype=str),
        "user_ids": np.asarray(users, dtype=str),
        "train_items": np.concatenate(train).astype(np.int64),
        "train_offsets": offsets,
        "valid_targets": np.array([s[-2] if ev else -1 for s, ev in
                                   zip(idx, evaluated, strict=True)], np.int64),
        "test_users": np.flatnonzero(evaluated).astype(np.int64),
        "test_targets": np.array([s[-1] for s, ev in zip(idx, evaluated, strict=True) if ev],
                                 np.int64),
    }
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "split.npz", n_items=np.int64(len(items)), **arrays)
    if texts is not None:
        (folder / "item_text.json").write_text(json.dumps(texts))
    meta = {"dataset": name, "source": DATASETS[name], "sha256": split_hash(folder / "split.npz"),
            "users": len(users), "items": len(items), "interactions": sum(map(len, idx)),
            "test_users": int(evaluated.sum())}
    (folder / "split.json").write_text(json.dumps(meta, indent=2))
    return folder / "split.npz"


def split_hash(path: Path) -> str:
    with np.load(path, allow_pickle=False) as z:
        h = hashlib.sha256()
        for key in _ARRAYS:
            h.update(key.encode())
            h.update(np.ascontiguousarray(z[key]).tobytes())
        return h.hexdigest()


@dataclass
class PeerSplit:
    """The arrays of one written split, with the views models need."""

    name: str
    path: Path
    sha256: str
    n_items: int
    item_ids: list[str]
    user_ids: list[str]
    train_items: NDArray[np.int64]
    train_offsets: NDArray[np.int64]
    valid_targets: NDArray[np.int64]
    test_users: NDArray[np.int64]
    test_targets: NDArray[np.int64]

    @classmethod
    def load(cls, name: str) -> PeerSplit:
        path = WORK / name / "split.npz"
        if not path.exists():
            write_split(name)
        meta = json.loads((WORK / name / "split.json").read_text())
        with np.load(path, allow_pickle=False) as z:
            return cls(name, path, meta["sha256"], int(z["n_items"]), z["item_ids"].tolist(),
                       z["user_ids"].tolist(), z["train_items"], z["train_offsets"],
                       z["valid_targets"], z["test_users"], z["test_targets"])

    @cached_property
    def train_seqs(self) -> list[History]:
        o = self.train_offsets
        return [self.train_items[o[u] : o[u + 1]] for u in range(o.shape[0] - 1)]

    @property
    def valid_users(self) -> NDArray[np.int64]:
        return np.flatnonzero(self.valid_targets >= 0).astype(np.int64)

    @cached_property
    def valid_seqs(self) -> list[History]:
        """Training sequences for tuning: each evaluated user's ``s[:-2]``."""
        ev = self.valid_targets >= 0
        return [s[:-1] if e else s for s, e in zip(self.train_seqs, ev, strict=True)]

    def interactions(self, seqs: list[History]) -> Interactions:
        """``Interactions`` over the split's fixed id maps (position = order, no real time)."""
        lens = np.fromiter(map(len, seqs), np.int64, count=len(seqs))
        user_idx = np.repeat(np.arange(len(seqs), dtype=np.int64), lens)
        item_idx = np.concatenate(seqs).astype(np.int64)
        ts = (np.arange(item_idx.shape[0]) - np.repeat(np.cumsum(lens) - lens, lens)).astype(
            np.float64)
        texts = None
        text_file = WORK / self.name / "item_text.json"
        if text_file.exists():
            texts = json.loads(text_file.read_text())
        return Interactions(IdMap(self.user_ids), IdMap(self.item_ids), user_idx, item_idx, ts,
                            np.ones(item_idx.shape[0], np.float32), False, texts)

    def eval_set(self, phase: str) -> tuple[NDArray[np.int64], list[History],
                                            NDArray[np.int64]]:
        """(users, fed histories, targets) of ``"valid"`` or ``"test"``."""
        if phase == "valid":
            users = self.valid_users
            return users, [self.valid_seqs[u] for u in users], self.valid_targets[users]
        return self.test_users, [self.train_seqs[u] for u in self.test_users], self.test_targets

    def cold_mask(self) -> NDArray[np.bool_]:
        """Test users whose target has fewer than ``COLD_BELOW`` training interactions."""
        counts = np.bincount(self.train_items, minlength=self.n_items)
        return np.asarray(counts[self.test_targets] < COLD_BELOW)
