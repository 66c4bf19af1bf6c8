"""benchmarks/check_audit.py's core simulation on tiny seeded arrays (no scoring): it measures the
coverage of a valid interval near its nominal level and catches a miscalibrated one."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import check_audit as C
from s2i_bench.scoring import ppi


def _class(seed: int, m: int = 400, share: float = 0.3, acc: float = 0.8):
    """Truth (m,) 0/1 and a classifier's probability and decision that agree with it `acc` of the time."""
    rng = np.random.default_rng(seed)
    y = (rng.random(m) < share).astype(float)
    right = rng.random(m) < acc
    dec = np.where(right, y, 1.0 - y)
    prob = np.clip(0.5 + (dec - 0.5) * rng.uniform(0.2, 1.0, m), 0.0, 1.0)
    return y, dec, prob


def _positions(m: int, n: int, draws: int):
    return [C.class_positions("plan", "cls", m, n, i, seed=7) for i in range(draws)]


def test_coverage_of_the_audited_interval_is_near_nominal():
    y, _, prob = _class(0)
    res = C.audit_draws(y, prob, _positions(y.size, 40, 400), float(y.mean()))
    cov = res["covered"].mean()
    assert 0.90 <= cov <= 0.99, cov
    assert abs(res["error"].mean()) < 0.01  # unbiased: the estimator is a difference estimator
    # the labels alone: wider than with the classifier
    alone = C.audit_draws(y, None, _positions(y.size, 40, 400), float(y.mean()))
    assert alone["width"].mean() > res["width"].mean()


def test_a_miscalibrated_interval_is_caught():
    y, dec, prob = _class(1)
    target = float(y.mean())
    # a nominal 50% interval called 95%: the measured coverage says so
    half = C.audit_draws(y, prob, _positions(y.size, 40, 400), target, alpha=0.5)
    assert half["covered"].mean() < 0.65
    # labels from a judge that says "informative" too often: the interval covers its truth, not this one
    rng = np.random.default_rng(3)
    biased = np.where(rng.random(y.size) < 0.2, 1.0, y)
    res = C.audit_draws(biased, prob, _positions(y.size, 100, 200), target)
    assert res["covered"].mean() < 0.5
    assert res["error"].mean() > 0.05


def test_audit_draws_is_finite_population_per_draw():
    y, dec, _ = _class(2, m=60)
    pos = _positions(60, 12, 3)
    res = C.audit_draws(y, dec, pos, float(y.mean()), guard=False)
    for i, p in enumerate(pos):
        e = ppi.finite_population(y[p], dec[p], dec, guard=False)
        assert res["width"][i] == pytest.approx(e.ci[1] - e.ci[0])
        assert res["error"][i] == pytest.approx(e.estimate - y.mean())


def test_positions_are_seeded_shared_by_a_plan_and_without_replacement():
    a = C.class_positions("plan", "dog", 240, 50, 3, seed=0)
    assert np.array_equal(a, C.class_positions("plan", "dog", 240, 50, 3, seed=0))
    assert not np.array_equal(a, C.class_positions("plan", "dog", 240, 50, 4, seed=0))
    assert not np.array_equal(a, C.class_positions("other", "dog", 240, 50, 3, seed=0))
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0) and a.max() < 240


def test_rejections_match_the_normal_test_of_the_class_mean():
    rng = np.random.default_rng(4)
    est, se = rng.normal(0, 0.05, (500, 5)), np.full((500, 5), 0.05)
    rej = C.rejections(est, se)
    z = est.mean(axis=1) / (np.sqrt(5 * 0.05 ** 2) / 5)
    assert np.array_equal(rej, np.abs(z) > 1.959963984540054)
    assert 0.02 < rej.mean() < 0.08  # under H0, about 5%
    assert C.rejections(est + 0.2, se).mean() > 0.99


def test_paired_draws_false_positives_and_power():
    y, _, prob = _class(5, m=200, share=0.4)
    rng = np.random.default_rng(6)
    y_b = np.where(rng.random(200) < 0.1, 1.0 - y, y)  # an A/A twin: same expected share, other draws
    pos = _positions(200, 40, 200)
    est, se = C.paired_draws(y, y_b, prob, prob, pos, units=100)
    assert (np.abs(est) > 1.96 * se).mean() <= 0.05
    lower = np.where(y == 1.0, (rng.random(200) < 0.4).astype(float), 0.0)  # ~24 points fewer
    est, se = C.paired_draws(y, lower, prob, prob * 0.5, pos, units=100)
    assert (np.abs(est) > 1.96 * se).mean() > 0.8


def test_flip_and_rate():
    y = np.zeros(10_000)
    noisy = C.flip(y, 0.1, np.random.default_rng(0))
    assert 0.09 < noisy.mean() < 0.11
    r = C.rate([True, False, True, True])
    assert r["rate"] == 0.75 and r["n"] == 4 and r["ci"][0] < 0.75 < r["ci"][1]
