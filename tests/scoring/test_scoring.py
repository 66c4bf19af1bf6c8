"""The scoring function against fake translators and classifiers, the program loader, and the
`score` command. Tiny seeded data only."""

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import EvilPickle, FakeBundle, make_fake_store
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.images import net_to_uint8
from s2i_bench.protocol import load_protocol
from s2i_bench.safeload import archive_kind
from s2i_bench.scoring import score as scoring
from s2i_bench.translators import Batch, translate_checked
from s2i_bench.translators.programs import load_program_translator

PROTOCOL = load_protocol("tiny")




# -- fakes ------------------------------------------------------------------------------------------
class FakeTranslator:
    """Image = a colour from the spectrogram's band energies + per-image 'dropout' noise drawn
    from the image's own seed (as the real translators do), so batching cannot matter."""

    def __init__(self, path="fake-generator.pt", noise=0.6, broken=None):
        self.info = {"path": path, "sha256": "0" * 64, "kind": "fake", "epoch": 7, "embedding_dim": 16, "run": "r"}
        self.noise, self.broken, self.calls = noise, broken, []

    def translate(self, batch):
        spectrograms, seeds = batch.log_mel, batch.seeds
        b = spectrograms.shape[0]
        self.calls.append(b)
        assert spectrograms.shape[1:] == (1, 128, 100) and seeds.dtype == torch.int64 and seeds.shape == (b,)
        bands = spectrograms[:, 0].mean(dim=2)  # (B, 128)
        base = torch.stack([bands[:, 0:40].mean(1), bands[:, 40:80].mean(1), bands[:, 80:].mean(1)], 1)  # (B, 3)
        noise = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        colour = torch.tanh(2 * base + self.noise * noise)  # (B, 3)
        images = colour[:, :, None, None].expand(b, 3, 96, 96).clone()
        if self.broken == "nan":
            images[0, 0, 0, 0] = float("nan")
        elif self.broken == "batch":
            images = images[:1]  # one image for B sounds
        elif self.broken == "dtype":
            images = (images * 100).to(torch.int64)
        elif self.broken == "range":
            images = images * 3
        return images


@pytest.fixture()
def store(fake_store):
    return open_store(fake_store)


@pytest.fixture()
def bundle(tmp_path):
    return FakeBundle(tmp_path / "bundle.pt")


def score(translator, store, bundle, **kw):
    """The record as written (its JSON layout, which these tests inspect)."""
    kw.setdefault("protocol", PROTOCOL)
    return scoring.score_translator(translator, store, bundle, **kw).to_dict()


def run_translator(t, spectrograms, seeds):
    """Images at the protocol's size (96), through the checked path scoring uses."""
    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    return translate_checked(t, Batch(log_mel=torch.as_tensor(spectrograms), seeds=seeds), size=96)[1]


def strip(record):
    """The parts of a record that describe the result (not when or how fast it was made)."""
    return {k: v for k, v in record.items() if k not in ("created", "seconds")}


# -- the scoring function -------------------------------------------------------------------------
def test_record_matches_an_image_by_image_reference(store, bundle):
    translator = FakeTranslator()
    record = score(translator, store, bundle, seed=3)
    assert record["kind"] == "informativity" and record["epoch"] == 7 and record["d_update"] is False  # 7 % 5
    assert record["protocol"] == PROTOCOL.ref() and record["store"]["hash"] == store.store_hash
    assert record["store"]["split_policy"] == "video" and record["store"]["leaky"] is False
    assert record["classifiers"]["sha256"] and record["seed"] == 3 and record["split"] == "test"
    # Reference: every test sound on its own, in manifest order, seeds from seeding.item_seed.
    from s2i_bench.seeding import item_seed

    test_rows = store.split_indices("test")
    for ci, key in enumerate(PROTOCOL.class_keys):
        rows = [r for r in test_rows if store.manifest["class"][r] == key]
        called, matched = [], []
        for r in rows:
            spec = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[r:r + 1], dtype=np.float32)))
            img = run_translator(translator, spec, [item_seed(3, store.segment_ids[r], 0)])
            called.append(bool(bundle.predict_informative(img, key)[0]))
            matched.append(int(bundle.predict_class(img)[0]) == ci)
        c = record["classes"][key]
        assert c["n_images"] == len(rows) == 6
        assert c["raw_share"] == pytest.approx(np.mean(called))
        assert c["class_match_rate"] == pytest.approx(np.mean(matched))
        assert c["true_share"] is None  # not a synthetic store
        expected = min(max((np.mean(called) + 0.85 - 1) / (0.8 + 0.85 - 1), 0), 1)
        assert c["corrected_share"] == pytest.approx(expected)
        lo, hi = c["corrected_ci"]
        assert 0 <= lo <= c["corrected_share"] <= hi <= 1
    raw = [record["classes"][k]["raw_share"] for k in PROTOCOL.class_keys]
    assert record["mean"]["raw_share"] == pytest.approx(np.mean(raw))
    lo, hi = record["mean"]["corrected_ci"]
    assert lo <= record["mean"]["corrected_share"] <= hi
    json.dumps(record)  # JSON-able as it is


