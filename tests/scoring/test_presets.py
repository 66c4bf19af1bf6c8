"""The CLIP-space presets and the recipe identity: random-weight checkpoints saved in each
library's own format (an open_clip state dict of a small architecture registered with open_clip,
a transformers folder written by `save_pretrained`), loaded through s2i-bench's code and compared
with the libraries' own loading and forward passes; the field's AIS variants and retrieval against
direct loops of their published definitions; records carry the identity and `compare` refuses two
recipes, naming the field. Nothing is fetched (`no_network`)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest
import torch

from fakes import FLOAT_64x48, FakeBundle, make_scored_system
from s2i_bench.errors import UserError
from s2i_bench.images import chw_uint8_to_net
from s2i_bench.scoring import presets as P
from s2i_bench.scoring.features import Extractor
from s2i_bench.scoring.image_metrics.aic import aic
from s2i_bench.scoring.image_metrics.ais_rank import ais_rank
from s2i_bench.scoring.image_metrics.ais_z import ais_z
from s2i_bench.scoring.image_metrics.clip_score import clip_score
from s2i_bench.scoring.image_metrics.retrieval import retrieval_ranks

pytestmark = pytest.mark.usefixtures("no_network")
ARCH = "s2i-test-tiny"  # a small CLIP registered with open_clip below (the real ones are 150-430M parameters)
REL = 1e-5
CLASSES = ["dog barking", "baby crying", "train"]


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    """{weights: open_clip safetensors, bin: the same as a torch file, hf: a transformers folder}."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    (root / f"{ARCH}.json").write_text(json.dumps({
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(root / f"{ARCH}.json")
    torch.manual_seed(0)
    state = open_clip.create_model(ARCH, pretrained=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(root / "open_clip_model.safetensors"))
    torch.save(state, root / "open_clip_pytorch_model.bin")
    return {"weights": root / "open_clip_model.safetensors", "bin": root / "open_clip_pytorch_model.bin",
            "hf": _hf_folder(root / "hf")}


def _hf_folder(folder):
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(1)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=60,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=16)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}  # a character vocabulary: a real one merges more
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


@pytest.fixture
def tiny_preset(monkeypatch):
    """The clip-vit-b-32 preset with the small architecture: the same code, a smaller network."""
    preset = dataclasses.replace(P.PRESETS["clip-vit-b-32"], name="s2i-test-clip", architecture=ARCH)
    monkeypatch.setitem(P.PRESETS, preset.name, preset)
    return preset.name


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, size=(6, 3, 48, 64), dtype=np.uint8))  # (B, 3, H, W)


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(b).max())


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_open_clip_preset_is_open_clips_own_computation(clip_files, tiny_preset, images):
    import open_clip
    from PIL import Image

    ex = P.load_preset(tiny_preset, clip_files["weights"])
    ours_img, ours_txt = ex(chw_uint8_to_net(images)), ex.text(CLASSES)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(clip_files["bin"]))
    model.eval()
    with torch.no_grad():  # open_clip's loader, transform, tokenizer and towers
        pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        ref_img = model.encode_image(torch.stack([preprocess(p) for p in pil])).numpy()
        ref_txt = model.encode_text(open_clip.get_tokenizer(ARCH)(CLASSES)).numpy()
        logits = (model.logit_scale.exp() * torch.from_numpy(_unit(ref_img)) @ torch.from_numpy(_unit(ref_txt)).T)
    assert _rel(ours_img, ref_img) <= REL and _rel(ours_txt, ref_txt) <= REL
    labels = np.array([0, 1, 2, 0, 1, 2])
    cos = (_unit(ref_img) * _unit(ref_txt)[labels]).sum(1)
    assert np.allclose(clip_score(ours_img, ours_txt, labels), 100 * np.maximum(cos, 0), rtol=REL, atol=1e-9)
    assert np.array_equal(aic(ours_img, ours_txt, labels), logits.numpy().argmax(1) == labels)
    assert ex.recipe["checkpoint_sha256"] == ex.sha256 and ex.recipe["weights_check"] == "unconfirmed"
    # the same weights as a torch file read with weights_only: the same features, the same identity
    other = P.load_preset(tiny_preset, clip_files["bin"])
    assert np.array_equal(other(chw_uint8_to_net(images)), ours_img)


