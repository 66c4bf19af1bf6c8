"""`s2i-bench compare` and its statistics, against reference implementations (scipy, statsmodels,
the scalar series metrics) on tiny seeded data, plus the invariants of a paired comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fakes import FakeBundle, make_fake_store
from s2i_bench.cli import main
from s2i_bench.data.store import open_store
from s2i_bench.protocol import load_protocol
from s2i_bench.scoring import metrics as M
from s2i_bench.scoring import records
from s2i_bench.scoring.series import last_per_epoch, summarise
from s2i_bench.stats import (bootstrap_p_value, holm, lang_reiczigel_interval, mcnemar_exact,
                             minimum_detectable_difference)

PROTOCOL = load_protocol("tiny")


# -- the statistics --------------------------------------------------------------------------------
@pytest.mark.parametrize("b, c", [(0, 0), (0, 1), (1, 0), (3, 7), (10, 10), (0, 25), (40, 61), (500, 560), (3, 1000)])
def test_mcnemar_exact_matches_scipy_binomtest(b, c):
    from scipy.stats import binomtest

    expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 17, 60):
        p = rng.random(m) ** 3
        p[: m // 4] = p[0]  # ties
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=1e-12, atol=0)


def test_bootstrap_p_value_and_mde():
    assert bootstrap_p_value(np.zeros(100)) == 1.0  # A against A
    assert bootstrap_p_value(np.full(100, 0.1)) == 0.0
    assert bootstrap_p_value(np.r_[np.full(97, 0.1), np.full(3, -0.1)]) == pytest.approx(0.06)
    big, small = minimum_detectable_difference(100, 0.2), minimum_detectable_difference(1000, 0.2)
    assert big == pytest.approx((1.959964 + 0.841621) * np.sqrt(0.2 / 100), rel=1e-5) and small < big


def test_lang_reiczigel_interval_covers_by_simulation():
    """At nominal 95%, the interval covers the true prevalence in 93-98% of 3000 simulated studies
    (Se, Sp estimated from 40 + 40 items, 150 scored items), where the plug-in Wald interval would not."""
    rng = np.random.default_rng(1)
    true_p, se, sp = 0.3, 0.8, 0.85
    covered = 0
    for _ in range(3000):
        k = rng.binomial(150, true_p * se + (1 - true_p) * (1 - sp))
        lo, hi = lang_reiczigel_interval(k, 150, rng.binomial(40, se), 40, rng.binomial(40, sp), 40)
        covered += lo <= true_p <= hi
    assert 0.93 <= covered / 3000 <= 0.98
    assert lang_reiczigel_interval(10, 100, 5, 20, 5, 20) is None  # Se + Sp <= 1: no correction


def test_series_metrics_columns_match_the_scalar_functions():
    rng = np.random.default_rng(3)
    epochs = np.array([e for e in range(70) if e not in (33, 34)])  # a gap
    d_update = epochs % 5 == 0
    values = rng.random((len(epochs), 12))
    values[3, 4] = np.nan
    out = M.series_metrics_columns(epochs, values, d_update, skip=2, fill=5, window=(10, 60), length=10)
    for j in range(values.shape[1]):
        rep = M.replace_post_update(epochs, values[:, j], d_update, skip=2, fill=5)
        wa, _ = M.window_average(rep.epochs, rep.values, 10, 60)
        ma, at = M.max_moving_average(rep.epochs, rep.values, 10)
        assert out["window_average"][j] == pytest.approx(wa, rel=1e-12)
        assert out["max_moving_average"][j] == pytest.approx(ma, rel=1e-10)
        assert out["max_epoch"][j] == at


# -- fabricated records of real scorings ------------------------------------------------------------
class Flat:
    """A translator whose image colour follows the log-Mel energy plus a level: informative
    shares differ with the level; randomness from the images' seeds."""

    def __init__(self, level: float, name: str, epoch: int = 0):
        self.level = level
        self.info = {"path": name, "sha256": f"{name}-{epoch}", "kind": "fake", "epoch": epoch, "run": name}

    def translate(self, batch):
        g = [torch.Generator().manual_seed(int(s)) for s in batch.seeds]
        noise = torch.stack([torch.rand(1, generator=x) for x in g])[:, 0]  # (B,)
        v = (torch.tanh(batch.log_mel.mean(dim=(1, 2, 3))) * 0.3 + self.level + 0.6 * (noise - 0.5)).clamp(-1, 1)
        return v[:, None, None, None].expand(len(v), 3, 8, 8).contiguous()


