"""Monitoring of the HTTP app: Prometheus metrics at ``GET /metrics`` and the JSON request log.

Exported (prometheus-client), every name prefixed ``shelfwise_``:

- ``http_requests_total`` and ``http_request_duration_seconds`` (histogram), labelled
  ``method``, ``route`` (the path template, e.g. ``/v1/users/{user_id}/feed``; ``unmatched``
  for unknown paths) and ``status``: raw paths would give one series per user id.
- ``events_ingested_total{type}``: client events in accepted batches (``POST /v1/events``,
  ``Engine.track``), counted by an engine subscriber; redeliveries the store skips count too.
- ``impressions_written_total`` and ``impressions_queue_depth``: the write-behind impression
  log's throughput and what it holds now; ``impressions_refused_total``: logged rows the
  store refused on their own and that were set aside (should stay 0; the log says which).
- ``bundle_info{version}`` = 1 for the serving bundle, ``bundle_created_timestamp_seconds``,
  ``bundle_age_seconds``.
- ``cache_lookups_total{cache, result="hit"|"miss"}`` for ``user_history`` (the recommender's
  per-user LRU), ``generator_scores`` (its memo of score rows) and ``embeddings`` (the on-disk
  embedding cache of item texts). Hit rate: ``rate(..{result="hit"}[5m]) / rate(..[5m])``.
- ``process_*`` (memory, CPU, open files) in single-process mode.

Cost per request: a pure ASGI middleware (no ``BaseHTTPMiddleware`` task and stream
wrapping), two clock reads, label children looked up in a dict, one counter increment and one
histogram observation. Gauges and cache counters are not touched per request: they are copied
from the engine at each scrape and every ``[serve.monitoring] sync_seconds`` by a background
thread while the app runs.

**Several worker processes** use prometheus-client's multiprocess mode: each process keeps its
values in files under ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` on any worker reports the
sum over all (counters, histograms, queue depth; bundle age the max, its creation time the min,
over live workers). ``shelfwise serve --workers N`` points it at a fresh private directory
(:func:`share_between_workers`) unless it is set; a directory of your own must be empty when
the server starts. A worker stopped cleanly removes its gauges; one killed with ``kill -9``
leaves its last queue depth until the directory is emptied.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC
from time import perf_counter
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from shelfwise.apikeys import Scope
from shelfwise.data.schemas import Event
from shelfwise.serving.auth import requires
from shelfwise.serving.logs import ACCESS, REQUEST_ID, setup_json_logs
from shelfwise.text.cache import CachedEncoder

if TYPE_CHECKING:
    from shelfwise.config import MonitoringConfig
    from shelfwise.services.engine import Engine

log = logging.getLogger(__name__)

Scope_ = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope_, Receive, Send], Awaitable[None]]

#: Latency buckets (seconds): feeds answer in ~1-15 ms, a first search may take seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
"""An ``X-Request-ID`` we echo and log; anything else is replaced by a fresh id."""


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when set (prometheus-client reads it at import)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def share_between_workers() -> str:
    """Before starting several worker processes: ``PROMETHEUS_MULTIPROC_DIR`` as set, or a new
    private directory (removed when this process exits) that the workers inherit. Workers
    must import prometheus-client after this (uvicorn spawns fresh interpreters)."""
    path = multiprocess_dir()
    if path is None:
        path = tempfile.mkdtemp(prefix="shelfwise-metrics-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def cache_stats(engine: Engine) -> dict[str, tuple[int, int]]:
    """(hits, misses) of every cache the engine serves from (see the module doc)."""
    rec = engine.recommender
    out = {"user_history": (rec.history_stats.hits, rec.history_stats.misses),
           "generator_scores": (rec.score_stats.hits, rec.score_stats.misses)}
    try:  # the engine loads it at start anyway; one that cannot load is no metrics error
        encoder = rec.semantic.encoder if rec.semantic is not None else None
    except Exception:
        encoder = None
    if isinstance(encoder, CachedEncoder):
        out["embeddings"] = (encoder.hits, encoder.misses)
    return out


class Metrics:
    """The app's metrics over one engine: per-request observations, gauges and counters
    copied from the engine by :meth:`sync`, the Prometheus text of :meth:`render`."""

    def __init__(self, engine: Engine, sync_seconds: float = 5.0) -> None:
        self.engine, self.sync_seconds = engine, sync_seconds
        self.multiprocess = multiprocess_dir() is not None
        self.registry = reg = CollectorRegistry()
        labels = ["method", "route", "status"]
        self.requests = Counter("shelfwise_http_requests", "HTTP requests by route template "
                                "and status", labels, registry=reg)
        self.latency = Histogram("shelfwise_http_request_duration_seconds", "HTTP request "
                                 "latency by route template and status", labels,
                                 buckets=BUCKETS, registry=reg)
        self.events = Counter("shelfwise_events_ingested", "client events in accepted "
                              "batches, by type", ["type"], registry=reg)
        self.impressions = Counter("shelfwise_impressions_written", "impressions stored by "
                                   "the write-behind log", registry=reg)
        self.refused = Counter("shelfwise_impressions_refused", "logged rows the store "
                               "refused on their own, set aside", registry=reg)
        self.queue = Gauge("shelfwise_impressions_queue_depth", "impressions waiting in the "
                           "write-behind queue", registry=reg, multiprocess_mode="livesum")
        self.bundle = Gauge("shelfwise_bundle_info", "the serving model bundle (value 1)",
                            ["version"], registry=reg, multiprocess_mode="livemax")
        self.bundle_created = Gauge("shelfwise_bundle_created_timestamp_seconds", "when the "
                                    "serving bundle was trained (unix time)", registry=reg,
                                    multiprocess_mode="livemin")
        self.bundle_age = Gauge("shelfwise_bundle_age_seconds", "age of the serving bundle",
                                registry=reg, multiprocess_mode="livemax")
        self.cache = Counter("shelfwise_cache_lookups", "cache lookups by cache and result "
                             "(hit or miss)", ["cache", "result"], registry=reg)
        if not self.multiprocess:
            ProcessCollector(registry=reg)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._seen: dict[tuple[str, ...], int] = {}
        self._version: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        engine.subscribe(self.observe_events)

    # ---- per request / per event -------------------------------------------------------
    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency."""
        key = (method, route, status)
        child = self._children.get(key)
        if child is None:
            labels = (method, route, str(status))
            child = self._children[key] = (self.requests.labels(*labels),
                                           self.latency.labels(*labels))
        child[0].inc()
        child[1].observe(seconds)

    def observe_events(self, events: Sequence[Event]) -> None:
        """Engine subscriber: count stored client events by type."""
        for kind, n in collections.Counter(e.type.value for e in events).items():
            self.events.labels(kind).inc(n)

    # ---- copied from the engine ----------------------------------------------------------
    def _advance(self, counter: Any, key: tuple[str, ...], total: int) -> None:
        """Move ``counter`` by what the plain counter ``total`` grew since the last sync (all
        of it when it restarted, e.g. a new encoder object)."""
        last = self._seen.get(key, 0)
        step = total - last if total >= last else total
        if step:
            counter.inc(step)
        self._seen[key] = total

    def sync(self) -> None:
        """Copy the queue depth, bundle and cache counters from the engine."""
        with self._lock:
            eng = self.engine
            self.queue.set(eng.impressions.pending())
            self._advance(self.impressions, ("impressions",), eng.impressions.written_)
            self._advance(self.refused, ("refused",), eng.impressions.refused_)
            manifest = eng.recommender.bundle.manifest
            if manifest.version != self._version:
                if self._version is not None:
                    self.bundle.labels(self._version).set(0)
                self.bundle.labels(manifest.version).set(1)
                self._version = manifest.version
            created = manifest.created_at
            stamp = (created.replace(tzinfo=UTC) if created.tzinfo is None else created
                     ).timestamp()
            self.bundle_created.set(stamp)
            self.bundle_age.set(max(0.0, time.time() - stamp))
            for name, (hits, misses) in cache_stats(eng).items():
                self._advance(self.cache.labels(name, "hit"), (name, "hit"), hits)
                self._advance(self.cache.labels(name, "miss"), (name, "miss"), misses)

    def render(self) -> bytes:
        """The Prometheus text exposition, after a :meth:`sync` (in multiprocess mode: every
        process's values, merged)."""
        self.sync()
        if not self.multiprocess:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)

    # ---- background sync while the app runs ----------------------------------------------
    def start(self) -> None:
        """Sync every ``sync_seconds`` on a daemon thread (the app's lifespan calls this)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="shelfwise-metrics",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.sync_seconds):
            try:
                self.sync()
            except Exception:  # never let monitoring take the server down
                log.exception("syncing metrics failed")

    def stop(self) -> None:
        """Stop the thread; in multiprocess mode drop this process's live gauges."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class RequestMonitor:
    """Pure ASGI middleware: request id (``X-Request-ID`` in, or a new one; echoed on the
    response), latency and status into :class:`Metrics`, one JSON access line."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, log: bool) -> None:
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: Scope_, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                text = value.decode("latin-1")
                rid = text if _REQUEST_ID.fullmatch(text) else None
                break
        rid = rid or uuid.uuid4().hex
        header = (b"x-request-id", rid.encode("ascii"))
        status = 500  # unless a response starts: an exception reaches the server

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            seconds = perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            if self.metrics is not None:
                self.metrics.observe(method, route, status, seconds)
            if self.log and ACCESS.isEnabledFor(logging.INFO):  # makeRecord: no stack walk
                ACCESS.handle(ACCESS.makeRecord(
                    ACCESS.name, logging.INFO, __file__, 0, "request", (), None,
                    extra={"fields": {"method": method, "route": route, "status": status,
                                      "duration_ms": round(seconds * 1000, 3),
                                      "request_id": rid}}))


router = APIRouter(tags=["system"], dependencies=[requires(Scope.ADMIN)])


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency per route and status, events ingested,
    serving bundle and its age, cache lookups, the impression queue (admin scope)."""
    body = request.app.state.metrics.render()
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def install_monitoring(app: FastAPI, engine: Engine, config: MonitoringConfig) -> None:
    """Add what ``config`` asks for to ``app``: the request middleware, ``/metrics`` and its
    :class:`Metrics` (``app.state.metrics``, None when off), the JSON request log."""
    if config.metrics:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
    app.state.metrics = Metrics(engine, config.sync_seconds) if config.metrics else None
    if config.metrics:
        app.include_router(router)
    if config.request_log:
        setup_json_logs()
    if config.metrics or config.request_log:
        app.add_middleware(RequestMonitor, metrics=app.state.metrics, log=config.request_log)
