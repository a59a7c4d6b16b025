"""A/B statistics: known answers against scipy and hand formulas, plus small simulations of
error rates (fixed seeds, vectorised binomial draws, tolerances of several Monte Carlo SEs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.stats as ss
from benchmarks.experiment_stats_sim import simulate

from shelfwise.experiments.stats import (
    Comparison,
    SampleSize,
    mean,
    mean_test,
    msprt,
    msprt_means,
    msprt_proportions,
    proportion,
    ratio_test,
    sample_size,
    sample_size_mean,
    srm_test,
    two_proportion_test,
    verdict,
)

Z975 = ss.norm.ppf(0.975)


# ---- one arm ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (81, 263), (999, 1000), (50, 50)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    est = proportion(k, n)
    ci = ss.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert est.value == pytest.approx(k / n)
    assert (est.lower, est.upper) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_zero_successes_known_answer_and_edge_cases() -> None:
    assert proportion(0, 10).upper == pytest.approx(Z975**2 / (10 + Z975**2))  # 0.2775
    assert proportion(0, 10).lower == 0.0
    empty = proportion(0, 0)
    assert math.isnan(empty.value) and (empty.lower, empty.upper) == (0.0, 1.0)
    with pytest.raises(ValueError):
        proportion(5, 4)
    with pytest.raises(ValueError):
        proportion(1, 4, alpha=1.5)


def test_mean_interval_is_student_t() -> None:
    y = np.random.default_rng(1).exponential(2.0, size=40)
    est = mean(y, alpha=0.1)
    lo, hi = ss.t.interval(0.9, 39, loc=y.mean(), scale=ss.sem(y))
    assert (est.value, est.lower, est.upper) == pytest.approx((y.mean(), lo, hi))


# ---- two proportions -------------------------------------------------------------------------

def test_two_proportion_z_test_by_hand_and_against_chi_square() -> None:
    res = two_proportion_test(500, 10_000, 560, 10_000)
    pa, pb, pool = 0.05, 0.056, 1060 / 20_000
    z = (pb - pa) / math.sqrt(pool * (1 - pool) * 2 / 10_000)
    se = math.sqrt(pa * (1 - pa) / 10_000 + pb * (1 - pb) / 10_000)
    assert res.statistic == pytest.approx(z)
    assert res.p_value == pytest.approx(2 * ss.norm.sf(z))
    # the pooled z-test is Pearson's chi-square on the 2x2 table without continuity correction
    chi2 = ss.chi2_contingency([[500, 9500], [560, 9440]], correction=False)
    assert res.p_value == pytest.approx(chi2.pvalue, rel=1e-9)
    assert (res.lower, res.upper) == pytest.approx((pb - pa - Z975 * se, pb - pa + Z975 * se))
    lift_se = math.sqrt(pb * (1 - pb) / 10_000 / pa**2 + pb**2 * pa * (1 - pa) / 10_000 / pa**4)
    assert res.lift == pytest.approx(0.12)
    assert (res.lift_lower, res.lift_upper) == pytest.approx(
        (0.12 - Z975 * lift_se, 0.12 + Z975 * lift_se))
    swapped = two_proportion_test(560, 10_000, 500, 10_000)
    assert swapped.difference == pytest.approx(-res.difference)
    assert swapped.p_value == pytest.approx(res.p_value)


def test_two_proportion_degenerate_inputs() -> None:
    assert two_proportion_test(0, 100, 0, 100).p_value == 1.0
    empty = two_proportion_test(0, 0, 3, 10)
    assert math.isnan(empty.p_value) and not empty.significant
    json.dumps(empty.to_record(), allow_nan=False)  # NaN -> None
    with pytest.raises(ValueError):
        two_proportion_test(-1, 10, 3, 10)


def test_ratio_test_reduces_to_wald_with_one_impression_per_user() -> None:
    rng = np.random.default_rng(2)
    xa, xb = (rng.random(3000) < 0.05).astype(float), (rng.random(3000) < 0.06).astype(float)
    res = ratio_test(xa, np.ones(3000), xb, np.ones(3000))
    se = math.sqrt(xa.var(ddof=1) / 3000 + xb.var(ddof=1) / 3000)
    diff = xb.mean() - xa.mean()
    assert res.difference == pytest.approx(diff)
    assert (res.lower, res.upper) == pytest.approx((diff - Z975 * se, diff + Z975 * se))
    assert res.p_value == pytest.approx(2 * ss.norm.sf(abs(diff) / se))


def test_ratio_test_holds_alpha_where_an_impression_level_z_test_does_not() -> None:
    # A/A: users differ in click propensity and see ~10 impressions each, so clicks cluster
    rng = np.random.default_rng(3)
    runs, users = 400, 400
    imps = 1 + rng.poisson(9, size=(runs, 2, users))
    clicks = rng.binomial(imps, rng.beta(0.5, 9.5, size=(runs, 2, users)))
    ratio_fp = z_fp = 0
    for c, m in zip(clicks, imps, strict=True):
        ratio_fp += ratio_test(c[0], m[0], c[1], m[1]).significant
        z_fp += two_proportion_test(int(c[0].sum()), int(m[0].sum()), int(c[1].sum()),
                                    int(m[1].sum())).significant
    assert 0.02 <= ratio_fp / runs <= 0.085
    assert z_fp / runs > 0.09  # design effect ≈ 1.8: about 0.14


# ---- means, bootstrap, CUPED -----------------------------------------------------------------

def test_welch_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.lognormal(size=300), rng.lognormal(0.1, 1.3, size=450)
    res = mean_test(a, b, alpha=0.1)
    ref = ss.ttest_ind(b, a, equal_var=False)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert (res.statistic, res.p_value, res.df) == pytest.approx((ref.statistic, ref.pvalue,
                                                                 ref.df))
    assert (res.lower, res.upper) == pytest.approx((ci.low, ci.high))
    assert res.method == "welch" and res.variance_reduction is None


def test_bootstrap_is_seeded_and_agrees_with_welch_on_a_large_sample() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(10, 3, size=800), rng.normal(10.6, 3, size=800)
    boot = mean_test(a, b, method="bootstrap", seed=7)
    assert boot == mean_test(a, b, method="bootstrap", seed=7)
    welch = mean_test(a, b)
    half = (welch.upper - welch.lower) / 2
    assert boot.lower == pytest.approx(welch.lower, abs=0.1 * half)
    assert boot.upper == pytest.approx(welch.upper, abs=0.1 * half)
    assert boot.p_value < 0.01 and boot.significant
    assert boot.lift_lower < boot.lift < boot.lift_upper
    same = mean_test(a, a.copy(), method="bootstrap")
    assert same.p_value > 0.8 and not same.significant


def test_cuped_reduces_variance_by_rho_squared_and_keeps_the_estimate_unbiased() -> None:
    rng = np.random.default_rng(6)
    # pre-period x and in-experiment y with corr(x, y)^2 = 0.8, true effect 0.1 (sd of y 1.5)
    runs, n, effect = 300, 200, 0.1
    x = rng.normal(0, 1, size=(runs, 2, n))
    y = 2 * x + rng.normal(0, 1, size=(runs, 2, n)) + 5.0
    y[:, 1] += effect
    raw, adj = [], []
    for xr, yr in zip(x, y, strict=True):
        raw.append(mean_test(yr[0], yr[1]).difference)
        res = mean_test(yr[0], yr[1], covariate_a=xr[0], covariate_b=xr[1])
        adj.append(res.difference)
    raw_arr, adj_arr = np.array(raw), np.array(adj)
    assert adj_arr.mean() == pytest.approx(effect, abs=4 * adj_arr.std() / math.sqrt(runs))
    assert raw_arr.mean() == pytest.approx(effect, abs=4 * raw_arr.std() / math.sqrt(runs))
    assert adj_arr.std() / raw_arr.std() == pytest.approx(math.sqrt(0.2), rel=0.15)
    # one large experiment: θ is the slope, the reported reduction is ρ², the CI shrinks
    big = mean_test(y[0, 0], y[0, 1], covariate_a=x[0, 0], covariate_b=x[0, 1])
    plain = mean_test(y[0, 0], y[0, 1])
    assert big.method == "welch+cuped"
    assert big.theta == pytest.approx(2.0, abs=0.15)
    assert big.variance_reduction == pytest.approx(0.8, abs=0.05)
    assert (big.upper - big.lower) / (plain.upper - plain.lower) == pytest.approx(
        math.sqrt(1 - big.variance_reduction), rel=0.02)
    boot = mean_test(y[0, 0], y[0, 1], method="bootstrap", covariate_a=x[0, 0],
                     covariate_b=x[0, 1])
    assert boot.method == "bootstrap+cuped" and boot.difference == pytest.approx(big.difference)
    with pytest.raises(ValueError):
        mean_test(y[0, 0], y[0, 1], covariate_a=x[0, 0])


# ---- SRM and sample size ---------------------------------------------------------------------

def test_srm_matches_scipy_chisquare_and_flags_a_55_45_split() -> None:
    obs, shares = [480, 1040, 1530], [1, 2, 3]
    ref = ss.chisquare(obs, f_exp=np.array(shares) / 6 * sum(obs))
    res = srm_test(obs, shares)
    assert (res.statistic, res.p_value, res.df) == pytest.approx((ref.statistic, ref.pvalue, 2))
    assert srm_test([5500, 4500]).flagged  # chi2 = 100
    assert not srm_test([5000, 5000]).flagged
    fair = srm_test([5050, 4950])
    assert fair.p_value == pytest.approx(ss.chisquare([5050, 4950]).pvalue) and not fair.flagged
    assert not srm_test([0, 0]).flagged
    with pytest.raises(ValueError):
        srm_test([10, 10], [1.0])


@pytest.mark.parametrize(("p1", "mde"), [(0.05, 0.10), (0.2, 0.05), (0.5, -0.1), (0.01, 0.3)])
def test_sample_size_is_the_textbook_formula(p1: float, mde: float) -> None:
    p2 = p1 * (1 + mde)
    pbar = (p1 + p2) / 2
    zb = ss.norm.ppf(0.8)
    n = ((Z975 * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2)))
         ** 2 / (p2 - p1) ** 2)
    res = sample_size(p1, mde)
    assert res.n_a == res.n_b == math.ceil(n)


def test_sample_size_with_unequal_arms_reaches_the_power_exactly() -> None:
    def power(n_a: int, n_b: int, p1: float, p2: float) -> float:
        pbar = (n_a * p1 + n_b * p2) / (n_a + n_b)
        se0 = math.sqrt(pbar * (1 - pbar) * (1 / n_a + 1 / n_b))
        se1 = math.sqrt(p1 * (1 - p1) / n_a + p2 * (1 - p2) / n_b)
        return float(ss.norm.cdf((abs(p2 - p1) - Z975 * se0) / se1))

    res = sample_size(0.1, 0.1, ratio=2.0)
    assert res.n_b == 2 * res.n_a
    assert power(res.n_a, res.n_b, 0.1, 0.11) >= 0.8 > power(res.n_a - 1, res.n_b - 2, 0.1, 0.11)


def test_sample_size_for_means_known_answer() -> None:
    # sd 1, difference 0.5: the classic 63 per group (normal approximation)
    assert sample_size_mean(1.0, 1.0, 0.5).n_a == 63
    res = sample_size_mean(20.0, 30.0, 0.05, alpha=0.01, power=0.9)
    expected = (ss.norm.ppf(0.995) + ss.norm.ppf(0.9)) ** 2 * 2 * 30.0**2 / 1.0**2
    assert res.n_a == math.ceil(expected)
    with pytest.raises(ValueError):
        sample_size(0.95, 0.1)  # treated rate above 1


# ---- fixed-horizon error rates ---------------------------------------------------------------

def _z_rejections(n: int, p_a: float, p_b: float, runs: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sa, sb = rng.binomial(n, p_a, size=runs), rng.binomial(n, p_b, size=runs)
    return np.array([two_proportion_test(a, n, b, n).significant and b >= a
                     if p_b != p_a else two_proportion_test(a, n, b, n).significant
                     for a, b in zip(sa.tolist(), sb.tolist(), strict=True)])


def test_aa_false_positive_rate_is_near_alpha() -> None:
    rate = _z_rejections(20_000, 0.05, 0.05, runs=800, seed=8).mean()
    assert 0.025 <= rate <= 0.08  # SE 0.008 around 0.05


def test_power_at_the_calculated_sample_size_is_about_80_percent() -> None:
    n = sample_size(0.05, 0.10).n_a
    rate = _z_rejections(n, 0.05, 0.055, runs=500, seed=9).mean()
    assert 0.73 <= rate <= 0.87  # SE 0.018 around 0.8


# ---- mSPRT -----------------------------------------------------------------------------------

def test_msprt_single_look_known_answer() -> None:
    d, v, tau = 0.01, 2e-5, 0.005
    lam = math.sqrt(v / (v + tau**2)) * math.exp(tau**2 * d**2 / (2 * v * (v + tau**2)))
    half = math.sqrt(v * (v + tau**2) / tau**2 * (2 * math.log(20) + math.log((v + tau**2) / v)))
    res = msprt([d], [v], tau)
    assert res.p_value == pytest.approx(min(1.0, 1 / lam))
    assert (res.lower[0], res.upper[0]) == pytest.approx((d - half, d + half))
    # at the edge of the confidence sequence the likelihood ratio is exactly 1 / alpha
    edge = msprt([half], [v], tau)
    assert edge.p_value == pytest.approx(0.05)


def test_msprt_p_values_run_down_and_the_confidence_sequence_nests() -> None:
    rng = np.random.default_rng(10)
    ns = np.arange(1, 41) * 500
    sa = rng.binomial(500, 0.05, size=40).cumsum()
    sb = rng.binomial(500, 0.056, size=40).cumsum()
    res = msprt_proportions(sa, ns, sb, ns, baseline_rate=0.05)
    p, lo, hi = np.array(res.p_values), np.array(res.lower), np.array(res.upper)
    assert np.all(np.diff(p) <= 0) and np.all((p > 0) & (p <= 1))
    assert np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) <= 0)
    assert res.tau == pytest.approx(0.005)
    pooled = (sa[-1] + sb[-1] + 1) / (2 * ns[-1] + 2)  # default: τ from the data at hand
    assert msprt_proportions(sa, ns, sb, ns).tau == pytest.approx(0.1 * pooled)
    # p-values use the pooled variance, as the z-test does
    pool = (sa + sb) / (2 * ns)
    again = msprt(sb / ns - sa / ns, pool * (1 - pool) * 2 / ns, 0.005)
    assert res.p_values == pytest.approx(again.p_values)
    record = res.to_record()
    json.dumps(record, allow_nan=False)
    assert record["looks"] == 40 and record["p_value"] == res.p_values[-1]


def test_msprt_holds_alpha_under_continuous_peeking_while_naive_peeking_does_not() -> None:
    rng = np.random.default_rng(11)
    runs, looks, step = 300, 20, 1000
    ns = step * np.arange(1, looks + 1)
    sa = rng.binomial(step, 0.05, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(step, 0.05, size=(runs, looks)).cumsum(axis=1)
    seq = naive = 0
    for a, b in zip(sa, sb, strict=True):
        seq += msprt_proportions(a, ns, b, ns, baseline_rate=0.05).significant
        naive += any(two_proportion_test(x, m, y, m).significant
                     for x, y, m in zip(a.tolist(), b.tolist(), ns.tolist(), strict=True))
    assert seq / runs <= 0.05
    assert naive / runs > 0.14  # about 0.25 with 20 looks (Armitage et al. 1969)


def test_msprt_confidence_sequence_covers_the_true_difference_at_every_look() -> None:
    rng = np.random.default_rng(12)
    runs, looks, step = 200, 20, 2000
    ns = step * np.arange(1, looks + 1)
    sa = rng.binomial(step, 0.05, size=(runs, looks)).cumsum(axis=1)
    sb = rng.binomial(step, 0.06, size=(runs, looks)).cumsum(axis=1)
    missed = detected = 0
    for a, b in zip(sa, sb, strict=True):
        res = msprt_proportions(a, ns, b, ns, baseline_rate=0.05, mde_relative=0.2)
        missed += any(not lo <= 0.01 <= hi for lo, hi in zip(res.lower, res.upper, strict=True))
        detected += res.significant and res.lower[-1] > 0
    assert missed / runs <= 0.05
    assert detected / runs > 0.8  # 40,000 users per arm: the z-test's power is about 0.99


def test_msprt_means_is_msprt_on_the_standard_errors() -> None:
    n = np.array([100, 200, 400])
    ma, mb = np.array([5.0, 5.1, 5.05]), np.array([5.3, 5.4, 5.5])
    va, vb = np.array([4.0, 4.2, 4.1]), np.array([4.5, 4.4, 4.3])
    res = msprt_means(n, ma, va, n, mb, vb, tau=0.3)
    ref = msprt(mb - ma, va / n + vb / n, 0.3)
    assert res.p_values == pytest.approx(ref.p_values)
    assert msprt_means(n, ma, va, n, mb, vb).tau == pytest.approx(0.1 * (5.05 + 5.5) / 2)


def test_msprt_rejects_non_cumulative_counts_and_empty_looks_carry_no_evidence() -> None:
    with pytest.raises(ValueError):
        msprt_proportions([5, 3], [100, 200], [5, 6], [100, 200])
    res = msprt_proportions([0, 0, 5], [0, 0, 100], [0, 0, 9], [0, 0, 100], baseline_rate=0.05)
    assert res.p_values[:2] == (1.0, 1.0) and res.lower[0] == -math.inf
    with pytest.raises(ValueError):
        msprt([0.1], [0.01], tau=0.0)


# ---- verdict ---------------------------------------------------------------------------------

def _cmp(lift: float, lo: float, hi: float, p: float, n: int = 10_000, diff: float = 0.006,
         ) -> Comparison:
    return Comparison("z-test", n, n, 0.05, 0.05 * (1 + lift), diff, diff - 0.004, diff + 0.004,
                      lift, lo, hi, p, 0.05)


def test_verdict_sentences() -> None:
    assert verdict(_cmp(0.123, 0.041, 0.205, 0.003)) == (
        "B is better than A: CTR +12.3% (95% CI +4.1% to +20.5%, p = 0.003).")
    assert verdict(_cmp(-0.08, -0.12, -0.04, 0.0004, diff=-0.004), metric="conversion",
                   names=("control", "new ranker")) == (
        "new ranker is worse than control: conversion -8.0% (95% CI -12.0% to -4.0%, "
        "p < 0.001).")
    assert verdict(_cmp(-0.08, -0.12, -0.04, 0.0004, diff=-0.004), metric="bounce rate",
                   higher_is_better=False).startswith("B is better than A: bounce rate -8.0%")
    needed = SampleSize(22_347, 22_347, 0.05, 0.05, 0.05, 0.8, 1.0)
    assert verdict(_cmp(0.021, -0.03, 0.072, 0.41), needed=needed) == (
        "Not enough evidence yet: CTR +2.1% (95% CI -3.0% to +7.2%, p = 0.410); about 12,300 "
        "more users per variant are needed to detect a 5% lift.")
    assert verdict(_cmp(0.004, -0.02, 0.028, 0.7, n=30_000), needed=needed) == (
        "No clear difference: CTR +0.4% (95% CI -2.0% to +2.8%, p = 0.700); with 30,000 users "
        "per variant the test could detect a 5% lift, so any real effect is likely smaller.")
    assert verdict(_cmp(0.021, -0.03, 0.072, 0.41)) == (
        "Not enough evidence yet: CTR +2.1% (95% CI -3.0% to +7.2%, p = 0.410).")


def test_verdict_srm_wins_and_sequential_p_decides() -> None:
    srm = srm_test([5500, 4500])
    assert verdict(_cmp(0.123, 0.041, 0.205, 0.003), srm=srm) == (
        "Sample ratio mismatch: 5,500 / 4,500 users where 50% / 50% was expected (chi-square "
        "p < 0.001); the split is broken; do not trust the result.")
    assert verdict(_cmp(0.123, 0.041, 0.205, 0.003), srm=srm_test([5020, 4980])).startswith(
        "B is better")
    seq = msprt([0.006], [4e-6], 0.005)  # z = 3 at a single look: not always-valid significant
    assert seq.p_value > 0.05
    assert verdict(_cmp(0.123, 0.041, 0.205, 0.003), sequential=seq) == (
        f"Not enough evidence yet: CTR +12.3% (95% CI +4.1% to +20.5%, always-valid p = "
        f"{seq.p_value:.3f}).")
    empty = two_proportion_test(0, 0, 0, 0)
    assert verdict(empty, metric="CTR").startswith("Not enough data yet: CTR cannot be compared")
    # a real comparison end to end
    real = two_proportion_test(1000, 20_000, 1150, 20_000)
    assert verdict(real).startswith("B is better than A: CTR +15.0% (95% CI +")


def test_records_are_json_safe() -> None:
    for rec in (proportion(0, 0).to_record(), mean_test([1.0], [2.0, 3.0]).to_record(),
                srm_test([10, 12]).to_record(), sample_size(0.05, 0.1).to_record(),
                msprt_proportions([0], [0], [0], [0], baseline_rate=0.1).to_record()):
        json.dumps(rec, allow_nan=False)
    assert sample_size(0.05, 0.1).to_record()["total"] == 2 * 31_234


# ---- the benchmark's simulation --------------------------------------------------------------

def test_simulation_script_runs_small() -> None:
    out = simulate(n_runs=200, seed=1, looks=10)
    assert out["srm_detected"] == 1.0 and out["srm_false_alarm_rate"] <= 0.02
    assert 0.65 <= out["power"] <= 0.92
    assert out["aa_false_positive_rate"] <= 0.1
    assert out["sequential_false_positive_rate"] <= 0.06
    assert out["naive_peeking_false_positive_rate"] >= out["sequential_false_positive_rate"]
    assert out["settings"]["n_per_variant"] == sample_size(0.05, 0.1).n_a
