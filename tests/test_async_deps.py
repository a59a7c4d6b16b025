"""The API's light dependencies run on the event loop: FastAPI runs a plain ``def``
dependency in its thread pool, one hand-off per dependency and request."""

from __future__ import annotations

import inspect

from shelfwise.dashboard.router import DashboardAccess
from shelfwise.serving.auth import Require
from shelfwise.serving.deps import get_engine, get_language, get_settings


def test_the_api_dependencies_run_without_a_thread_pool_trip() -> None:
    for dep in (get_engine, get_language, get_settings, Require.__call__,
                DashboardAccess.__call__):
        assert inspect.iscoroutinefunction(dep), dep
