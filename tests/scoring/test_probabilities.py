"""Each image's P(informative) in the record: packed exactly beside the decisions, checked against
them on every read, None in older records (scoring.decisions, collect, score)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from fakes import FakeBundle, write_bundle
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.informativity.bundle import HALF_UP, load_bundle
from s2i_bench.protocol import load_protocol
from s2i_bench.scoring import records
from s2i_bench.scoring.decisions import encode_decisions, pack_probability, unpack_decisions
from s2i_bench.scoring.score import score_translator
from s2i_bench.translators.reference import load_reference

PROTOCOL = load_protocol("tiny")


def consistent(shape, seed):
    rng = np.random.default_rng(seed)
    p = rng.random(shape)
    p.flat[:4] = [0.5, HALF_UP, 0.0, 1.0]  # a tie (not informative), just above, the ends
    return p, p > 0.5


def test_probabilities_round_trip_within_the_packing_step_and_keep_the_rule():
    p, informative = consistent((3, 500), seed=0)
    packed = encode_decisions([f"s{i}" for i in range(500)], informative, probability=p)
    d = unpack_decisions(json.loads(json.dumps(packed)), "r")
    assert d["probability"].shape == (3, 500) and d["probability"].dtype == np.float64
    np.testing.assert_array_equal(d["informative"], d["probability"] > 0.5)  # exactly
    np.testing.assert_allclose(d["probability"], p, atol=0.5 / 65535 + 1e-12)
    assert d["probability"].flat[0] == 32767 / 65535 and d["probability"].flat[1] == 32768 / 65535
    raw = np.frombuffer(base64.b64decode(packed["probability_x65535"]), dtype="<u2")
    assert raw.size == 1500 and raw.flat[3] == 65535  # uint16 round(p * 65535), row-major


def test_packing_follows_the_decision_where_rounding_would_cross_one_half():
    # 0.5 exactly rounds to 32768 (above one half); a decision "not informative" keeps it below
    q = np.frombuffer(base64.b64decode(pack_probability(np.array([[0.5, 0.5000001, 0.49999]]),
                                                        np.array([[False, True, True]]))), dtype="<u2")
    assert q.tolist() == [32767, 32768, 32768]


def test_an_edited_probability_is_refused_and_old_records_have_none():
    p, informative = consistent((1, 40), seed=1)
    packed = encode_decisions([f"s{i}" for i in range(40)], informative, probability=p)
    q = np.frombuffer(base64.b64decode(packed["probability_x65535"]), dtype="<u2").copy()
    q[7] = 65535 - q[7]  # across one half
    with pytest.raises(UserError, match="probability_x65535 does not give the decisions"):
        unpack_decisions({**packed, "probability_x65535": base64.b64encode(q.tobytes()).decode()}, "r")
    with pytest.raises(UserError, match="holds 39 values"):
        unpack_decisions({**packed, "probability_x65535": base64.b64encode(q[:39].tobytes()).decode()}, "r")
    with pytest.raises(UserError, match="not base64"):
        unpack_decisions({**packed, "probability_x65535": "%%%"}, "r")
    old = encode_decisions([f"s{i}" for i in range(40)], informative)
    assert "probability_x65535" not in old and unpack_decisions(old, "r")["probability"] is None


@pytest.fixture(scope="module")
def scored(tmp_path_factory, fake_store):
    tmp = tmp_path_factory.mktemp("probabilities")
    store = open_store(fake_store)
    bundle = load_bundle(write_bundle(tmp / "bundle.pt", PROTOCOL, seed=1))
    translator = load_reference("random-frame", store)
    record = score_translator(translator, store, bundle, protocol=PROTOCOL, split="test", seed=0, samples=2)
    records.append(tmp / "r.jsonl", record)
    return store, bundle, record, records.read(tmp / "r.jsonl")[0]


def test_a_scored_record_keeps_each_image_probability(scored):
    from s2i_bench.scoring.collect import make_plan
    from s2i_bench.translators import batch_for_rows, translate_checked

    store, bundle, record, read_back = scored
    d = read_back.decisions()
    assert d["probability"].shape == (2, 30)
    np.testing.assert_array_equal(d["informative"], d["probability"] > 0.5)
    np.testing.assert_array_equal(d["informative"], record.decisions()["informative"])
    # the random-frame translator answers with store frames: score them again, image by image
    plan = make_plan(store, PROTOCOL.class_keys, "test", 0, 2)
    for key, sl in plan.class_slices.items():
        assert read_back.share(key, "raw_share") == pytest.approx(d["informative"][:, sl].mean())
    translator = load_reference("random-frame", store)
    for k in range(2):
        batch = batch_for_rows(store, plan.indices, plan.seeds[k], "cpu", draw=k)
        _, images = translate_checked(translator, batch, size=96, rows=plan.indices)
        for key, sl in plan.class_slices.items():
            _, p = bundle.informative_scores(images[sl], key)
            np.testing.assert_allclose(d["probability"][k, sl], p, atol=0.5 / 65535 + 1e-12)


def test_decisions_only_bundles_record_no_probability(tmp_path, fake_store):
    store = open_store(fake_store)
    record = score_translator(load_reference("real-frame", store), store, FakeBundle(tmp_path / "b.pt"),
                              protocol=PROTOCOL, split="test", seed=0)
    assert "probability_x65535" not in record.to_dict()["decisions"] and record.decisions()["probability"] is None


def test_packed_probabilities_do_not_depend_on_batch_size_or_threads(tmp_path):
    """Sharded scoring must give the bytes one process gives: each image's packed probability
    (and decision) is the same whatever its batch companions and the thread count. On the CPU
    the float32 forward pass is per image exactly reproducible (measured on 10^5 images of trained
    classifiers, docs/metrics.md "The instrument"). Sensitivity: at these probabilities a change
    of one ulp in the network's outputs moves about 1 in 1,000 packed values across a rounding
    step (1 / 65535), several ulps (what another summation order gives) proportionally more."""
    bundle = load_bundle(write_bundle(tmp_path / "b.pt", PROTOCOL, seed=2))
    keys = PROTOCOL.class_keys[:2]
    with torch.no_grad():  # random weights give nearly one probability for every image: spread them
        for k in keys:
            bundle._informative[k].fc3.weight.mul_(30)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(2000, 3, 96, 96, generator=gen) * 2 - 1  # (2000, 3, 96, 96)
    images[1000:] = images[1000:].mean(1, keepdim=True)  # grey images: other activations
    threads = torch.get_num_threads()
    packed = []
    try:
        for batch_size, n_threads in ((256, threads), (37, 1), (1000, max(2, threads))):
            torch.set_num_threads(n_threads)
            bundle.batch_size = batch_size
            scores = [bundle.informative_scores(images, k) for k in keys]
            packed.append([pack_probability(p[None], d[None]) for d, p in scores])  # (1, 2000) each
    finally:
        torch.set_num_threads(threads)
        bundle.batch_size = 256
    q = np.frombuffer(base64.b64decode(packed[0][0]), dtype="<u2")
    assert np.ptp(q) > 1000  # spread over thousands of rounding steps, not one value
    assert packed[1] == packed[0] and packed[2] == packed[0]
