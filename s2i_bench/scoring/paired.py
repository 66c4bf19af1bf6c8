"""The paired statistics of `s2i-bench compare` (see `scoring.compare`): one pair of systems at
one checkpoint, or over the series of checkpoints, on the same test sounds."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from s2i_bench.errors import UserError
from s2i_bench.scoring import records as R
from s2i_bench.scoring.metrics import series_metrics_columns
from s2i_bench.scoring.series import d_update_flags, last_per_epoch
from s2i_bench.scoring.systems import Decisions, System, _at_epoch, _epochs, _slices
from s2i_bench.stats import bootstrap_p_value, mcnemar_exact, minimum_detectable_difference

MEASURES = {"raw": "informative", "corrected": "informative", "true": "truth", "iis": "iis"}
ALPHA = 0.05
POWER = 0.8
SERIES_METRICS = ("window_average", "max_moving_average")


# -- the bootstrap ----------------------------------------------------------------------------------
def _sound_weights(rng, slices: dict[str, slice], keys, n_boot: int) -> dict[str, np.ndarray]:
    """Per class: (B, n_c) resampling counts of its sounds (multinomial = a bootstrap resample)."""
    out = {}
    for k in keys:
        n = slices[k].stop - slices[k].start
        out[k] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64) if n else np.zeros((n_boot, 0))
    return out


def _member_picks(rng, n_members: int, n_boot: int) -> np.ndarray:
    """(B, M) how often each member is drawn (identity when there is one)."""
    if n_members == 1:
        return np.ones((n_boot, 1))
    return rng.multinomial(n_members, np.full(n_members, 1.0 / n_members), size=n_boot).astype(np.float64)


def _youden_replicates(rng, bundle, key: str, n_boot: int):
    """(point Se, Sp, (B,) Se*, (B,) Sp*) from the classifier's test outcomes, or None."""
    outcome = bundle.test_outcomes(key) if bundle is not None else None
    if outcome is None:
        return None
    labels, preds = (np.asarray(x).astype(int) for x in outcome)
    tp, fn = int(((labels == 1) & (preds == 1)).sum()), int(((labels == 1) & (preds == 0)).sum())
    tn, fp = int(((labels == 0) & (preds == 0)).sum()), int(((labels == 0) & (preds == 1)).sum())
    if tp + fn == 0 or tn + fp == 0:
        return None
    n = tp + fn + tn + fp
    cells = rng.multinomial(n, np.array([tp, fn, tn, fp]) / n, size=n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        se_b = cells[:, 0] / (cells[:, 0] + cells[:, 1])
        sp_b = cells[:, 2] / (cells[:, 2] + cells[:, 3])
    return tp / (tp + fn), tn / (tn + fp), se_b, sp_b


def _percentile(values: np.ndarray, confidence: float) -> list[float] | None:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return None
    a = (1 - confidence) / 2
    return [float(np.quantile(v, a)), float(np.quantile(v, 1 - a))]

# -- one checkpoint -----------------------------------------------------------------------------------
def compare_checkpoint(a: System, b: System, da: Decisions, db: Decisions, keys, bundle, *, n_boot: int, seed: int,
                       confidence: float) -> list[dict]:
    """Rows (class or mean) x (raw, corrected, true) for one pair at one checkpoint."""
    if da.order != db.order:
        raise UserError(f"{a.name} and {b.name} were scored on different sounds (their decisions' order differs)")
    rng = np.random.default_rng(seed)
    weights = _sound_weights(rng, da.slices, keys, n_boot)
    picks_a, picks_b = _member_picks(rng, len(a.members), n_boot), _member_picks(rng, len(b.members), n_boot)
    youden = {k: _youden_replicates(rng, bundle, k, n_boot) for k in keys}
    rows = []
    per_measure_boot: dict[str, list[np.ndarray]] = {m: [] for m in MEASURES}
    per_measure_point: dict[str, list[float]] = {m: [] for m in MEASURES}
    sounds_total, discordant_total = 0, 0.0
    for k in keys:
        sl = da.slices[k]
        n = sl.stop - sl.start
        for measure, source in MEASURES.items():
            xa, xb = getattr(da, source), getattr(db, source)
            if xa is None or xb is None or n == 0:
                continue
            sa, sb = xa[:, :, sl].mean(axis=1), xb[:, :, sl].mean(axis=1)  # (M, n): per member, per sound
            point = float(sa.mean() - sb.mean())
            # bootstrap: sounds (shared by A and B), and each group's seeds
            ba = (picks_a @ sa) / picks_a.sum(1, keepdims=True)  # (B, n)
            bb = (picks_b @ sb) / picks_b.sum(1, keepdims=True)
            w = weights[k]
            boot = ((ba - bb) * w).sum(1) / n  # (B,)
            test, p = "paired bootstrap over sounds" + (" and seeds" if a.is_group or b.is_group else ""), None
            discord = float(np.mean(xa[:, :, sl].mean(0) != xb[:, :, sl].mean(0)))
            if not a.is_group and not b.is_group and source != "iis":
                only_a = int((xa[0][:, sl] & ~xb[0][:, sl]).sum())
                only_b = int((~xa[0][:, sl] & xb[0][:, sl]).sum())
                p, test = mcnemar_exact(only_a, only_b), "exact McNemar on the paired images"
                discord = (only_a + only_b) / xa[0][:, sl].size
            if measure == "corrected":
                y = youden[k]
                if y is None or y[0] + y[1] - 1 <= 0:
                    continue
                point, boot = _corrected_difference(float(sa.mean()), float(sb.mean()), (ba * w).sum(1) / n,
                                                    (bb * w).sum(1) / n, y)
                test = ("the raw test (a positive rescaling); interval: bootstrap over sounds" +
                        (" and seeds" if a.is_group or b.is_group else "") + " and the classifier's test set")
            if p is None:
                p = bootstrap_p_value(boot)
            if measure == "raw":
                sounds_total += n
                discordant_total += discord * n
            rows.append({"class": k, "measure": measure, "difference": point, "ci": _percentile(boot, confidence),
                         "p_value": float(p), "test": test, "n_sounds": n,
                         "mde": minimum_detectable_difference(n, discord, 1 - ALPHA, POWER)
                         if measure in ("raw", "true") else None})
            per_measure_boot[measure].append(boot)
            per_measure_point[measure].append(point)
    for measure in MEASURES:
        boots = per_measure_boot[measure]
        if not boots or len(boots) != len(keys):
            continue
        boot = np.mean(np.stack(boots), axis=0)
        rows.append({"class": "mean", "measure": measure, "difference": float(np.mean(per_measure_point[measure])),
                     "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                     "test": "paired bootstrap over sounds (stratified by class)"
                             + (" and seeds" if a.is_group or b.is_group else ""),
                     "n_sounds": sounds_total,
                     "mde": (minimum_detectable_difference(sounds_total, discordant_total / max(sounds_total, 1),
                                                           1 - ALPHA, POWER) if measure in ("raw", "true") else None)})
    return rows


def _corrected_difference(ra: float, rb: float, ra_boot: np.ndarray, rb_boot: np.ndarray, youden) -> tuple:
    """The difference of the two corrected shares as the records give them: Rogan-Gladen
    (raw - (1 - Sp)) / (Se + Sp - 1), clipped to [0, 1], for A and for B; the replicates use the
    classifier's resampled Se and Sp (NaN where Se + Sp - 1 <= 0). Without the clip a weak
    classifier (Se + Sp - 1 = 0.3) would stretch a 50-point raw difference to 167 points, a
    difference no two shares can have."""
    se, sp, se_b, sp_b = youden

    def corrected(raw, se, sp):
        with np.errstate(divide="ignore", invalid="ignore"):
            j = se + sp - 1
            return np.where(j > 0, np.clip((raw - (1 - sp)) / j, 0.0, 1.0), np.nan)

    point = float(corrected(ra, se, sp) - corrected(rb, se, sp))
    return point, corrected(ra_boot, se_b, sp_b) - corrected(rb_boot, se_b, sp_b)


def _distribution_rows(a: System, b: System, key: tuple, epoch: int | None) -> list[dict]:
    """FID and KID compare two sets of images, not image by image: an unpaired test from each
    record's bootstrap interval (normal approximation: se = width / (2 z)), for single
    translators whose records carry them."""
    if a.is_group or b.is_group:
        return []
    ra, rb = _at_epoch(a.members[0], key, epoch), _at_epoch(b.members[0], key, epoch)
    z = NormalDist().inv_cdf(0.975)
    rows = []
    for name in ("fid", "kid"):
        va, vb, ca, cb = (ra.image_metric(name), rb.image_metric(name),
                          ra.image_metric_ci(name), rb.image_metric_ci(name))
        if va is None or vb is None or not ca or not cb:
            continue
        if ra.recipe_identity != rb.recipe_identity:
            continue  # another recipe (network, weights, resize, ...): not comparable
        se = np.hypot((ca[1] - ca[0]) / (2 * z), (cb[1] - cb[0]) / (2 * z))
        d = float(va - vb)
        p = 1.0 if se == 0 else float(2 * (1 - NormalDist().cdf(abs(d) / se)))
        rows.append({"class": "all", "measure": name, "metric": "image-set distance at epoch "
                     + ("last" if epoch is None else str(epoch)), "difference": d, "ci": [d - z * se, d + z * se],
                     "p_value": p, "n_sounds": None, "mde": None,
                     "test": "unpaired: normal approximation from the two records' bootstrap intervals"})
    return rows


# -- series metrics -------------------------------------------------------------------------------------
def compare_series(a: System, b: System, key: tuple, keys, protocol, bundle, *, n_boot: int, seed: int,
                   confidence: float) -> list[dict]:
    """Window average and maximum moving average: a paired bootstrap over sounds (and seeds) that
    recomputes each replicate's whole series metric."""
    spec = protocol.metrics
    epochs = sorted(set.intersection(*[_epochs(m, key) for s in (a, b) for m in s.members]))
    if len(epochs) < 2:
        raise UserError(f"{a.name} and {b.name} share {len(epochs)} scored epoch(s); a series comparison needs more "
                        "(or compare one checkpoint with --epoch)")
    rng = np.random.default_rng(seed)
    first = _at_epoch(a.members[0], key, epochs[0])
    slices = _slices(first, keys)
    weights = _sound_weights(rng, slices, keys, n_boot)
    picks = {s.name: _member_picks(rng, len(s.members), n_boot) for s in (a, b)}
    youden = {k: _youden_replicates(rng, bundle, k, n_boot) for k in keys}
    ep = np.array(epochs)
    test = "paired bootstrap over sounds" + (" and seeds" if a.is_group or b.is_group else "")

    rows = []
    for measure, source in MEASURES.items():
        ca, fa = _series_cube(a, key, epochs, first, source, protocol.training.d_every_epochs)
        cb, fb = _series_cube(b, key, epochs, first, source, protocol.training.d_every_epochs)
        if ca is None or cb is None:
            continue
        metric_boot: dict[str, dict[str, np.ndarray]] = {m: {} for m in SERIES_METRICS}
        metric_point: dict[str, dict[str, float]] = {m: {} for m in SERIES_METRICS}
        for k in keys:
            sl = slices[k]
            n = sl.stop - sl.start
            if n == 0:
                continue
            if measure == "corrected" and (youden[k] is None or youden[k][0] + youden[k][1] - 1 <= 0):
                continue
            w = weights[k] / n  # (B, n)
            vals = {s.name: _series_values(cube, flags, picks[s.name], sl, w, ep, spec)
                    for s, cube, flags in ((a, ca, fa), (b, cb, fb))}
            for metric in SERIES_METRICS:
                pa, ba = vals[a.name][metric]
                pb, bb = vals[b.name][metric]
                point, boot = pa - pb, ba - bb  # (B,)
                if measure == "corrected":  # the metric's value corrected and clipped, per system
                    point, boot = _corrected_difference(pa, pb, ba, bb, youden[k])
                metric_boot[metric][k] = boot
                metric_point[metric][k] = point
                rows.append({"class": k, "measure": measure, "metric": metric, "difference": float(point),
                             "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                             "test": test + " recomputing the series metric", "n_sounds": n, "mde": None})
        for metric in SERIES_METRICS:
            if len(metric_boot[metric]) == len(keys):
                boot = np.mean(np.stack(list(metric_boot[metric].values())), axis=0)
                rows.append({"class": "mean", "measure": measure, "metric": metric,
                             "difference": float(np.mean(list(metric_point[metric].values()))),
                             "ci": _percentile(boot, confidence), "p_value": bootstrap_p_value(boot),
                             "test": "paired bootstrap over sounds (stratified by class)"
                                     + (" and seeds" if a.is_group or b.is_group else "")
                                     + " recomputing the series metric",
                             "n_sounds": sum(s.stop - s.start for s in slices.values()), "mde": None})
    return rows


def _series_cube(system: System, key: tuple, epochs: list[int], first: R.Record, source: str, d_every: int):
    """One system's (M, E, N) per-sound shares of `source` over the epochs, and each member's
    d_update flags (M, E); (None, None) when a record lacks `source`."""
    cubes, flags = [], []
    order = first.decisions()["order"]
    for m in system.members:
        by_epoch = last_per_epoch([r for r in m.records if r.series_key == key])
        mats = []
        for e in epochs:
            d = by_epoch[e].decisions()
            if d["order"] != order:
                raise UserError(f"{system.name}/{m.name}: epoch {e} was scored on other sounds")
            if d[source] is None:
                return None, None
            mats.append(d[source].mean(axis=0))  # (N,)
        cubes.append(np.stack(mats))  # (E, N)
        flags.append(d_update_flags(epochs, by_epoch, m.d_update_epochs, d_every))
    return np.stack(cubes), np.array(flags, dtype=bool)


def _series_values(cube: np.ndarray, flags: np.ndarray, picks: np.ndarray, sl: slice, w: np.ndarray, ep: np.ndarray,
                   spec) -> dict[str, tuple]:
    """One system's series metrics for one class: per metric, (the point value averaged over its
    seeds, (B,) the replicates, each recomputing the metric on a draw of sounds `w` (B, n) and
    of seeds `picks` (B, M))."""
    per_member_point, per_member_boot = [], []
    for mi in range(cube.shape[0]):
        x = cube[mi][:, sl]  # (E, n)
        point = series_metrics_columns(ep, x.mean(axis=1, keepdims=True), flags[mi],
                                       skip=spec.skip_after_d_update, fill=spec.skip_fill,
                                       window=(spec.window_start, spec.window_end),
                                       length=spec.moving_average)
        boot = series_metrics_columns(ep, x @ w.T, flags[mi], skip=spec.skip_after_d_update,
                                      fill=spec.skip_fill, window=(spec.window_start, spec.window_end),
                                      length=spec.moving_average)
        per_member_point.append({m: point[m][0] for m in SERIES_METRICS})
        per_member_boot.append(boot)
    return {m: (float(np.mean([p[m] for p in per_member_point])),
                np.where(picks > 0, picks * np.stack([bt[m] for bt in per_member_boot], axis=1), 0.0).sum(1)
                / picks.sum(1))
            for m in SERIES_METRICS}
