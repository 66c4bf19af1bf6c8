"""The report's reliability diagrams of the classifiers (report/calibration.py), drawn from the
calibration block of the bundle's JSON card."""

from __future__ import annotations

import json

import numpy as np
import torch

from s2i_bench.informativity.recipe import BINNING, reliability
from s2i_bench.protocol import load_protocol
from s2i_bench.report import build_report
from s2i_bench.report.calibration import has_calibration, reliability_figure

PROTOCOL = load_protocol("tiny")


def calibration_block(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    classes = {}
    for key in PROTOCOL.class_keys:
        p = rng.random(40)
        classes[key] = reliability((rng.random(40) < p).astype(int), p)
    return {"binning": BINNING, "on": "test images", "classes": classes}


def test_one_panel_per_class_with_its_ece():
    card = {"calibration": calibration_block()}
    assert has_calibration(card) and not has_calibration({}) and not has_calibration(None)
    fig = reliability_figure(card, PROTOCOL.class_keys, PROTOCOL.class_names)
    axes = fig.get_axes()
    assert len(axes) == len(PROTOCOL.class_keys)
    for ax, key in zip(axes, PROTOCOL.class_keys):
        ece = card["calibration"]["classes"][key]["ece"]
        assert f"ECE {ece:.3f}" in ax.get_title(loc="left")
        points = ax.collections[0].get_offsets()
        filled = [b for b in card["calibration"]["classes"][key]["bins"] if b["count"]]
        np.testing.assert_allclose(points[:, 1], [b["share_informative"] for b in filled])
    del card["calibration"]["classes"]["dog"]
    assert len(reliability_figure(card, PROTOCOL.class_keys, PROTOCOL.class_names).get_axes()) == 4


def test_the_report_draws_it_from_the_card_beside_the_bundle(scored_tiny_run, tmp_path):
    run, bundle = scored_tiny_run["run"], scored_tiny_run["bundle"]
    plain = build_report([run], tmp_path / "plain", figures=True, bundle=bundle)
    assert not (plain.parent / "figures" / "beyond-calibration.png").exists()  # no JSON card: nothing to draw
    inner = torch.load(bundle, weights_only=True)["card"]
    copy = tmp_path / "bundle.pt"
    copy.write_bytes(bundle.read_bytes())
    copy.with_suffix(".json").write_text(json.dumps({**inner, "calibration": calibration_block()}))
    index = build_report([run], tmp_path / "with", figures=True, bundle=copy)
    assert (index.parent / "figures" / "beyond-calibration.png").is_file()
    assert "Calibration of the informativity classifiers" in index.read_text()
    again = build_report([run], tmp_path / "again", figures=True, bundle=copy)
    assert (again.parent / "figures" / "beyond-calibration.png").read_bytes() == \
        (index.parent / "figures" / "beyond-calibration.png").read_bytes()
