"""The paper's metrics against hand-computed series, and the prevalence correction against an
independent index-resampling bootstrap."""

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from s2i_bench.scoring import metrics as M
from s2i_bench.scoring import records
from s2i_bench.scoring.series import series_frame
from s2i_bench.cli import main
from s2i_bench.protocol import load_protocol

NAN = float("nan")

# epochs 0..11, D updates before epochs 0, 5, 10 (d_every = 5), the paper's skip 2 / fill 5.
EPOCHS = np.arange(12)
D_UPDATE = EPOCHS % 5 == 0
VALUES = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.0, 0.5])
# By hand:
#  0: nothing earlier -> left out;  1: only epoch 0, itself left out -> left out
#  5: epochs 0..4 -> 2, 3, 4 have values -> (0.3 + 0.4 + 0.5) / 3 = 0.4
#  6: epochs 1..5 -> 2, 3, 4 and the *replaced* 5 -> (0.3 + 0.4 + 0.5 + 0.4) / 4 = 0.4
# 10: epochs 5..9 -> 0.4, 0.4, 0.8, 0.9, 1.0 -> 0.7
# 11: epochs 6..10 -> 0.4, 0.8, 0.9, 1.0 and the replaced 0.7 -> 0.76
EXPECTED = np.array([NAN, NAN, 0.3, 0.4, 0.5, 0.4, 0.4, 0.8, 0.9, 1.0, 0.7, 0.76])


def spec(**kw):
    base = load_protocol("vegas5").metrics
    return replace(base, **kw)


def test_replacement_order_and_edges_by_hand():
    rep = M.replace_post_update(EPOCHS, VALUES, D_UPDATE, skip=2, fill=5)
    np.testing.assert_allclose(rep.values, EXPECTED, equal_nan=True)
    assert rep.replaced.nonzero()[0].tolist() == [0, 1, 5, 6, 10, 11]
    assert rep.left_out.nonzero()[0].tolist() == [0, 1]
    # A replaced epoch feeds the next one: with the original 0.6 at epoch 5, epoch 6 would be 0.45.
    assert rep.values[6] == pytest.approx(0.4) and rep.values[6] != pytest.approx(0.45)
    # The input is not modified.
    assert VALUES[5] == 0.6


def test_replacement_uses_only_existing_epochs():
    # Epoch 3 missing: epoch 5 averages epochs 0, 1, 2, 4 (no invented epoch 3).
    epochs = np.array([0, 1, 2, 4, 5, 6])
    values = np.array([0.1, 0.2, 0.3, 0.5, 0.9, 0.9])
    d = np.array([False, False, False, False, True, False])
    rep = M.replace_post_update(epochs, values, d, skip=2, fill=5)
    assert rep.values[4] == pytest.approx((0.1 + 0.2 + 0.3 + 0.5) / 4)
    # epoch 6: epochs 1..5 present -> 1, 2, 4 and replaced 5
    assert rep.values[5] == pytest.approx((0.2 + 0.3 + 0.5 + rep.values[4]) / 4)
    assert M.missing_epochs(epochs) == [3]
    # u + 1 absent from the series: nothing to replace, nothing invented.
    rep = M.replace_post_update([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4], [False, False, False, True], skip=2, fill=5)
    assert rep.values.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.2]) and rep.replaced.sum() == 1


def test_fill_window_is_the_five_preceding_epoch_numbers():
    # Ten epochs, D update at 9: the mean of epochs 4..8 only (not 0..8).
    values = np.arange(10) / 10
    d = np.zeros(10, bool)
    d[9] = True
    rep = M.replace_post_update(np.arange(10), values, d, skip=2, fill=5)
    assert rep.values[9] == pytest.approx(np.mean(values[4:9]))


def test_window_average_bounds_inclusive():
    avg, n = M.window_average(EPOCHS, EXPECTED, 2, 5)
    assert n == 4 and avg == pytest.approx((0.3 + 0.4 + 0.5 + 0.4) / 4)
    # Left-out epochs do not count; an empty window is NaN.
    avg, n = M.window_average(EPOCHS, EXPECTED, 0, 2)
    assert n == 1 and avg == pytest.approx(0.3)
    avg, n = M.window_average(EPOCHS, EXPECTED, 20, 30)
    assert n == 0 and math.isnan(avg)


