"""Operating characteristics of the experiment statistics, by simulation at the stats level.

Simulated experiments are vectorised binomial (or revenue) draws fed to the same functions the
report uses (``shelfwise.experiments.stats``), one call per simulated experiment or look; no
HTTP (``bench_experiments.py`` runs the HTTP loop and calls ``simulate``). Design: control CTR
5%, minimum detectable effect +10% relative, α = 0.05, power 0.8, users per variant from
``sample_size``.

- ``power``: share of +10% experiments at that size where the z-test finds B better.
- ``aa_false_positive_rate``: share of A/A experiments where the fixed-horizon z-test has p < α.
- ``sequential_false_positive_rate``: A/A experiments looked at ``looks`` times (equal user
  increments); share where the mSPRT always-valid p-value ever drops below α.
- ``naive_peeking_false_positive_rate``: the same runs, stopping at the first look where the
  fixed-horizon z-test has p < α.
- ``sequential_power``: mSPRT rejection rate on the +10% runs by the fixed-horizon size.
- ``srm_detected`` / ``srm_false_alarm_rate``: 10,000 users split 55/45 (resp. 50/50).
- ``welch_aa_false_positive_rate``: Welch test on zero-inflated log-normal revenue per user.

    .venv/bin/python -m benchmarks.experiment_stats_sim [n_runs] [seed]
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from shelfwise.experiments.stats import (
    mean_test,
    msprt_proportions,
    sample_size,
    srm_test,
    two_proportion_test,
)

BASELINE = 0.05
MDE = 0.10
ALPHA = 0.05


def _fixed_horizon(rng: np.random.Generator, n: int, runs: int, lift: float) -> float:
    """Share of runs where the z-test calls B better (lift > 0) or finds any difference (A/A)."""
    sa = rng.binomial(n, BASELINE, size=runs)
    sb = rng.binomial(n, BASELINE * (1 + lift), size=runs)
    hits = 0
    for a, b in zip(sa.tolist(), sb.tolist(), strict=True):
        res = two_proportion_test(a, n, b, n, ALPHA)
        hits += res.significant and (lift == 0 or res.difference > 0)
    return hits / runs


def _peeking(rng: np.random.Generator, n: int, runs: int, looks: int,
             lift: float) -> tuple[float, float]:
    """(mSPRT, naive repeated z-test) rejection rates over ``looks`` equally spaced looks."""
    step = max(1, n // looks)
    ns = step * np.arange(1, looks + 1)
    sa = rng.binomial(step, BASELINE, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(step, BASELINE * (1 + lift), size=(runs, looks)).cumsum(axis=1)
    seq = naive = 0
    for a, b in zip(sa, sb, strict=True):
        seq += msprt_proportions(a, ns, b, ns, alpha=ALPHA, baseline_rate=BASELINE,
                                 mde_relative=MDE).significant
        naive += any(two_proportion_test(x, m, y, m, ALPHA).significant
                     for x, y, m in zip(a.tolist(), b.tolist(), ns.tolist(), strict=True))
    return seq / runs, naive / runs


def _srm(rng: np.random.Generator, runs: int, share_a: float, users: int = 10_000) -> float:
    counts_a = rng.binomial(users, share_a, size=runs)
    return float(np.mean([srm_test([a, users - a]).flagged for a in counts_a.tolist()]))


def _welch_aa(rng: np.random.Generator, runs: int, n: int = 2000) -> float:
    """Revenue per user: 3% buyers, log-normal basket (heavy right tail)."""
    def revenue(size: tuple[int, int]) -> np.ndarray:
        buy = rng.random(size) < 0.03
        return np.where(buy, rng.lognormal(3.5, 1.0, size), 0.0)

    ya, yb = revenue((runs, n)), revenue((runs, n))
    return float(np.mean([mean_test(a, b, ALPHA).significant for a, b in zip(ya, yb,
                                                                            strict=True)]))


def simulate(n_runs: int = 1000, seed: int = 0, looks: int = 50) -> dict[str, Any]:
    """All figures from one seed; sequential figures use ``max(n_runs // 2, 1)`` runs."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    n = sample_size(BASELINE, MDE, ALPHA, 0.8).n_a
    seq_runs = max(n_runs // 2, 1)
    power = _fixed_horizon(rng, n, n_runs, MDE)
    aa = _fixed_horizon(rng, n, n_runs, 0.0)
    seq_fp, naive_fp = _peeking(rng, n, seq_runs, looks, 0.0)
    seq_power, _ = _peeking(rng, n, seq_runs, looks, MDE)
    return {
        "power": power,
        "aa_false_positive_rate": aa,
        "sequential_false_positive_rate": seq_fp,
        "naive_peeking_false_positive_rate": naive_fp,
        "sequential_power": seq_power,
        "srm_detected": _srm(rng, n_runs, 0.55),
        "srm_false_alarm_rate": _srm(rng, n_runs, 0.50),
        "welch_aa_false_positive_rate": _welch_aa(rng, n_runs),
        "settings": {"baseline_rate": BASELINE, "mde_relative": MDE, "alpha": ALPHA,
                     "target_power": 0.8, "n_per_variant": n, "n_runs": n_runs,
                     "sequential_runs": seq_runs, "looks": looks, "seed": seed,
                     "srm_users": 10_000, "welch_users_per_variant": 2000},
        "seconds": round(time.perf_counter() - start, 2),
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(json.dumps(simulate(*args), indent=2))
