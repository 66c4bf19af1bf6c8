"""FID, KID, PRDC, IIS and AIS against reference implementations (numpy, torchmetrics' math, the
`prdc` package) on tiny seeded features, the bring-your-own extractor round trip, and the
metrics in `score` and `report`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import FakeBundle, FLOAT_64x48, write_bundle
from s2i_bench.errors import UserError
from s2i_bench.scoring import image_metrics as IM


def _features(seed: int, n: int = 120, d: int = 6, shift: float = 0.0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_fid_is_the_frechet_distance_of_the_two_gaussians():
    from scipy import linalg

    real, fake = _features(0), _features(1, shift=0.7)
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert IM.fid(real, fake) == pytest.approx(expected, rel=1e-6)
    assert abs(IM.fid(real, real)) < 1e-8  # the real set against itself
    assert IM.fid(real, _features(2)) < 0.5 < IM.fid(real, _features(3, shift=3.0))


def test_kid_is_the_unbiased_mmd_with_a_cubic_kernel():
    real, fake = _features(0, n=40), _features(1, n=40, shift=0.5)
    d = real.shape[1]

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    m = len(real)
    kxx, kyy, kxy = k(real, real), k(fake, fake), k(real, fake)
    expected = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    mean, std = IM.kid(real, fake, subsets=5, subset_size=m)  # every subset is the whole set
    assert mean == pytest.approx(expected, rel=1e-6) and std == pytest.approx(0, abs=1e-9)
    same, _ = IM.kid(real, real, subsets=5, subset_size=m)
    assert abs(same) < abs(expected)


def test_prdc_matches_the_prdc_package():
    prdc = pytest.importorskip("prdc")
    real, fake = _features(0, n=80), _features(1, n=70, shift=0.4)
    ours = IM.prdc(real, fake, k=5)
    theirs = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(theirs[key]), abs=1e-12), key


def test_iis_and_ais_are_rankings_with_half_at_chance():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 8))
    assert IM.iis(real, real).mean() == 1.0  # every image is its own segment's frame
    unrelated = IM.iis(rng.normal(size=(200, 8)), real).mean()
    assert 0.4 < unrelated < 0.6
    audio = rng.normal(size=(200, 8))
    assert IM.ais(audio, audio + 0.1 * rng.normal(size=audio.shape)).mean() > 0.95
    idx = IM.negatives_for(10, 30, seed=1)
    assert not (idx == np.arange(10)[:, None]).any() and idx.max() < 10


# -- bring-your-own extractors ------------------------------------------------------------------------
class TinyFeatures(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)

    def forward(self, x):  # (B, 3, 32, 32) -> (B, 4)
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def _export(tmp_path: Path, module, example, name="feat", sidecar=None) -> Path:
    from s2i_bench.fileio import sha256_file

    path = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.trace(module.eval(), example), str(path))
    meta = {"sha256": sha256_file(path), "input_size": [32, 32], "input_range": [0, 1],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    meta.update(sidecar or {})
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_bring_your_own_extractor_round_trip(tmp_path):
    from s2i_bench.scoring.features import program_extractor

    torch.manual_seed(0)
    module = TinyFeatures()
    path = _export(tmp_path, module, torch.rand(2, 3, 32, 32))
    ex = program_extractor(path)
    images = torch.rand(5, 3, 64, 64) * 2 - 1
    got = ex(images)
    x = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    x = ((x + 1) / 2 - 0.5) / 0.25
    np.testing.assert_allclose(got, module(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    assert ex.ref()["sha256"] and ex.ref()["input_size"] == [32, 32]
    ex.worker.close()


def test_a_bad_or_hostile_extractor_is_refused(tmp_path):
    from s2i_bench.scoring.features import program_extractor

    torch.manual_seed(0)
    path = _export(tmp_path, TinyFeatures(), torch.rand(2, 3, 32, 32), sidecar={"sha256": "0" * 64})
    with pytest.raises(UserError, match="pins sha256"):
        program_extractor(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(UserError, match="no sidecar"):
        program_extractor(path)

    class Reads(torch.nn.Module):  # an operator off the allowlist: reads a file when run
        def forward(self, x):
            return (torch.from_file("/etc/hostname", size=4, dtype=torch.uint8).float()[None].expand(x.shape[0], 4)
                    + x.mean())

    hostile = tmp_path / "hostile.pt"
    torch.jit.save(torch.jit.script(Reads()), str(hostile))
    from s2i_bench.fileio import sha256_file

    hostile.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(hostile), "input_size": [32, 32]}))
    with pytest.raises(UserError, match="refused|allowlist|not allowed"):
        program_extractor(hostile)


# -- in `score` and `report` ------------------------------------------------------------------------
def test_score_with_image_metrics_records_them(fake_store, tmp_path):
    from click.testing import CliRunner

    from s2i_bench.cli import main
    from s2i_bench.protocol import load_protocol

    bundle = write_bundle(tmp_path / "bundle.pt", load_protocol("tiny"))
    plugin = tmp_path / "painter.py"
    plugin.write_text(FLOAT_64x48)
    res = CliRunner().invoke(main, ["score", f"{plugin}:build", "--data", str(fake_store), "--classifiers", str(bundle),
                                    "--out", str(tmp_path / "r.jsonl"), "--json", "--metrics", "fid,kid,prdc,iis"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    m = record["image_metrics"]
    assert record["metrics"] == ["informativity", "fid", "kid", "prdc", "iis"]
    assert m["extractor"]["kind"] == "domain" and m["dims"] == 32 and m["n_real"] == m["n_generated"] == 30
    assert m["fid"]["value"] >= 0 and m["fid"]["ci"][0] <= m["fid"]["ci"][1] and "warning" in m["fid"]
    assert 0 <= m["iis"]["value"] <= 1 and set(m["prdc"]) >= {"precision", "recall", "density", "coverage"}
    from s2i_bench.scoring import records

    assert records.read(tmp_path / "r.jsonl")[0].decisions()["iis"].shape == (1, 30)
    bad = CliRunner().invoke(main, ["score", f"{plugin}:build", "--data", str(fake_store), "--classifiers", str(bundle),
                                    "--out", str(tmp_path / "r.jsonl"), "--metrics", "fdi"])
    assert bad.exit_code == 2 and "did you mean 'fid'" in bad.output
    ais = CliRunner().invoke(main, ["score", f"{plugin}:build", "--data", str(fake_store), "--classifiers", str(bundle),
                                    "--out", str(tmp_path / "r.jsonl"), "--metrics", "ais"])
    assert ais.exit_code == 2 and "--ais-audio" in ais.output


def test_ais_with_encoders_made_here(fake_store, tmp_path):
    """AIS machinery with small random encoders exported in the test (the user brings real ones)."""
    from s2i_bench.data.store import open_store
    from s2i_bench.fileio import sha256_file
    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring.command import _metric_options
    from s2i_bench.scoring.score import score_translator

    class AudioEnc(torch.nn.Module):
        def forward(self, w):  # (B, 16000) -> (B, 4)
            return torch.stack([w.abs().mean(1), w.std(1), w[:, ::2].mean(1), (w > 0).float().mean(1)], 1)

    audio = tmp_path / "audio.pt"
    torch.jit.save(torch.jit.trace(AudioEnc().eval(), torch.rand(2, 16000)), str(audio))
    audio.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(audio), "sample_rate": 16000,
                                                      "seconds": 1}))
    torch.manual_seed(1)
    image = _export(tmp_path, TinyFeatures(), torch.rand(2, 3, 32, 32), name="image")
    store = open_store(fake_store)
    proto = load_protocol("tiny")
    opts = _metric_options("ais", None, audio, image, store, proto)
    import importlib.util

    (tmp_path / "painter.py").write_text(FLOAT_64x48)
    spec = importlib.util.spec_from_file_location("painter_ais", tmp_path / "painter.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from s2i_bench.translators import Translator

    t = Translator(mod.Painter().translate, {"path": "painter"})
    bundle = FakeBundle(tmp_path / "b.pt", informative="mean", class_match=False)
    rec = score_translator(t, store, bundle, protocol=proto, split="test", **opts)
    a = rec.image_metrics["ais"]
    assert 0 <= a["value"] <= 1 and a["encoders"]["audio"]["sample_rate"] == 16000 and a["ci"]
    opts["ais"][0].worker.close()
    opts["ais"][1].worker.close()
