"""Prediction-powered inference (PPI) for a share: a few labels plus a classifier on every image.

Angelopoulos, Bates, Fannjiang, Jordan, Zrnic, "Prediction-powered inference", Science 2023;
its power-tuned form PPI++: Angelopoulos, Duchi, Zrnic, arXiv:2311.01453, 2023.

A class of a record has N scored images, the classifier's output f_i in [0, 1] on every one
(its decision, or its probability), and labels y_j in [0, 1] (a person's 0/1, or the mean of
several people's) on n of them. With a weight lam in [0, 1],

    theta_hat = lam * mean_N(f) + mean_n(y - lam * f)                             (PPI++ eq. for a mean)

lam = 0 is the labels alone, lam = 1 is plain PPI; the power-tuned lam minimises the variance.

Two populations, two variances:

- `finite_population` (the audit of one record): the target is the mean label over the record's
  own N images, the audit is a simple random sample of n of them without replacement, and f is
  known on all N. Then mean_N(f) is exact, and theta_hat is survey sampling's difference
  (regression) estimator: Var = (1 - n / N) * S2_r / n, with S2_r the variance (ddof 1) of the
  residuals r = y - lam * f over the audited images (the finite-population correction: every
  image audited, no variance left). The power-tuned weight is the sample regression slope
  lam = cov_n(y, f) / var_n(f), clipped to [0, 1].
- `superpopulation` (what ppi-python's `ppi_mean_ci` computes: labelled and unlabelled sets are
  independent samples of an infinite population): Var = var(lam * f_unlabelled) / N +
  var(y - lam * f_labelled) / n (ddof 0), lam = cov(y, f) / ((1 + n / N) var(f)) clipped to [0, 1]
  (PPI++'s tuned weight for a mean). Tests check this form against the package.

The small-sample guard (`guard=True`, what audits use): with few labels a sample can hold no
disagreement between classifier and label (every residual equal) and its variance is 0, so the
interval collapses to a point and misses. The residual variance is then taken over the sample
plus four pseudo-images (f, y) in {0, 1}^2 of weight 1/2 each, two pseudo-observations in all, as
Agresti and Coull add pseudo-counts to a proportion. The point estimate never uses them.
`benchmarks/check_audit.py` measures the coverage with and without it.

Intervals are normal (z) intervals clipped to [0, 1]; a mean over classes (independent audits)
adds the classes' variances.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from s2i_bench.errors import UserError

PSEUDO = ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0))  # (f, y) of the guard's pseudo-images
PSEUDO_WEIGHT = 0.5  # each: two pseudo-observations in all
ESTIMATOR = ("PPI++ (power-tuned lambda in [0, 1]) on a simple random sample of the record's images, "
             "finite-population correction, normal 95% interval, small-sample guard (4 pseudo-images of weight 1/2)")


@dataclass(frozen=True)
class Estimate:
    """One audited share (or difference): the estimate, its interval and how it was made."""

    estimate: float
    ci: tuple[float, float]
    se: float
    lam: float  # the weight of the classifier (0: labels alone)
    n: int  # labelled images
    N: int  # images the estimate is about

    @property
    def half_width(self) -> float:
        return (self.ci[1] - self.ci[0]) / 2.0

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "ci": list(self.ci), "se": self.se, "lambda": self.lam, "n": self.n,
                "N": self.N, "half_width": self.half_width}


def z_value(alpha: float) -> float:
    """The two-sided normal quantile: 1.95996... for alpha = 0.05."""
    if not 0.0 < alpha < 1.0:
        raise UserError(f"alpha {alpha}: must be in (0, 1)")
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def _as_unit(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if a.size and (not np.isfinite(a).all() or a.min() < 0.0 or a.max() > 1.0):
        raise UserError(f"{name}: values must be in [0, 1]")
    return a


def _interval(est: float, se: float, z: float, clip: bool = True) -> tuple[float, float]:
    lo, hi = est - z * se, est + z * se
    return (max(0.0, lo), min(1.0, hi)) if clip else (lo, hi)


def _weighted_var(values: np.ndarray, weights: np.ndarray) -> float:
    """Variance with denominator (sum of weights - 1): ddof 1 when every weight is 1."""
    total = float(weights.sum())
    if total <= 1.0:
        return 0.0
    mean = float((weights * values).sum() / total)
    return float((weights * (values - mean) ** 2).sum() / (total - 1.0))


def residual_variance(y: np.ndarray, f: np.ndarray, lam: float, guard: bool) -> float:
    """S2 of r = y - lam * f over the labelled images (ddof 1), with the guard's pseudo-images."""
    r = y - lam * f
    w = np.ones_like(r)
    if guard:
        pf, py = np.array(PSEUDO).T
        r = np.concatenate([r, py - lam * pf])
        w = np.concatenate([w, np.full(len(PSEUDO), PSEUDO_WEIGHT)])
    return _weighted_var(r, w)


