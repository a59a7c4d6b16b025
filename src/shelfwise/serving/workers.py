"""Several server processes on one port: ``shelfwise serve --workers N``.

uvicorn starts each worker by importing :func:`worker_app`, which rebuilds the app from the
config the parent resolved (passed as JSON in :data:`CONFIG_ENV`, so flags, files and
environment give every worker the same settings). Each worker loads the bundle itself; they
share the store (one SQLite file in WAL mode, or PostgreSQL). What a worker keeps in memory
must not go stale when another worker writes: the user-history cache is off with more than
one worker (a user's history is one indexed query), forgotten users are synced from the
store's tombstones, catalog writes from the items' write numbers, and everything else a
worker holds (bundle, bandit state) is per worker by design (see docs/design-notes.md). On
Linux each worker listens on its own socket of one ``SO_REUSEPORT`` group
(:func:`balanced_sockets`), so connections spread over the workers.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from shelfwise.config import ShelfwiseConfig
from shelfwise.exceptions import ConfigError

CONFIG_ENV = "SHELFWISE_WORKER_CONFIG"
logger = logging.getLogger("uvicorn.error")


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
    from shelfwise.serving.threads import limit_malloc_arenas, limit_threads

    raw = os.environ.get(CONFIG_ENV)
    config = ShelfwiseConfig.model_validate(json.loads(raw)) if raw else ShelfwiseConfig()
    limit_threads(config.serve.threads)
    limit_malloc_arenas(config.serve.malloc_arenas)
    return create_app(config=config)


def balanced_sockets(host: str, port: int, n: int) -> list[socket.socket] | None:
    """``n`` listening sockets on ``host:port``, one per worker, in one ``SO_REUSEPORT`` group;
    ``None`` where the platform does not balance such a group (anything but Linux).

    With uvicorn's one shared socket, the first idle worker accepts every pending connection,
    so a client with a few keep-alive connections (a storefront backend's pool, a proxy) can
    land on one worker. A group gives each connection to one socket by a hash of its
    addresses: an even spread in expectation, whatever the workers are doing."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # a group would quietly share the port with another server of this user: fail as a
    # plain bind does when anything listens there
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    out: list[socket.socket] = []
    try:
        for _ in range(n):
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


class BalancedWorkers(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, SIGHUP), with worker ``k`` always
    serving socket ``k`` of :func:`balanced_sockets`: a restarted worker takes over its
    predecessor's socket, whose queued connections wait for it instead of being reset."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets=sockets)
        self.processes_num = len(sockets)

    def _start(self, k: int) -> Process:
        process = Process(self.config, [self.sockets[k]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(k) for k in range(self.processes_num)]

    def keep_subprocess_alive(self) -> None:
        for k, process in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:  # would fail the same way again
                logger.error("worker %s failed to start; stopping the server", process.pid)
                self.should_exit.set()
                return
            logger.info("worker %s died; starting another", process.pid)
            self.processes[k] = self._start(k)

    def restart_all(self) -> None:
        for k, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(k)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck,
                                        self.should_exit):
                new.kill()
                new.join()
                logger.error("a new worker was not ready in time; keeping %s", old.pid)
                return
            old.terminate()
            old.join()
            self.processes[k] = new

    def handle_ttin(self) -> None:
        logger.warning("SIGTTIN ignored: the number of workers is fixed (serve.workers)")

    def handle_ttou(self) -> None:
        logger.warning("SIGTTOU ignored: the number of workers is fixed (serve.workers)")


def run_workers(host: str, port: int, workers: int) -> None:
    """Serve :func:`worker_app` in ``workers`` processes on one port (balanced on Linux)."""
    config = uvicorn.Config("shelfwise.serving.workers:worker_app", factory=True,
                            workers=workers, host=host, port=port, log_level="warning")
    try:
        sockets = balanced_sockets(host, port, workers)
    except OSError as exc:
        raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({exc}); pick a free "
                          "port or stop the server that holds it") from exc
    try:
        if sockets is None:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            BalancedWorkers(config, sockets).run()
    except KeyboardInterrupt:
        pass
    finally:
        for sock in sockets or ():
            sock.close()