def test_transformers_preset_is_transformers_own_computation(clip_files, images):
    from transformers import CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    ex = P.load_preset("hf-clip-vit-b-32", clip_files["hf"])
    ours_img, ours_txt = ex(chw_uint8_to_net(images)), ex.text(CLASSES)
    folder = clip_files["hf"]
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil.from_pretrained(folder),
                              tokenizer=CLIPTokenizer.from_pretrained(folder))
    batch = processor(text=CLASSES, images=[im.permute(1, 2, 0).numpy() for im in images], return_tensors="pt",
                      padding=True)
    with torch.no_grad():
        out = model(**batch)  # the library's forward: normalised embeddings and scaled cosines
        cos = (out.logits_per_image / model.logit_scale.exp()).numpy()
    assert _rel(_unit(ours_img), out.image_embeds.numpy()) <= REL
    assert _rel(_unit(ours_txt), out.text_embeds.numpy()) <= REL
    assert np.allclose(_unit(ours_img) @ _unit(ours_txt).T, cos, atol=1e-6)
    assert ex.recipe["family"] == "transformers" and ex.recipe["config_sha256"]


def test_the_field_s_ais_variants_and_retrieval_match_their_published_loops():
    rng = np.random.default_rng(3)
    audio, images = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    images[4] = audio[4]  # a perfect match
    # SonicDiffusion evaluation.py: 1 for every negative whose score is below the pair's (`>`), averaged
    sim = _unit(images) @ _unit(audio).T
    sonic = [np.mean([1 if sim[i, i] > sim[i, j] else 0 for j in range(12) if j != i]) for i in range(12)]
    assert np.allclose(ais_rank(audio, images), sonic)
    # MACS evaluation/ais.py: (own cosine - mean) / np.std over every other generated image
    z, own = ais_z(audio, images)
    for i in range(12):
        cal = np.array([_unit(audio)[i] @ _unit(images)[j] for j in range(12) if j != i])
        assert np.isclose(z[i], (own[i] - cal.mean()) / cal.std()) and np.isclose(own[i], sim[i, i])
    # retrieval: ties count against the own frame
    real = rng.normal(size=(12, 5))
    real[7] = real[3]  # two identical real frames
    ranks = retrieval_ranks(real + 0.01 * rng.normal(size=real.shape), real)
    s = _unit(real + 0.0) @ _unit(real).T
    assert ranks.min() >= 1 and ranks[3] >= 2 and ranks[7] >= 2
    loop = [1 + sum(1 for j in range(12) if j != i and _unit(real)[j] @ _unit(real + 0)[i] >= s[i, i] - 1e-12)
            for i in range(12)]
    assert np.array_equal(retrieval_ranks(real, real), loop)


def test_refusals_are_one_line(clip_files, tiny_preset, tmp_path):
    with pytest.raises(UserError, match="needs --feature-weights.*downloads nothing"):
        P.load_preset(tiny_preset)
    with pytest.raises(UserError, match="unknown preset"):
        P.load_preset("clip-vit-b-99")

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 2

    program = tmp_path / "ViT-B-32.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(program))
    with pytest.raises(UserError, match="TorchScript"):
        P.load_preset(tiny_preset, program)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"visual.proj": Evil()}, tmp_path / "evil.bin")
    with pytest.raises(UserError, match="weights_only"):
        P.load_preset(tiny_preset, tmp_path / "evil.bin")
    no_tokenizer = tmp_path / "hf"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((clip_files["hf"] / name).read_bytes())
    with pytest.raises(UserError, match="vocab.json"):
        P.load_preset("hf-clip-vit-b-32", no_tokenizer)


def _fake_extractor(**image):
    return Extractor("fake", "a" * 64, lambda x: x, {"path": "/somewhere"},
                     {"preset": "inception-pytorch-fid", "checkpoint_sha256": "a" * 64, "resize": "pytorch-fid",
                      **image})


def test_the_identity_pins_the_whole_recipe_and_nothing_else():
    audio = {"audio": {"sha256": "c" * 64, "sample_rate": 16000, "seconds": 1.0, "samples": 16000, "path": "/a"},
             "image": None}
    base = P.record_recipe(_fake_extractor(), image_size=96, audio_ref=audio)
    assert base["identity"].startswith("s2i-recipe-1:") and base == P.record_recipe(_fake_extractor(), image_size=96,
                                                                                     audio_ref=audio)
    moved = dict(audio, audio=dict(audio["audio"], path="/elsewhere"))  # another machine's path
    assert P.record_recipe(_fake_extractor(), image_size=96, audio_ref=moved)["identity"] == base["identity"]
    for changed, field in ((P.record_recipe(_fake_extractor(resize="torchmetrics"), image_size=96, audio_ref=audio),
                            "image.resize"),
                           (P.record_recipe(_fake_extractor(), image_size=128, audio_ref=audio), "images.size"),
                           (P.record_recipe(_fake_extractor(), image_size=96,
                                            audio_ref=dict(audio, audio=dict(audio["audio"], sample_rate=44100))),
                            "audio.sample_rate")):
        assert changed["identity"] != base["identity"]
        assert P.difference(base, changed).startswith(field)
    assert P.difference(base, base) is None
    assert base["metrics"]["iis"]["negatives"] == 20 and "retrieval" in base["metrics"]


