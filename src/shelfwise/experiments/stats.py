"""Statistics for online A/B experiments: intervals, tests, sequential p-values, sample sizes.

Pure functions over counts or per-user values (no storage, no HTTP). Arm A is the control, B
the treatment; every difference is B − A and every lift is B / A − 1. Results are frozen
dataclasses; ``to_record()`` gives a flat dict that is JSON-safe (NaN and ±inf become ``None``).
Impossible inputs (negative counts, successes > n, alpha outside (0, 1), ragged arrays) raise
``ValueError``; an arm without users is not an error: its numbers are NaN and ``verdict`` says
there is not enough data.

Per variant
    ``proportion(successes, n, alpha=0.05) -> Estimate``  rate with a Wilson score interval.
    ``mean(values, alpha=0.05) -> Estimate``  mean with a Student t interval.
B versus A (each returns a ``Comparison``: difference with CI, lift with CI, p-value)
    ``two_proportion_test(s_a, n_a, s_b, n_b, alpha=0.05)``  user-level rates (conversion):
    unpooled Wald CI, delta-method CI of the lift, pooled z-test p-value (= Pearson χ²).
    ``ratio_test(num_a, den_a, num_b, den_b, alpha=0.05)``  per-impression rates (CTR) when
    users are randomised: per-user clicks and impressions, delta-method variance (Deng et al.
    2018). A z-test over impressions ignores that one user's clicks are correlated and is
    over-confident.
    ``mean_test(values_a, values_b, alpha=0.05, *, method="welch" | "bootstrap",
    covariate_a=None, covariate_b=None, n_bootstrap=2000, seed=0)``  per-user metrics
    (revenue per user). With pre-experiment covariates, CUPED (Deng et al. 2013) first:
    θ = pooled within-arm cov(Y, X) / var(X), Y' = Y − θ (X − mean X over both arms); the
    estimate stays unbiased because randomisation makes E[X̄_B − X̄_A] = 0, and
    ``variance_reduction`` = 1 − Var'(diff) / Var(diff) is reported.
Health and planning
    ``srm_test(observed_counts, expected_shares=None, threshold=0.001) -> Srm``  sample-ratio
    mismatch, Pearson χ²; flagged when p < 0.001 (Kohavi et al., Microsoft ExP convention).
    ``sample_size(baseline_rate, mde_relative, alpha=0.05, power=0.8, ratio=1.0)`` and
    ``sample_size_mean(baseline_mean, sd, mde_relative, ...)`` ``-> SampleSize``: users per
    arm for a two-sided fixed-horizon test, ``n_b = ratio · n_a``.
Sequential (peeking allowed)
    ``msprt(differences, variances, tau, alpha=0.05) -> Sequential``  one entry per look:
    the estimated difference and its squared standard error at that look. The mixture
    likelihood ratio of a N(0, τ²) prior on the difference against 0 (Johari, Pekelis &
    Walsh, "Always valid inference", Oper. Res. 2022) is
    Λ = √(v / (v + τ²)) · exp(τ² d² / (2 v (v + τ²))), a martingale under H0 in the normal
    approximation, so p_n = min(1, min_{k≤n} 1/Λ_k) is an always-valid p-value (Ville) and
    {θ : Λ(θ) < 1/α}, intersected over looks, a confidence sequence. With v = V/n this is the
    paper's two-stream formula.
    ``msprt_proportions(s_a, n_a, s_b, n_b, *, alpha=0.05, tau=None, baseline_rate=None,
    mde_relative=0.1)`` and ``msprt_means(n_a, mean_a, var_a, n_b, mean_b, var_b, ...)`` take
    cumulative per-look arrays. τ defaults to the absolute minimum detectable effect,
    mde_relative × baseline (the test has most power near effects of size τ); pass
    ``baseline_rate`` (or ``tau``) fixed when the experiment is defined: estimating it from the
    data at hand (the default, pooled (S + 1) / (N + 2)) is a mild data dependence.
Reading
    ``verdict(result, *, metric="CTR", srm=None, needed=None, sequential=None,
    names=("A", "B"), higher_is_better=True) -> str``  one deterministic sentence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

FloatArray = npt.NDArray[np.float64]
NAN = float("nan")
_NORMAL = NormalDist()


def _z(q: float) -> float:
    return _NORMAL.inv_cdf(q)


def _two_sided_normal_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0)) if math.isfinite(z) else NAN


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")


def _check_counts(successes: int, n: int) -> None:
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple | list):
        return [_json_safe(v) for v in value]
    return value


def _as_1d(values: npt.ArrayLike, name: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite numbers")
    return arr


@dataclass(frozen=True)
class Estimate:
    """One arm's rate or mean with its (1 − alpha) interval (``method`` "wilson" or "t")."""

    value: float
    lower: float
    upper: float
    n: int
    alpha: float
    method: str

    def to_record(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def proportion(successes: int, n: int, alpha: float = 0.05) -> Estimate:
    """Rate with the Wilson score interval, which keeps its coverage at small n and extreme
    rates where the Wald interval does not (Brown, Cai & DasGupta 2001)."""
    _check_counts(successes, n)
    _check_alpha(alpha)
    if n == 0:
        return Estimate(NAN, 0.0, 1.0, 0, alpha, "wilson")
    p, z = successes / n, _z(1 - alpha / 2)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    upper = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, lower, upper, n, alpha, "wilson")