def test_batch_size_independence_and_seed_determinism(store, bundle):
    a = score(FakeTranslator(), store, bundle, seed=1, batch_size=256)
    small = FakeTranslator()
    b = score(small, store, bundle, seed=1, batch_size=4)
    assert max(small.calls) == 4  # really batched differently
    assert strip(a) == strip(b)
    assert strip(score(FakeTranslator(), store, bundle, seed=1)) == strip(a)
    other = score(FakeTranslator(), store, bundle, seed=2)
    assert [c["raw_share"] for c in other["classes"].values()] != [c["raw_share"] for c in a["classes"].values()]


def test_several_samples_report_the_spread(store, bundle):
    record = score(FakeTranslator(noise=1.5), store, bundle, seed=0, samples=3)
    spreads = []
    for c in record["classes"].values():
        assert c["n_images"] == 18 and c["n_sounds"] == 6
        assert len(c["draws"]["raw_share"]) == 3
        assert c["raw_share"] == pytest.approx(np.mean(c["draws"]["raw_share"]))
        assert c["raw_spread"] == pytest.approx(np.std(c["draws"]["raw_share"], ddof=1))
        spreads.append(c["raw_spread"])
    assert any(s > 0 for s in spreads)
    # Draw 0 of a K-draw scoring is the 1-draw scoring (same seeds).
    one = score(FakeTranslator(noise=1.5), store, bundle, seed=0, samples=1)
    for key, c in record["classes"].items():
        assert c["draws"]["raw_share"][0] == pytest.approx(one["classes"][key]["raw_share"])


@pytest.mark.parametrize("broken, message", [("nan", "NaN"), ("batch", r"shape \(1, 3, 96, 96\) for 6 sounds"),
                                             ("range", r"expected \[-1, 1\]"), ("dtype", "torch.int64")])
def test_bad_generator_output_is_refused_naming_the_file(store, bundle, broken, message):
    with pytest.raises(UserError, match=message) as e:
        score(FakeTranslator(path="/x/evil-gen.pt", broken=broken), store, bundle)
    assert "/x/evil-gen.pt" in str(e.value)


def test_unknown_classifier_quality_and_no_class_match(store, tmp_path):
    bundle = FakeBundle(tmp_path / "b.pt", class_match=False, outcomes=False)
    record = score(FakeTranslator(), store, bundle)
    for c in record["classes"].values():
        assert c["raw_share"] is not None and c["corrected_share"] is None and c["corrected_ci"] is None
        assert c["class_match_rate"] is None and c["ci_method"].startswith("none")
    assert record["mean"]["corrected_share"] is None and record["classifiers"]["class_match"] is False


def test_class_without_classifier_is_scored_without_an_estimate(store, tmp_path):
    """A bundle whose card lists a class as untrained: that class gets no informativity estimate
    (None), the means cover the other classes, and the rest of the record is unchanged."""
    full = score(FakeTranslator(), store, FakeBundle(tmp_path / "a.pt"), seed=3)
    partial_bundle = FakeBundle(tmp_path / "b.pt")
    partial_bundle.class_keys = PROTOCOL.class_keys[1:]
    partial_bundle.card["untrained"] = {PROTOCOL.class_keys[0]: "too few labelled images"}
    partial = score(FakeTranslator(), store, partial_bundle, seed=3)
    gone = PROTOCOL.class_keys[0]
    assert partial["untrained_classes"] == [gone]
    assert partial["classes"][gone]["raw_share"] is None and partial["classes"][gone]["corrected_share"] is None
    assert partial["classes"][gone]["class_match_rate"] == full["classes"][gone]["class_match_rate"]
    for key in PROTOCOL.class_keys[1:]:
        assert partial["classes"][key]["raw_share"] == full["classes"][key]["raw_share"]
    assert partial["mean"]["classes"] == list(PROTOCOL.class_keys[1:])
    assert partial["mean"]["raw_share"] == pytest.approx(
        np.mean([full["classes"][k]["raw_share"] for k in PROTOCOL.class_keys[1:]]))
    assert gone not in [k for k, _ in partial_bundle.seen]  # its classifier was never asked


