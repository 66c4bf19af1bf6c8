"""`train-baseline` (the toolkit's command, the reference translator's trainer through its
plugin) on the tiny protocol and a fake store: the run folder, the D cadence, exact resume after
an interruption, faults, in-loop scoring (the toolkit's hook) and two-process data parallelism."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import FakeBundle
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.training import train_baseline
from s2i_translator import train as train_mod

PROTO = load_protocol("tiny")  # 6 epochs, batch 16, D before epochs 0 and 5, save every 2, grid every 3


def read_log(run: Path) -> list[dict]:
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def weights(run: Path) -> dict:
    return torch.load(run / "resume.pt", weights_only=True)


@pytest.fixture(scope="module")
def full_run(fake_store, tmp_path_factory):
    """One uninterrupted tiny run, shared by the tests below (treat as read-only)."""
    run = tmp_path_factory.mktemp("train") / "f16"
    train_baseline(store=fake_store, run_dir=run)
    return run


def test_run_folder(full_run, fake_store):
    options = json.loads((full_run / "options.json").read_text())
    assert options["protocol"] == PROTO.ref() and options["embedding_dim"] == 16 and options["seed"] == 0
    assert options["profile"] == "small" and options["epochs"] == 6 and options["store"]["hash"]
    assert {"code_version", "libraries", "command_line", "protocol_full"} <= set(options)
    log = read_log(full_run)
    assert [int(r["epoch"]) for r in log] == list(range(6))
    assert [int(r["epoch"]) for r in log if r["d_updated"] == "1"] == [0, 5]
    assert all((r["d_loss"] == "") == (r["d_updated"] == "0") for r in log)
    assert all(int(r["g_batches"]) == 60 // 16 for r in log)  # 60 training segments, last partial batch dropped
    first, final = float(log[0]["pixel_loss"]), float(log[-1]["pixel_loss"])
    assert np.isfinite([float(r["pixel_loss"]) for r in log]).all() and final < first
    # Eq. 5 bookkeeping: at epoch 0 the moving average is the current loss itself
    assert float(log[0]["adv_loss_ma"]) == pytest.approx(float(log[0]["adv_loss"]))
    names = sorted(p.name for p in (full_run / "checkpoints").iterdir())
    assert names == [f"generator-{e:06d}.pt" for e in (0, 2, 4, 5)]  # every 2 epochs and the last
    assert sorted(p.name for p in (full_run / "grids").iterdir()) == [f"grid-{e:06d}.png" for e in (0, 3, 5)]
    ckpt = torch.load(full_run / "checkpoints" / "generator-000005.pt", weights_only=True)
    assert ckpt["format"] == "s2i-translator-checkpoint" and ckpt["epoch"] == 5 and ckpt["run"] == "f16"
    assert set(ckpt) >= {"encoder", "generator", "normalisation", "protocol", "store", "model", "code_version"}
    assert not any(k.startswith("decoder") for k in ckpt["encoder"])  # small: no decoder, no D, no optimiser
    from s2i_bench.translators import Batch, load_translator

    t = load_translator(full_run)
    assert t.info["epoch"] == 5
    out = t.translate(Batch(log_mel=torch.rand(2, 1, 128, 100) * 2 - 1, seeds=torch.tensor([1, 2])))
    assert out.shape == (2, 3, 32, 32)  # the small profile's native size
    from PIL import Image

    grid = Image.open(full_run / "grids" / "grid-000005.png")
    per_class = PROTO.training.grid_per_class
    from s2i_translator.grids import GRID_MIN_CELL

    cell = max(PROTO.model.image_size, GRID_MIN_CELL)
    assert grid.size == (2 + 2 * per_class * (cell + 2), 2 + 5 * (cell + 2))  # a row per class: reals, then fakes


def test_interrupted_then_resumed_equals_uninterrupted(full_run, fake_store, tmp_path, monkeypatch):
    run = tmp_path / "f16"
    real_epoch = train_mod.generator_epoch
    calls = {"n": 0}

    def interrupt_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # epochs 0, 1, 2 done; Ctrl-C in the middle of epoch 3
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train_mod, "generator_epoch", interrupt_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_baseline(store=fake_store, run_dir=run, autoencoder=full_run / "autoencoder.pt")
    assert weights(run)["epoch"] == 2 and len(read_log(run)) == 3
    monkeypatch.setattr(train_mod, "generator_epoch", real_epoch)
    with pytest.raises(UserError, match="already holds a run"):
        train_baseline(store=fake_store, run_dir=run)
    train_baseline(store=fake_store, run_dir=run, resume=True)

    a, b = weights(full_run), weights(run)
    assert a["epoch"] == b["epoch"] == 5 and a["adv_history"] == b["adv_history"]
    for part in ("generator", "discriminator"):
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), (part, key)
    for opt in ("opt_g", "opt_d"):
        for i, s in a[opt]["state"].items():
            assert torch.equal(s["momentum_buffer"], b[opt]["state"][i]["momentum_buffer"])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(read_log(run)) == strip(read_log(full_run))
    options = json.loads((run / "options.json").read_text())
    assert len(options["resumed"]) == 1


def test_non_finite_loss_stops_keeping_last_good_checkpoint(full_run, fake_store, tmp_path, monkeypatch):
    run = tmp_path / "nan"
    real_epoch = train_mod.generator_epoch

    def nan_at_epoch_2(*args, **kwargs):
        stats, n = real_epoch(*args, **kwargs)
        if len(read_log(run)) == 2 if (run / "log.csv").is_file() else False:
            stats = stats * float("nan")
        return stats, n

    monkeypatch.setattr(train_mod, "generator_epoch", nan_at_epoch_2)
    with pytest.raises(UserError, match=r"non-finite loss at epoch 2 .*last good checkpoint: .*generator-000000\.pt"):
        train_baseline(store=fake_store, run_dir=run, autoencoder=full_run / "autoencoder.pt", epochs=4)
    assert [int(r["epoch"]) for r in read_log(run)] == [0, 1]
    assert weights(run)["epoch"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["generator-000000.pt"]


def test_refusals(fake_store, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('extends = "tiny"\nname = "tiny-hop80"\n[audio]\nhop_length = 80\n')
    with pytest.raises(UserError, match=r"audio\.hop_length = 160, but protocol 'tiny-hop80' has 80"):
        train_baseline(store=fake_store, run_dir=tmp_path / "r1", protocol=str(other))
    assert not (tmp_path / "r1").exists()  # refused before any work
    with pytest.raises(UserError, match="nothing to resume"):
        train_baseline(store=fake_store, run_dir=tmp_path / "r2", resume=True)
    with pytest.raises(UserError, match="multiple of 4"):
        train_baseline(store=fake_store, run_dir=tmp_path / "r3", embedding_dim=18)
    # the one --device check score and pool use: a typo and a device this machine lacks
    with pytest.raises(UserError, match="expected cpu, cuda or cuda:N"):
        train_baseline(store=fake_store, run_dir=tmp_path / "r4", device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            train_baseline(store=fake_store, run_dir=tmp_path / "r5", device="cuda:0")
    assert not (tmp_path / "r4").exists() and not (tmp_path / "r5").exists()


def test_classifiers_score_every_epoch(full_run, fake_store, tmp_path, monkeypatch):
    import s2i_bench.training as training_module

    bundle_path = tmp_path / "bundle.pt"
    bundle_path.write_bytes(b"fake")
    monkeypatch.setattr(training_module, "load_bundle", lambda path, device="cpu": FakeBundle(Path(path)))
    run = tmp_path / "scored"
    train_baseline(store=fake_store, run_dir=run, autoencoder=full_run / "autoencoder.pt", epochs=3,
                   classifiers=bundle_path)
    from s2i_bench.scoring import records as records_module

    every = records_module.read(run / "metric-informativity.jsonl")
    # every epoch on the test sounds, and on the validation sounds the window is chosen on
    assert [(r.epoch, r.split) for r in every] == [(e, s) for e in range(3) for s in ("test", "val")]
    records = [r for r in every if r.split == "test"]
    assert [r.epoch for r in records] == [0, 1, 2]
    assert [r.d_update for r in records] == [True, False, False]
    assert all(r.translator["run"] == "scored" and r.embedding_dim == 16 for r in records)
    assert records[0].translator_kind == "checkpoint" and records[1].translator_kind == "live"
    assert all(r.split == PROTO.scoring.split and set(r.class_keys) == set(PROTO.class_keys) for r in records)


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.slow
def test_two_process_data_parallel_on_cpu(fake_store, tmp_path):
    run = tmp_path / "ddp"
    cli = shutil.which("s2i-bench", path=str(Path(sys.executable).parent))
    env = dict(os.environ, OMP_NUM_THREADS="1", S2I_BENCH_QUIET="1")
    done = subprocess.run(_torchrun() + [cli, "train-baseline", "--data", str(fake_store), "--out", str(run),
                                         "--protocol", "tiny", "--epochs", "2"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = read_log(run)
    assert [int(r["epoch"]) for r in log] == [0, 1] and log[0]["d_updated"] == "1"
    assert json.loads((run / "options.json").read_text())["world_size"] == 2
    assert weights(run)["world_size"] == 2
    assert (run / "checkpoints" / "generator-000001.pt").is_file()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (bf16 autocast, channels_last)")
def test_cuda_run(fake_store, tmp_path):
    run = tmp_path / "cuda"
    train_baseline(store=fake_store, run_dir=run, device="cuda", epochs=2)
    log = read_log(run)
    assert len(log) == 2 and all(np.isfinite(float(r["pixel_loss"])) for r in log)