def finite_lambda(y: np.ndarray, f_labelled: np.ndarray) -> float:
    """The sample regression slope of y on f over the labelled images, cov_n(y, f) / var_n(f),
    clipped to [0, 1]; 0 (the labels alone) when f does not vary among them. A perfect classifier
    (y = f) gets exactly 1, so its audited share is its raw share."""
    if y.size < 2:
        return 0.0
    fc = f_labelled - f_labelled.mean()
    sxx = float(fc @ fc)  # the same sums for both, so y = f gives exactly 1
    if sxx <= 0.0:
        return 0.0
    return float(min(1.0, max(0.0, float((y - y.mean()) @ fc) / sxx)))


def finite_population(y, f_labelled, f_all, *, lam: float | None = None, alpha: float = 0.05,
                      guard: bool = True) -> Estimate:
    """The mean label over the N images of `f_all`, from labels `y` on a simple random sample of
    them (`f_labelled`: the classifier's output on those same images). See the module docstring."""
    y, fl, fa = _as_unit(y, "labels"), _as_unit(f_labelled, "classifier on the labelled images"), \
        _as_unit(f_all, "classifier on every image")
    n, N = y.size, fa.size
    if n != fl.size:
        raise UserError(f"{n} labels but {fl.size} classifier outputs for them")
    if not 1 <= n <= N:
        raise UserError(f"{n} labelled images of {N}: need 1..{N}")
    lam = finite_lambda(y, fl) if lam is None else float(lam)
    est = float(lam * fa.mean() + (y - lam * fl).mean())
    var = (1.0 - n / N) * residual_variance(y, fl, lam, guard) / n
    se = math.sqrt(max(var, 0.0))
    return Estimate(est, _interval(est, se, z_value(alpha)), se, lam, n, N)


def superpopulation_lambda(y: np.ndarray, f_labelled: np.ndarray, f_unlabelled: np.ndarray) -> float:
    """PPI++'s tuned weight for a mean: cov(y, f) / ((1 + n / N) var(f)), clipped to [0, 1]; the
    covariance over the labelled set (ddof 0), the variance over both sets (ddof 1)."""
    n, N = y.size, f_unlabelled.size
    var_f = float(np.var(np.concatenate([f_labelled, f_unlabelled]), ddof=1))
    if var_f <= 0.0:
        return 0.0
    cov = float(np.mean((y - y.mean()) * (f_labelled - f_labelled.mean())))
    return float(min(1.0, max(0.0, cov / ((1.0 + n / N) * var_f))))


def superpopulation(y, f_labelled, f_unlabelled, *, lam: float | None = None, alpha: float = 0.05) -> Estimate:
    """PPI(++) for the mean of an infinite population, labelled and unlabelled sets independent
    (ppi-python's `ppi_mean_pointestimate` / `ppi_mean_ci`); the interval is not clipped."""
    y, fl, fu = _as_unit(y, "labels"), _as_unit(f_labelled, "classifier on the labelled images"), \
        _as_unit(f_unlabelled, "classifier on the unlabelled images")
    n, N = y.size, fu.size
    if n < 1 or N < 1 or n != fl.size:
        raise UserError(f"need labels with their classifier outputs (got {n} and {fl.size}) and unlabelled images "
                        f"(got {N})")
    lam = superpopulation_lambda(y, fl, fu) if lam is None else float(lam)
    est = float(lam * fu.mean() + (y - lam * fl).mean())
    var = float(np.var(lam * fu)) / N + float(np.var(y - lam * fl)) / n  # ddof 0, as the package
    se = math.sqrt(var)
    return Estimate(est, _interval(est, se, z_value(alpha), clip=False), se, lam, n, N)