def _with_recipe(run, recipe):
    from s2i_bench.scoring import records

    path = run / "metric-informativity.jsonl"
    recs = [r.to_dict() for r in records.read(path)]
    for r in recs:
        r["image_metrics"]["recipe"] = recipe
    path.unlink()
    records.extend(path, recs)


def test_compare_refuses_records_of_two_recipes_naming_the_field(tmp_path):
    from s2i_bench.scoring.compare import compare

    a = make_scored_system(tmp_path, "a", 0.3)
    b = make_scored_system(tmp_path, "b", 0.5)
    recipe = P.record_recipe(_fake_extractor(), image_size=96)
    _with_recipe(a, recipe)
    _with_recipe(b, P.record_recipe(_fake_extractor(resize="torchmetrics"), image_size=96))
    with pytest.raises(UserError, match=r"differ in image\.resize \(\"pytorch-fid\" vs \"torchmetrics\"\)"):
        compare([a, b], n_boot=100)
    _with_recipe(b, recipe)
    assert any(r["measure"] == "fid" for r in compare([a, b], n_boot=100)["pairs"])


def test_scoring_with_a_clip_preset_records_every_metric_and_its_recipe(clip_files, tiny_preset, fake_store,
                                                                       tmp_path):
    from s2i_bench.data.store import open_store
    from s2i_bench.fileio import sha256_file
    from s2i_bench.protocol import load_protocol
    from s2i_bench.scoring.command import _metric_options
    from s2i_bench.scoring.score import score_translator
    from s2i_bench.translators import Translator

    class AudioEnc(torch.nn.Module):  # a CLIP-space audio encoder stands in for Wav2CLIP: 16 numbers
        def forward(self, w):  # (B, 16000) -> (B, 16)
            return w.unflatten(1, (16, 1000)).abs().mean(2)

    audio = tmp_path / "audio.pt"
    torch.jit.save(torch.jit.trace(AudioEnc().eval(), torch.rand(2, 16000)), str(audio))
    audio.with_suffix(".json").write_text(json.dumps({"sha256": sha256_file(audio), "sample_rate": 16000,
                                                      "seconds": 1}))
    store, proto = open_store(fake_store), load_protocol("tiny")
    which = "fid,iis,retrieval,clip_score,aic,ais_rank,ais_z"
    opts = _metric_options(which, None, audio, None, store, proto, preset=(tiny_preset, clip_files["weights"], "cpu"))
    assert opts["ais"][0] is opts["extractor"]  # the preset's image tower is AIS's image side
    (tmp_path / "painter.py").write_text(FLOAT_64x48)
    spec = importlib.util.spec_from_file_location("painter_presets", tmp_path / "painter.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bundle = FakeBundle(tmp_path / "b.pt", informative="mean", class_match=False)
    try:
        rec = score_translator(Translator(mod.Painter().translate, {"path": "painter"}), store, bundle,
                               protocol=proto, split="test", **opts)
    finally:
        opts["ais"][1].worker.close()
    m = rec.image_metrics
    assert rec.recipe_identity == m["recipe"]["identity"] and m["recipe"]["image"]["preset"] == tiny_preset
    assert m["recipe"]["audio"]["sample_rate"] == 16000 and m["recipe"]["images"]["size"] == proto.image.size
    assert 0 <= m["clip_score"]["value"] <= 100 and m["aic"]["chance"] == pytest.approx(1 / len(proto.class_keys))
    assert 0 <= rec.image_metric("retrieval_r10") <= 1 and rec.image_metric_ci("retrieval_r1")
    assert "mean_cosine" in m["ais_z"] and 0 <= m["ais_rank"]["value"] <= 1 and m["dims"] == 16


def test_text_metrics_need_a_clip_preset(fake_store, tmp_path):
    from s2i_bench.cli import main
    from click.testing import CliRunner
    from fakes import write_bundle
    from s2i_bench.protocol import load_protocol

    bundle = write_bundle(tmp_path / "bundle.pt", load_protocol("tiny"))
    base = ["score", "reference:random-frame", "--data", str(fake_store), "--classifiers", str(bundle), "--out",
            str(tmp_path / "r.jsonl")]
    res = CliRunner().invoke(main, base + ["--metrics", "clip_score"])
    assert res.exit_code == 2 and "CLIP text tower" in res.output
    res = CliRunner().invoke(main, base + ["--metrics", "fid", "--feature-preset", "nope"])
    assert res.exit_code == 2 and "unknown preset" in res.output
