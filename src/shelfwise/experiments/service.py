"""The experiments a server runs: create, start, stop, and assign each request's unit.

Definitions live in the store, so every worker and the CLI act on the same experiments; a
worker re-reads the running ones at most every ``[serve.experiments] sync_seconds``. Two
running experiments may share a surface (and a unit) only if their variants change different
settings (an A/A test overlaps anything, two diversity tests on the feed do not), or if they
take disjoint parts of one layer (Tang et al., "Overlapping experiment infrastructure", KDD
2010): then no unit is in both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from shelfwise.exceptions import ConflictError, InvalidRequestError, NotFoundError
from shelfwise.experiments.model import Experiment, ExperimentIn, Overrides, Variant
from shelfwise.storage.base import Store

logger = logging.getLogger(__name__)


class ExperimentsConfig(BaseModel):
    """Online experiments (``[serve.experiments]``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="assign requests to running experiments")
    sync_seconds: float = Field(default=2.0, ge=0, le=3600, description="longest delay "
                                "before a worker sees an experiment started or stopped "
                                "elsewhere (0: read the store on every request)")


class Assignment(BaseModel):
    """One unit's variant of one experiment."""

    experiment: str
    variant: str


class ExperimentService:
    """Experiment definitions and state over the store, plus request assignment."""

    def __init__(self, store: Store, config: ExperimentsConfig | None = None, *,
                 check_bundle: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.config = config or ExperimentsConfig()
        self.check_bundle = check_bundle
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one flush writes at a time; others wait for it
        self._running: list[Experiment] = []
        self._read_at = -float("inf")
        self._seen: set[tuple[str, str]] = set()  # exposures this process has queued
        self._pending: list[tuple[str, str, str, datetime]] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    # ---- definitions ---------------------------------------------------------------------
    def create(self, spec: ExperimentIn) -> Experiment:
        if self.store.get_experiment(spec.id) is not None:
            raise ConflictError(f"experiment {spec.id!r} exists; pick another id (a stopped "
                                "experiment keeps its id and its data)")
        for v in spec.variants:
            if v.overrides.bundle is not None and self.check_bundle is not None:
                self.check_bundle(v.overrides.bundle)
        exp = Experiment(**spec.model_dump())
        self.store.put_experiment(exp.id, exp.to_doc())
        return exp

    def get(self, experiment_id: str) -> Experiment:
        doc = self.store.get_experiment(experiment_id)
        if doc is None:
            raise NotFoundError(f"experiment {experiment_id!r} does not exist "
                                "(GET /v1/experiments lists them)")
        return Experiment(**doc)

    def all(self) -> list[Experiment]:
        return [Experiment(**d) for d in self.store.list_experiments()]

    def start(self, experiment_id: str) -> Experiment:
        """Start assigning traffic; refused while a running experiment on a shared surface
        changes one of the same settings, and for a stopped one (its data would mix)."""
        exp = self.get(experiment_id)
        if exp.status == "running":
            return exp
        if exp.status == "stopped":
            raise ConflictError(f"experiment {exp.id!r} was stopped; create a new one "
                                "(restarting would mix two periods in one report)")
        for other in self.all():
            if other.status != "running":
                continue
            shared = set(exp.surfaces) & set(other.surfaces)
            clash = _changed(exp) & _changed(other)
            if shared and clash and exp.overlaps(other):
                raise ConflictError(
                    f"experiment {other.id!r} is running on {', '.join(sorted(shared))} and "
                    f"also changes {', '.join(sorted(clash))}; stop it first or target "
                    "other surfaces")
        exp = exp.model_copy(update={"status": "running", "started_at": datetime.now(UTC)})
        self.store.put_experiment(exp.id, exp.to_doc())
        self._read_at = -float("inf")
        return exp

    def stop(self, experiment_id: str) -> Experiment:
        exp = self.get(experiment_id)
        if exp.status == "draft":
            raise InvalidRequestError(f"experiment {exp.id!r} was never started")
        if exp.status == "running":
            exp = exp.model_copy(update={"status": "stopped", "stopped_at": datetime.now(UTC)})
            self.store.put_experiment(exp.id, exp.to_doc())
            self._read_at = -float("inf")
        return exp

    # ---- requests ------------------------------------------------------------------------
    def running(self) -> list[Experiment]:
        now = time.monotonic()
        if now - self._read_at >= self.config.sync_seconds:
            with self._lock:
                if now - self._read_at >= self.config.sync_seconds:
                    self._running = [e for e in self.all() if e.status == "running"]
                    self._read_at = now
        return self._running

    def assign(self, surface: str, unit: str | None) -> list[tuple[Experiment, Variant]]:
        """The running experiments on ``surface`` and the unit's variant of each (none for a
        request with neither user nor session: nothing would make it sticky)."""
        if unit is None or not self.config.enabled:
            return []
        return [(e, e.assign(unit)) for e in self.running()
                if surface in e.surfaces and e.enrolled(unit)]


    # ---- exposures -----------------------------------------------------------------------
    def expose(self, unit: str, chosen: list[tuple[Experiment, Variant]]) -> None:
        """Queue the unit's first exposure to each experiment (stored within a second by a
        writer thread, once per unit and experiment: the store keeps the first time)."""
        now = datetime.now(UTC)
        new = [(e.id, unit, v.name, now) for e, v in chosen if (e.id, unit) not in self._seen]
        if not new:
            return
        with self._lock:
            if len(self._seen) > 1_000_000:  # bounded memory; the store ignores repeats
                self._seen.clear()
            self._seen.update((e, u) for e, u, _, _ in new)
            self._pending.extend(new)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name="shelfwise-exposures")
                self._writer.start()
        self._wake.set()

    def flush(self) -> int:
        """Store the queued exposures now, including a batch the writer thread is storing
        (a report that reads the store after this sees them all); how many were new. A batch
        the store refuses goes back to the queue for the next flush."""
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            try:
                return self.store.add_exposures(batch)
            except Exception:
                with self._lock:
                    self._pending[:0] = batch
                raise

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the next flush retries what it can; never kill the thread
                logger.exception("storing experiment exposures failed")
            self._stop.wait(0.2)

    def forget_users(self, match: Callable[[str], bool]) -> int:
        """Drop what this process holds on a forgotten user's exposures (queued rows and the
        memory of having seen them); stored rows go with the store's cascade."""
        with self._lock:
            before = len(self._pending) + len(self._seen)
            self._pending = [r for r in self._pending if not match(r[1])]
            self._seen = {k for k in self._seen if not match(k[1])}
            return before - len(self._pending) - len(self._seen)

    def expire(self, before: datetime) -> int:
        """Nothing to expire in memory: queued exposures are at most seconds old."""
        return 0

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout=5)
        self.flush()


def _changed(exp: Experiment) -> set[str]:
    out: set[str] = set()
    for v in exp.variants:
        out |= v.overrides.keys()
    return out


def merge(overrides: list[Overrides]) -> Overrides:
    """One request's overrides from its variants (running experiments never change the same
    setting on a shared surface, so the order does not matter)."""
    data: dict[str, object] = {}
    for o in overrides:
        data.update({k: v for k, v in o.model_dump().items() if v is not None})
    return Overrides(**data)