def mean_of(estimates: list[Estimate], alpha: float = 0.05) -> Estimate:
    """The mean over classes audited independently: the mean estimate, variances added / C^2."""
    if not estimates:
        raise UserError("no audited class to average")
    c = len(estimates)
    est = float(np.mean([e.estimate for e in estimates]))
    se = math.sqrt(sum(e.se ** 2 for e in estimates)) / c
    lam = float(np.mean([e.lam for e in estimates]))
    return Estimate(est, _interval(est, se, z_value(alpha)), se, lam, sum(e.n for e in estimates),
                    sum(e.N for e in estimates))


def labels_needed(residual_var: float, N: int, half_width: float, alpha: float = 0.05) -> int:
    """Labels for a finite-population interval of at most `half_width`: z^2 S2 / h^2 labels for an
    infinite population, n0, shrunk by the finite-population correction to N n0 / (N + n0)
    (solving z sqrt((1 - n / N) S2 / n) <= h, with S2 the residual variance), at least 2."""
    if not 0.0 < half_width < 1.0:
        raise UserError(f"half-width {half_width}: a share in (0, 1)")
    n0 = z_value(alpha) ** 2 * max(float(residual_var), 0.0) / half_width ** 2
    if N <= 0:
        return int(math.ceil(n0))
    n = N * n0 / (N + n0)
    return int(min(N, max(2, math.ceil(n - 1e-9))))


# -- paired differences (compare) -------------------------------------------------------------------
# Pseudo-images of the guard for a difference d = y_A - y_B with predictor g = f_A - f_B: symmetric
# about 0, so they widen the interval without moving it.
PSEUDO_DIFFERENCE = ((0.0, 1.0), (0.0, -1.0), (1.0, 0.0), (-1.0, 0.0))  # (g, d)


@dataclass(frozen=True)
class Difference:
    """An audited difference of two systems audited on the same images' positions."""

    estimate: Estimate  # of the mean of y_A - y_B (its ci unclipped, in [-1, 1])
    p_value: float  # two-sided, normal


def paired_difference(y_a, y_b, f_a_labelled, f_b_labelled, f_a_all, f_b_all, *, units: int,
                      alpha: float = 0.05) -> Difference:
    """System A minus system B, both audited at the same positions of the same plan (the same
    sounds, draw by draw): PPI++ on the differences d = y_A - y_B with predictor g = f_A - f_B.

    The target is the systems' expected share on sounds like these (not only on these images), so
    the variance adds the sampling of the N images to the audit's: S2_d / units + (1 - n / N) S2_r / n,
    with S2_d the variance of d over the labelled images and `units` the independent sounds (N
    images of K draws of `units` sounds: counting sounds, not images, keeps the term conservative
    when the draws of one sound agree). Both variances carry the guard's pseudo-images.
    """
    ya, yb = _as_unit(y_a, "labels of A"), _as_unit(y_b, "labels of B")
    fal, fbl = _as_unit(f_a_labelled, "classifier of A"), _as_unit(f_b_labelled, "classifier of B")
    faa, fba = _as_unit(f_a_all, "classifier of A"), _as_unit(f_b_all, "classifier of B")
    if not (ya.size == yb.size == fal.size == fbl.size) or faa.size != fba.size:
        raise UserError("a paired difference needs both systems labelled and scored at the same positions")
    d, g, g_all = ya - yb, fal - fbl, faa - fba
    n, N = d.size, g_all.size
    if not 1 <= n <= N or units < 1:
        raise UserError(f"{n} labelled positions of {N} ({units} sounds): need 1..{N}")
    lam = finite_lambda(d, g)
    est = float(lam * g_all.mean() + (d - lam * g).mean())
    pg, pd = np.array(PSEUDO_DIFFERENCE).T
    w = np.concatenate([np.ones(n), np.full(len(pg), PSEUDO_WEIGHT)])
    s2_r = _weighted_var(np.concatenate([d - lam * g, pd - lam * pg]), w)
    s2_d = _weighted_var(np.concatenate([d, pd]), w)
    var = s2_d / units + (1.0 - n / N) * s2_r / n
    se = math.sqrt(var)
    z = z_value(alpha)
    p = 1.0 if se == 0.0 else 2.0 * (1.0 - NormalDist().cdf(abs(est) / se))
    return Difference(Estimate(est, (est - z * se, est + z * se), se, lam, n, N), float(min(1.0, p)))
