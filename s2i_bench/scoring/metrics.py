"""The informativity metrics of the paper (SPEC section 6), as pure functions.

Numbers in, numbers out: numpy arrays / pandas frames, no torch, no files. Every length and
window comes from the caller or from a `MetricsSpec` of the protocol.

A per-epoch series is three aligned arrays:

    epochs    (T,) int, strictly increasing; an epoch absent from it is *missing* and is never
              invented (no interpolation, no fill)
    values    (T,) float in [0, 1]; NaN = no value at that epoch (e.g. left out below)
    d_update  (T,) bool, True where the discriminator was trained before that epoch

The paper's pipeline on such a series (per class; I(t) is the mean of the replaced classes):

1. post-update replacement: for every D-update epoch u, epochs u .. u+skip-1 (u, u+1 in the
   paper) are replaced, in increasing epoch order, by the mean of the values at the `fill` (5)
   preceding epochs t-5 .. t-1 that exist, already replaced where they were replaced
   themselves; when none of them has a value the epoch is *left out* (NaN);
2. window average: mean over epochs start..end inclusive of the values that exist;
3. maximum moving average: the largest mean over a full window of `length` (50) consecutive
   epochs t-length+1 .. t, all present with a value; a window touching a missing or left-out
   epoch is not full. Ties go to the earliest epoch.

Beyond the paper: the Rogan-Gladen prevalence correction with a bootstrap interval that
resamples both the scored images and the classifier's test set, and the class-match rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# Moving averages are compared with this slack so that two windows holding the same numbers
# in another order (a rounding difference of one ulp) count as a tie -> the earliest wins.
TIE_TOLERANCE = 1e-12


# -- the paper's series metrics ----------------------------------------------------------------
@dataclass(frozen=True)
class Replaced:
    """A series after the post-update replacement."""

    epochs: np.ndarray  # (T,) int
    values: np.ndarray  # (T,) float, NaN where left out or without a value
    replaced: np.ndarray  # (T,) bool: the value was replaced by the mean of earlier epochs
    left_out: np.ndarray  # (T,) bool: a replaced epoch with no earlier value to replace it by


def _as_series(epochs, values, d_update=None):
    epochs = np.asarray(epochs, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if epochs.ndim != 1 or values.shape != epochs.shape:
        raise ValueError(f"epochs {epochs.shape} and values {values.shape} must be 1-D and aligned")
    if epochs.size and np.any(np.diff(epochs) <= 0):
        raise ValueError("epochs must be strictly increasing (sort them, drop duplicates)")
    if d_update is None:
        return epochs, values
    d_update = np.asarray(d_update, dtype=bool)
    if d_update.shape != epochs.shape:
        raise ValueError(f"d_update {d_update.shape} must be aligned with epochs {epochs.shape}")
    return epochs, values, d_update


def post_update_epochs(epochs, d_update, skip: int) -> np.ndarray:
    """The epochs of the series that the replacement touches: u .. u+skip-1 for every D-update
    epoch u, restricted to the epochs present (a missing epoch is not invented), sorted."""
    epochs, _, d_update = _as_series(epochs, np.zeros(len(epochs)), d_update)
    targets = {int(u) + i for u in epochs[d_update] for i in range(skip)}
    return np.array(sorted(targets.intersection(epochs.tolist())), dtype=np.int64)


def replace_post_update(epochs, values, d_update, *, skip: int = 2, fill: int = 5) -> Replaced:
    """SPEC section 6, post-update skip. See the module docstring.

    `skip` epochs from each D-update epoch on are replaced in increasing order, each by the mean
    of the values at epochs t-fill .. t-1 that exist and have a value (replaced values included,
    so a replaced epoch feeds the next replacement); none -> left out.
    """
    epochs, values, d_update = _as_series(epochs, values, d_update)
    out = values.copy()
    position = {int(e): i for i, e in enumerate(epochs)}
    targets = post_update_epochs(epochs, d_update, skip)
    replaced = np.zeros(len(epochs), dtype=bool)
    left_out = np.zeros(len(epochs), dtype=bool)
    for t in targets.tolist():  # increasing: earlier replacements are in `out` already
        earlier = [out[position[e]] for e in range(t - fill, t) if e in position]
        earlier = [v for v in earlier if not math.isnan(v)]
        i = position[t]
        replaced[i] = True
        if earlier:
            out[i] = float(np.mean(earlier))
        else:
            out[i] = np.nan
            left_out[i] = True
    return Replaced(epochs=epochs, values=out, replaced=replaced, left_out=left_out)


def window_average(epochs, values, start: int, end: int) -> tuple[float, int]:
    """Mean of the values at epochs start..end (both inclusive) that have a value, and how many
    epochs that is. (nan, 0) when none has."""
    epochs, values = _as_series(epochs, values)
    inside = (epochs >= start) & (epochs <= end) & ~np.isnan(values)
    n = int(inside.sum())
    return (float(values[inside].mean()) if n else math.nan), n


def moving_average(epochs, values, length: int) -> np.ndarray:
    """(T,) the mean of epochs t-length+1 .. t at every epoch t whose window is full (every epoch
    of it present with a value); NaN elsewhere. Aligned with `epochs`. Linear in the number of
    epochs present, whatever their range (a gap of 10^9 epochs allocates nothing)."""
    epochs, values = _as_series(epochs, values)
    out = np.full(len(epochs), np.nan)
    if length < 1 or len(epochs) < length:
        return out
    ends = np.arange(length - 1, len(epochs))  # positions where a window of `length` present epochs ends
    consecutive = epochs[ends] - epochs[ends - (length - 1)] == length - 1  # no missing epoch inside
    nan_before = np.concatenate([[0], np.cumsum(np.isnan(values))])
    full = consecutive & (nan_before[ends + 1] - nan_before[ends + 1 - length] == 0)
    windows = np.lib.stride_tricks.sliding_window_view(values, length)  # (T - length + 1, length)
    out[ends[full]] = windows[full].mean(axis=1)
    return out


def max_moving_average(epochs, values, length: int) -> tuple[float, int | None]:
    """The largest full-window moving average and the epoch where its window ends (the earliest
    on a tie). (nan, None) when the series has no full window."""
    epochs, values = _as_series(epochs, values)
    ma = moving_average(epochs, values, length)
    if np.isnan(ma).all():
        return math.nan, None
    best = np.nanmax(ma)
    first = int(np.flatnonzero(ma >= best - TIE_TOLERANCE)[0])
    return float(ma[first]), int(epochs[first])


def series_metrics_columns(epochs, values, d_update, *, skip: int, fill: int, window: tuple[int, int],
                           length: int) -> dict[str, np.ndarray]:
    """The paper's series metrics of B series at once (the columns of `values`, (T, B)): the
    same rules as `replace_post_update`, `window_average` and `max_moving_average` applied to
    each column (tests check it column by column), for bootstraps that recompute the whole
    metric. Returns window_average (B,), max_moving_average (B,), max_epoch (B,) (-1: none)."""
    epochs = np.asarray(epochs, dtype=np.int64)
    v = np.array(values, dtype=np.float64, copy=True)
    if v.ndim != 2 or v.shape[0] != len(epochs):
        raise ValueError(f"values {v.shape} must be (T, B) with T = {len(epochs)}")
    position = {int(e): i for i, e in enumerate(epochs)}
    for t in post_update_epochs(epochs, d_update, skip).tolist():  # increasing, as in the scalar version
        rows = [position[e] for e in range(t - fill, t) if e in position]
        if rows:
            block = v[rows]  # (r, B)
            with np.errstate(invalid="ignore"):
                counts = (~np.isnan(block)).sum(axis=0)
                means = np.nansum(block, axis=0) / np.where(counts > 0, counts, 1)
            v[position[t]] = np.where(counts > 0, means, np.nan)
        else:
            v[position[t]] = np.nan
    start, end = window
    inside = (epochs >= start) & (epochs <= end)
    with np.errstate(invalid="ignore", divide="ignore"):
        block = v[inside]
        n = (~np.isnan(block)).sum(axis=0)
        window_avg = np.where(n > 0, np.nansum(block, axis=0) / np.where(n > 0, n, 1), np.nan)
    t_len, b = v.shape
    best = np.full(b, np.nan)
    best_epoch = np.full(b, -1, dtype=np.int64)
    if length >= 1 and t_len >= length:
        ends = np.arange(length - 1, t_len)
        consecutive = epochs[ends] - epochs[ends - (length - 1)] == length - 1
        nan_rows = np.isnan(v)
        csum = np.concatenate([np.zeros((1, b)), np.cumsum(np.where(nan_rows, 0.0, v), axis=0)])
        cnan = np.concatenate([np.zeros((1, b)), np.cumsum(nan_rows, axis=0)])
        sums = csum[ends + 1] - csum[ends + 1 - length]  # (W, B)
        full = consecutive[:, None] & (cnan[ends + 1] - cnan[ends + 1 - length] == 0)
        ma = np.where(full, sums / length, np.nan)
        has = full.any(axis=0)
        if has.any():
            top = np.nanmax(np.where(full, ma, -np.inf), axis=0)
            first = np.argmax(full & (ma >= top[None, :] - TIE_TOLERANCE), axis=0)
            best = np.where(has, top, np.nan)
            best_epoch = np.where(has, epochs[ends[first]], -1)
    return {"window_average": window_avg, "max_moving_average": best, "max_epoch": best_epoch}


def missing_epochs(epochs) -> list[int]:
    """Epochs absent between the first and last epoch of a series (gaps), reported, not filled."""
    epochs = np.asarray(epochs, dtype=np.int64)
    if epochs.size < 2:
        return []
    gaps = np.flatnonzero(np.diff(epochs) > 1)
    return [e for g in gaps.tolist() for e in range(int(epochs[g]) + 1, int(epochs[g + 1]))]


def summarise_series(epochs, values, d_update, spec) -> tuple[dict[str, Any], Replaced]:
    """Replace, then the window average and the maximum moving average of one series.
    `spec` is a `MetricsSpec` (window_start, window_end, moving_average, skip_after_d_update,
    skip_fill)."""
    rep = replace_post_update(epochs, values, d_update, skip=spec.skip_after_d_update, fill=spec.skip_fill)
    return _summary_of_replaced(rep, spec), rep


def _summary_of_replaced(rep: Replaced, spec) -> dict[str, Any]:
    avg, n_window = window_average(rep.epochs, rep.values, spec.window_start, spec.window_end)
    best, best_epoch = max_moving_average(rep.epochs, rep.values, spec.moving_average)
    return {
        "window_average": _num(avg),
        "window_epochs": n_window,
        "max_moving_average": _num(best),
        "max_moving_average_epoch": best_epoch,
        "replaced_epochs": rep.epochs[rep.replaced & ~rep.left_out].tolist(),
        "left_out_epochs": rep.epochs[rep.left_out].tolist(),
    }


def summarise_classes(epochs, d_update, class_values: Mapping[str, Sequence[float]], spec):
    """Every class series and their mean I(t) (the mean of the *replaced* class values; NaN at an
    epoch where any class has none).

    Returns (summary, replaced_frame): summary = {"classes": {key: {...}}, "mean": {...},
    "missing_epochs": [...], "window": [start, end], "moving_average": length,
    "epochs": [first, last], "num_epochs": T}; replaced_frame = a pandas DataFrame with columns
    epoch, d_update, replaced, left_out, <class keys...>, mean.
    """
    import pandas as pd

    epochs, _, d_update = _as_series(epochs, np.zeros(len(epochs)), d_update)
    classes: dict[str, Any] = {}
    replaced_values = {}
    flags = None
    for key, vals in class_values.items():
        summary, rep = summarise_series(epochs, vals, d_update, spec)
        classes[key] = summary
        replaced_values[key] = rep.values
        flags = rep if flags is None else flags
    if flags is None:
        raise ValueError("no class series given")
    # A class with no value at any epoch (no classifier: too few labelled images) is left out of
    # I(t) and named in the summary; otherwise I(t) would be unknown everywhere.
    without = [k for k, v in replaced_values.items() if np.isnan(v).all()]
    in_mean = [k for k in replaced_values if k not in without] or list(replaced_values)
    stacked = np.stack([replaced_values[k] for k in in_mean])  # (C, T)
    # A plain mean (not nanmean): a class without a value makes I(t) unknown, not biased.
    mean_values = stacked.mean(axis=0)
    mean_rep = Replaced(epochs=epochs, values=mean_values, replaced=flags.replaced,
                        left_out=np.isnan(mean_values) & flags.replaced)
    mean_summary = _summary_of_replaced(mean_rep, spec)
    frame = pd.DataFrame({"epoch": epochs, "d_update": d_update.astype(int),
                          "replaced": flags.replaced.astype(int), "left_out": np.isnan(mean_values).astype(int),
                          **replaced_values, "mean": mean_values})
    summary = {
        "classes": classes,
        "mean": mean_summary,
        "classes_in_mean": in_mean,
        "classes_without_values": without,
        "missing_epochs": missing_epochs(epochs),
        "epochs": [int(epochs[0]), int(epochs[-1])] if len(epochs) else [],
        "num_epochs": int(len(epochs)),
        "window": [spec.window_start, spec.window_end],
        "moving_average": spec.moving_average,
        "skip_after_d_update": spec.skip_after_d_update,
        "skip_fill": spec.skip_fill,
    }
    return summary, frame


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# -- beyond the paper: prevalence correction, class-match rate ---------------------------------
def rogan_gladen(apparent, sensitivity, specificity):
    """Corrected prevalence (A + Sp - 1) / (Se + Sp - 1), clipped to [0, 1]. NaN where the
    classifier is no better than chance (Se + Sp <= 1): nothing can be corrected then.
    Works elementwise on numpy arrays."""
    a, se, sp = (np.asarray(v, dtype=np.float64) for v in (apparent, sensitivity, specificity))
    denom = se + sp - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        corrected = np.where(denom > 0, (a + sp - 1.0) / np.where(denom > 0, denom, 1.0), np.nan)
    corrected = np.clip(corrected, 0.0, 1.0)
    return float(corrected) if corrected.ndim == 0 else corrected


def confusion_counts(labels, predictions) -> dict[str, int]:
    """tp, fn, tn, fp of binary labels (1 = informative) against binary predictions."""
    y = np.asarray(labels).astype(bool)
    p = np.asarray(predictions).astype(bool)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ")
    return {"tp": int((y & p).sum()), "fn": int((y & ~p).sum()),
            "tn": int((~y & ~p).sum()), "fp": int((~y & p).sum())}


def _bootstrap_mean(per_item: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """(num,) means of `num` resamples (with replacement, same size) of `per_item`.

    Resampling n items with replacement and averaging depends only on how many copies of each
    distinct value were drawn: a multinomial draw over the distinct values. Exact, and one
    vectorised call instead of num x n indices (per_item takes K+1 values with K draws)."""
    levels, counts = np.unique(per_item, return_counts=True)
    n = int(counts.sum())
    draws = rng.multinomial(n, counts / n, size=num)  # (num, L)
    return draws @ levels / n


# Over 80 lines on purpose (one of the two allowed): a quarter of it is the docstring that states
# every case of the estimator, and its steps share the same resamples, so cutting it would pass
# half a dozen arrays between functions that are never used apart.
def corrected_share(per_item_informative, test_labels=None, test_predictions=None, *,
                    sensitivity: float | None = None, specificity: float | None = None,
                    bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0,
                    return_replicates: bool = False) -> dict[str, Any]:
    """Raw share, Rogan-Gladen corrected share and bootstrap intervals for one class.

    per_item_informative: (n,) the share of a sound's images called informative (0/1 with one
        image per sound; k/K with K draws: the sound is the resampled unit, its draws go along).
    test_labels, test_predictions: the classifier's held-out test set (labels 1 = informative);
        its confusion gives Se and Sp, and resampling it carries their uncertainty.
    sensitivity, specificity: used only when the test outcomes are unknown (the interval then
        resamples the images alone: `ci_method` says so).

    Bootstrap: each replicate resamples the n scored sounds (-> A*) and, independently, the test
    set's items (a multinomial over its four confusion cells -> Se*, Sp*), and computes the
    clipped correction; replicates where Se* or Sp* is undefined (a resample without a positive
    or a negative) are dropped. The interval is the percentile interval of the replicates.
    With `return_replicates`, "_replicates" holds the (B,) corrected replicates, NaN where
    dropped (to bootstrap a mean over classes), or None when there is no correction.
    """
    per_item = np.asarray(per_item_informative, dtype=np.float64)
    n = int(per_item.size)
    out: dict[str, Any] = {"n_images": n, "raw_share": None, "raw_ci": None, "corrected_share": None,
                           "corrected_ci": None, "sensitivity": None, "specificity": None,
                           "ci_method": None, "bootstrap_valid": None}
    if return_replicates:
        out["_replicates"] = None
    if n == 0:
        return out
    if np.isnan(per_item).any() or per_item.min() < 0 or per_item.max() > 1:
        raise ValueError("per-item informative shares must be in [0, 1]")
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    apparent = float(per_item.mean())
    boot_a = _bootstrap_mean(per_item, bootstrap_samples, rng)  # (B,)
    out["raw_share"] = apparent
    out["raw_ci"] = [float(np.quantile(boot_a, alpha)), float(np.quantile(boot_a, 1 - alpha))]

    if test_labels is not None and test_predictions is not None:
        cm = confusion_counts(test_labels, test_predictions)
        pos, neg = cm["tp"] + cm["fn"], cm["tn"] + cm["fp"]
        if pos == 0 or neg == 0:
            out["ci_method"] = "undefined: the classifier's test set lacks positives or negatives"
            return out
        se, sp = cm["tp"] / pos, cm["tn"] / neg
        n_test = pos + neg
        cells = np.array([cm["tp"], cm["fn"], cm["tn"], cm["fp"]], dtype=np.float64)
        boot_cells = rng.multinomial(n_test, cells / n_test, size=bootstrap_samples)  # (B, 4)
        b_pos = boot_cells[:, 0] + boot_cells[:, 1]
        b_neg = boot_cells[:, 2] + boot_cells[:, 3]
        valid = (b_pos > 0) & (b_neg > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            boot_se = boot_cells[:, 0] / b_pos
            boot_sp = boot_cells[:, 2] / b_neg
        boot = rogan_gladen(boot_a, boot_se, boot_sp)
        valid &= ~np.isnan(boot)  # Se* + Sp* <= 1: no correction exists in that replicate
        out["ci_method"] = "bootstrap: scored sounds and classifier test set"
        out["confusion"] = cm
    elif sensitivity is not None and specificity is not None:
        se, sp = float(sensitivity), float(specificity)
        boot = rogan_gladen(boot_a, se, sp)
        valid = ~np.isnan(boot)
        out["ci_method"] = "bootstrap: scored sounds only (classifier test outcomes unknown)"
    else:
        out["ci_method"] = "none: classifier sensitivity and specificity unknown"
        return out
    if np.ptp(per_item) == 0:
        # Every sound got the same verdict: resampling the sounds cannot vary the apparent rate,
        # so the interval carries only the classifier's uncertainty. Say so.
        out["ci_method"] += "; degenerate: every scored image got the same verdict"
    out["sensitivity"], out["specificity"] = float(se), float(sp)
    point = rogan_gladen(apparent, se, sp)
    if math.isnan(point):
        out["ci_method"] += "; undefined: Se + Sp <= 1"
        return out
    out["corrected_share"] = point
    out["bootstrap_valid"] = int(valid.sum())
    if return_replicates:
        out["_replicates"] = np.where(valid, boot, np.nan)
    if valid.any():
        kept = boot[valid]
        out["corrected_ci"] = [float(np.quantile(kept, alpha)), float(np.quantile(kept, 1 - alpha))]
    return out


def class_match_rate(predicted_classes, true_classes) -> float | None:
    """Share of generated images that the 5-class real-frame classifier assigns to the class of
    the sound they were translated from (the metric the paper rejected, section 5.3)."""
    p = np.asarray(predicted_classes)
    t = np.asarray(true_classes)
    if p.shape != t.shape:
        raise ValueError(f"predicted {p.shape} and true {t.shape} class arrays differ")
    return float((p == t).mean()) if p.size else None


def summarise_frame(df, class_keys: Sequence[str], spec):
    """`summarise_classes` on a frame with columns epoch, d_update, <class keys>."""
    return summarise_classes(df["epoch"].to_numpy(), df["d_update"].to_numpy().astype(bool),
                             {k: df[k].to_numpy(dtype=np.float64) for k in class_keys}, spec)


def mean_interval(replicates: Sequence[np.ndarray], confidence: float) -> list[float] | None:
    """Percentile interval of the mean over classes, from each class's bootstrap replicates of
    its corrected share ((B,) each, NaN where a replicate had none). The classes' bootstraps are
    independent (other sounds, other classifiers), so the mean of their replicates, replicate
    by replicate, is a bootstrap of the mean."""
    reps = np.stack(list(replicates)).mean(axis=0)  # (B,), NaN where any class had none
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return None
    alpha = (1 - confidence) / 2
    return [float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))]
