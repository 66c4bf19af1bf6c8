"""The metric registry (`s2i_bench.scoring.image_metrics`): the one list of metrics that scoring,
the CLI's `--metrics`, the records' readers and the report read. A new metric is one file: the
worked example of docs/architecture.md (`examples/metric_spread.py`) is registered here and
scored end to end, and the docs' copy of it is checked against the file."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fakes import run_cli, write_bundle
from s2i_bench.errors import UserError
from s2i_bench.scoring import image_metrics as IM
from s2i_bench.scoring.image_metrics import registry

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "metric_spread.py"


def test_every_metric_is_declared_once_with_what_it_needs():
    assert IM.names()[0] == "informativity" and set(IM.names()) >= {"fid", "kid", "prdc", "iis", "ais"}
    for metric in IM.image_metrics():
        assert callable(metric.compute) and metric.needs <= {"features", "embeddings", "text", "decisions"}
        assert metric.value_list() and all(v.key and v.label for v in metric.value_list())
    assert [v.key for v in IM.get("prdc").value_list()] == ["precision", "recall", "density", "coverage"]
    assert IM.get("fid").lower_is_better and not IM.get("iis").lower_is_better


def test_metric_names_are_checked_against_the_registry():
    assert IM.check_metrics("kid, fid") == ("informativity", "kid", "fid")
    assert IM.check_metrics(None) == ("informativity",)
    with pytest.raises(UserError, match="did you mean 'prdc'"):
        IM.check_metrics(["prcd"])
    assert IM.needing(("informativity", "fid", "ais"), "features") == ("fid",)
    assert IM.needing(("informativity", "fid", "ais"), "embeddings") == ("ais",)


@pytest.fixture
def spread(monkeypatch):
    """The worked example registered, in a copy of the registry the test throws away."""
    monkeypatch.setattr(registry, "_METRICS", dict(registry._METRICS))
    spec = importlib.util.spec_from_file_location("metric_spread_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worked_example_is_scored_end_to_end(spread, fake_store, tmp_path):
    from s2i_bench.protocol import load_protocol
    from s2i_bench.report.image_report import metric_readers
    from s2i_bench.scoring import records
    from s2i_bench.scoring.features import cached_real_features, domain_extractor
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators.reference import load_reference

    assert "spread" in IM.names() and IM.check_metrics("spread") == ("informativity", "spread")
    proto = load_protocol("tiny")
    bundle_path = write_bundle(tmp_path / "bundle.pt", proto)
    from s2i_bench.data.store import open_store
    from s2i_bench.informativity.bundle import load_bundle

    store, bundle = open_store(fake_store), load_bundle(bundle_path)
    translator = load_reference("random-frame", store)
    record = score_translator(translator, store, bundle, protocol=proto, split="test", seed=0, metrics=("spread",))
    records.append(tmp_path / "r.jsonl", record)
    read = records.read(tmp_path / "r.jsonl")[0]
    assert read.metrics == ["informativity", "spread"] and read.image_metric("spread") == record.image_metric("spread")
    # against a direct computation on the same features
    extractor = domain_extractor(bundle)
    rows = store.split_indices("test")
    real = cached_real_features(store, rows, extractor)
    assert read.image_metric("spread") > 0 and np.isfinite(read.image_metric("spread"))
    assert spread.spread(real, real) == pytest.approx(1.0)
    lo, hi = read.image_metric_ci("spread")
    assert lo <= hi
    # the report reads it from the registry too
    assert "spread" in [key for key, *_ in metric_readers()]


def test_the_docs_show_the_example_as_it_is():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"```python\n# examples/metric_spread.py\n(.*?)```", doc, flags=re.S)
    assert blocks, "docs/architecture.md shows the worked metric example"
    code = EXAMPLE.read_text()
    body = code[code.index('"""', 3) + 3:].lstrip("\n")  # the file without its module docstring
    assert blocks[0].strip() == body.strip()


def test_a_record_names_its_metrics_and_the_cli_refuses_unknown_ones(fake_store, tmp_path):
    from s2i_bench.protocol import load_protocol

    bundle = write_bundle(tmp_path / "bundle.pt", load_protocol("tiny"))
    res = run_cli("score", "reference:class-prototype", "--data", fake_store, "--classifiers", bundle,
                  "--out", tmp_path / "r.jsonl", "--json", "--metrics", "kid")
    assert json.loads(res.ok().stdout)["metrics"] == ["informativity", "kid"]
    run_cli("score", "reference:class-prototype", "--data", fake_store, "--classifiers", bundle,
            "--out", tmp_path / "r.jsonl", "--metrics", "spred").refused("unknown metric 'spred'")
