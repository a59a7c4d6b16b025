"""Offline splits of an interaction log into what a model trains on and what it must predict.

A split gives the training :class:`Interactions` (same id maps, so indices stay valid) and, per
evaluated user, the history to feed the model at evaluation time and the target items. Feeding the
history explicitly (rather than the user id) matches :class:`CandidateGenerator.score`, and lets
the test history contain interactions the model never trained on, as in the S3-Rec protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from shelfwise.data.interactions import History, Interactions
from shelfwise.exceptions import ConfigError


@dataclass(frozen=True)
class EvalSet:
    """Evaluated users, aligned: ``users[i]`` is fed ``histories[i]`` (oldest first) and should
    rank ``targets[i]`` (item indices, in order of interaction) high."""

    users: NDArray[np.int64]
    histories: list[History]
    targets: list[NDArray[np.int64]]

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass(frozen=True)
class Split:
    """Result of a splitter.

    ``name`` labels records (``"leave-last-out"``, ``"temporal"``); ``train`` is what models fit
    on; ``test`` is evaluated; ``valid`` (when the splitter makes one) is for tuning and early
    stopping and never overlaps ``test`` targets; ``cold_users`` had targets but no training
    history (temporal split only).
    """

    name: str
    train: Interactions
    test: EvalSet
    valid: EvalSet | None = None
    cold_users: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


@runtime_checkable
class Splitter(Protocol):
    """Makes a :class:`Split` from a whole log."""

    @property
    def name(self) -> str: ...

    def split(self, data: Interactions) -> Split: ...


def _bounds(data: Interactions) -> NDArray[np.int64]:
    """Row offsets of each user's block (``Interactions`` is sorted by user)."""
    return np.searchsorted(data.user_idx, np.arange(data.n_users + 1)).astype(np.int64)


@dataclass(frozen=True)
class LeaveLastOut:
    """Per user, the last ``n_test`` interactions are test targets (by time, then arrival).

    Without validation: ``train`` = everything but each user's test items; the test history is
    exactly that user's train sequence.

    With ``validation=True`` (the S3-Rec / SASRec protocol): the ``n_test`` items before the test
    items are validation targets, and ``train`` excludes both. The validation history is the
    user's train sequence; the test history is the train sequence *plus* the validation items
    (everything but the test items), so on test the model sees the most recent items it did not
    train on, as it would when serving. With ``n_test=1``: train = ``s[:-2]``, valid = ``s[:-2] ->
    s[-2]``, test = ``s[:-1] -> s[-1]``.

    Users too short to hold out all that and keep one item of history (fewer than
    ``n_test + 1`` interactions, or ``2 * n_test + 1`` with validation) are not evaluated; all
    their interactions stay in ``train``.
    """

    n_test: int = 1
    validation: bool = False

    def __post_init__(self) -> None:
        if self.n_test < 1:
            raise ConfigError(f"LeaveLastOut: n_test must be >= 1, got {self.n_test}")

    @property
    def name(self) -> str:
        return "leave-last-out" if self.n_test == 1 else f"leave-last-{self.n_test}-out"

    def split(self, data: Interactions) -> Split:
        n_t = self.n_test
        held = 2 * n_t if self.validation else n_t
        bounds = _bounds(data)
        lens = np.diff(bounds)
        evaluated = lens >= held + 1
        pos = np.arange(len(data), dtype=np.int64) - bounds[data.user_idx]
        keep = ~evaluated[data.user_idx] | (pos < (lens - held)[data.user_idx])
        users = np.flatnonzero(evaluated).astype(np.int64)
        seqs = data.histories()
        ends = lens[users]
        test = EvalSet(
            users,
            [seqs[u][: e - n_t] for u, e in zip(users, ends, strict=True)],
            [seqs[u][e - n_t :] for u, e in zip(users, ends, strict=True)],
        )
        valid = None
        if self.validation:
            valid = EvalSet(
                users.copy(),
                [seqs[u][: e - 2 * n_t] for u, e in zip(users, ends, strict=True)],
                [seqs[u][e - 2 * n_t : e - n_t] for u, e in zip(users, ends, strict=True)],
            )
        return Split(self.name, data.select(keep), test, valid)


@dataclass(frozen=True)
class TemporalSplit:
    """Global time cutoff: interactions at or before it train, those after it are test targets.

    Give exactly one of ``cutoff`` (a timestamp in the data's unit, seconds for parsed dates) or
    ``quantile`` (e.g. 0.8: the cutoff is the 80th percentile of all timestamps). A user's test
    history is their whole train sequence; targets are their distinct items after the cutoff, in
    order of first interaction. Users with targets but no train history are cold: listed in
    ``Split.cold_users`` and evaluated (with an empty history) only when ``keep_cold``.
    ``drop_seen_targets`` removes targets already in the user's history (repeat interactions),
    which a ranking that excludes seen items could never hit; users left without targets are not
    evaluated. Needs real timestamps (``data.has_time``).
    """

    cutoff: float | None = None
    quantile: float | None = None
    keep_cold: bool = False
    drop_seen_targets: bool = False

    def __post_init__(self) -> None:
        if (self.cutoff is None) == (self.quantile is None):
            raise ConfigError("TemporalSplit: give exactly one of cutoff= or quantile=")
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ConfigError(f"TemporalSplit: quantile must be in (0, 1), got {self.quantile}")

    @property
    def name(self) -> str:
        return "temporal"

    def cutoff_for(self, data: Interactions) -> float:
        """The timestamp this split cuts ``data`` at."""
        if self.cutoff is not None:
            return float(self.cutoff)
        if len(data) == 0:
            raise ConfigError("TemporalSplit: no interactions to take a quantile of")
        return float(np.quantile(data.timestamp, float(self.quantile or 0.0)))

    def split(self, data: Interactions) -> Split:
        if not data.has_time:
            raise ConfigError(
                "TemporalSplit needs real timestamps; this data only has an order "
                "(has_time=False): use LeaveLastOut"
            )
        cut = self.cutoff_for(data)
        is_test = data.timestamp > cut
        n_train = np.bincount(data.user_idx[~is_test], minlength=data.n_users)
        n_test = np.bincount(data.user_idx[is_test], minlength=data.n_users)
        cold = np.flatnonzero((n_train == 0) & (n_test > 0)).astype(np.int64)
        candidates = np.flatnonzero((n_test > 0) & ((n_train > 0) | self.keep_cold))
        seqs = data.histories()
        users: list[int] = []
        histories: list[History] = []
        targets: list[NDArray[np.int64]] = []
        for u in candidates:
            seq, k = seqs[u], int(n_train[u])  # sorted by time: the train part is a prefix
            hist, after = seq[:k], seq[k:]
            _, first = np.unique(after, return_index=True)
            tgt = after[np.sort(first)]
            if self.drop_seen_targets:
                tgt = tgt[~np.isin(tgt, hist)]
                if tgt.shape[0] == 0:
                    continue
            users.append(int(u))
            histories.append(hist)
            targets.append(tgt)
        test = EvalSet(np.asarray(users, dtype=np.int64), histories, targets)
        return Split(self.name, data.select(~is_test), test, None, cold)