def mean(values: npt.ArrayLike, alpha: float = 0.05) -> Estimate:
    """Mean with a Student t interval (sample sd, n − 1 degrees of freedom)."""
    _check_alpha(alpha)
    y = _as_1d(values, "values")
    if len(y) < 2:
        return Estimate(float(y.mean()) if len(y) else NAN, NAN, NAN, len(y), alpha, "t")
    m, se = float(y.mean()), float(y.std(ddof=1)) / math.sqrt(len(y))
    q = float(sps.t.ppf(1 - alpha / 2, len(y) - 1))
    return Estimate(m, m - q * se, m + q * se, len(y), alpha, "t")


@dataclass(frozen=True)
class Comparison:
    """B versus A: ``difference`` = B − A with its CI, ``lift`` = B / A − 1 with its CI, and
    the two-sided p-value of "no difference". ``statistic`` is z or t (NaN for the bootstrap),
    ``df`` the Welch degrees of freedom; ``theta`` and ``variance_reduction`` are set by CUPED."""

    method: str
    n_a: int
    n_b: int
    estimate_a: float
    estimate_b: float
    difference: float
    lower: float
    upper: float
    lift: float
    lift_lower: float
    lift_upper: float
    p_value: float
    alpha: float
    statistic: float = NAN
    df: float = NAN
    theta: float | None = None
    variance_reduction: float | None = None

    @property
    def significant(self) -> bool:
        """p < alpha (False when the p-value is undefined)."""
        return self.p_value < self.alpha

    def to_record(self) -> dict[str, Any]:
        return {**{k: _json_safe(v) for k, v in asdict(self).items()},
                "significant": self.significant}


def _lift(ma: float, mb: float, var_a: float, var_b: float,
          q: float) -> tuple[float, float, float]:
    """Relative lift B / A − 1 with a delta-method interval; var_* are variances of the means."""
    if ma == 0 or not math.isfinite(ma):
        return NAN, NAN, NAN
    lift = mb / ma - 1
    se = math.sqrt(var_b / ma**2 + mb**2 * var_a / ma**4)
    return lift, lift - q * se, lift + q * se


def _undefined(method: str, n_a: int, n_b: int, ma: float, mb: float, alpha: float) -> Comparison:
    return Comparison(method, n_a, n_b, ma, mb, mb - ma, NAN, NAN, NAN, NAN, NAN, NAN, alpha)


