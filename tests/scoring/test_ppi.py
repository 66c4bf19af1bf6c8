"""Prediction-powered inference: against ppi-python, against a direct numpy implementation of the
equations, and the invariants an audit relies on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import norm

from s2i_bench.errors import UserError
from s2i_bench.scoring import ppi

ppi_py = pytest.importorskip("ppi_py", reason="ppi-python is a test extra")
Z = 1.959963984540054


def _world(seed: int, n: int, N: int, acc: float = 0.8):
    """Labels y, the classifier's probability f and its decision, for n labelled and N others."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n + N) < 0.4).astype(float)
    p = np.clip(np.where(y == 1, rng.normal(acc, 0.2, n + N), rng.normal(1 - acc, 0.2, n + N)), 0, 1)
    return y[:n], p[:n], p[n:], (p >= 0.5).astype(float)


@pytest.mark.parametrize("seed,n,N,lam", [(0, 30, 300, None), (1, 12, 80, None), (2, 50, 500, 1.0), (3, 40, 90, 0.0),
                                          (4, 25, 400, 0.37)])
def test_superpopulation_equals_ppi_python(seed, n, N, lam):
    y, f_lab, f_unl, _ = _world(seed, n, N)
    ours = ppi.superpopulation(y, f_lab, f_unl, lam=lam, alpha=0.05)
    point = ppi_py.ppi_mean_pointestimate(y, f_lab, f_unl, lam=lam)
    lo, hi = ppi_py.ppi_mean_ci(y, f_lab, f_unl, alpha=0.05, lam=lam)
    assert ours.estimate == pytest.approx(float(np.ravel(point)[0]), rel=1e-12, abs=1e-12)
    assert ours.ci[0] == pytest.approx(float(np.ravel(lo)[0]), rel=1e-9, abs=1e-12)
    assert ours.ci[1] == pytest.approx(float(np.ravel(hi)[0]), rel=1e-9, abs=1e-12)


def test_superpopulation_lambda_is_ppi_plus_plus_tuned_weight():
    y, f_lab, f_unl, _ = _world(5, 40, 200)
    # the package's tuned weight for a mean, through its own function (clipped to [0, 1])
    theta = ppi_py.ppi_mean_pointestimate(y, f_lab, f_unl, lam=1)
    lam = ppi_py.ppi._calc_lam_glm((y - theta)[:, None], (f_lab - theta)[:, None], (f_unl - theta)[:, None],
                                   np.eye(1), clip=True)
    assert ppi.superpopulation_lambda(y, f_lab, f_unl) == pytest.approx(float(lam), rel=1e-12)


def _finite_by_hand(y, fl, fa, guard=True):
    """The module docstring's equations, written out once more in plain numpy."""
    n, N = len(y), len(fa)
    lam = np.clip(np.cov(y, fl)[0, 1] / np.var(fl, ddof=1), 0, 1) if np.var(fl) > 0 else 0.0
    est = lam * fa.mean() + np.mean(y - lam * fl)
    r = list(y - lam * fl)
    w = [1.0] * n
    if guard:
        for pf, py in ((0, 0), (0, 1), (1, 0), (1, 1)):
            r.append(py - lam * pf)
            w.append(0.5)
    r, w = np.array(r), np.array(w)
    m = (w * r).sum() / w.sum()
    s2 = (w * (r - m) ** 2).sum() / (w.sum() - 1)
    se = math.sqrt((1 - n / N) * s2 / n)
    return est, max(0.0, est - Z * se), min(1.0, est + Z * se), lam


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("guard", [True, False])
def test_finite_population_equals_the_equations(seed, guard):
    rng = np.random.default_rng(seed)
    N = int(rng.integers(20, 200))
    n = int(rng.integers(3, N))
    y, p, _, _ = _world(seed, N, 0)  # every image's label and probability
    pick = rng.choice(N, n, replace=False)
    out = ppi.finite_population(y[pick], p[pick], p, guard=guard)
    est, lo, hi, lam = _finite_by_hand(y[pick], p[pick], p, guard)
    assert out.estimate == pytest.approx(est, abs=1e-12)
    assert out.ci == pytest.approx((lo, hi), abs=1e-12)
    assert out.lam == pytest.approx(lam, abs=1e-12)


def test_finite_population_fixed_lambda_is_unbiased_with_the_fpc_variance():
    """Design-based check: over every sample of n = 3 of N = 9 images (84 samples), the estimate
    with a fixed lam averages to the truth and its variance is (1 - n / N) S2_N / n (ddof 1)."""
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1], float)
    f = np.array([0.9, 0.2, 0.6, 0.4, 0.1, 0.7, 0.8, 0.3, 0.5])
    lam, n, N = 0.6, 3, 9
    ests = [ppi.finite_population(y[list(s)], f[list(s)], f, lam=lam, guard=False).estimate
            for s in itertools.combinations(range(N), n)]
    assert np.mean(ests) == pytest.approx(y.mean(), abs=1e-12)
    s2 = np.var(y - lam * f, ddof=1)
    assert np.var(ests) == pytest.approx((1 - n / N) * s2 / n, rel=1e-12)


