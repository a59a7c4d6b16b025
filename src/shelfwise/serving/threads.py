"""How many threads one server process lets each numeric library use (``[serve] threads``).

A server answers many requests at once from a thread pool; if every request's matrix product
also starts one BLAS / OpenMP / torch thread per core, 32 concurrent feeds start 32 × cores
threads that fight over the cores. ``benchmarks/bench_serve_threads.py`` on the 100k-item
shop (2 cores, one process): 32 concurrent clients got 16.9 feeds/s with a 5.8 s p99 at two
threads, 41.4 feeds/s with a 1.3 s p99 at one; one client alone pays for it (p50 24 ms
against 17 ms). Concurrency then comes from requests and worker processes.
"""

from __future__ import annotations

import os
import sys

_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(n: int) -> dict[str, str]:
    """Cap the numeric libraries of this process at ``n`` threads now (OpenBLAS/OpenMP via
    threadpoolctl, torch, faiss) and return the environment that caps them in child
    processes (uvicorn workers) before they load."""
    from threadpoolctl import threadpool_limits

    env = {k: str(n) for k in _ENV}
    os.environ.update(env)
    threadpool_limits(limits=n)
    import faiss

    faiss.omp_set_num_threads(n)
    torch = sys.modules.get("torch")  # not imported for it: a server may never need torch
    if torch is not None:           # (~180 MB); loaded later, it reads OMP_NUM_THREADS
        torch.set_num_threads(n)
    return env


M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena cap (malloc.h)."""


def limit_malloc_arenas(n: int) -> dict[str, str]:
    """Cap glibc's malloc at ``n`` arenas in this process from now on and return the
    environment that caps it in child processes (read when they start).

    glibc gives each thread that meets a locked arena a new one, up to 8 per core, and each
    keeps the memory its threads freed. A server's request threads then hold a private
    free list each: on the 100k bench shop, 32 concurrent feed clients grew one worker's
    anonymous memory by 125 MB with the default and by 35 MB with 2 arenas, at the same
    throughput. Other C libraries (musl, macOS) have no arenas: nothing to do there."""
    import ctypes
    import ctypes.util

    env = {"MALLOC_ARENA_MAX": str(n)}
    os.environ.update(env)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = getattr(libc, "mallopt", None)
            if mallopt is not None:
                mallopt(M_ARENA_MAX, n)
        except OSError:
            pass
    return env