def two_proportion_test(s_a: int, n_a: int, s_b: int, n_b: int,
                        alpha: float = 0.05) -> Comparison:
    """Difference of two independent proportions: unpooled Wald CI, pooled z-test p-value."""
    _check_counts(s_a, n_a)
    _check_counts(s_b, n_b)
    _check_alpha(alpha)
    pa = s_a / n_a if n_a else NAN
    pb = s_b / n_b if n_b else NAN
    if n_a == 0 or n_b == 0:
        return _undefined("z-test", n_a, n_b, pa, pb, alpha)
    diff, q = pb - pa, _z(1 - alpha / 2)
    var_a, var_b = pa * (1 - pa) / n_a, pb * (1 - pb) / n_b
    se = math.sqrt(var_a + var_b)
    pooled = (s_a + s_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = diff / se0 if se0 > 0 else NAN
    p = _two_sided_normal_p(z) if se0 > 0 else 1.0  # both arms all 0 or all 1: no evidence
    lift, lo, hi = _lift(pa, pb, var_a, var_b, q)
    return Comparison("z-test", n_a, n_b, pa, pb, diff, diff - q * se, diff + q * se,
                      lift, lo, hi, p, alpha, statistic=z)


def ratio_test(num_a: npt.ArrayLike, den_a: npt.ArrayLike, num_b: npt.ArrayLike,
               den_b: npt.ArrayLike, alpha: float = 0.05) -> Comparison:
    """Ratio metric ΣX / ΣY per arm from per-user X (clicks) and Y (impressions), compared
    by a Wald z-test whose variances come from the delta method:
    Var(R) ≈ (σ²_X − 2 R σ_XY + R² σ²_Y) / (n μ²_Y)."""
    _check_alpha(alpha)
    arms = []
    for x_in, y_in, name in ((num_a, den_a, "A"), (num_b, den_b, "B")):
        x, y = _as_1d(x_in, f"numerators {name}"), _as_1d(y_in, f"denominators {name}")
        if len(x) != len(y):
            raise ValueError(f"arm {name}: numerators and denominators differ in length")
        if len(x) < 2 or y.sum() <= 0:
            arms.append((len(x), float(x.sum() / y.sum()) if y.sum() > 0 else NAN, NAN))
            continue
        r, my = float(x.sum() / y.sum()), float(y.mean())
        cov = np.cov(x, y, ddof=1)
        var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (len(x) * my * my)
        arms.append((len(x), r, max(float(var), 0.0)))
    (n_a, ra, va), (n_b, rb, vb) = arms
    if not (math.isfinite(va) and math.isfinite(vb)) or va + vb == 0:
        return _undefined("delta", n_a, n_b, ra, rb, alpha)
    diff, se, q = rb - ra, math.sqrt(va + vb), _z(1 - alpha / 2)
    lift, lo, hi = _lift(ra, rb, va, vb, q)
    return Comparison("delta", n_a, n_b, ra, rb, diff, diff - q * se, diff + q * se, lift, lo,
                      hi, _two_sided_normal_p(diff / se), alpha, statistic=diff / se)


def _cuped(ya: FloatArray, yb: FloatArray, xa: FloatArray,
           xb: FloatArray) -> tuple[FloatArray, FloatArray, float, float]:
    """Adjusted outcomes, θ, and the variance reduction of the difference of means."""
    sxx = float(((xa - xa.mean()) ** 2).sum() + ((xb - xb.mean()) ** 2).sum())
    sxy = float(((xa - xa.mean()) * (ya - ya.mean())).sum()
                + ((xb - xb.mean()) * (yb - yb.mean())).sum())
    theta = sxy / sxx if sxx > 0 else 0.0
    x_mean = float(np.concatenate([xa, xb]).mean())
    adj_a, adj_b = ya - theta * (xa - x_mean), yb - theta * (xb - x_mean)

    def var_diff(a: FloatArray, b: FloatArray) -> float:
        return float(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))

    before = var_diff(ya, yb)
    reduction = 1 - var_diff(adj_a, adj_b) / before if before > 0 else 0.0
    return adj_a, adj_b, theta, reduction