def test_every_image_audited_gives_the_labels_mean_and_a_point():
    y, p, _, _ = _world(7, 50, 0)
    out = ppi.finite_population(y, p, p)
    assert out.estimate == pytest.approx(y.mean(), abs=1e-12)
    assert out.ci[0] == out.ci[1] == pytest.approx(y.mean(), abs=1e-12)
    assert out.half_width == 0.0


def test_perfect_classifier_audited_equals_raw():
    rng = np.random.default_rng(8)
    f = (rng.random(300) < 0.3).astype(float)
    for _ in range(20):
        pick = rng.choice(300, 25, replace=False)
        if f[pick].min() == f[pick].max():
            continue
        out = ppi.finite_population(f[pick], f[pick], f)
        assert out.lam == 1.0
        assert out.estimate == pytest.approx(f.mean(), abs=1e-12)


def test_guard_keeps_an_interval_when_the_sample_has_no_disagreement():
    f = np.zeros(400)
    y = np.zeros(25)
    bare = ppi.finite_population(y, f[:25], f, guard=False)
    guarded = ppi.finite_population(y, f[:25], f)
    assert bare.ci == (0.0, 0.0)
    assert guarded.ci[0] == 0.0 and 0.03 < guarded.ci[1] < 0.15


def test_mean_of_classes_adds_variances():
    a = ppi.Estimate(0.2, (0.1, 0.3), 0.05, 0.5, 10, 100)
    b = ppi.Estimate(0.6, (0.4, 0.8), 0.1, 0.2, 10, 100)
    m = ppi.mean_of([a, b])
    assert m.estimate == pytest.approx(0.4)
    assert m.se == pytest.approx(math.sqrt(0.05 ** 2 + 0.1 ** 2) / 2)
    assert m.ci == pytest.approx((0.4 - Z * m.se, 0.4 + Z * m.se))
    assert (m.n, m.N) == (20, 200)


@pytest.mark.parametrize("s2,N,h", [(0.25, 10_000, 0.05), (0.1, 120, 0.05), (0.2, 50, 0.1), (0.02, 1000, 0.02)])
def test_labels_needed_is_the_smallest_n_reaching_the_half_width(s2, N, h):
    n = ppi.labels_needed(s2, N, h)

    def hw(k):
        return Z * math.sqrt((1 - k / N) * s2 / k)
    assert hw(n) <= h + 1e-12
    assert n <= 2 or hw(n - 1) > h


def test_paired_difference_equations_and_a_self_comparison():
    rng = np.random.default_rng(9)
    N, n = 200, 40
    fa, fb = rng.random(N), rng.random(N)
    pick = rng.choice(N, n, replace=False)
    ya = (rng.random(n) < fa[pick]).astype(float)
    yb = (rng.random(n) < fb[pick]).astype(float)
    out = ppi.paired_difference(ya, yb, fa[pick], fb[pick], fa, fb, units=N)
    d, g = ya - yb, fa[pick] - fb[pick]
    lam = float(np.clip(np.cov(d, g)[0, 1] / np.var(g, ddof=1), 0, 1))
    est = lam * (fa - fb).mean() + np.mean(d - lam * g)
    w = np.r_[np.ones(n), [0.5] * 4]
    pg, pd = np.array([0, 0, 1, -1.0]), np.array([1, -1, 0, 0.0])

    def wvar(v):
        m = (w * v).sum() / w.sum()
        return (w * (v - m) ** 2).sum() / (w.sum() - 1)
    se = math.sqrt(wvar(np.r_[d, pd]) / N + (1 - n / N) * wvar(np.r_[d - lam * g, pd - lam * pg]) / n)
    assert out.estimate.estimate == pytest.approx(est, abs=1e-12)
    assert out.estimate.se == pytest.approx(se, rel=1e-12)
    assert out.p_value == pytest.approx(2 * norm.sf(abs(est) / se), rel=1e-9)
    same = ppi.paired_difference(ya, ya, fa[pick], fa[pick], fa, fa, units=N)
    assert same.estimate.estimate == 0.0 and same.p_value == 1.0


def test_bad_inputs_are_one_line():
    with pytest.raises(UserError, match=r"values must be in \[0, 1\]"):
        ppi.finite_population([2.0], [0.5], [0.5, 0.5])
    with pytest.raises(UserError, match="labelled images of"):
        ppi.finite_population([1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 0.0])
    with pytest.raises(UserError, match="half-width"):
        ppi.labels_needed(0.2, 100, 0.0)