def test_moving_average_full_windows_only():
    ma = M.moving_average(EPOCHS, EXPECTED, 3)
    # windows ending at 0..3 touch a left-out epoch (or start before epoch 0)
    assert np.isnan(ma[:4]).all()
    by_hand = {4: 0.4, 5: 1.3 / 3, 6: 1.3 / 3, 7: 1.6 / 3, 8: 0.7, 9: 0.9, 10: 2.6 / 3, 11: 2.46 / 3}
    for e, v in by_hand.items():
        assert ma[e] == pytest.approx(v)
    best, at = M.max_moving_average(EPOCHS, EXPECTED, 3)
    assert best == pytest.approx(0.9) and at == 9
    # Against pandas' rolling mean (min_periods = the full window) on a gap-free series.
    rng = np.random.default_rng(0)
    vals = rng.random(200)
    ref = pd.Series(vals).rolling(50, min_periods=50).mean().to_numpy()
    np.testing.assert_allclose(M.moving_average(np.arange(200), vals, 50), ref, equal_nan=True)


def test_moving_average_is_not_full_across_a_missing_epoch():
    epochs = np.array([0, 1, 2, 4, 5, 6])
    ma = M.moving_average(epochs, np.full(6, 0.5), 3)
    # windows ending at 4 (2..4) and 5 (3..5) contain the missing epoch 3
    assert np.isnan(ma).tolist() == [True, True, False, True, True, False]
    # A series shorter than one window has no maximum.
    assert M.max_moving_average([0, 1], [0.5, 0.5], 3) == (pytest.approx(math.nan, nan_ok=True), None)


def test_max_moving_average_ties_go_to_the_earliest_epoch():
    best, at = M.max_moving_average(np.arange(3), [0.5, 0.2, 0.5], 1)
    assert at == 0 and best == 0.5
    # Same numbers in another order: mean(0.3, 0.2, 0.1) is one ulp below mean(0.1, 0.2, 0.3);
    # still a tie, so the earlier window wins.
    vals = [0.3, 0.2, 0.1, 0.0, 0.1, 0.2, 0.3]
    ma = M.moving_average(np.arange(7), vals, 3)
    assert ma[2] < ma[6]  # the rounding this test is about
    best, at = M.max_moving_average(np.arange(7), vals, 3)
    assert at == 2 and best == pytest.approx(0.2)


def test_class_mean_is_the_mean_of_replaced_class_values():
    s = spec(window_start=2, window_end=11, moving_average=3)
    other = VALUES[::-1].copy()
    summary, frame = M.summarise_classes(EPOCHS, D_UPDATE, {"a": VALUES, "b": other}, s)
    rep_b = M.replace_post_update(EPOCHS, other, D_UPDATE, skip=2, fill=5).values
    np.testing.assert_allclose(frame["mean"], (EXPECTED + rep_b) / 2, equal_nan=True)
    assert summary["classes"]["a"]["replaced_epochs"] == [5, 6, 10, 11]
    assert summary["classes"]["a"]["left_out_epochs"] == [0, 1]
    assert summary["mean"]["window_average"] == pytest.approx(np.nanmean(((EXPECTED + rep_b) / 2)[2:]))
    # A class without a value at an epoch makes the mean unknown there (not a biased average).
    gappy = VALUES.copy()
    gappy[7] = np.nan
    _, frame = M.summarise_classes(EPOCHS, D_UPDATE, {"a": gappy, "b": other}, s)
    assert np.isnan(frame["mean"][7]) and not np.isnan(frame["mean"][8])
    # A class with no value at all (no classifier) is left out of the mean, and named.
    summary, frame = M.summarise_classes(EPOCHS, D_UPDATE, {"a": VALUES, "b": np.full_like(VALUES, np.nan)}, s)
    np.testing.assert_allclose(frame["mean"], EXPECTED, equal_nan=True)
    assert summary["classes_in_mean"] == ["a"] and summary["classes_without_values"] == ["b"]


def test_rogan_gladen_formula_and_edges():
    assert M.rogan_gladen(0.3, 0.8, 0.9) == pytest.approx((0.3 + 0.9 - 1) / (0.8 + 0.9 - 1))
    assert M.rogan_gladen(0.05, 0.8, 0.9) == 0.0  # clipped below
    assert M.rogan_gladen(0.95, 0.8, 0.9) == 1.0  # clipped above
    assert math.isnan(M.rogan_gladen(0.3, 0.5, 0.5))  # chance classifier: no correction
    # Perfect classifier: nothing to correct.
    assert M.rogan_gladen(0.37, 1.0, 1.0) == pytest.approx(0.37)