def _bootstrap_means(y: FloatArray, n_bootstrap: int, rng: np.random.Generator) -> FloatArray:
    """Means of ``n_bootstrap`` resamples with replacement, in chunks of ≤ 4M indices."""
    out = np.empty(n_bootstrap)
    step = max(1, 4_000_000 // len(y))
    for s in range(0, n_bootstrap, step):
        b = min(step, n_bootstrap - s)
        out[s:s + b] = y[rng.integers(0, len(y), size=(b, len(y)))].mean(axis=1)
    return out


def mean_test(values_a: npt.ArrayLike, values_b: npt.ArrayLike, alpha: float = 0.05, *,
              method: Literal["welch", "bootstrap"] = "welch",
              covariate_a: npt.ArrayLike | None = None,
              covariate_b: npt.ArrayLike | None = None,
              n_bootstrap: int = 2000, seed: int = 0) -> Comparison:
    """Difference of per-user means. ``welch``: Welch t-test and t interval (as
    ``scipy.stats.ttest_ind(b, a, equal_var=False)``), lift interval by the delta method.
    ``bootstrap``: each arm resampled on its own; percentile intervals of the difference and
    the lift; p = 2 · min(P*(d ≤ 0), P*(d ≥ 0)) with the (1 + k) / (B + 1) correction,
    i.e. the smallest alpha whose percentile interval excludes 0. CUPED applies when both
    covariates (one pre-experiment value per user, aligned with the values) are given."""
    _check_alpha(alpha)
    if method not in ("welch", "bootstrap"):
        raise ValueError(f"method must be 'welch' or 'bootstrap', got {method!r}")
    ya, yb = _as_1d(values_a, "values_a"), _as_1d(values_b, "values_b")
    theta: float | None = None
    reduction: float | None = None
    label: str = method
    if (covariate_a is None) != (covariate_b is None):
        raise ValueError("CUPED needs covariates for both arms")
    if covariate_a is not None and covariate_b is not None:
        xa, xb = _as_1d(covariate_a, "covariate_a"), _as_1d(covariate_b, "covariate_b")
        if len(xa) != len(ya) or len(xb) != len(yb):
            raise ValueError("each covariate needs one value per user of its arm")
        if len(ya) >= 2 and len(yb) >= 2:
            ya, yb, theta, reduction = _cuped(ya, yb, xa, xb)
            label = f"{method}+cuped"
    n_a, n_b = len(ya), len(yb)
    ma = float(ya.mean()) if n_a else NAN
    mb = float(yb.mean()) if n_b else NAN
    if n_a < 2 or n_b < 2:
        return _undefined(label, n_a, n_b, ma, mb, alpha)
    diff = mb - ma
    var_a, var_b = float(ya.var(ddof=1)) / n_a, float(yb.var(ddof=1)) / n_b
    if method == "bootstrap":
        if n_bootstrap < 100:
            raise ValueError("n_bootstrap must be at least 100")
        rng = np.random.default_rng(seed)
        boot_a = _bootstrap_means(ya, n_bootstrap, rng)
        boot_b = _bootstrap_means(yb, n_bootstrap, rng)
        d = boot_b - boot_a
        lo, hi = (float(v) for v in np.quantile(d, [alpha / 2, 1 - alpha / 2]))
        below, above = int((d <= 0).sum()), int((d >= 0).sum())
        p = min(1.0, 2 * (1 + min(below, above)) / (n_bootstrap + 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            lifts = boot_b / boot_a - 1
        if ma != 0 and np.isfinite(lifts).all():
            l_lo, l_hi = (float(v) for v in np.quantile(lifts, [alpha / 2, 1 - alpha / 2]))
            lift = mb / ma - 1
        else:
            lift = l_lo = l_hi = NAN
        return Comparison(label, n_a, n_b, ma, mb, diff, lo, hi, lift, l_lo, l_hi, p, alpha,
                          theta=theta, variance_reduction=reduction)
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return _undefined(label, n_a, n_b, ma, mb, alpha)
    df = (var_a + var_b) ** 2 / (var_a**2 / (n_a - 1) + var_b**2 / (n_b - 1))
    t = diff / se
    p = float(2 * sps.t.sf(abs(t), df))
    q = float(sps.t.ppf(1 - alpha / 2, df))
    lift, l_lo, l_hi = _lift(ma, mb, var_a, var_b, q)
    return Comparison(label, n_a, n_b, ma, mb, diff, diff - q * se, diff + q * se, lift, l_lo,
                      l_hi, p, alpha, statistic=t, df=df, theta=theta,
                      variance_reduction=reduction)


@dataclass(frozen=True)
class Srm:
    """Sample-ratio-mismatch check: Pearson χ² of observed arm sizes against expected shares."""

    observed: tuple[int, ...]
    expected_shares: tuple[float, ...]
    statistic: float
    df: int
    p_value: float
    threshold: float
    flagged: bool

    def to_record(self) -> dict[str, Any]:
        return {k: _json_safe(v) for k, v in asdict(self).items()}


def srm_test(observed_counts: Sequence[int], expected_shares: Sequence[float] | None = None,
             threshold: float = 0.001) -> Srm:
    """χ² goodness of fit of users per arm; shares default to equal and are normalised.
    Flagged when p < ``threshold`` (0.001: at experiment scale a real split never gets there,
    and a 0.05 threshold would raise a false alarm on one experiment in twenty)."""
    counts = tuple(int(c) for c in observed_counts)
    shares = tuple(float(s) for s in (expected_shares or [1.0] * len(counts)))
    if len(counts) < 2 or len(shares) != len(counts):
        raise ValueError("need at least two arms and one expected share per arm")
    if min(counts) < 0 or min(shares) <= 0:
        raise ValueError("counts must be >= 0 and expected shares > 0")
    _check_alpha(threshold)
    total, share_sum = sum(counts), sum(shares)
    shares = tuple(s / share_sum for s in shares)
    if total == 0:
        return Srm(counts, shares, 0.0, len(counts) - 1, 1.0, threshold, False)
    stat = sum((c - total * s) ** 2 / (total * s) for c, s in zip(counts, shares, strict=True))
    p = float(sps.chi2.sf(stat, len(counts) - 1))
    return Srm(counts, shares, stat, len(counts) - 1, p, threshold, p < threshold)


@dataclass(frozen=True)
class SampleSize:
    """Users per arm (B gets ``ratio`` times A's) for a two-sided test at ``alpha`` to reach
    ``power`` when the true relative effect is ``mde_relative``."""

    n_a: int
    n_b: int
    baseline: float
    mde_relative: float
    alpha: float
    power: float
    ratio: float
    sd: float | None = None

    @property
    def per_variant(self) -> int:
        return max(self.n_a, self.n_b)

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.n_a + self.n_b}


def _check_plan(mde_relative: float, alpha: float, power: float, ratio: float) -> None:
    _check_alpha(alpha)
    if not 0.0 < power < 1.0 or ratio <= 0 or mde_relative == 0:
        raise ValueError("need 0 < power < 1, ratio > 0 and a non-zero effect")


def sample_size(baseline_rate: float, mde_relative: float, alpha: float = 0.05,
                power: float = 0.8, ratio: float = 1.0) -> SampleSize:
    """Two-proportion z-test: n_A = (z_{1−α/2} √(p̄q̄(1 + 1/r)) + z_{1−β} √(p₁q₁ + p₂q₂/r))²
    / (p₂ − p₁)², p₂ = p₁(1 + mde), p̄ = (p₁ + r p₂) / (1 + r); r = 1 gives the textbook form."""
    _check_plan(mde_relative, alpha, power, ratio)
    p1 = baseline_rate
    p2 = p1 * (1 + mde_relative)
    if not (0 < p1 < 1 and 0 < p2 < 1):
        raise ValueError(f"baseline {p1} and treated rate {p2} must lie in (0, 1)")
    pbar = (p1 + ratio * p2) / (1 + ratio)
    num = (_z(1 - alpha / 2) * math.sqrt(pbar * (1 - pbar) * (1 + 1 / ratio))
           + _z(power) * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio))
    n_a = math.ceil(num**2 / (p2 - p1) ** 2)
    return SampleSize(n_a, math.ceil(ratio * n_a), p1, mde_relative, alpha, power, ratio)


def sample_size_mean(baseline_mean: float, sd: float, mde_relative: float, alpha: float = 0.05,
                     power: float = 0.8, ratio: float = 1.0) -> SampleSize:
    """Difference of means with a common sd: n_A = (z_{1−α/2} + z_{1−β})² σ² (1 + 1/r) / Δ²,
    Δ = mde · baseline mean. For CUPED, pass σ√(1 − reduction)."""
    _check_plan(mde_relative, alpha, power, ratio)
    delta = baseline_mean * mde_relative
    if sd <= 0 or delta == 0:
        raise ValueError("need sd > 0 and a non-zero baseline mean")
    n_a = math.ceil((_z(1 - alpha / 2) + _z(power)) ** 2 * sd**2 * (1 + 1 / ratio) / delta**2)
    return SampleSize(n_a, math.ceil(ratio * n_a), baseline_mean, mde_relative, alpha, power,
                      ratio, sd)


@dataclass(frozen=True)
class Sequential:
    """mSPRT over looks: running always-valid p-values and confidence sequence of B − A.
    ``lower`` / ``upper`` are intersected over looks; they can cross (an empty set) only when
    the data contradict every difference, which happens with probability ≤ alpha."""

    differences: tuple[float, ...]
    p_values: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    tau: float
    alpha: float

    @property
    def p_value(self) -> float:
        """The always-valid p-value at the latest look (1.0 before any)."""
        return self.p_values[-1] if self.p_values else 1.0

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    def to_record(self) -> dict[str, Any]:
        last = {"difference": self.differences[-1] if self.differences else NAN,
                "lower": self.lower[-1] if self.lower else -math.inf,
                "upper": self.upper[-1] if self.upper else math.inf}
        return {"p_value": self.p_value, "significant": self.significant, "tau": self.tau,
                "alpha": self.alpha, "looks": len(self.p_values),
                **{k: _json_safe(v) for k, v in last.items()},
                "p_values": list(self.p_values)}


def _informative(v: FloatArray) -> npt.NDArray[np.bool_]:
    return np.isfinite(v) & (v > 0)


def _log_mixture_lr(d: FloatArray, v: FloatArray, tau: float) -> FloatArray:
    """log Λ per look; 0 (Λ = 1, no evidence) where the variance is undefined or zero."""
    t2, ok = tau * tau, _informative(v)
    vv = np.where(ok, v, 1.0)
    out = 0.5 * np.log(vv / (vv + t2)) + t2 * np.where(ok, d, 0.0) ** 2 / (2 * vv * (vv + t2))
    return np.where(ok, out, 0.0)


def _half_width(v: FloatArray, tau: float, alpha: float) -> FloatArray:
    t2, ok = tau * tau, _informative(v)
    vv = np.where(ok, v, 1.0)
    h = np.sqrt(vv * (vv + t2) / t2 * (2 * math.log(1 / alpha) + np.log((vv + t2) / vv)))
    return np.where(ok, h, np.inf)


def _sequential(d: FloatArray, v_test: FloatArray, v_ci: FloatArray, tau: float,
                alpha: float) -> Sequential:
    if not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be a positive number, got {tau}")
    _check_alpha(alpha)
    p = np.minimum.accumulate(np.minimum(1.0, np.exp(-_log_mixture_lr(d, v_test, tau))))
    h = _half_width(v_ci, tau, alpha)
    dd = np.where(np.isfinite(d), d, 0.0)
    lower = np.maximum.accumulate(np.where(np.isfinite(h), dd - h, -np.inf))
    upper = np.minimum.accumulate(np.where(np.isfinite(h), dd + h, np.inf))
    return Sequential(tuple(d.tolist()), tuple(p.tolist()), tuple(lower.tolist()),
                      tuple(upper.tolist()), tau, alpha)


def msprt(differences: npt.ArrayLike, variances: npt.ArrayLike, tau: float,
          alpha: float = 0.05) -> Sequential:
    """Always-valid p-values and confidence sequence from each look's estimated difference
    and its variance (squared standard error); looks in time order."""
    d = np.atleast_1d(np.asarray(differences, dtype=np.float64))
    v = np.atleast_1d(np.asarray(variances, dtype=np.float64))
    if d.shape != v.shape or d.ndim != 1:
        raise ValueError("differences and variances must be 1-d arrays of one length")
    return _sequential(d, v, v, tau, alpha)


def _cumulative(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.ndim != 1 or np.any(arr < 0) or np.any(np.diff(arr) < 0):
        raise ValueError(f"{name} must be cumulative (non-decreasing, >= 0) counts per look")
    return arr


def msprt_proportions(successes_a: npt.ArrayLike, n_a: npt.ArrayLike, successes_b: npt.ArrayLike,
                      n_b: npt.ArrayLike, *, alpha: float = 0.05, tau: float | None = None,
                      baseline_rate: float | None = None,
                      mde_relative: float = 0.1) -> Sequential:
    """mSPRT for B − A of two proportions from cumulative counts at each look. The p-values
    use the pooled variance (as the z-test: under H0 the rates are equal, and it is zero only
    when nothing differs); the confidence sequence uses Agresti-Caffo rates (s + 1) / (n + 2),
    which never give a zero variance at small counts."""
    sa, na = _cumulative("successes_a", successes_a), _cumulative("n_a", n_a)
    sb, nb = _cumulative("successes_b", successes_b), _cumulative("n_b", n_b)
    if not (sa.shape == na.shape == sb.shape == nb.shape) or np.any(sa > na) or np.any(sb > nb):
        raise ValueError("counts must have one entry per look with successes <= n")
    if tau is None:
        if baseline_rate is None:
            baseline_rate = (sa[-1] + sb[-1] + 1) / (na[-1] + nb[-1] + 2)
        tau = abs(mde_relative) * float(baseline_rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = sb / nb - sa / na
        pooled = (sa + sb) / (na + nb)
        v_test = pooled * (1 - pooled) * (1 / na + 1 / nb)
    ta, tb = (sa + 1) / (na + 2), (sb + 1) / (nb + 2)
    v_ci = np.where((na > 0) & (nb > 0), ta * (1 - ta) / np.maximum(na, 1)
                    + tb * (1 - tb) / np.maximum(nb, 1), np.nan)
    return _sequential(d, v_test, v_ci, tau, alpha)


def msprt_means(n_a: npt.ArrayLike, mean_a: npt.ArrayLike, var_a: npt.ArrayLike,
                n_b: npt.ArrayLike, mean_b: npt.ArrayLike, var_b: npt.ArrayLike, *,
                alpha: float = 0.05, tau: float | None = None,
                mde_relative: float = 0.1) -> Sequential:
    """mSPRT for B − A of per-user means from each look's cumulative users, mean and sample
    variance per arm. τ defaults to mde_relative × |pooled mean| at the latest look."""
    na, nb = _cumulative("n_a", n_a), _cumulative("n_b", n_b)
    ma, mb = np.atleast_1d(np.asarray(mean_a, float)), np.atleast_1d(np.asarray(mean_b, float))
    va, vb = np.atleast_1d(np.asarray(var_a, float)), np.atleast_1d(np.asarray(var_b, float))
    if not (na.shape == nb.shape == ma.shape == mb.shape == va.shape == vb.shape):
        raise ValueError("every argument needs one entry per look")
    if tau is None:
        pooled = (na[-1] * ma[-1] + nb[-1] * mb[-1]) / max(na[-1] + nb[-1], 1)
        tau = abs(mde_relative * float(pooled))
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where((na > 1) & (nb > 1), va / na + vb / nb, np.nan)
    return _sequential(mb - ma, v, v, tau, alpha)


def _p_text(p: float, label: str) -> str:
    return f"{label} < 0.001" if p < 0.001 else f"{label} = {p:.3f}"


def _round_users(n: int) -> int:
    """Round to three significant figures: 'about 12,300', not 'about 12,347'."""
    return n if n < 1000 else round(n, 2 - math.floor(math.log10(n)))


def verdict(result: Comparison, *, metric: str = "CTR", srm: Srm | None = None,
            needed: SampleSize | None = None, sequential: Sequential | None = None,
            names: tuple[str, str] = ("A", "B"), higher_is_better: bool = True) -> str:
    """One plain-English sentence for a report. A flagged SRM wins over everything. With
    ``sequential``, significance is decided by its always-valid p-value (the only valid one
    when the report is read repeatedly); the interval shown stays the fixed-horizon one of
    ``result``. ``needed`` (from ``sample_size`` at the control's rate) turns "not enough
    evidence" into how many more users per arm the test needs."""
    a, b = names
    if srm is not None and srm.flagged:
        counts = " / ".join(f"{c:,}" for c in srm.observed)
        shares = " / ".join(f"{s:.0%}" for s in srm.expected_shares)
        return (f"Sample ratio mismatch: {counts} users where {shares} was expected "
                f"(chi-square {_p_text(srm.p_value, 'p')}); the split is broken; "
                "do not trust the result.")
    if not math.isfinite(result.difference) or not math.isfinite(result.p_value):
        return (f"Not enough data yet: {metric} cannot be compared until both {a} and {b} "
                "have users with outcomes.")
    conf = f"{(1 - result.alpha) * 100:g}% CI"
    if sequential is not None:
        p, p_label, alpha = sequential.p_value, "always-valid p", sequential.alpha
    else:
        p, p_label, alpha = result.p_value, "p", result.alpha
    if math.isfinite(result.lift):
        effect = (f"{metric} {result.lift:+.1%} ({conf} {result.lift_lower:+.1%} to "
                  f"{result.lift_upper:+.1%}, {_p_text(p, p_label)})")
    else:
        effect = (f"{metric} {result.difference:+.4g} ({conf} {result.lower:+.4g} to "
                  f"{result.upper:+.4g}, {_p_text(p, p_label)})")
    if p < alpha:
        better = (result.difference > 0) == higher_is_better
        return f"{b} is {'better' if better else 'worse'} than {a}: {effect}."
    if needed is None:
        return f"Not enough evidence yet: {effect}."
    change = f"{abs(needed.mde_relative) * 100:g}% {'lift' if needed.mde_relative > 0 else 'drop'}"
    more = max(needed.n_a - result.n_a, needed.n_b - result.n_b)
    if more > 0:
        return (f"Not enough evidence yet: {effect}; about {_round_users(more):,} more users "
                f"per variant are needed to detect a {change}.")
    return (f"No clear difference: {effect}; with {min(result.n_a, result.n_b):,} users per "
            f"variant the test could detect a {change}, so any real effect is likely smaller.")