def write_run(folder: Path, store, bundle, level: float, seed: int, epochs: int = 6, dim: int = 16) -> Path:
    from s2i_bench.scoring.score import score_translator

    folder.mkdir(parents=True)
    (folder / "options.json").write_text(json.dumps({
        "kind": "s2i-train-baseline", "baseline": "fake", "protocol": PROTOCOL.ref(), "profile": "small",
        "embedding_dim": dim, "epochs": epochs, "batch_size": 16, "seed": seed, "store": store.ref()}))
    for e in range(epochs):
        t = Flat(level + 0.02 * e + 0.01 * seed, folder.name, e)
        records.append(folder / "metric-informativity.jsonl",
                       score_translator(t, store, bundle, protocol=PROTOCOL, split="test", seed=0, epoch=e))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fake_store):
    root = tmp_path_factory.mktemp("compare")
    store = open_store(fake_store)
    bundle = FakeBundle(root / "bundle.pt", informative="mean", class_match=False)
    return {"root": root, "store": store, "bundle": bundle,
            "a": write_run(root / "a", store, bundle, 0.0, 0), "b": write_run(root / "b", store, bundle, -0.35, 0),
            "g1": [write_run(root / "g1" / f"seed-{s}", store, bundle, 0.0, s) for s in (0, 1)],
            "g2": [write_run(root / "g2" / f"seed-{s}", store, bundle, -0.35, s) for s in (0, 1)]}


def run_compare(runs, *specs, **kw):
    from s2i_bench.scoring.compare import compare

    return compare([str(s) for s in specs], bundle=None, **kw)


def rows(result, measure="raw", cls="mean"):
    return [r for r in result["pairs"] if r["measure"] == measure and r["class"] == cls]


def test_a_against_itself_is_exactly_zero_and_not_significant(runs, tmp_path):
    import shutil

    twin = tmp_path / "a-twin"
    shutil.copytree(runs["a"], twin)
    for window in (False, True):
        result = run_compare(runs, runs["a"], twin, window=window)
        for r in result["pairs"]:
            assert r["difference"] == 0.0 and r["p_value"] == 1.0 and not r["significant"], r
            assert r["ci"] in (None, [0.0, 0.0])


def test_swapping_a_and_b_flips_the_sign(runs):
    ab = run_compare(runs, runs["a"], runs["b"])
    ba = run_compare(runs, runs["b"], runs["a"])
    for x, y in zip(ab["pairs"], ba["pairs"]):
        assert (x["class"], x["measure"]) == (y["class"], y["measure"])
        assert x["difference"] == pytest.approx(-y["difference"], abs=1e-12)
        assert x["p_value"] == pytest.approx(y["p_value"])
        if x["ci"]:
            assert x["ci"][0] == pytest.approx(-y["ci"][1], abs=1e-12)
    mean = rows(ab)[0]
    assert mean["difference"] > 0.2 and mean["significant"] and mean["ci"][0] > 0  # a real difference is found
    per_class = [r for r in ab["pairs"] if r["measure"] == "raw" and r["class"] != "mean"]
    assert all(r["test"] == "exact McNemar on the paired images" for r in per_class)
    assert all(r["p_adjusted"] >= r["p_value"] for r in ab["pairs"]) and all(r["mde"] > 0 for r in per_class)


