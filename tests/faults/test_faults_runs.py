"""Fault catalogue, sections 4, 5, 8 and 9: interrupted and concurrent work, full disks, folders
that are files, pools changed after labelling, and options that cannot hold. Nothing is lost,
two writers never mix, and every refusal is one line."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import run_cli, write_bundle
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol
from s2i_bench.scoring import records

PROTO = load_protocol("tiny")


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    """A trained tiny run (4 epochs, a checkpoint per epoch) and a bundle in the real format."""
    from s2i_bench.training import train_baseline

    root = tmp_path_factory.mktemp("faults4")
    run = root / "runs" / "a"
    train_baseline(fake_store, run, epochs=4, save_every=1)
    return {"root": root, "store": fake_store, "run": run, "bundle": write_bundle(root / "bundle.pt", PROTO)}


# -- 4.4, 4.5: two writers of one run folder ------------------------------------------------------------------
def test_a_second_writer_of_a_run_folder_refuses_at_once(env, tmp_path):
    from s2i_bench.runs import RunFolder

    run = RunFolder(tmp_path / "conc")
    with run.lock():
        res = run_cli("train-baseline", "--data", env["store"], "--out", run.path, "--epochs", "1", "--seed", "1")
        res.refused("is being written by another process (pid", ".lock")
    assert not run.options_path.exists()  # nothing of the second run got in


# -- 4.6, 9.3: --out that is a file, or under one ---------------------------------------------------------------
def test_out_paths_that_cannot_be_folders_or_files(env, tmp_path):
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    run_cli("train-baseline", "--data", env["store"], "--out", afile, "--epochs", "1").refused("not a folder")
    run_cli("train-baseline", "--data", env["store"], "--out", afile / "f" / "run",
            "--epochs", "1").refused("is a file")
    assert afile.read_text() == "mine"
    outdir = tmp_path / "outdir.jsonl"
    outdir.mkdir()
    ckpt = env["run"] / "checkpoints" / "generator-000003.pt"
    res = run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--out", outdir)
    res.refused("is not a file")  # before any scoring work
    run_cli("report", env["run"], "--out", afile).refused("not a folder")


# -- 4.7, 4.8: a full disk -----------------------------------------------------------------------------------
def test_a_full_disk_while_training_is_one_line_and_resumable(env, tmp_path, monkeypatch):
    import s2i_translator.train as train_mod

    real = train_mod.atomic_torch_save
    calls = {"n": 0}

    def full_disk(path, obj):
        if Path(path).name == "resume.pt":
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(train_mod, "atomic_torch_save", full_disk)
    run = tmp_path / "full"
    res = run_cli("train-baseline", "--data", env["store"], "--out", run, "--epochs", "3",
                  "--autoencoder", env["run"] / "autoencoder.pt")
    res.refused("resume.pt", "No space left on device")
    monkeypatch.setattr(train_mod, "atomic_torch_save", real)
    run_cli("train-baseline", "--data", env["store"], "--out", run, "--resume").ok()
    assert torch.load(run / "resume.pt", weights_only=True)["epoch"] == 2


def test_a_cut_records_line_is_set_aside_and_never_glued(env, tmp_path, capsys):  # 4.8, 6.4-6.6
    ckpt = env["run"] / "checkpoints" / "generator-000003.pt"
    out = tmp_path / "m.jsonl"
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--out", out).ok()
    whole = out.read_bytes()
    out.write_bytes(whole + whole[: len(whole) // 2])  # a crash in the middle of the second append
    assert len(records.read(out)) == 1  # the reader keeps the whole record, warns about the cut one
    assert "was cut" in capsys.readouterr().err
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--out", out).ok()
    assert len(records.read(out)) == 2  # the new record went in whole
    aside = out.with_name(out.name + ".cut-1")
    assert aside.read_bytes() == whole[: len(whole) // 2]  # the cut bytes are kept, not dropped
    run_cli("report", out, "--out", tmp_path / "rep").ok()
    run_cli("score", env["run"], "--data", env["store"], "--classifiers", env["bundle"], "--out", out).ok()


# -- 4.9: a rerun scores exactly what is missing --------------------------------------------------------------
def test_score_run_after_an_interruption_scores_the_missing_checkpoints(env, tmp_path):
    import shutil

    run = tmp_path / "a_copy"
    shutil.copytree(env["run"], run)
    (run / "metric-informativity.jsonl").unlink(missing_ok=True)
    first = run_cli("score", run / "checkpoints" / "generator-000000.pt", "--data", env["store"], "--classifiers",
                    env["bundle"], "--out", run / "metric-informativity.jsonl").ok()
    res = run_cli("score", run, "--data", env["store"], "--classifiers", env["bundle"], "--json").ok()
    result = json.loads(res.stdout)
    assert result["scored_now"] == 3 and result["had_records"] == 1 and result["num_records"] == 4
    assert sorted(r.epoch for r in records.read(run / "metric-informativity.jsonl")) == [0, 1, 2, 3]
    assert first.exit_code == 0


# -- 4.2, 4.3: what a killed writer left ------------------------------------------------------------------------
def test_stale_temporary_files_of_a_killed_writer_are_removed(env, tmp_path):
    import shutil

    run = tmp_path / "k9"
    shutil.copytree(env["run"], run)
    dead = 2 ** 22 + 12345  # no such process
    stale = [run / "checkpoints" / f".generator-000003.pt.{dead}-x1y2.tmp",
             run / "grids" / f".grid-000003.png.{dead}-ab.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    live = run / "checkpoints" / f".generator-000009.pt.{__import__('os').getpid()}-live.tmp"
    live.write_bytes(b"being written")
    run_cli("train-baseline", "--data", env["store"], "--out", run, "--resume", "--epochs", "4").ok()
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()


# -- 8.1: two processes appending to one records file -----------------------------------------------------------
def _append_many(path: str, tag: str, n: int) -> None:
    for i in range(n):
        records.append(path, {"kind": "informativity", "epoch": i, "tag": tag, "classes": {"x": {"raw_share": 0.5}},
                              "pad": "y" * 5000})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "conc.jsonl"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), tag, 40)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    got = records.read(path)
    assert len(got) == 80 and {r.to_dict()["tag"] for r in got} == {"a", "b"}


# -- 5.6, 5.10: labels --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_dir(env):
    from s2i_bench.informativity.pool import build_pool

    return build_pool([env["run"]], env["store"], env["root"] / "pool", per_model=4, seed=0)


def test_all_ties_say_they_are_ties(pool_dir, tmp_path):  # 5.6
    import shutil

    from s2i_bench.informativity.pool import open_pool

    pool = tmp_path / "pool_ties"
    shutil.copytree(pool_dir, pool)
    ids = open_pool(pool).table["image_id"].tolist()
    lines = ["image_id,label,annotator"] + [f"{i},1,ann1" for i in ids] + [f"{i},0,ann2" for i in ids]
    (tmp_path / "ties.csv").write_text("\n".join(lines) + "\n")
    run_cli("label", pool, "--from-csv", tmp_path / "ties.csv").refused("ties between annotators")


def test_pool_images_replaced_after_labelling_are_refused(pool_dir, tmp_path):  # 5.10
    import shutil

    pool = tmp_path / "pool_tamper"
    shutil.copytree(pool_dir, pool)
    images = np.load(pool / "images.npy")
    np.save(pool / "images.npy", np.zeros_like(images))
    run_cli("label", pool, "--judge").refused("images.npy", "changed since the pool was made")
    run_cli("train-classifiers", pool, "--out", tmp_path / "b.pt").refused("images.npy")


# -- 9.1, 9.5, 9.8: options -------------------------------------------------------------------------------
def test_an_existing_bundle_is_kept_without_overwrite(env, tmp_path):  # 9.1
    import shutil

    bundle = tmp_path / "bundle.pt"
    shutil.copyfile(env["bundle"], bundle)
    before = bundle.read_bytes()
    run_cli("train-classifiers", tmp_path / "nopool", "--out", bundle).exit_code  # noqa: B018 (click: path missing)
    assert bundle.read_bytes() == before
    from s2i_bench.informativity.classifiers import train_classifiers

    with pytest.raises(UserError, match="exists; pass --overwrite"):
        train_classifiers(env["root"], bundle)
    assert bundle.read_bytes() == before


def test_an_evil_bundle_is_refused_before_any_training(env, tmp_path):  # 9.5
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    evil = tmp_path / "evil_bundle.pt"
    torch.save({"x": Evil()}, evil)
    run = tmp_path / "x_evil"
    run_cli("train-baseline", "--data", env["store"], "--out", run, "--classifiers", evil).refused(str(evil), "refused")
    run_cli("train-baseline", "--data", env["store"], "--out", run, "--autoencoder", evil).refused(str(evil), "refused")
    run_cli("score", env["run"], "--data", env["store"], "--classifiers", evil).refused(str(evil), "refused")
    run_cli("report", env["run"], "--out", tmp_path / "rep", "--classifiers", evil).refused(str(evil), "refused")
    files = [f"{k}={evil}" for k in PROTO.class_keys]
    run_cli("train-classifiers", "--out", tmp_path / "auth.pt", *[a for f in files for a in ("--authors", f)],
            "--protocol", "tiny").refused(str(evil), "refused")
    assert not run.exists() and not (tmp_path / "PWNED").exists()


def test_devices_that_are_not_there(env, tmp_path):  # 9.8
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run_cli("pool", env["run"], "--data", env["store"], "--out", tmp_path / "p", "--device", "cuda").refused("CUDA")
    run_cli("train-classifiers", tmp_path, "--out", tmp_path / "b.pt", "--device", "cuda").refused("CUDA")
    ckpt = env["run"] / "checkpoints" / "generator-000003.pt"
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--device", "bogus").refused("bogus")
    run_cli("train-baseline", "--data", env["store"], "--out", tmp_path / "r", "--device", "cuda").refused("CUDA")
