"""Several server processes on one port: ``shelfwise serve --workers N``.

uvicorn starts each worker by importing :func:`worker_app`, which rebuilds the app from the
config the parent resolved (passed as JSON in :data:`CONFIG_ENV`, so flags, files and
environment give every worker the same settings). Each worker loads the bundle itself; they
share the store (one SQLite file in WAL mode, or PostgreSQL). What a worker keeps in memory
must not go stale when another worker writes: the user-history cache is off with more than
one worker (a user's history is one indexed query), forgotten users are synced from the
store's tombstones, and everything else a worker holds (bundle, catalog as of start, bandit
state) is per worker by design (see docs/design-notes.md).
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

from shelfwise.config import ShelfwiseConfig

CONFIG_ENV = "SHELFWISE_WORKER_CONFIG"


def worker_env(config: ShelfwiseConfig) -> dict[str, str]:
    """The environment a worker needs to rebuild ``config`` (secrets included: workers are
    child processes of the server, never written to disk)."""
    data = config.model_dump(mode="json")
    privacy = getattr(config, "privacy", None)
    secret = getattr(privacy, "secret", None)
    if secret is not None and hasattr(secret, "get_secret_value"):
        data["privacy"]["secret"] = secret.get_secret_value()
    return {CONFIG_ENV: json.dumps(data)}


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn ``factory=True`` target)."""
    from shelfwise.serving.app import create_app
    from shelfwise.serving.threads import limit_threads

    raw = os.environ.get(CONFIG_ENV)
    config = ShelfwiseConfig.model_validate(json.loads(raw)) if raw else ShelfwiseConfig()
    limit_threads(config.serve.threads)
    return create_app(config=config)
