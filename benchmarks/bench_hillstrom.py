"""Promotion choice as a 3-arm contextual bandit on the Hillstrom e-mail experiment.

Arms: 0 = Mens E-Mail, 1 = Womens E-Mail, 2 = No E-Mail, assigned uniformly at random
(propensity 1/3); reward = visit within two weeks. Customers are split in half (fixed seed):
policies learn on one half, and their visit rate is estimated on the other half by IPS, SNIPS,
DM and DR (q̂: per-arm logistic regression, 3-fold cross-fitted on the held-out half) with
percentile bootstrap CIs over held-out customers. Baselines on the held-out half: every single
arm (its on-policy visit rate, which is exact under randomisation) and uniform random (the
half's mean visit). The gain over the best single arm gets a paired bootstrap CI (same
resampled customers for both policies), which is much tighter than comparing two CIs.

Features: recency, log1p(history), mens, womens, newbie, zip_code and channel one-hot,
standardised on the training half.

    .venv/bin/python -m benchmarks.bench_hillstrom
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import SHARED_DATA, write_results
from shelfwise.policies import (
    BanditLog,
    LogisticRewardModel,
    cross_fit,
    evaluate_policy,
    make_estimator,
    make_policy,
)
from shelfwise.policies.base import greedy_probabilities
from shelfwise.policies.ope import bootstrap_interval, make_terms

ARMS = ("Mens E-Mail", "Womens E-Mail", "No E-Mail")
SEED = 0
N_BOOT = 2000
ESTIMATORS = ("ips", "snips", "dm", "dr")


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    data = pd.read_csv(SHARED_DATA / "hillstrom" / "hillstrom.csv")
    feats = pd.DataFrame({
        "recency": data["recency"].astype(float),
        "log_history": np.log1p(data["history"].astype(float)),
        "mens": data["mens"].astype(float),
        "womens": data["womens"].astype(float),
        "newbie": data["newbie"].astype(float),
    })
    dummies = pd.get_dummies(data[["zip_code", "channel"]], drop_first=True, dtype=float)
    x = pd.concat([feats, dummies], axis=1)
    actions = data["segment"].map({a: i for i, a in enumerate(ARMS)}).to_numpy(np.int64)
    return x.to_numpy(np.float64), actions, data["visit"].to_numpy(np.float64), list(x.columns)


def hindsight_ceiling(x: np.ndarray, a: np.ndarray, r: np.ndarray, names: list[str],
                      cells: tuple[str, ...]) -> float:
    """Visit rate of the per-cell best arm chosen *on these very customers* (an optimistic
    ceiling, not a policy): how much any policy over these cells could gain at most."""
    cols = [names.index(c) for c in cells]
    keys = [tuple(row) for row in x[:, cols]]
    total = 0.0
    for key in set(keys):
        rows = np.fromiter((k == key for k in keys), dtype=bool, count=len(keys))
        rates = [r[rows & (a == arm)].mean() if (rows & (a == arm)).any() else 0.0
                 for arm in range(len(ARMS))]
        total += max(rates) * rows.sum()
    return float(total / len(keys))


def main() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    start = time.perf_counter()
    x, a, r, names = load()
    n = len(a)
    perm = np.random.default_rng(SEED).permutation(n)
    train, test = perm[: n // 2], perm[n // 2:]
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-12
    z = (x - mu) / sd
    k = len(ARMS)

    # --- learn policies on the training half ------------------------------------------------
    reward_model = LogisticRewardModel(n_actions=k, C=1.0, interactions=True)
    reward_model.fit(z[train], a[train], r[train])
    q_test = reward_model.predict(z[test])
    policies: dict[str, np.ndarray] = {
        "greedy per-arm logistic": greedy_probabilities(q_test, np.ones_like(q_test, bool)),
    }
    learned: dict[str, Any] = {
        "linucb (alpha=0.1, offline fit)": make_policy("linucb", n_actions=k, alpha=0.1, l2=1.0),
        "linear thompson (offline fit)": make_policy("thompson", n_actions=k, noise=0.5,
                                                     n_draws=1000, seed=SEED),
        "egreedy linear (eps=0.1)": make_policy("egreedy", n_actions=k, epsilon=0.1),
    }
    for name, pol in learned.items():
        pol.fit(z[train], a[train], r[train])
        policies[name] = pol.action_probabilities(z[test], rng=np.random.default_rng(SEED))
    train_rates = [float(r[train][a[train] == arm].mean()) for arm in range(k)]
    best_arm = int(np.argmax(train_rates))
    for arm in range(k):
        policies[f"always {ARMS[arm]}"] = np.eye(k)[np.full(len(test), arm)]
    policies["uniform random"] = np.full((len(test), k), 1.0 / k)

    # --- evaluate on the held-out half --------------------------------------------------------
    log = BanditLog.from_arrays(a[test], r[test], np.full(len(test), 1.0 / k),
                                contexts=z[test], n_actions=k)
    q_hat = cross_fit(LogisticRewardModel(n_actions=k, C=1.0, interactions=True),
                      log.contexts, log.actions, log.rewards, n_folds=3, seed=SEED)
    rows = []
    for pname, dist in policies.items():
        table = evaluate_policy(log, dist, ESTIMATORS, q_hat=q_hat, n_bootstrap=N_BOOT,
                                seed=SEED)
        for rec in table.to_dict(orient="records"):
            rows.append({"policy": pname, **rec,
                         "share_mens": float(dist[:, 0].mean()),
                         "share_womens": float(dist[:, 1].mean()),
                         "share_none": float(dist[:, 2].mean())})
    held_out_rates = {ARMS[arm]: float(log.rewards[log.actions == arm].mean())
                      for arm in range(k)}
    ceilings = {"+".join(c): hindsight_ceiling(x[test], a[test], r[test], names, c)
                for c in (("mens", "womens"), ("mens", "womens", "newbie"))}

    # paired gain over the best single arm (chosen on the training half)
    gains = []
    best_dist = policies[f"always {ARMS[best_arm]}"]
    for pname in list(policies)[:4]:
        for est in ("ips", "dr"):
            e = make_estimator(est)
            num1, _, _ = e.terms(make_terms(log, policies[pname], q_hat))
            num0, _, _ = e.terms(make_terms(log, best_dist, q_hat))
            diff = num1 - num0
            lo, hi = bootstrap_interval(diff, np.ones_like(diff), N_BOOT, 0.05, SEED)
            gains.append({"policy": pname, "estimator": est, "gain": float(diff.mean()),
                          "lower": lo, "upper": hi, "excludes_zero": bool(lo > 0 or hi < 0)})

    results = pd.DataFrame(rows)
    show = results.assign(ci=lambda d: d.apply(
        lambda row: f"[{row.lower:.4f}, {row.upper:.4f}]", axis=1))
    print(show.pivot(index="policy", columns="estimator", values="value").round(4)
          .to_string())
    print(show[show.estimator.isin(["ips", "dr"])][["policy", "estimator", "value", "ci"]]
          .to_string(index=False))
    print("held-out on-policy visit rate per arm:", {k_: round(v, 4)
                                                     for k_, v in held_out_rates.items()})
    print(f"best arm on the training half: {ARMS[best_arm]} ({train_rates[best_arm]:.4f})")
    print(pd.DataFrame(gains).to_string(index=False))
    print("hindsight ceiling (best arm per cell, chosen on the held-out half itself):",
          {c: round(v, 4) for c, v in ceilings.items()})
    path = write_results("hillstrom", {
        "protocol": ("3 arms (Mens/Womens/No E-Mail, propensity 1/3), reward = visit; 50/50 "
                     f"customer split (seed {SEED}); policies trained on one half, valued on "
                     "the other by IPS/SNIPS/DM/DR (q̂ per-arm logistic, 3-fold cross-fit), "
                     f"{N_BOOT} bootstrap replicates, 95% percentile CIs; paired bootstrap CI "
                     "for the gain over the best single arm"),
        "features": names,
        "n_train": len(train), "n_test": len(test),
        "train_visit_rate_per_arm": dict(zip(ARMS, train_rates, strict=True)),
        "held_out_visit_rate_per_arm": held_out_rates,
        "held_out_uniform_random_value": float(log.rewards.mean()),
        "best_single_arm": ARMS[best_arm],
        "estimates": rows,
        "gain_over_best_arm": gains,
        "hindsight_ceiling_per_cell": ceilings,
        "seconds": round(time.perf_counter() - start, 1),
    })
    print(f"results: {path}")


if __name__ == "__main__":
    main()
