"""An experiment's report: per-variant metrics with intervals, each variant against control,
the sample-ratio check, an always-valid sequential p-value and one sentence.

- CTR = clicked impressions / impressions, compared per user by the delta method
  (``ratio_test``): users are randomised, and one user's clicks are correlated;
- add-to-cart rate and conversion = share of users with a cart add / purchase after their
  first exposure (two-proportion z-test);
- revenue per user: Welch (or bootstrap) on the per-user sums, with CUPED on the same sum over
  ``cuped_days`` before the start when anyone bought then;
- SRM: χ² of users per variant against the shares (flagged at p < 0.001);
- sequential: mSPRT over 20 evenly spaced looks of the CTR comparison (τ = mde × control CTR),
  so a report read every hour does not inflate false positives; the verdict trusts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from shelfwise.experiments import stats
from shelfwise.experiments.data import ExperimentData, VariantData

RevenueMethod = Literal["welch", "bootstrap"]


@dataclass
class Report:
    experiment: dict[str, Any]
    period: dict[str, str]
    variants: dict[str, dict[str, Any]]
    comparisons: dict[str, dict[str, Any]]
    srm: stats.Srm
    verdicts: dict[str, str]
    verdict: str
    planning: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {"experiment": self.experiment, "period": self.period,
                "verdict": self.verdict, "verdicts": self.verdicts,
                "variants": self.variants, "comparisons": self.comparisons,
                "srm": self.srm.to_record(),
                "planning": self.planning}


def analyse(data: ExperimentData, *, revenue_method: RevenueMethod = "welch",
            seed: int = 0) -> Report:
    exp = data.experiment
    alpha = exp.alpha
    control = exp.control or exp.variants[0].name
    base = data.variants[control]
    variants = {name: _summary(v, alpha) for name, v in data.variants.items()}
    srm = stats.srm_test([data.variants[v.name].n for v in exp.variants],
                         [v.share for v in exp.variants])
    planning = _planning(base, exp.mde, alpha, exp.power)
    needed = planning.pop("_needed")
    comparisons: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, str] = {}
    for name, v in data.variants.items():
        if name == control:
            continue
        ctr = stats.ratio_test(base.clicks, base.impressions, v.clicks, v.impressions, alpha)
        seq = _sequential(base, v, exp.mde, alpha)
        cov = (base.pre_revenue, v.pre_revenue) if (
            base.pre_revenue.any() or v.pre_revenue.any()) else (None, None)
        revenue = stats.mean_test(base.revenue, v.revenue, alpha, method=revenue_method,
                                  covariate_a=cov[0], covariate_b=cov[1], seed=seed) \
            if base.n >= 2 and v.n >= 2 else None
        comparisons[name] = {
            "ctr": ctr.to_record(), "ctr_sequential": seq.to_record(),
            "cart_rate": stats.two_proportion_test(int(base.carted.sum()), base.n,
                                                   int(v.carted.sum()), v.n,
                                                   alpha).to_record(),
            "conversion": stats.two_proportion_test(int(base.purchased.sum()), base.n,
                                                    int(v.purchased.sum()), v.n,
                                                    alpha).to_record(),
            "revenue_per_user": None if revenue is None else revenue.to_record()}
        verdicts[name] = stats.verdict(ctr, metric="CTR", srm=srm, needed=needed,
                                       sequential=seq, names=(control, name))
    return Report(
        experiment=exp.to_doc(),
        period={"start": data.start.isoformat(), "end": data.end.isoformat()},
        variants=variants, comparisons=comparisons, srm=srm, verdicts=verdicts,
        verdict=" ".join(verdicts.values()),
        planning=planning)


def _summary(v: VariantData, alpha: float) -> dict[str, Any]:
    imps, clicks = int(v.impressions.sum()), int(v.clicks.sum())
    return {"users": v.n, "impressions": imps, "clicks": clicks,
            "ctr": ratio_estimate(v.clicks, v.impressions, alpha),
            "cart_rate": stats.proportion(int(v.carted.sum()), v.n, alpha).to_record(),
            "conversion": stats.proportion(int(v.purchased.sum()), v.n, alpha).to_record(),
            "revenue_per_user": stats.mean(v.revenue, alpha).to_record() if v.n else None}


def ratio_estimate(num: np.ndarray, den: np.ndarray, alpha: float) -> dict[str, Any]:
    """ΣX / ΣY with a delta-method interval over users (as ``ratio_test`` compares them)."""
    n, total = len(num), float(den.sum())
    if total <= 0:
        return {"value": None, "lower": None, "upper": None, "n": n, "method": "delta"}
    r = float(num.sum()) / total
    if n < 2:
        return {"value": r, "lower": None, "upper": None, "n": n, "method": "delta"}
    resid = num - r * den
    se = math.sqrt(float(resid.var(ddof=1)) / n) / float(den.mean())
    q = NormalDist().inv_cdf(1 - alpha / 2)
    return {"value": r, "lower": max(0.0, r - q * se), "upper": min(1.0, r + q * se), "n": n,
            "method": "delta"}


def _sequential(a: VariantData, b: VariantData, mde: float, alpha: float) -> stats.Sequential:
    """mSPRT on the CTR difference at each look (per-user delta-method variances)."""
    diffs, variances = [], []
    q = NormalDist().inv_cdf(1 - alpha / 2)
    for k in range(a.impressions_by_look.shape[0]):
        ia, ca = a.impressions_by_look[k], a.clicks_by_look[k]
        ib, cb = b.impressions_by_look[k], b.clicks_by_look[k]
        ka, kb = ia > 0, ib > 0  # users exposed by this look
        c = stats.ratio_test(ca[ka], ia[ka], cb[kb], ib[kb], alpha)
        if not math.isfinite(c.lower):
            continue
        diffs.append(c.difference)
        variances.append(((c.upper - c.lower) / (2 * q)) ** 2)
    base = float(a.clicks.sum()) / max(float(a.impressions.sum()), 1.0)
    tau = max(mde * base, 1e-6)
    return stats.msprt(np.asarray(diffs, np.float64), np.asarray(variances, np.float64), tau,
                       alpha)


def _planning(base: VariantData, mde: float, alpha: float, power: float) -> dict[str, Any]:
    """Users per variant the CTR test needs for ``mde`` at the control's CTR and per-user
    spread (the delta-method variance as a per-user standard deviation)."""
    imps, clicks = float(base.impressions.sum()), float(base.clicks.sum())
    out: dict[str, Any] = {"mde": mde, "alpha": alpha, "power": power, "_needed": None}
    if base.n < 2 or imps <= 0 or clicks <= 0:
        out["note"] = "the control has no clicks yet: no sample size can be planned"
        return out
    r = clicks / imps
    sd = math.sqrt(float((base.clicks - r * base.impressions).var(ddof=1))) / float(
        base.impressions.mean())
    if sd <= 0:  # every control user has the same CTR so far
        out.update(control_ctr=r, per_user_sd=0.0,
                   note="every control user has the same CTR so far: no spread to plan from")
        return out
    needed = stats.sample_size_mean(r, sd, mde, alpha, power)
    out.update(control_ctr=r, per_user_sd=sd, users_per_variant=needed.per_variant,
               _needed=needed)
    return out
