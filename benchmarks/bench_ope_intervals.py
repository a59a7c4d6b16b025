"""Off-policy estimates with calibrated intervals (issue 16, part 4): bias, RMSE and 95%
interval coverage of IPS, SNIPS, DM, DR, Switch-DR and DR-os over replicated logs with a known
policy value, with obp 0.4.1 on the very same arrays.

Datasets (every replication is a fresh log from the same generator):

* **shop** — :class:`shelfwise.policies.synthetic.SyntheticShop` (defaults): 2,000 user profiles,
  10 arms, 3 slots, CTR ≈ 8%, 5,000 impressions per log, logged by a softmax over a noisy
  reward model with a 5% uniform floor. Evaluation policies: ``sharper``, ``true-softmax``,
  ``uniform``, ``eps-greedy`` (increasing distance; ``logging`` itself is reported as an
  on-policy check but left out of the pooled figures). True values are exact sums.
* **obp** — obp's ``SyntheticBanditDataset(n_actions=10, dim_context=5,
  logistic_reward_function, linear_behavior_policy)``, 10,000 rounds per log (its example's
  setting), generated in obp's venv; π_e = ε-greedy on the true expected reward for
  ε ∈ {1 (uniform), 0.3, 0.1}. Its contexts are continuous, so the truth is a Monte Carlo
  population value over fresh contexts (its standard error is reported; it is far below RMSE).

Ours: q̂ = ``default_reward_model`` (the CLI's default: logistic regression for these 0/1
rewards), 3-fold cross-fitted; Switch-DR's τ and DR-os's λ by SLOPE (both also at each of
obp's fixed settings, ``rmse_by_setting``); every estimator with both the
analytic (CLT / delta-method) interval and the row bootstrap (``N_BOOT`` resamples, q̂
fixed). obp: its own pipeline on the same arrays —
``RegressionModel(LogisticRegression(C=100, max_iter=10000))`` (its example's model) 3-fold
cross-fitted, per slot on the shop data; obp 0.4.1 has no hyperparameter selection, so its
Switch-DR / DR-os run at τ, λ ∈ ``OBP_GRID`` and ``obp_rmse`` is its best setting in hindsight.
For the first ``N_AGREE`` logs our estimators are also run on obp's q̂ (same τ/λ) and must
reproduce obp's numbers (agreement of the estimator code).

Headline (``ope`` in the JSON, read by other scripts): the shop generator, pooled over its four
off-policy evaluation policies — ``coverage`` of each estimator's default interval, ``rmse``,
``bias`` (mean over policies of |bias|), ``obp_rmse``. The Open Bandit sample is run through
``bench_open_bandit.run_campaign``: each estimator's relative error next to the noise floor of
the truth and the naive "logging policy's CTR" estimate.

    .venv/bin/python -m benchmarks.bench_ope_intervals [--replications 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks import bench_open_bandit as obd
from benchmarks.common import write_results
from shelfwise.policies import BanditLog, cross_fit, make_estimator
from shelfwise.policies.ope import (
    DEFAULT_ESTIMATORS,
    INTERVALS,
    RECOMMENDED_ESTIMATOR,
    DRos,
    IntervalMethod,
    SwitchDR,
    default_reward_model,
    make_terms,
)
from shelfwise.policies.synthetic import POLICY_NAMES, SyntheticShop

ESTIMATORS = DEFAULT_ESTIMATORS
N_SHOP = 5_000
N_OBP = 10_000
OBP_EPSILONS = (1.0, 0.3, 0.1)
OBP_GRID = (1.0, 10.0, 100.0, 1000.0)
N_TRUTH = 2_000_000  # fresh contexts for obp's population value
N_BOOT = 400
N_AGREE = 3
ALPHA = 0.05
TARGET = (0.90, 0.98)
RUN_DIR = obd.WORK / "ope-intervals"

PEER_SCRIPT = r'''
import json, sys, time
from pathlib import Path
import numpy as np
from sklearn.linear_model import LogisticRegression
from obp.dataset import SyntheticBanditDataset, logistic_reward_function, linear_behavior_policy
from obp.ope import (InverseProbabilityWeighting as IPW,
    SelfNormalizedInverseProbabilityWeighting as SNIPW, DirectMethod as DM, DoublyRobust as DR,
    SwitchDoublyRobust, DoublyRobustWithShrinkage, RegressionModel)
work = Path(sys.argv[1])
reps, n_obp, n_agree, seed, n_truth = map(int, sys.argv[2:7])
epsilons = [float(v) for v in sys.argv[7].split(",")]
grid = [float(v) for v in sys.argv[8].split(",")]
EST = {"ips": IPW(), "snips": SNIPW(), "dm": DM(), "dr": DR()}
for v in grid:
    EST[f"switch-dr@{v:g}"] = SwitchDoublyRobust(tau=v)
    EST[f"dr-os@{v:g}"] = DoublyRobustWithShrinkage(lambda_=v)

def estimate(fb, dists, q3):
    out = {}
    for pol, dist3 in dists.items():
        kw = dict(reward=fb["reward"], action=fb["action"], pscore=fb["pscore"],
                  position=fb["position"], action_dist=dist3)
        out[pol] = {name: float(est.estimate_policy_value(
            **kw, **({} if name in ("ips", "snips") else
                     {"estimated_rewards_by_reg_model": q3}))) for name, est in EST.items()}
    return out

def reg_model(k, len_list):
    return RegressionModel(n_actions=k, len_list=len_list, base_model=LogisticRegression(
        C=100, max_iter=10000, random_state=seed))

t0 = time.perf_counter()
res = {"shop": [], "obp": []}
agree = {}
# (a) shelfwise's generator: the arrays written by the main process
z = np.load(work / "shop.npz")
names = [str(v) for v in z["policy_names"]]
k, slots = z["tables"].shape[2], int(z["n_positions"])
for r in range(z["users"].shape[0]):
    users = z["users"][r]
    fb = {"context": z["contexts"][users], "action": z["actions"][r],
          "reward": z["rewards"][r], "pscore": z["pscore"][r], "position": z["positions"][r]}
    q3 = reg_model(k, slots).fit_predict(context=fb["context"], action=fb["action"],
        reward=fb["reward"], pscore=fb["pscore"], position=fb["position"], n_folds=3,
        random_state=seed)
    dists = {p: np.repeat(z["tables"][i][users][:, :, None], slots, axis=2)
             for i, p in enumerate(names)}
    res["shop"].append(estimate(fb, dists, q3))
    if r < n_agree:
        agree[f"shop_q_{r}"] = q3
# (b) obp's generator, with the arrays handed back
ds = SyntheticBanditDataset(n_actions=10, dim_context=5, reward_function=logistic_reward_function,
                            behavior_policy_function=linear_behavior_policy, random_state=seed)
gen = np.random.default_rng(seed + 1)
sums = np.zeros(len(epsilons))
sq = np.zeros(len(epsilons))
for start in range(0, n_truth, 250_000):
    er = ds.calc_expected_reward(gen.normal(size=(min(250_000, n_truth - start), 5)))
    for j, eps in enumerate(epsilons):
        v = (1 - eps) * er.max(axis=1) + eps * er.mean(axis=1)
        sums[j] += v.sum()
        sq[j] += (v ** 2).sum()
mean = sums / n_truth
res["obp_truth"] = {f"{e:g}": {"value": float(m), "se": float(np.sqrt((s / n_truth - m ** 2)
                    / n_truth))} for e, m, s in zip(epsilons, mean, sq)}
arrays = {key: [] for key in ("context", "action", "reward", "pscore", "best")}
for r in range(reps):
    fb = ds.obtain_batch_bandit_feedback(n_rounds=n_obp)
    best = fb["expected_reward"].argmax(axis=1)
    onehot = np.eye(ds.n_actions)[best]
    dists = {f"{e:g}": ((1 - e) * onehot + e / ds.n_actions)[:, :, None] for e in epsilons}
    q3 = reg_model(ds.n_actions, 1).fit_predict(context=fb["context"], action=fb["action"],
        reward=fb["reward"], n_folds=3, random_state=seed)
    res["obp"].append(estimate(fb, dists, q3))
    for key in arrays:
        arrays[key].append(best if key == "best" else fb[key])
    if r < n_agree:
        agree[f"obp_q_{r}"] = q3
np.savez(work / "obp_synthetic.npz", **{key: np.stack(v) for key, v in arrays.items()})
np.savez(work / "obp_q.npz", **agree)
res["seconds"] = round(time.perf_counter() - t0, 1)
(work / "obp_values.json").write_text(json.dumps(res))
'''


def _estimator(name: str, obp_setting: float | None = None) -> Any:
    """Ours; with ``obp_setting`` Switch-DR / DR-os at obp's fixed τ / λ instead of SLOPE."""
    if obp_setting is not None and name == "switch-dr":
        return SwitchDR(tau=obp_setting)
    if obp_setting is not None and name == "dr-os":
        return DRos(shrinkage=obp_setting)
    return make_estimator(name)