def test_sheet_shows_distinct_videos_first():
    from s2i_bench.scoring.collect import sheet_positions

    videos = np.array(["a", "a", "b", "b", "c"])
    assert sheet_positions(videos, 3) == [0, 2, 4]
    assert sheet_positions(videos, 4) == [0, 2, 4, 1]  # a leading part keeps distinct videos
    assert sheet_positions(videos, 9) == [0, 2, 4, 1, 3]


def test_sample_sheet(store, bundle, tmp_path):
    record = score(FakeTranslator(), store, bundle, sample_sheet=tmp_path / "samples-e7.npz")
    sheet = np.load(record["sample_sheet"], allow_pickle=False)
    assert sheet["images"].shape == (30, 96, 96, 3) and sheet["images"].dtype == np.uint8
    test = store.manifest[store.manifest["split"] == "test"]
    expected = [sid for key in PROTOCOL.class_keys for sid in test[test["class"] == key]["segment_id"][:8]]
    assert sheet["segment_ids"].tolist() == expected
    rows = [int(np.flatnonzero(store.segment_ids == s)[0]) for s in expected]
    assert np.array_equal(sheet["frames"], store.frames[rows])
    # The saved images are the scored ones: regenerate the first.
    spec = torch.from_numpy(store.normalise(np.asarray(store.spectrograms[rows[:1]], dtype=np.float32)))
    img = run_translator(FakeTranslator(), spec, sheet["seeds"][:1])
    assert np.array_equal(net_to_uint8(img)[0], sheet["images"][0])


def test_synthetic_store_reports_the_judges_truth(tmp_path, bundle, monkeypatch):
    path = make_fake_store(tmp_path / "synthetic", synthetic_world={"seed": 1, "version": "test", "scenes_sha256": "0"})
    import s2i_bench.synth as synth

    seen = []

    def fake_judge(images_uint8, class_key):  # stands in for the world's judge: green above 128
        assert images_uint8.dtype == np.uint8 and images_uint8.shape[1:] == (96, 96, 3)
        seen.append(class_key)
        return images_uint8[:, 0, 0, 1] > 128

    monkeypatch.setattr(synth, "judge", fake_judge, raising=False)
    record = score(FakeTranslator(), open_store(path), bundle)
    assert set(seen) == set(PROTOCOL.class_keys)
    for c in record["classes"].values():
        assert c["true_share"] is not None and 0 <= c["true_share"] <= 1
    assert record["mean"]["true_share"] == pytest.approx(np.mean([c["true_share"] for c in record["classes"].values()]))


