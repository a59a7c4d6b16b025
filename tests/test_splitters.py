"""Splitters on a tiny timestamped log: exactly which items land in train, valid and test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shelfwise.data.interactions import Interactions
from shelfwise.evaluation import EvalSet, LeaveLastOut, Split, Splitter, TemporalSplit
from shelfwise.exceptions import ConfigError

# user -> [(item, timestamp)], deliberately shuffled in the frame below
LOG = {
    "a": [("a1", 1), ("a2", 2), ("a3", 3), ("a4", 4), ("a5", 5)],
    "b": [("b1", 10), ("b2", 11), ("b3", 12)],
    "c": [("c1", 20), ("c2", 21)],
    "d": [("d1", 30)],
}


@pytest.fixture
def log() -> Interactions:
    rows = [(u, i, t) for u, events in LOG.items() for i, t in events]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    return Interactions.from_frame(frame)


def names(data: Interactions, idx: np.ndarray) -> list[str]:
    return data.items.externals(idx)


def train_of(split: Split) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    t = split.train
    for u, i in zip(t.users.externals(t.user_idx), t.items.externals(t.item_idx), strict=True):
        out.setdefault(u, []).append(i)
    return out


def eval_of(data: Interactions, ev: EvalSet) -> dict[str, tuple[list[str], list[str]]]:
    return {
        data.users.external(int(u)): (names(data, h), names(data, t))
        for u, h, t in zip(ev.users, ev.histories, ev.targets, strict=True)
    }


def test_leave_last_out(log: Interactions) -> None:
    split = LeaveLastOut().split(log)
    assert isinstance(LeaveLastOut(), Splitter)
    assert split.name == "leave-last-out" and split.valid is None
    assert train_of(split) == {
        "a": ["a1", "a2", "a3", "a4"],
        "b": ["b1", "b2"],
        "c": ["c1"],
        "d": ["d1"],  # a single interaction: train only, not evaluated
    }
    assert eval_of(log, split.test) == {
        "a": (["a1", "a2", "a3", "a4"], ["a5"]),
        "b": (["b1", "b2"], ["b3"]),
        "c": (["c1"], ["c2"]),
    }
    # indices stay valid: same id maps
    assert split.train.items is log.items and split.train.users is log.users


def test_leave_last_out_with_validation(log: Interactions) -> None:
    split = LeaveLastOut(validation=True).split(log)
    assert split.valid is not None
    assert train_of(split) == {
        "a": ["a1", "a2", "a3"],
        "b": ["b1"],
        "c": ["c1", "c2"],  # fewer than 3 interactions: train only
        "d": ["d1"],
    }
    assert eval_of(log, split.valid) == {
        "a": (["a1", "a2", "a3"], ["a4"]),
        "b": (["b1"], ["b2"]),
    }
    # the test history includes the validation item
    assert eval_of(log, split.test) == {
        "a": (["a1", "a2", "a3", "a4"], ["a5"]),
        "b": (["b1", "b2"], ["b3"]),
    }
    # train + valid targets + test targets partition the log
    held = sum(len(t) for t in split.valid.targets) + sum(len(t) for t in split.test.targets)
    assert len(split.train) + held == len(log)


def test_leave_last_n_out(log: Interactions) -> None:
    split = LeaveLastOut(n_test=2).split(log)
    assert split.name == "leave-last-2-out"
    assert train_of(split) == {"a": ["a1", "a2", "a3"], "b": ["b1"], "c": ["c1", "c2"], "d": ["d1"]}
    assert eval_of(log, split.test) == {
        "a": (["a1", "a2", "a3"], ["a4", "a5"]),
        "b": (["b1"], ["b2", "b3"]),
    }
    split = LeaveLastOut(n_test=2, validation=True).split(log)
    assert train_of(split)["a"] == ["a1"]
    assert eval_of(log, split.valid)["a"] == (["a1"], ["a2", "a3"])  # type: ignore[arg-type]
    assert eval_of(log, split.test)["a"] == (["a1", "a2", "a3"], ["a4", "a5"])
    assert set(eval_of(log, split.test)) == {"a"}


def test_leave_last_out_order_ties_follow_arrival() -> None:
    frame = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["x", "y", "z"], "timestamp": [5, 5, 5]})
    split = LeaveLastOut().split(Interactions.from_frame(frame))
    assert names(split.train, split.test.targets[0]) == ["z"]


def test_leave_last_out_rejects_bad_n_test() -> None:
    with pytest.raises(ConfigError):
        LeaveLastOut(n_test=0)


@pytest.fixture
def timed() -> Interactions:
    rows = [
        ("u", "x", 1),
        ("u", "y", 2),
        ("u", "z", 6),
        ("u", "z", 7),
        ("u", "x", 8),
        ("u", "w", 9),
        ("v", "x", 3),
        ("v", "y", 4),  # nothing after the cutoff: not evaluated
        ("cold", "y", 7),
        ("cold", "w", 8),  # nothing before the cutoff
        ("r", "x", 2),
        ("r", "x", 6),  # only a repeat after the cutoff
    ]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def test_temporal_split(timed: Interactions) -> None:
    split = TemporalSplit(cutoff=5).split(timed)
    assert split.name == "temporal" and split.valid is None
    assert train_of(split) == {"u": ["x", "y"], "v": ["x", "y"], "r": ["x"]}
    assert np.all(split.train.timestamp <= 5)
    # distinct targets in order of first interaction; repeats of history items kept
    assert eval_of(timed, split.test) == {
        "u": (["x", "y"], ["z", "x", "w"]),
        "r": (["x"], ["x"]),
    }
    assert timed.users.externals(split.cold_users) == ["cold"]


def test_temporal_split_options(timed: Interactions) -> None:
    kept = TemporalSplit(cutoff=5, keep_cold=True).split(timed)
    assert eval_of(timed, kept.test)["cold"] == ([], ["y", "w"])
    fresh = TemporalSplit(cutoff=5, drop_seen_targets=True).split(timed)
    assert eval_of(timed, fresh.test) == {"u": (["x", "y"], ["z", "w"])}  # r had only a repeat
    by_quantile = TemporalSplit(quantile=0.5)
    assert by_quantile.cutoff_for(timed) == pytest.approx(np.quantile(timed.timestamp, 0.5))
    assert len(by_quantile.split(timed).train) == int(np.sum(timed.timestamp <= 6))


def test_temporal_split_checks(timed: Interactions) -> None:
    with pytest.raises(ConfigError):
        TemporalSplit()
    with pytest.raises(ConfigError):
        TemporalSplit(cutoff=1.0, quantile=0.5)
    with pytest.raises(ConfigError):
        TemporalSplit(quantile=1.5)
    frame = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["x", "y"]})
    with pytest.raises(ConfigError, match="timestamps"):
        TemporalSplit(quantile=0.5).split(Interactions.from_frame(frame, has_time=False))
