"""Several server processes on one port: ``shelfwise serve --workers N``.

uvicorn starts each worker by importing :func:`worker_app`, which rebuilds the app from the
config the parent resolved (passed as JSON in :data:`CONFIG_ENV`, so flags, files and
environment give every worker the same settings). Each worker loads the bundle itself; they
share the store (one SQLite file in WAL mode, or PostgreSQL). What a worker keeps in memory
must not go stale when another worker writes: the user-history cache is off with more than
one worker (a user's history is one indexed query), forgotten users are synced from the
store's tombstones, catalog writes from the items' write numbers, and everything else a
worker holds (bundle, bandit state) is per worker by design (see docs/design-notes.md). On
Linux each worker listens on its own socket of the port's ``SO_REUSEPORT`` group
(:class:`BalancedWorkers`), so connections spread over the workers that are up.
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


def reuse_port_balances() -> bool:
    """Whether the kernel spreads connections over an ``SO_REUSEPORT`` group (Linux)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def claim_port(host: str, port: int) -> int:
    """Fail as a plain bind does when anything listens on ``host:port`` (a reuse-port group
    would otherwise quietly share the port with another server of this user); the port
    (the one the system picked for 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        return int(probe.getsockname()[1])


def member_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` in its ``SO_REUSEPORT`` group, not yet listening: the
    kernel hands connections only to listening members, so a worker joins the spread when
    uvicorn listens (after the app started and warmed up) and leaves it when it exits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class MemberProcess(Process):
    """A uvicorn worker that binds its own :func:`member_socket` in the worker process."""

    def __init__(self, config: uvicorn.Config, host: str, port: int) -> None:
        self.host, self.port = host, port
        super().__init__(config, [])

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # in the worker
        super().target([member_socket(self.host, self.port)])


class BalancedWorkers(Multiprocess):
    """uvicorn's supervisor (health checks, restarts, SIGHUP, SIGTTIN/SIGTTOU) over workers
    that each listen on their own socket of the port's ``SO_REUSEPORT`` group.

    With uvicorn's one shared socket, the first idle worker accepts every pending connection,
    so a client with a few keep-alive connections (a storefront backend's pool, a proxy) can
    land on one worker. A group gives each connection to one listening member by a hash of
    its addresses: an even spread in expectation, and only over workers that are up."""

    def __init__(self, config: uvicorn.Config, host: str, port: int) -> None:
        super().__init__(config, sockets=[])
        self.host, self.port = host, port

    def _start(self) -> Process:
        process = MemberProcess(self.config, self.host, self.port)
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start() for _ in range(self.processes_num)]

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
            logger.warning("worker %s died or stopped answering; starting another", process.pid)
            self.processes[k] = self._start()

    def restart_all(self) -> None:
        for k, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start()
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
        logger.info("Received SIGTTIN, increasing the number of processes.")
        self.processes_num += 1
        self.processes.append(self._start())


def run_workers(host: str, port: int, workers: int, *, keep_alive: int) -> None:
    """Serve :func:`worker_app` in ``workers`` processes on one port (balanced on Linux),
    closing connections idle for ``keep_alive`` seconds."""
    try:
        port = claim_port(host, port)
    except OSError as exc:
        raise ConfigError(f"serve.port: cannot listen on {host}:{port} ({exc}); pick a free "
                          "port or stop the server that holds it") from exc
    config = uvicorn.Config("shelfwise.serving.workers:worker_app", factory=True,
                            workers=workers, host=host, port=port, log_level="warning",
                            timeout_keep_alive=keep_alive)
    try:
        if reuse_port_balances():
            BalancedWorkers(config, host, port).run()
        else:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
    except KeyboardInterrupt:
        pass