def _reference_interval(per_item, labels, preds, num, conf, seed):
    """Independent reference: resample indices of both sets explicitly."""
    rng = np.random.default_rng(seed)
    n, m = len(per_item), len(labels)
    out = []
    for _ in range(num):
        a = per_item[rng.integers(0, n, n)].mean()
        idx = rng.integers(0, m, m)
        y, p = labels[idx], preds[idx]
        se, sp = (p[y == 1] == 1).mean(), (p[y == 0] == 0).mean()
        if se + sp > 1:
            out.append(min(max((a + sp - 1) / (se + sp - 1), 0), 1))
    lo, hi = np.quantile(out, [(1 - conf) / 2, 1 - (1 - conf) / 2])
    return lo, hi


def test_corrected_share_matches_index_resampling_reference():
    rng = np.random.default_rng(1)
    per_item = (rng.random(150) < 0.3).astype(float)
    labels = np.r_[np.ones(100), np.zeros(100)]
    preds = np.r_[rng.random(100) < 0.8, rng.random(100) < 0.15].astype(int)
    res = M.corrected_share(per_item, labels, preds, bootstrap_samples=4000, confidence=0.95, seed=3)
    se, sp = preds[:100].mean(), 1 - preds[100:].mean()
    assert res["sensitivity"] == pytest.approx(se) and res["specificity"] == pytest.approx(sp)
    assert res["raw_share"] == pytest.approx(per_item.mean())
    assert res["corrected_share"] == pytest.approx((per_item.mean() + sp - 1) / (se + sp - 1))
    lo, hi = _reference_interval(per_item, labels, preds, 4000, 0.95, seed=5)
    assert res["corrected_ci"][0] == pytest.approx(lo, abs=0.02)
    assert res["corrected_ci"][1] == pytest.approx(hi, abs=0.02)
    # Same seed, same interval; the interval is wider than the images-only interval.
    again = M.corrected_share(per_item, labels, preds, bootstrap_samples=4000, confidence=0.95, seed=3)
    assert again == res
    images_only = M.corrected_share(per_item, sensitivity=se, specificity=sp, bootstrap_samples=4000, seed=3)
    assert images_only["ci_method"].startswith("bootstrap: scored sounds only")
    width = lambda r: r["corrected_ci"][1] - r["corrected_ci"][0]  # noqa: E731
    assert width(res) > width(images_only)


def test_corrected_interval_covers_the_truth_in_simulation():
    """Both sources of error resampled: the 95% interval covers the true share most of the time
    (an images-only interval, ignoring the classifier's test-set error, covers it less)."""
    rng = np.random.default_rng(7)
    true_p, se, sp, n, m = 0.2, 0.8, 0.85, 150, 100
    covered = covered_images_only = 0
    runs = 200
    for r in range(runs):
        truth = rng.random(n) < true_p
        called = np.where(truth, rng.random(n) < se, rng.random(n) < 1 - sp).astype(float)
        labels = np.r_[np.ones(m), np.zeros(m)]
        preds = np.r_[rng.random(m) < se, rng.random(m) < 1 - sp].astype(int)
        res = M.corrected_share(called, labels, preds, bootstrap_samples=400, seed=r)
        lo, hi = res["corrected_ci"]
        covered += lo <= true_p <= hi
        alone = M.corrected_share(called, sensitivity=res["sensitivity"], specificity=res["specificity"],
                                  bootstrap_samples=400, seed=r)
        covered_images_only += alone["corrected_ci"][0] <= true_p <= alone["corrected_ci"][1]
    assert covered / runs >= 0.88
    assert covered > covered_images_only


def test_corrected_share_with_several_draws_resamples_sounds():
    # K = 4 draws per sound: per-sound shares k/4; the bootstrap mean matches index resampling.
    rng = np.random.default_rng(2)
    per_item = rng.integers(0, 5, 300) / 4
    boot = M._bootstrap_mean(per_item, 20000, np.random.default_rng(0))
    ref = np.array([per_item[rng.integers(0, 300, 300)].mean() for _ in range(4000)])
    assert boot.mean() == pytest.approx(per_item.mean(), abs=2e-3)
    assert boot.std() == pytest.approx(ref.std(), rel=0.08)


def test_corrected_share_says_when_every_verdict_agrees():
    labels = np.r_[np.ones(20), np.zeros(20)]
    preds = np.r_[np.ones(16), np.zeros(4), np.ones(6), np.zeros(14)]
    res = M.corrected_share(np.ones(30), labels, preds, bootstrap_samples=200)
    assert "degenerate" in res["ci_method"] and res["corrected_share"] == 1.0
    res = M.corrected_share(np.r_[np.ones(5), np.zeros(25)], labels, preds, bootstrap_samples=200)
    assert "degenerate" not in res["ci_method"]