def test_the_checkpoint_mcnemar_uses_the_records_decisions(runs):
    """The raw p-value of a class equals McNemar on the two records' decoded decisions."""
    a = last_per_epoch(records.read(runs["a"] / "metric-informativity.jsonl"))[5]
    b = last_per_epoch(records.read(runs["b"] / "metric-informativity.jsonl"))[5]
    da, db = a.decisions()["informative"][0], b.decisions()["informative"][0]
    n0 = a.n_sounds(PROTOCOL.class_keys[0])
    expected = mcnemar_exact(int((da[:n0] & ~db[:n0]).sum()), int((~da[:n0] & db[:n0]).sum()))
    result = run_compare(runs, runs["a"], runs["b"], epoch=5)
    got = rows(result, "raw", PROTOCOL.class_keys[0])[0]
    assert got["p_value"] == pytest.approx(expected)
    assert got["difference"] == pytest.approx(a.share(PROTOCOL.class_keys[0]) - b.share(PROTOCOL.class_keys[0]))


def test_corrected_difference_is_that_of_the_records_corrected_shares(runs):
    """Rogan-Gladen with the bundle's Se 0.8 and Sp 0.85, clipped to [0, 1] per system as the
    records give it; a difference of two shares stays within [-1, 1]; the raw test's p-value."""
    from s2i_bench.scoring.compare import compare

    result = compare([str(runs["a"]), str(runs["b"])], bundle=runs["bundle"])
    epoch = result["epoch"] if "epoch" in result else None
    recs = {s: last_per_epoch(records.read(runs[s] / "metric-informativity.jsonl")) for s in ("a", "b")}
    last = {s: recs[s][epoch if epoch is not None else max(recs[s])] for s in recs}
    clip = lambda raw: min(1.0, max(0.0, (raw - (1 - 0.85)) / (0.8 + 0.85 - 1)))  # noqa: E731
    for raw in [r for r in result["pairs"] if r["measure"] == "raw" and r["class"] != "mean"]:
        corr = rows(result, "corrected", raw["class"])[0]
        ra, rb = (last[s].share(raw["class"]) for s in ("a", "b"))
        assert corr["difference"] == pytest.approx(clip(ra) - clip(rb))
        assert corr["difference"] == pytest.approx(last["a"].share(raw["class"], "corrected_share")
                                                   - last["b"].share(raw["class"], "corrected_share"))
        assert corr["p_value"] == raw["p_value"]  # the raw test: equal exactly when the raw shares are
        assert -1 <= corr["ci"][0] <= corr["ci"][1] <= 1


def test_groups_of_seeds_and_series(runs):
    result = run_compare(runs, runs["root"] / "g1", runs["root"] / "g2", window=True)
    assert [m["seed"] for m in result["systems"][0]["members"]] == [0, 1]
    metrics = {r["metric"] for r in result["pairs"]}
    assert metrics == {"window_average", "max_moving_average"}
    wa = [r for r in result["pairs"]
          if r["metric"] == "window_average" and r["class"] == "mean" and r["measure"] == "raw"][0]
    assert wa["difference"] > 0.2 and wa["significant"] and "seeds" in wa["test"]


def test_bad_inputs_are_refused_naming_the_field(runs, tmp_path, fake_store):
    from s2i_bench.errors import UserError

    res = CliRunner().invoke(main, ["compare", str(runs["a"])])
    assert res.exit_code == 2 and "needs two" in res.output
    # a group whose members differ in more than the seed
    bad = tmp_path / "bad"
    write_run(bad / "seed-0", runs["store"], runs["bundle"], 0.0, 0)
    write_run(bad / "seed-1", runs["store"], runs["bundle"], 0.0, 1, dim=32)
    with pytest.raises(UserError, match="differ in embedding_dim"):
        run_compare(runs, bad, runs["a"])
    # scored on another store
    other = open_store(make_fake_store(tmp_path / "other", seed=9))
    c = write_run(tmp_path / "c", other, runs["bundle"], 0.0, 0)
    with pytest.raises(UserError, match=r"differ in store"):
        run_compare(runs, runs["a"], c)


