"""The CLAP audio presets (`--ais-audio-preset`): random-weight laion_clap checkpoints written in
laion's own format (the CLAP model built by laion_clap's factory with its `transformer` text
type, which needs no download; `torch.save({"state_dict": ...})`), read by s2i-bench and
compared with laion_clap's own `CLAP_Module.get_audio_embedding_from_data` on the same model and
waveforms; the recipe identity follows the checkpoint; strangers' pickles and the wrong model are
refused with one line; `score` records AIS with the recipe. Nothing is fetched (`no_network`)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from fakes import make_fake_store, write_bundle
from s2i_bench.fileio import file_sha256
from s2i_bench.errors import UserError
from s2i_bench.scoring import clap_tower as C
from s2i_bench.scoring import presets as P

pytestmark = pytest.mark.usefixtures("no_network")
CONFIG = "s2i-test-clap"  # HTSAT-tiny's audio config with a one-layer text transformer (the text is ignored)
CLIP_ARCH = "s2i-test-clip512"  # a small open_clip CLIP with 512-d embeddings, as CLAP's


def _laion():
    """laion_clap's hook (CLAP_Module) and data code; its training code parses sys.argv on import."""
    with mock.patch.object(sys, "argv", ["pytest"]):
        import laion_clap
        from laion_clap.training import data
    return laion_clap, data


@pytest.fixture(scope="module")
def clap(tmp_path_factory):
    """{model: the laion_clap CLAP model, cfg, a: its checkpoint, b: another one, `module.`-prefixed}."""
    clap_module = C.clap_module()
    root = tmp_path_factory.mktemp("clap")
    base = json.loads((Path(clap_module.__file__).parent / "model_configs" / "HTSAT-tiny.json").read_text())
    cfg = {**base, "text_cfg": {"context_length": 77, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
    (root / f"{CONFIG}.json").write_text(json.dumps(cfg))
    clap_module.add_model_config(root / f"{CONFIG}.json")
    out = {}
    for name, seed, prefix in (("a", 0, ""), ("b", 1, "module.")):
        torch.manual_seed(seed)
        model, model_cfg = clap_module.create_model(CONFIG, "transformer", precision="fp32",
                                                    device=torch.device("cpu"), enable_fusion=False)
        torch.save({"state_dict": {prefix + k: v for k, v in model.state_dict().items()}, "epoch": 3},
                   root / f"{name}.pt")
        out[name], out[f"model_{name}"], out["cfg"] = root / f"{name}.pt", model.eval(), model_cfg
    return out


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(0)
    w = (0.3 * rng.standard_normal((3, 48_000))).astype(np.float32)  # (B, 1 s at 48 kHz)
    w[0, :10] = [1.5, -1.5, 1.0, -1.0, 0.99999, 3e-5, -3e-5, 0.5, -0.5, 0.0]  # clipping and truncation
    return w


def test_the_embedding_is_laion_claps_own(clap, waves):
    laion_clap, _ = _laion()
    fn, ref = C.clap_audio_encoder("clap-htsat-tiny", clap["a"], segment_seconds=1.0)
    ours = fn(waves)  # (3, 512)
    module = laion_clap.CLAP_Module.__new__(laion_clap.CLAP_Module)  # its __init__ fetches roberta-base
    torch.nn.Module.__init__(module)
    module.model, module.model_cfg, module.enbale_fusion = clap["model_a"], clap["cfg"], False
    theirs = module.get_audio_embedding_from_data(waves)  # laion's quantise, repeatpad, HTS-AT, projection, L2
    assert ours.shape == theirs.shape == (3, 512)
    assert np.abs(ours - theirs).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert (fn.sample_rate, fn.wants_context, fn.samples) == (48_000, False, 48_000)
    r = ref["recipe"]
    assert r["filling"].startswith("repeatpad") and r["audio_cfg"]["clip_samples"] == 480_000
    assert ref["sha256"] == r["checkpoint_sha256"] and r["precision"] == "float32"


@pytest.mark.parametrize("length", [48_000, 70_000, 480_000, 1_000])
def test_quantise_and_repeatpad_are_laions(length):
    _, data = _laion()
    rng = np.random.default_rng(length)
    w = (0.8 * rng.standard_normal(length)).astype(np.float32)  # some beyond [-1, 1]
    q = torch.from_numpy(data.int16_to_float32(data.float32_to_int16(w))).float()
    theirs = data.get_audio_features({}, q, 480_000, data_truncating="rand_trunc", data_filling="repeatpad",
                                     audio_cfg=None)["waveform"]  # the same filling as 'fusion' (no mel)
    ours = C.laion_input(w[None], 480_000)[0]
    assert torch.equal(ours, theirs)


def test_the_recipe_identity_follows_the_checkpoint(clap, waves):
    refs = [C.clap_audio_encoder("clap-htsat-tiny", clap[k], segment_seconds=1.0)[1] for k in ("a", "b")]
    recipes = [P.record_recipe(None, image_size=96, audio_ref={"audio": r, "image": None}) for r in refs]
    assert recipes[0]["identity"] != recipes[1]["identity"]
    assert P.difference(recipes[0], recipes[1]).startswith("audio.checkpoint_sha256")
    assert recipes[0]["audio"]["preset"] == "clap-htsat-tiny" and recipes[0]["audio"]["sample_rate"] == 48_000
    again = P.record_recipe(None, image_size=96, audio_ref={"audio": dict(refs[0], path="/elsewhere"), "image": None})
    assert again["identity"] == recipes[0]["identity"]  # paths are not part of it


class _Boom:
    def __reduce__(self):
        return (open, ("/tmp/s2i-clap-pwned", "w"))


def test_refusals_are_one_line(clap, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"audio_branch.x": torch.zeros(1)}, "x": _Boom()}, evil)
    with pytest.raises(UserError, match="refused: not loadable with weights_only") as e:
        C.clap_audio_encoder("clap-htsat-tiny", evil, segment_seconds=1.0)
    assert "\n" not in str(e.value) and not Path("/tmp/s2i-clap-pwned").exists()
    proj = {"audio_projection.0.weight": torch.zeros(512, 768), "audio_branch.bn0.weight": torch.ones(64)}
    cases = {"fusion": ({**proj, "audio_branch.fusion_model.w": torch.zeros(2)}, "clap-htsat-tiny", "fusion"),
             "base": (proj, "clap-htsat-base", "width 768.*clap-htsat-tiny"),
             "text": ({"text_branch.w": torch.zeros(2)}, "clap-htsat-tiny", "no audio_branch"),
             "missing": (proj, "clap-htsat-tiny", "missing key 'audio_branch\\.")}
    for name, (state, preset, message) in cases.items():
        torch.save({"state_dict": state}, tmp_path / f"{name}.pt")
        with pytest.raises(UserError, match=message) as e:
            C.clap_audio_encoder(preset, tmp_path / f"{name}.pt", segment_seconds=1.0)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="needs --ais-audio-weights"):
        C.clap_audio_encoder("clap-htsat-tiny", None, segment_seconds=1.0)
    with pytest.raises(UserError, match="at most 10 s"):
        C.clap_audio_encoder("clap-htsat-tiny", clap["a"], segment_seconds=11.0)