def test_corrected_share_unknown_or_useless_classifier():
    per_item = np.array([1, 0, 0, 1.0])
    res = M.corrected_share(per_item)
    assert res["raw_share"] == 0.5 and res["corrected_share"] is None and res["ci_method"].startswith("none")
    res = M.corrected_share(per_item, np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))  # Se + Sp = 1
    assert res["corrected_share"] is None and "Se + Sp <= 1" in res["ci_method"]
    assert M.corrected_share(np.array([]))["raw_share"] is None


def test_class_match_rate():
    assert M.class_match_rate([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert M.class_match_rate([], []) is None


def test_series_from_records_last_record_wins_and_log_overrides():
    recs = [records.Record(r) for r in (
        {"epoch": 0, "d_update": True, "classes": {"a": {"raw_share": 0.1}}},
        {"epoch": 1, "d_update": False, "classes": {"a": {"raw_share": 0.2}}},
        {"epoch": 1, "d_update": False, "classes": {"a": {"raw_share": 0.3}}},  # resumed: re-scored
        {"epoch": None, "classes": {"a": {"raw_share": 0.9}}},
    )]
    df = series_frame(recs, ["a"])
    assert df["epoch"].tolist() == [0, 1] and df["a"].tolist() == [0.1, 0.3]
    assert df["d_update"].tolist() == [1, 0]
    df = series_frame(recs, ["a"], d_update_epochs=[1])
    assert df["d_update"].tolist() == [0, 1]


# -- the command ---------------------------------------------------------------------------------
def _series_csv(path, protocol, epochs=60, seed=0, drop=()):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(epochs):
        if e in drop:
            continue
        row = {"epoch": e, "d_update": int(e % protocol.training.d_every_epochs == 0)}
        row.update({k: round(float(rng.random() * 0.3), 4) for k in protocol.class_keys})
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_metrics_command_json_and_replaced_csv(tmp_path):
    proto = load_protocol("synth")
    csv = _series_csv(tmp_path / "series.csv", proto, drop=(33,))
    out = tmp_path / "replaced.csv"
    res = CliRunner().invoke(main, ["metrics", str(csv), "--protocol", "synth", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["protocol"]["name"] == "synth"
    assert set(data["classes"]) == set(proto.class_keys)
    assert data["missing_epochs"] == [33]
    for v in [*data["classes"].values(), data["mean"]]:
        assert {"window_average", "max_moving_average", "max_moving_average_epoch", "replaced_epochs"} <= set(v)
    assert data["mean"]["left_out_epochs"] == [0, 1]
    assert data["mean"]["replaced_epochs"][:4] == [5, 6, 10, 11]
    # Independent recomputation of the mean's window average from the written CSV.
    rep = pd.read_csv(out)
    assert 33 not in rep["epoch"].tolist()
    inside = rep[(rep["epoch"] >= proto.metrics.window_start) & (rep["epoch"] <= proto.metrics.window_end)]
    assert data["mean"]["window_average"] == pytest.approx(inside["mean"].mean())
    assert data["mean"]["window_average"] == pytest.approx(inside[list(proto.class_keys)].mean(axis=1).mean())
    # The plain-text form names every class and the replaced epochs.
    res = CliRunner().invoke(main, ["metrics", str(csv), "--protocol", "synth"])
    assert res.exit_code == 0 and "Water flowing" in res.output and "missing epochs" in res.output


@pytest.mark.parametrize("mutate, message", [
    (lambda df: df.drop(columns=["dog"]), "missing columns ['dog']"),
    (lambda df: df.assign(dog=df["dog"] + 2), "outside 0..1"),
    (lambda df: pd.concat([df, df.iloc[[3]]]), "duplicate epochs [3]"),
    (lambda df: df.assign(d_update=2), "d_update must be 0 or 1"),
    (lambda df: df.assign(epoch=df["epoch"] + 0.5), "whole numbers"),
    (lambda df: df.assign(dog=["x"] + [0.1] * (len(df) - 1)), "non-numeric"),
])
def test_metrics_command_refuses_bad_csv(tmp_path, mutate, message):
    proto = load_protocol("synth")
    csv = _series_csv(tmp_path / "s.csv", proto, epochs=12)
    mutate(pd.read_csv(csv)).to_csv(csv, index=False)
    res = CliRunner().invoke(main, ["metrics", str(csv), "--protocol", "synth"])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