def test_cli_writes_json_table_and_figure(runs, tmp_path):
    out = tmp_path / "cmp"
    res = CliRunner().invoke(main, ["compare", str(runs["a"]), str(runs["b"]), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    for r in result["pairs"]:
        assert {"a", "b", "class", "metric", "difference", "ci", "p_value", "p_adjusted", "significant"} <= set(r)
    assert (out / "comparison.json").is_file() and (out / "tables" / "comparison.csv").is_file()
    assert (out / "figures" / "comparison.png").is_file()
    again = CliRunner().invoke(main, ["compare", str(runs["a"]), str(runs["b"]), "--out", str(out)])
    assert again.exit_code == 0, again.output  # its own earlier output is replaced


# -- the series' intervals and the validation-chosen window -----------------------------------------
def test_series_intervals_contain_the_point_and_the_choice_is_made_on_validation(runs, tmp_path):
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.scoring.series_stats import series_intervals, validation_choice

    store, bundle = runs["store"], runs["bundle"]
    proto = PROTOCOL
    test_recs, val_recs = [], []
    for e in range(8):
        # the translator improves until epoch 4, then falls: validation and test agree on the peak
        level = -0.2 + 0.1 * min(e, 8 - e)
        t = Flat(level, "ser", e)
        test_recs.append(score_translator(t, store, bundle, protocol=proto, split="test", seed=0, epoch=e))
        val_recs.append(score_translator(t, store, bundle, protocol=proto, split="val", seed=0, epoch=e))
    iv = series_intervals(test_recs, proto.class_keys, proto, n_boot=300)
    summary = summarise(test_recs, proto)["raw_share"]["mean"]
    lo, hi = iv["raw_share"]["mean"]["window_average"]
    assert lo <= summary["window_average"] <= hi and hi - lo > 0
    choice = validation_choice(test_recs, val_recs, proto.class_keys, proto)
    length = proto.metrics.moving_average
    assert choice["window"] == [choice["epoch"] - length + 1, choice["epoch"]]
    at = choice["test"]["raw_share"]["mean"]["at_choice"]
    assert at is not None and at <= choice["test"]["raw_share"]["mean"]["max_moving_average"] + 1e-12
    assert validation_choice(test_recs, [], proto.class_keys, proto) is None


def test_image_metrics_compared_paired_and_unpaired(runs, tmp_path):
    """IIS per image: a paired bootstrap; FID / KID per image set: unpaired, from the records'
    intervals. A translator against itself: zero difference, not significant."""
    import shutil

    from s2i_bench.scoring.compare import compare
    from s2i_bench.scoring.features import Extractor
    from s2i_bench.scoring.score import score_translator

    ex = Extractor("test features", "f" * 64, lambda images: images.mean(dim=(2, 3)).numpy(), {"dims": 3})
    folder = tmp_path / "m"
    write_run(folder, runs["store"], runs["bundle"], 0.0, 0, epochs=1)
    (folder / "metric-informativity.jsonl").unlink()
    rec = score_translator(Flat(0.0, "m", 0), runs["store"], runs["bundle"], protocol=PROTOCOL, split="test", seed=0,
                           epoch=0, metrics=("fid", "kid", "iis"), extractor=ex)
    records.append(folder / "metric-informativity.jsonl", rec)
    twin = tmp_path / "m2"
    shutil.copytree(folder, twin)
    result = compare([str(folder), str(twin)])
    by = {(r["measure"], r["class"]): r for r in result["pairs"]}
    assert by[("iis", "mean")]["difference"] == 0 and by[("iis", "mean")]["p_value"] == 1.0
    assert by[("fid", "all")]["difference"] == 0 and not by[("fid", "all")]["significant"]
    assert "unpaired" in by[("kid", "all")]["test"]
