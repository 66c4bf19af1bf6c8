"""`s2i_bench.translators`: every translator file as a Translator through the registry (the
reference translator's checkpoints and the authors' state dicts, registered by its plugin),
run folders, dispatch to programs, the output contract, and refusal of unsafe or broken files."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import EvilPickle, authors_autoencoder_state, authors_generator_state
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.runs import RunFolder
from s2i_bench.translators import Batch, load_translator, translate_checked
from s2i_translator.checkpoint import make_checkpoint, save_checkpoint, translator_from_modules
from s2i_translator.models import AudioAutoencoder, DenseGenerator

F = 16


def _checkpoint(epoch: int, seed: int = 0, run: str = "runA"):
    proto = load_protocol("tiny")
    torch.manual_seed(seed)
    ae, g = AudioAutoencoder(F, proto.model), DenseGenerator(F, proto.model)
    # move BN running stats away from their init so a wrong mode would show
    ae.train(), g.train()
    with torch.no_grad():
        g(ae.encode(torch.rand(8, 1, 128, 100) * 2 - 1))
    return make_checkpoint(epoch=epoch, embedding_dim=F, spec=proto.model, protocol_ref=proto.ref(),
                           store_ref={"hash": "abc"}, normalisation={"low": -10.0, "high": 2.0},
                           encoder=ae.encoder, generator=g, run=run), ae, g


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("gen") / "runA"
    for epoch in (2, 10, 1):
        ckpt, _, _ = _checkpoint(epoch, seed=epoch)
        save_checkpoint(run / "checkpoints" / f"generator-{epoch:06d}.pt", ckpt)
    (run / "checkpoints" / "notes.txt").write_text("not a checkpoint")
    return run


def _spectrograms(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 128, 100, generator=g) * 2 - 1


def translate(t, spectrograms, seeds, size=96):
    """The translator's images at the protocol's size, through the checked path scoring uses."""
    batch = Batch(log_mel=torch.as_tensor(spectrograms), seeds=torch.as_tensor(np.asarray(seeds), dtype=torch.int64))
    return translate_checked(t, batch, size=size)[1]


def test_list_checkpoints_sorted_by_epoch(run_dir):
    assert [p.name for p in RunFolder(run_dir).checkpoints()] == [
        "generator-000001.pt", "generator-000002.pt", "generator-000010.pt"]
    assert RunFolder(run_dir.parent / "nothing").checkpoints() == []


def test_checkpoint_translates_deterministically_and_batch_independently(run_dir):
    path = run_dir / "checkpoints" / "generator-000002.pt"
    t = load_translator(path)
    assert t.info["kind"] == "checkpoint" and t.info["epoch"] == 2 and t.info["embedding_dim"] == F
    assert t.info["run"] == "runA" and len(t.info["sha256"]) == 64 and t.info["path"] == str(path)
    spec = _spectrograms(5)
    seeds = np.array([3, 1, 4, 1, 5], dtype=np.int64)
    a = translate(t, spec, seeds)
    assert a.shape == (5, 3, 96, 96) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(translate(t, spec, seeds), a, rtol=0, atol=0)
    one_by_one = torch.cat([translate(t, spec[i:i + 1], seeds[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(one_by_one, a, rtol=0, atol=1e-5)
    # images 1 and 3 share a seed but not a sound; same sound with another seed differs
    assert not torch.allclose(translate(t, spec[:1], np.array([99])), a[:1])


def test_translation_equals_the_modules_in_eval_mode(run_dir):
    ckpt, ae, g = _checkpoint(7, seed=7)
    ae.eval(), g.eval()
    spec = _spectrograms(3, seed=1)
    seeds = torch.tensor([10, 20, 30])
    with torch.no_grad():
        from s2i_bench.images import resize_net

        expected = resize_net(g(ae.encode(spec), dropout_seeds=seeds), 96)
    path = run_dir.parent / "loose.pt"
    save_checkpoint(path, ckpt)
    torch.testing.assert_close(translate(load_translator(path), spec, seeds), expected.clamp(-1, 1))


def test_from_modules_restores_training_mode():
    proto = load_protocol("tiny")
    ae, g = AudioAutoencoder(F, proto.model), DenseGenerator(F, proto.model)
    ae.train(), g.train()
    t = translator_from_modules(ae.encoder, g, {"path": "live", "kind": "live"})
    before = {k: v.clone() for k, v in g.state_dict().items()}
    translate(t, _spectrograms(2), [1, 2])
    assert ae.encoder.training and g.training
    for k, v in g.state_dict().items():  # eval mode: no BN statistics updated by translating
        assert torch.equal(v, before[k]), k


def test_run_folder_gives_latest_checkpoint(run_dir):
    t = load_translator(run_dir)
    assert t.info["epoch"] == 10


def test_bad_inputs(run_dir, tmp_path):
    with pytest.raises(UserError, match="without checkpoints"):
        load_translator(tmp_path)
    with pytest.raises(UserError, match="not found"):
        load_translator(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(UserError, match="junk.pt"):
        load_translator(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(UserError, match="not a recognised translator"):
        load_translator(other)


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "s2i-translator-checkpoint", "payload": EvilPickle(marker)}, evil)
    with pytest.raises(UserError, match=r"evil\.pt: refused: not loadable with weights_only=True"):
        load_translator(evil)
    assert not marker.exists()


def test_nan_and_wrong_shape_weights_are_refused(tmp_path):
    ckpt, _, _ = _checkpoint(3)
    key = next(k for k in ckpt["generator"] if k.endswith("conv.weight"))
    ckpt["generator"][key] = ckpt["generator"][key].clone().fill_(float("nan"))
    bad = save_checkpoint(tmp_path / "nan.pt", ckpt)
    with pytest.raises(UserError, match=rf"nan\.pt: generator entry '{key}' holds NaN"):
        load_translator(bad)
    ckpt, _, _ = _checkpoint(3)
    ckpt["encoder"]["layers.0.conv.weight"] = torch.zeros(5, 1, 7, 5)
    bad = save_checkpoint(tmp_path / "shape.pt", ckpt)
    with pytest.raises(UserError, match=r"shape\.pt: encoder key 'layers\.0\.conv\.weight' has shape \(5, 1, 7, 5\)"):
        load_translator(bad)
    ckpt, _, _ = _checkpoint(3)
    ckpt["format_version"] = 99
    with pytest.raises(UserError, match="format version 99"):
        load_translator(save_checkpoint(tmp_path / "v99.pt", ckpt))


def test_authors_generator_with_audio_encoder(tmp_path):
    torch.manual_seed(0)
    g_path, ae_path = tmp_path / "G.pth", tmp_path / "AE.pth"
    torch.save(authors_generator_state(128), g_path)
    torch.save(authors_autoencoder_state(128), ae_path)
    with pytest.raises(UserError, match="needs --audio-encoder"):
        load_translator(g_path)
    t = load_translator(g_path, audio_encoder=ae_path, embedding_dim=128)
    assert t.info["kind"] == "authors" and t.info["embedding_dim"] == 128
    out = translate(t, _spectrograms(2), [1, 2])
    assert out.shape == (2, 3, 96, 96) and torch.isfinite(out).all()
    with pytest.raises(UserError, match="--embedding-dim is 256"):
        load_translator(g_path, audio_encoder=ae_path, embedding_dim=256)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_programs_are_dispatched(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("s2i_bench.translators.programs")
    fake.load_program_translator = (lambda path, device="cpu", timeout_s=None, **options:
                                    calls.append((Path(path).name, device)) or "program")
    monkeypatch.setitem(sys.modules, "s2i_bench.translators.programs", fake)
    pt2 = tmp_path / "g.pt2"
    pt2.write_bytes(b"whatever")
    assert load_translator(pt2) == "program"

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 2

    scripted = tmp_path / "g.ts"
    torch.jit.save(torch.jit.script(Tiny()), scripted)
    assert load_translator(scripted) == "program"
    assert calls == [("g.pt2", "cpu"), ("g.ts", "cpu")]