def _tiny_clip(root):
    """An open_clip state dict of a small CLIP with CLAP's 512-d embeddings."""
    import open_clip
    from safetensors.torch import save_file

    (root / f"{CLIP_ARCH}.json").write_text(json.dumps({
        "embed_dim": 512, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(root / f"{CLIP_ARCH}.json")
    torch.manual_seed(2)
    state = open_clip.create_model(CLIP_ARCH, pretrained=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "clip.safetensors"))
    return root / "clip.safetensors"


def test_score_records_ais_with_the_clap_recipe(clap, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from s2i_bench.cli import main
    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring.records import read as read_records

    clip = dataclasses.replace(P.PRESETS["clip-vit-b-32"], name="s2i-test-clip512", architecture=CLIP_ARCH)
    monkeypatch.setitem(P.PRESETS, clip.name, clip)
    weights = _tiny_clip(tmp_path)
    proto = load_protocol("tiny")
    per_class = {"train": 2, "val": 1, "test": 2}
    store = make_fake_store(tmp_path / "store", per_class=per_class, hires_rate=48_000)
    low = make_fake_store(tmp_path / "store16", per_class=per_class)
    bundle = write_bundle(tmp_path / "bundle.pt", proto)
    base = ["score", "reference:random-frame", "--classifiers", str(bundle), "--out", str(tmp_path / "r.jsonl"),
            "--metrics", "ais,ais_rank,ais_z", "--feature-preset", clip.name, "--feature-weights", str(weights),
            "--ais-audio-preset", "clap-htsat-tiny", "--ais-audio-weights", str(clap["a"])]
    res = CliRunner().invoke(main, base + ["--data", str(store)])  # CLAP audio, CLIP images: trained apart
    assert res.exit_code == 2 and "--ais-unaligned" in res.output and "Traceback" not in res.output
    base.append("--ais-unaligned")
    res = CliRunner().invoke(main, base + ["--data", str(low)])
    assert res.exit_code == 2 and "--audio-rate 48000" in res.output.splitlines()[-1]  # one line, no traceback
    assert "Traceback" not in res.output
    res = CliRunner().invoke(main, base + ["--data", str(store), "--ais-audio", str(clap["a"])])
    assert res.exit_code == 2 and "not both" in res.output
    res = CliRunner().invoke(main, base + ["--data", str(store)])
    assert res.exit_code == 0, res.output
    (record,) = read_records(tmp_path / "r.jsonl")
    m = record.image_metrics
    audio = m["recipe"]["audio"]
    assert audio["preset"] == "clap-htsat-tiny" and audio["checkpoint_sha256"] == file_sha256(clap["a"])
    assert audio["filling"].startswith("repeatpad") and m["recipe"]["ais_image"]["preset"] == clip.name
    assert 0 <= m["ais"]["value"] <= 1 and 0 <= m["ais_rank"]["value"] <= 1 and "mean_cosine" in m["ais_z"]
    assert m["ais"]["encoders"]["audio"]["sample_rate"] == 48_000