def methods(name: str) -> tuple[IntervalMethod, ...]:
    """Interval methods that apply to an estimator (the hull needs q̂)."""
    return INTERVALS if make_estimator(name).needs_reward_model else ("analytic", "bootstrap")


def score_log(log: BanditLog, dists: dict[str, np.ndarray], q: np.ndarray,
              seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Every estimator on one log for every π_e: value, each interval, chosen τ/λ (through
    the estimators' own ``estimate_terms``, as the CLI calls them)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for pol, pi in dists.items():
        terms = make_terms(log, pi, q)
        row: dict[str, dict[str, Any]] = {}
        for name in ESTIMATORS:
            est = make_estimator(name)
            for method in methods(name):
                e = est.estimate_terms(terms, n_bootstrap=N_BOOT, alpha=ALPHA, seed=seed,
                                       interval=method)
                rec = row.setdefault(name, {"value": e.value, "params": e.params})
                rec[method] = (e.lower, e.upper)
            if name in ("switch-dr", "dr-os"):  # ours at obp's fixed settings too
                for g in OBP_GRID:
                    num, den, _ = _estimator(name, g).terms(terms)
                    row[name].setdefault("at", {})[f"{g:g}"] = float(num.sum() / den.sum())
        out[pol] = row
    return out


def agreement(log: BanditLog, dists: dict[str, np.ndarray], q3: np.ndarray,
              obp_values: dict[str, dict[str, float]]) -> float:
    """Largest relative difference between ours and obp's estimates on identical inputs."""
    worst = 0.0
    for pol, pi in dists.items():
        terms = make_terms(log, pi, q3)
        for name in ESTIMATORS:
            setting = 100.0 if name in ("switch-dr", "dr-os") else None
            num, den, _ = _estimator(name, setting).terms(terms)
            key = f"{name}@{setting:g}" if setting is not None else name
            theirs = obp_values[pol][key]
            worst = max(worst, abs(float(num.sum() / den.sum()) - theirs) / abs(theirs))
    return worst


def summarize(runs: list[dict[str, dict[str, dict[str, Any]]]], truth: dict[str, float],
              obp_runs: list[dict[str, dict[str, float]]] | None) -> dict[str, Any]:
    """Per policy and estimator: bias, RMSE, coverage and width of both intervals, obp's
    RMSE (best τ/λ setting for Switch-DR / DR-os) on the same logs."""
    out: dict[str, Any] = {}
    for pol, v_true in truth.items():
        per: dict[str, Any] = {"true_value": v_true}
        for name in ESTIMATORS:
            rows = [r[pol][name] for r in runs]
            err = np.array([row["value"] for row in rows]) - v_true
            rec: dict[str, Any] = {"bias": float(err.mean()), "rmse": float(np.sqrt(
                np.mean(err ** 2))), "relative_rmse": float(np.sqrt(np.mean(err ** 2)) / v_true)}
            for method in methods(name):
                lo = np.array([row[method][0] for row in rows])
                hi = np.array([row[method][1] for row in rows])
                rec[f"coverage_{method}"] = float(np.mean((lo <= v_true) & (v_true <= hi)))
                rec[f"width_{method}"] = float(np.mean(hi - lo))
            rec["coverage"] = rec[f"coverage_{make_estimator(name).default_interval}"]
            rec["interval"] = make_estimator(name).default_interval
            choice = [p for row in rows for p in row["params"].values()]
            if choice:
                vals, counts = np.unique(np.asarray(choice, dtype=float), return_counts=True)
                rec["slope_choices"] = {f"{v:g}": int(c) for v, c in zip(vals, counts,
                                                                          strict=True)}
            if obp_runs is not None:
                keys = ([f"{name}@{g:g}" for g in OBP_GRID] if name in ("switch-dr", "dr-os")
                        else [name])
                by = {key: float(np.sqrt(np.mean((np.array([o[pol][key] for o in obp_runs])
                                                  - v_true) ** 2))) for key in keys}
                rec["obp_rmse_by_setting"] = by
                rec["obp_rmse"] = min(by.values())
            per[name] = rec
        out[pol] = per
    return out


def pooled(runs: list[dict[str, dict[str, dict[str, Any]]]], truth: dict[str, float],
           obp_runs: list[dict[str, dict[str, float]]] | None,
           policies: list[str]) -> dict[str, dict[str, Any]]:
    """Headline per estimator over ``policies`` × replications: coverage of its default
    interval, RMSE, bias = mean over policies of |bias|, obp's RMSE (for Switch-DR / DR-os its
    single best τ/λ over the same pool); coverage and width of every interval method."""
    out: dict[str, dict[str, Any]] = {}
    for name in ESTIMATORS:
        default = make_estimator(name).default_interval
        err, biases = [], []
        cover: dict[str, list[bool]] = {m: [] for m in methods(name)}
        width: dict[str, list[float]] = {m: [] for m in methods(name)}
        for pol in policies:
            v = truth[pol]
            rows = [r[pol][name] for r in runs]
            e = np.array([row["value"] for row in rows]) - v
            err.append(e)
            biases.append(abs(e.mean()))
            for m in cover:
                cover[m] += [row[m][0] <= v <= row[m][1] for row in rows]
                width[m] += [row[m][1] - row[m][0] for row in rows]
        all_err = np.concatenate(err)
        rec: dict[str, Any] = {
            "coverage": float(np.mean(cover[default])),
            "rmse": float(np.sqrt(np.mean(all_err ** 2))),
            "bias": float(np.mean(biases)), "obp_rmse": None, "interval": default,
            "n_intervals": len(cover[default]),
            "coverage_by_interval": {m: float(np.mean(c)) for m, c in cover.items()},
            "mean_width_by_interval": {m: float(np.mean(w)) for m, w in width.items()}}
        if obp_runs is not None:
            keys = ([f"{name}@{g:g}" for g in OBP_GRID] if name in ("switch-dr", "dr-os")
                    else [name])
            theirs = {key: np.concatenate([np.array([o[pol][key] for o in obp_runs])
                                           - truth[pol] for pol in policies]) for key in keys}
            by = {key: float(np.sqrt(np.mean(e ** 2))) for key, e in theirs.items()}
            best = min(by, key=by.__getitem__)
            rec["obp_rmse"] = by[best]
            rec["obp_setting"] = best
            rec["obp_rmse_by_setting"] = by
            if name in ("switch-dr", "dr-os"):  # the same estimator at the same τ / λ
                ours_at = {f"{name}@{g:g}": float(np.sqrt(np.mean(np.concatenate([
                    np.array([r[pol][name]["at"][f"{g:g}"] for r in runs]) - truth[pol]
                    for pol in policies]) ** 2))) for g in OBP_GRID}
                rec["rmse_by_setting"] = ours_at
                rec["at_most_obp_at_every_setting"] = all(
                    ours_at[k] <= by[k] for k in ours_at)
            # paired over the same logs: is the RMSE gap larger than Monte Carlo noise?
            diff = all_err ** 2 - theirs[best] ** 2
            rec["mse_minus_obp_mse"] = {"mean": float(diff.mean()),
                                        "se": float(diff.std(ddof=1) / np.sqrt(len(diff)))}
        out[name] = rec
    return out


def recommend(table: dict[str, dict[str, Any]]) -> str | None:
    """The lowest-RMSE estimator whose coverage is inside the target band (None if none)."""
    ok = [e for e, r in table.items() if TARGET[0] <= r["coverage"] <= TARGET[1]]
    return min(ok, key=lambda e: table[e]["rmse"]) if ok else None


def _progress(what: str, r: int, total: int, t0: float) -> None:
    if (r + 1) % 25 == 0 or r + 1 == total:
        print(f"  {what}: {r + 1}/{total} logs ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)


def run_shop(shop: SyntheticShop, replications: int, seed: int,
             obp_runs: list[Any] | None) -> tuple[list[Any], dict[str, Any]]:
    runs, worst = [], 0.0
    qs = np.load(RUN_DIR / "obp_q.npz") if obp_runs is not None else None
    t0 = time.perf_counter()
    for r in range(replications):
        s = shop.sample(N_SHOP, np.random.default_rng([seed, r]))
        log = s.log
        q = cross_fit(default_reward_model(log), log.contexts, log.actions,
                      log.rewards, log.positions, n_folds=3, seed=r)
        runs.append(score_log(log, s.action_dists, q, seed + r))
        if qs is not None and obp_runs is not None and r < N_AGREE:
            worst = max(worst, agreement(log, s.action_dists, qs[f"shop_q_{r}"], obp_runs[r]))
        _progress("shop (ours)", r, replications, t0)
    return runs, {"identical_inputs_max_relative_difference": worst if qs is not None
                  else None, "seconds": round(time.perf_counter() - t0, 1)}


def write_shop_arrays(shop: SyntheticShop, replications: int, seed: int) -> None:
    """The shop logs (the same draws :func:`run_shop` makes) for obp's process."""
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("users", "actions", "positions",
                                                         "rewards", "pscore")}
    for r in range(replications):
        s = shop.sample(N_SHOP, np.random.default_rng([seed, r]))
        assert s.log.positions is not None
        for key, arr in (("users", s.users), ("actions", s.log.actions),
                         ("positions", s.log.positions), ("rewards", s.log.rewards),
                         ("pscore", s.log.propensities)):
            cols[key].append(arr)
    np.savez(RUN_DIR / "shop.npz", contexts=shop.contexts,
             tables=np.stack([shop.policies[p] for p in POLICY_NAMES]),
             policy_names=np.array(POLICY_NAMES), n_positions=shop.config.n_positions,
             **{k: np.stack(v) for k, v in cols.items()})


def obp_policy(eps: float) -> str:
    return "uniform" if eps == 1.0 else f"eps-greedy({eps:g})"


def run_obp_data(obp_runs: list[Any], seed: int) -> tuple[list[Any], dict[str, Any]]:
    """Ours on the logs obp generated (the arrays it handed back)."""
    z = np.load(RUN_DIR / "obp_synthetic.npz")
    qs = np.load(RUN_DIR / "obp_q.npz")
    k = 10
    runs, worst = [], 0.0
    t0 = time.perf_counter()
    for r in range(z["action"].shape[0]):
        log = BanditLog.from_arrays(z["action"][r], z["reward"][r], z["pscore"][r],
                                    contexts=z["context"][r], n_actions=k)
        onehot = np.eye(k)[z["best"][r]]
        dists = {obp_policy(e): (1 - e) * onehot + e / k for e in OBP_EPSILONS}
        q = cross_fit(default_reward_model(log), log.contexts, log.actions, log.rewards,
                      n_folds=3, seed=r)
        runs.append(score_log(log, dists, q, seed + r))
        if r < N_AGREE:
            theirs = {obp_policy(e): obp_runs[r][f"{e:g}"] for e in OBP_EPSILONS}
            worst = max(worst, agreement(log, dists, qs[f"obp_q_{r}"], theirs))
        _progress("obp synthetic (ours)", r, z["action"].shape[0], t0)
    return runs, {"identical_inputs_max_relative_difference": worst,
                  "seconds": round(time.perf_counter() - t0, 1)}


def run_open_bandit() -> list[dict[str, Any]]:
    """Each Open Bandit campaign through bench_open_bandit (same protocol, same code)."""
    out = []
    for campaign in obd.CAMPAIGNS:
        res = obd.run_campaign(campaign, obd.WORK)
        cmp = obd.versus_naive(res)
        cmp["ground_truth_bts_ctr"] = res["ground_truth_bts_ctr"]
        cmp["ground_truth_95ci"] = res["ground_truth_95ci"]
        cmp["full_log_default_interval"] = {
            r["estimator"]: {"value": r["value"], "lower": r["lower"], "upper": r["upper"],
                             "interval": r["interval"], "covers_truth": bool(r["covers_truth"])}
            for r in res["full_log_estimates_default_interval"]}
        out.append(cmp)
    return out


def run(replications: int, seed: int, *, peer: bool = True,
        open_bandit: bool = True) -> dict[str, Any]:
    """The whole benchmark; ``result["ope"]`` is the headline table (see module doc)."""
    if replications < 2:
        raise ValueError("need at least 2 replications")
    start = time.perf_counter()
    load_start = list(os.getloadavg())
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    shop = SyntheticShop()
    shop_truth = {p: shop.true_value(p) for p in POLICY_NAMES}
    write_shop_arrays(shop, replications, seed)
    peer_res: dict[str, Any] | None = None
    if peer:
        args = [str(RUN_DIR), str(replications), str(N_OBP), str(N_AGREE), str(seed),
                str(N_TRUTH), ",".join(f"{e:g}" for e in OBP_EPSILONS),
                ",".join(f"{g:g}" for g in OBP_GRID)]
        t0 = time.perf_counter()
        print("  obp 0.4.1 (its venv): both datasets ...", file=sys.stderr, flush=True)
        if obd.run_in_obp_venv(PEER_SCRIPT, "ope_intervals_peer.py", args, timeout=7200):
            peer_res = json.loads((RUN_DIR / "obp_values.json").read_text())
            print(f"  obp done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    shop_runs, shop_info = run_shop(shop, replications, seed,
                                    peer_res["shop"] if peer_res else None)
    off = [p for p in POLICY_NAMES if p != "logging"]
    details = pooled(shop_runs, shop_truth, peer_res["shop"] if peer_res else None, off)
    result: dict[str, Any] = {
        "ope": {e: {k: r[k] for k in ("coverage", "rmse", "obp_rmse", "bias")}
                for e, r in details.items()},
        "ope_details": details,
        "ope_definitions": {
            "data": f"SyntheticShop defaults, {N_SHOP} impressions per log, "
                    f"{replications} logs, pooled over policies {off}",
            "coverage": f"share of nominal {1 - ALPHA:.0%} intervals (each estimator's default "
                        "interval method) containing the exact true value",
            "rmse": "root mean squared error over logs × policies",
            "bias": "mean over policies of |mean error| (per-policy signed biases in details)",
            "obp_rmse": "obp 0.4.1's own pipeline on the same logs (its logistic q̂); for "
                        f"Switch-DR / DR-os its best fixed τ/λ of {list(OBP_GRID)} in hindsight",
        },
        "replications": replications, "seed": seed, "alpha": ALPHA, "n_bootstrap": N_BOOT,
        "target_coverage": list(TARGET),
        "recommended_estimator": RECOMMENDED_ESTIMATOR,
        "shop": {"config": shop.config.model_dump(), "n_rounds": N_SHOP,
                 "distance_from_logging": {p: shop.distance(p) for p in POLICY_NAMES},
                 "per_policy": summarize(shop_runs, shop_truth,
                                         peer_res["shop"] if peer_res else None),
                 **shop_info},
    }
    result["recommended_by_this_run"] = recommend(details)
    if peer_res is not None:
        obp_runs = [{obp_policy(e): r[f"{e:g}"] for e in OBP_EPSILONS} for r in peer_res["obp"]]
        truth = {obp_policy(e): peer_res["obp_truth"][f"{e:g}"]["value"] for e in OBP_EPSILONS}
        ours, info = run_obp_data(peer_res["obp"], seed)
        result["obp_synthetic"] = {
            "setting": f"SyntheticBanditDataset(n_actions=10, dim_context=5, logistic reward, "
                       f"linear behavior policy, random_state={seed}), {N_OBP} rounds per log",
            "truth_monte_carlo": {obp_policy(e): peer_res["obp_truth"][f"{e:g}"]
                                  for e in OBP_EPSILONS}, "n_truth_contexts": N_TRUTH,
            "pooled": pooled(ours, truth, obp_runs, list(truth)),
            "per_policy": summarize(ours, truth, obp_runs), **info}
        result["recommended_on_obp_synthetic"] = recommend(result["obp_synthetic"]["pooled"])
        result["obp_seconds"] = peer_res["seconds"]
    if open_bandit:
        result["open_bandit"] = run_open_bandit()
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["load_average"] = {"start": load_start, "end": list(os.getloadavg())}
    return result


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "—" if v is None else format(v, spec)


def report(res: dict[str, Any]) -> None:
    """Print the tables and plain verdicts."""
    def table(title: str, rows: dict[str, dict[str, Any]]) -> None:
        print(f"\n{title}")
        print(f"{'estimator':<10} {'interval':<9} {'bias':>8} {'RMSE':>8} {'coverage':>9} "
              f"{'obp RMSE':>9}  target")
        for e, r in rows.items():
            cov_ok = TARGET[0] <= r["coverage"] <= TARGET[1]
            rmse_ok = r["obp_rmse"] is None or r["rmse"] <= r["obp_rmse"] * (1 + 1e-9)
            gap = r.get("mse_minus_obp_mse", {"mean": 0.0, "se": 0.0})
            noise = "" if rmse_ok else (
                f" (within noise: {gap['mean'] / gap['se']:+.1f} se)"
                if abs(gap["mean"]) <= 2 * gap["se"] else
                f" ({gap['mean'] / gap['se']:+.1f} se)")
            flags = ("coverage ok" if cov_ok else "coverage MISSED") + (
                "" if r["obp_rmse"] is None else ", RMSE ≤ obp" if rmse_ok
                else ", RMSE > obp" + noise)
            print(f"{e:<10} {r['interval']:<9} {r['bias']:>8.4f} {r['rmse']:>8.4f} "
                  f"{r['coverage']:>9.3f} {_fmt(r['obp_rmse']):>9}  {flags}")

    n = res["replications"]
    table(f"shop generator, {n} logs × 4 off-policy π_e (headline `ope`)", res["ope_details"])
    print("coverage by interval method (mean width):")
    for e, r in res["ope_details"].items():
        print(f"  {e:<10} " + "  ".join(
            f"{m} {c:.3f} ({r['mean_width_by_interval'][m]:.4f})"
            for m, c in r["coverage_by_interval"].items()))
    print("per policy (coverage of the default interval, RMSE):")
    for pol, rows in res["shop"]["per_policy"].items():
        print(f"  {pol:<13} V={rows['true_value']:.4f}  " + "  ".join(
            f"{e} {rows[e]['coverage']:.2f}/{rows[e]['rmse']:.4f}" for e in ESTIMATORS))
    rec, best = res["recommended_estimator"], res["recommended_by_this_run"]
    cov = res["ope"][rec]["coverage"]
    print(f"default estimator of `shelfwise evaluate-policy`: {rec}, coverage {cov:.3f} "
          f"({'inside' if TARGET[0] <= cov <= TARGET[1] else 'OUTSIDE'} {list(TARGET)}); "
          f"lowest RMSE with coverage in the band: {best} (shop), "
          f"{res.get('recommended_on_obp_synthetic', '—')} (obp synthetic)")
    if "obp_synthetic" in res:
        o = res["obp_synthetic"]
        table(f"obp SyntheticBanditDataset, {n} logs × 3 π_e", o["pooled"])
        print(f"identical-input agreement with obp: shop "
              f"{res['shop']['identical_inputs_max_relative_difference']:.1e}, obp data "
              f"{o['identical_inputs_max_relative_difference']:.1e}")
    for c in res.get("open_bandit", []):
        print(f"\nOpen Bandit sample, campaign {c['campaign']} (relative error, 30 resamples): "
              + ", ".join(f"{e} {r['relative_error']:.3f}" for e, r in c["estimators"].items()))
        print(f"  {c['verdict']}")
    print(f"\n{res['seconds']:.0f} s, load average {res['load_average']}")


def main() -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-peer", action="store_true", help="skip obp")
    parser.add_argument("--no-open-bandit", action="store_true")
    args = parser.parse_args()
    threadpool_limits(1)  # 2 shared cores
    res = run(args.replications, args.seed, peer=not args.no_peer,
              open_bandit=not args.no_open_bandit)
    report(res)
    path = write_results("ope_intervals", res)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