# -- programs --------------------------------------------------------------------------------------
class ProgramGenerator(torch.nn.Module):
    """A tiny stand-in generator to script / export."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, kernel_size=3, padding=1)
        self.p = dropout

    def forward(self, x):
        y = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), (12, 12))  # (B, 3, 12, 12)
        if self.p > 0:
            y = torch.nn.functional.dropout(y, self.p, training=True)  # test-time dropout from the global generator
        return torch.tanh(torch.nn.functional.interpolate(y, size=(96, 96), mode="nearest"))


class SeededProgram(torch.nn.Module):
    """Takes (spectrograms, seeds): per-image noise computed from the seed itself."""

    def forward(self, x, seeds):
        level = x.mean(dim=(1, 2, 3))  # (B,)
        wobble = torch.remainder(seeds, 1000).to(torch.float32) / 1000.0  # (B,)
        return torch.tanh(level + wobble)[:, None, None, None].expand(-1, 3, 96, 96)


def _spec(n, seed=0):
    return torch.rand(n, 1, 128, 100, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def programs(tmp_path_factory):
    """One model as TorchScript, as a dynamic-batch export and as a static-batch (2) export
    (exporting is slow: done once)."""
    tmp = tmp_path_factory.mktemp("programs")
    torch.manual_seed(0)
    model = ProgramGenerator().eval()
    ts, dyn, static = tmp / "g.pt", tmp / "g.pt2", tmp / "g_static.pt2"
    torch.jit.script(model).save(str(ts))
    example = (_spec(2),)
    torch.export.save(torch.export.export(model, example, dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), dyn)
    torch.export.save(torch.export.export(model, example), static)
    return model, ts, dyn, static


def test_torchscript_and_export_programs(programs):
    model, ts, dyn, static = programs
    x = _spec(5)
    with torch.no_grad():
        expected = model(x)
    assert (archive_kind(ts), archive_kind(dyn), archive_kind(static)) == ("torchscript", "export", "export")
    seeds = torch.arange(5)
    for path in (ts, dyn, static):  # the static one runs 5 images in padded chunks of 2
        t = load_program_translator(path)
        assert t.info["kind"] in ("torchscript", "export") and len(t.info["sha256"]) == 64
        assert t.info["calls"] == "batched (deterministic program)"
        torch.testing.assert_close(run_translator(t, x, seeds), expected)


def test_stochastic_program_is_run_per_image_and_seeded(tmp_path):
    path = tmp_path / "drop.pt"
    torch.jit.script(ProgramGenerator(dropout=0.5)).save(str(path))
    t = load_program_translator(path)
    assert "per image" in t.info["calls"]
    x, seeds = _spec(4), torch.tensor([11, 12, 13, 14])
    whole = run_translator(t, x, seeds)
    parts = torch.cat([run_translator(t, x[:1], seeds[:1]), run_translator(t, x[1:], seeds[1:])])
    assert torch.equal(whole, parts)
    assert not torch.equal(whole, run_translator(t, x, seeds + 1))


def test_two_input_program_gets_the_seeds(tmp_path):
    path = tmp_path / "seeded.pt"
    torch.jit.script(SeededProgram()).save(str(path))
    t = load_program_translator(path)
    assert t.info["inputs"] == ["spectrograms", "seeds"]
    x = _spec(3)
    assert not torch.equal(run_translator(t, x, [1, 2, 3]), run_translator(t, x, [4, 5, 6]))


def test_program_of_another_image_size_is_resized(tmp_path):
    class Small(torch.nn.Module):
        def forward(self, x):
            return torch.tanh(x[:, :, :48, :64].expand(-1, 3, -1, -1))  # (B, 3, 48, 64)

    path = tmp_path / "small.pt"
    torch.jit.script(Small()).save(str(path))
    t = load_program_translator(path)
    x = _spec(2)
    native, images = translate_checked(t, Batch(log_mel=x, seeds=torch.tensor([1, 2])), size=96)
    assert native.shape == (2, 3, 48, 64) and images.shape == (2, 3, 96, 96)


def _evil_pt2(tmp_path, good, marker, where):
    """A valid export archive with one member replaced by (or declared as) a code-running pickle."""
    evil = tmp_path / f"evil-{where}.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if where == "sample_inputs" and item.filename.endswith("sample_inputs/model.pt"):
                data = pickle.dumps(EvilPickle(marker))
            if where == "weights_config" and item.filename.endswith("model_weights_config.json"):
                cfg = json.loads(data)
                first = next(iter(cfg["config"]))
                cfg["config"][first]["use_pickle"] = True
                data = json.dumps(cfg).encode()
            if where == "weights_config" and item.filename.endswith("weights/weight_0"):
                data = pickle.dumps(EvilPickle(marker))
            zout.writestr(item, data)
    return evil


@pytest.mark.parametrize("where", ["sample_inputs", "weights_config", "plain_pickle"])
def test_crafted_pickles_are_refused_and_never_run(tmp_path, programs, where):
    marker = tmp_path / "MARKER"
    if where == "plain_pickle":
        path = tmp_path / "evil.pt"
        path.write_bytes(pickle.dumps(EvilPickle(marker)))
    else:
        path = _evil_pt2(tmp_path, programs[3], marker, where)
    with pytest.raises(UserError) as e:
        load_program_translator(path)
    assert str(path) in str(e.value)
    assert not marker.exists()


# -- the `score` command, through the real loaders ----------------------------------------------------
# (the `chain` fixture, a run folder with checkpoints, a bundle and a store: tests/conftest.py)
from click.testing import CliRunner  # noqa: E402

from s2i_bench.cli import main  # noqa: E402


def invoke(*args):
    res = CliRunner().invoke(main, ["score", *map(str, args)])
    return res


def test_score_checkpoint_cli(chain):
    run, bundle, store = chain
    ckpt = run / "checkpoints" / "generator-000002.pt"
    res = invoke(ckpt, "--data", store, "--classifiers", bundle, "--json", "--seed", "5")
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    assert record["translator"]["kind"] == "checkpoint" and record["epoch"] == 2 and record["seed"] == 5
    assert record["translator"]["sha256"] and record["classifiers"]["sha256"]
    assert record["store"]["split_policy"] == "video" and record["protocol"]["name"] == "tiny"
    for c in record["classes"].values():
        assert c["n_images"] == 6 and 0 <= c["raw_share"] <= 1 and c["sensitivity"] == 0.8
        assert c["specificity"] == pytest.approx(0.7)
    written = [json.loads(line) for line in (ckpt.parent / "metric-informativity.jsonl").read_text().splitlines()]
    assert written[-1]["classes"] == record["classes"]


def test_score_run_folder_scores_checkpoints_then_reuses_records(chain):
    run, bundle, store = chain
    res = invoke(run, "--data", store, "--classifiers", bundle, "--json")
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["num_records"] == 2 and result["scored_now"] == 2 and result["had_records"] == 0
    assert result["d_update_from"] == "log.csv"
    raw = result["summary"]["raw_share"]
    # epoch 2 follows a D update: replaced by the mean of epochs 0..1 that exist (epoch 0 only).
    assert raw["mean"]["replaced_epochs"] == [2] and raw["mean"]["left_out_epochs"] == []
    assert raw["missing_epochs"] == [1]
    lines = (run / "metric-informativity.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [json.loads(x)["epoch"] for x in lines] == [0, 2]
    sheet = Path(json.loads(lines[1])["sample_sheet"])
    assert sheet.parent == run and sheet.name.startswith("samples-epoch-000002-") and sheet.suffix == ".npz"
    assert np.load(sheet)["images"].shape == (30, 32, 32, 3)  # the native size
    for key in PROTOCOL.class_keys:
        assert raw["classes"][key]["window_average"] == pytest.approx(json.loads(lines[0])["classes"][key]["raw_share"])
    # Again: the in-loop records match (same bundle, store, split, seed, samples): nothing rescored.
    res = invoke(run, "--data", store, "--classifiers", bundle, "--json")
    again = json.loads(res.stdout)
    assert again["scored_now"] == 0 and again["had_records"] == 2
    assert len((run / "metric-informativity.jsonl").read_text().splitlines()) == 2
    assert again["summary"] == result["summary"]
    # Another seed does not match them: the checkpoints are scored again and appended.
    res = invoke(run, "--data", store, "--classifiers", bundle, "--seed", "9")
    assert res.exit_code == 0 and "Informativity" in res.stdout
    assert len((run / "metric-informativity.jsonl").read_text().splitlines()) == 4


def test_score_program_on_a_leaky_store(chain, programs, tmp_path):
    _, bundle, _ = chain
    leaky = make_fake_store(tmp_path / "leaky", split_policy="random")
    res = invoke(programs[1], "--data", leaky, "--classifiers", bundle, "--out", tmp_path / "r.jsonl")
    assert res.exit_code == 0, res.output
    assert "Rail transport" in res.stdout and "corrected" in res.stdout and "split policy random, LEAKY" in res.stdout
    record = json.loads((tmp_path / "r.jsonl").read_text())
    assert record["translator"]["kind"] == "torchscript"
    assert record["store"]["split_policy"] == "random" and record["store"]["leaky"] is True
    assert "leaky" in res.stderr


def test_score_refuses_a_crafted_pickle(chain, tmp_path):
    _, bundle, store = chain
    marker = tmp_path / "MARKER"
    evil = tmp_path / "generator-000001.pt"
    evil.write_bytes(pickle.dumps(EvilPickle(marker)))
    res = invoke(evil, "--data", store, "--classifiers", bundle)
    assert res.exit_code == 2 and str(evil) in res.output and "Traceback" not in res.output
    assert not marker.exists()
    # A crafted bundle too.
    evil_bundle = tmp_path / "bundle.pt"
    evil_bundle.write_bytes(pickle.dumps(EvilPickle(marker)))
    res = invoke(chain[0], "--data", store, "--classifiers", evil_bundle)
    assert res.exit_code == 2 and str(evil_bundle) in res.output
    assert not marker.exists()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scoring_matches_cpu(chain):
    from s2i_bench.informativity.bundle import load_bundle
    from s2i_bench.translators import load_translator

    run, bundle_path, store_path = chain
    ckpt = run / "checkpoints" / "generator-000002.pt"
    store = open_store(store_path)
    records = [score(load_translator(ckpt, device=d), store, load_bundle(bundle_path, device=d), device=d)
               for d in ("cpu", "cuda")]
    for key in PROTOCOL.class_keys:
        cpu, gpu = records[0]["classes"][key], records[1]["classes"][key]
        # Same seeds, same sounds: verdicts may differ only where a logit sits on the boundary.
        assert abs(cpu["raw_share"] - gpu["raw_share"]) <= 1 / cpu["n_images"] + 1e-9
