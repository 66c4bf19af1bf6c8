"""Fault catalogue, section 2: stores that are not what their store.json claims (tampered,
truncated, edited by hand, inconsistent). Every command refuses them, naming the file and the
audit; `audit` reports every problem instead of refusing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import make_fake_store, run_cli, write_bundle
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    import torch
    from s2i_translator.checkpoint import make_checkpoint, save_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    from s2i_bench.protocol import load_protocol

    p = load_protocol("tiny")
    root = tmp_path_factory.mktemp("faults2")
    torch.manual_seed(0)
    ckpt = make_checkpoint(epoch=1, embedding_dim=16, spec=p.model, protocol_ref=p.ref(), store_ref={"hash": "x"},
                           normalisation={"low": -10.0, "high": 2.0}, encoder=AudioEncoder(16, p.model),
                           generator=DenseGenerator(16, p.model), run="a")
    return {"root": root, "store": fake_store, "bundle": write_bundle(root / "bundle.pt", p),
            "ckpt": save_checkpoint(root / "runs" / "a" / "checkpoints" / "generator-000001.pt", ckpt)}


def copy_store(env, tmp_path, name="st") -> Path:
    dst = tmp_path / name
    shutil.copytree(env["store"], dst)
    return dst


def edit_json(store: Path, fn) -> None:
    meta = json.loads((store / "store.json").read_text())
    fn(meta)
    (store / "store.json").write_text(json.dumps(meta))


def score(env, store, *extra):
    return run_cli("score", env["ckpt"], "--data", store, "--classifiers", env["bundle"], *extra)


def commands(env, store, tmp_path):
    """The commands that read a store: each must refuse a bad one."""
    yield "score", score(env, store)
    yield "train", run_cli("train-baseline", "--data", store, "--out", tmp_path / "run_x", "--epochs", "1")
    yield "pool", run_cli("pool", env["ckpt"], "--data", store, "--out", tmp_path / "pool_x")


# -- arrays and manifest (2.1, 2.2, 2.10-2.15) -------------------------------------------------------------
def test_truncated_array_is_named(env, tmp_path):  # 2.1
    st = copy_store(env, tmp_path)
    data = (st / "spectrograms.npy").read_bytes()
    (st / "spectrograms.npy").write_bytes(data[: len(data) // 2])
    score(env, st).refused("spectrograms.npy")


def test_a_removed_manifest_row_blames_the_manifest(env, tmp_path):  # 2.2
    st = copy_store(env, tmp_path)
    lines = (st / "manifest.csv").read_text().splitlines()
    (st / "manifest.csv").write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    score(env, st).refused("manifest.csv")


@pytest.mark.parametrize("case", ["nan_test", "inf_train", "nan_train"])
def test_non_finite_spectrograms_are_blamed_on_the_store(env, tmp_path, case):  # 2.12-2.14
    st = copy_store(env, tmp_path, case)
    spec = np.load(st / "spectrograms.npy")
    manifest = pd.read_csv(st / "manifest.csv")
    split = "test" if case == "nan_test" else "train"
    row = int(np.flatnonzero(manifest["split"].to_numpy() == split)[0])
    spec[row, 0, 3, 3] = np.inf if case == "inf_train" else np.nan
    np.save(st / "spectrograms.npy", spec)
    for name, res in commands(env, st, tmp_path / case):
        res.refused("spectrograms.npy")
        assert "generator" not in res.output.split("spectrograms.npy")[0]


def test_arrays_of_the_wrong_shape_or_type(env, tmp_path):  # 2.10, 2.11, 2.15
    for name, fn, needle in (
            ("frames_f32", lambda st: np.save(st / "frames.npy", np.load(st / "frames.npy").astype(np.float32)),
             "frames.npy"),
            ("frames_small", lambda st: np.save(st / "frames.npy", np.load(st / "frames.npy")[:, :64, :64]),
             "frames.npy"),
            ("spec_shape", lambda st: np.save(st / "spectrograms.npy", np.load(st / "spectrograms.npy")[:, :, :64]),
             "spectrograms.npy")):
        st = copy_store(env, tmp_path, name)
        fn(st)
        score(env, st).refused(needle, "expected")


# -- edited by hand (2.3-2.9, 2.16) --------------------------------------------------------------------------
def test_a_flipped_split_is_refused_by_every_command(env, tmp_path):  # 2.3
    st = copy_store(env, tmp_path)
    manifest = pd.read_csv(st / "manifest.csv", dtype=str)
    test_rows = np.flatnonzero(manifest["split"].to_numpy() == "test")[:2]
    train_rows = np.flatnonzero(manifest["split"].to_numpy() == "train")[:2]
    manifest.loc[test_rows, "split"] = "train"
    manifest.loc[train_rows, "split"] = "test"
    manifest.to_csv(st / "manifest.csv", index=False)
    for name, res in commands(env, st, tmp_path):
        res.refused("manifest.csv", "s2i-bench audit")
    assert not (tmp_path / "run_x").exists() and not (tmp_path / "pool_x").exists()
    audit = run_cli("audit", st)
    assert audit.exit_code == 1 and "manifest.csv" in audit.output  # the audit shows it, it does not refuse


@pytest.mark.parametrize("case, edit, needle", [
    ("low_eq_high", lambda m: m["normalisation"].update(low=1.0, high=1.0), "is not below high"),  # 2.4
    ("no_norm", lambda m: m.pop("normalisation"), "'normalisation' is missing"),  # 2.5
    ("low_gt_high", lambda m: m["normalisation"].update(low=5.0, high=-5.0), "is not below high"),  # 2.6
    ("split_oops", lambda m: m.update(split="oops"), "'split' is not an object"),  # 2.7
    ("hash_edit", lambda m: m.update(store_hash="0" * 16), "store_hash"),  # 2.8
    ("synth_null", lambda m: m.update(synthetic_world={"seed": 1}), "store_hash"),  # 2.9: the judge's claim too
    ("norm_str", lambda m: m["normalisation"].update(low="x"), "finite numbers"),
])
def test_hand_edited_store_json_is_refused(env, tmp_path, case, edit, needle):
    st = copy_store(env, tmp_path, case)
    edit_json(st, edit)
    for name, res in commands(env, st, tmp_path / case):
        res.refused("store.json", needle)
    audit = run_cli("audit", st)  # 9.7: the audit never gives a traceback
    assert audit.exit_code in (1, 2) and "Traceback" not in audit.output


def test_a_zeroed_class_index_is_refused_before_pooling(env, tmp_path):  # 2.16
    st = copy_store(env, tmp_path)
    manifest = pd.read_csv(st / "manifest.csv", dtype=str)
    manifest["class_index"] = "0"
    manifest.to_csv(st / "manifest.csv", index=False)
    res = run_cli("pool", env["ckpt"], "--data", st, "--out", tmp_path / "pool_c")
    res.refused("manifest.csv")
    assert not (tmp_path / "pool_c").exists()
    # even with the hash made to match, the content check names the row
    from s2i_bench.data.store import store_problems

    opened = open_store(st, verify=False)
    assert any("class_index" in p for _, p in store_problems(opened))


def test_the_store_hash_covers_the_protocol(tmp_path):  # 6.2's cause
    a = open_store(make_fake_store(tmp_path / "tiny", "tiny"))
    b = open_store(make_fake_store(tmp_path / "synth", "synth"))
    assert (a.path / "spectrograms.npy").read_bytes() == (b.path / "spectrograms.npy").read_bytes()
    assert a.store_hash != b.store_hash


def test_a_clean_store_opens_and_its_arrays_are_verified_once(env, tmp_path, monkeypatch):
    import s2i_bench.data.store as store_module

    st = copy_store(env, tmp_path)
    calls = []
    real = store_module._array_digest
    monkeypatch.setattr(store_module, "_array_digest", lambda p: calls.append(p.name) or real(p))
    monkeypatch.setenv("S2I_BENCH_CACHE", str(tmp_path / "cache"))
    open_store(st)
    open_store(st)
    assert sorted(calls) == ["frames.npy", "spectrograms.npy", "waveforms.npy"]  # once per file version
    spec = np.load(st / "spectrograms.npy")
    spec[0, 0, 0, 0] += 1.0  # changed in place: a new version, read again and refused
    np.save(st / "spectrograms.npy", spec)
    with pytest.raises(UserError, match="spectrograms.npy: its content .* the file was changed"):
        open_store(st)


# -- protocols (2.17, 2.18) ---------------------------------------------------------------------------------
def test_a_bundle_of_another_protocol_is_named(env, tmp_path):  # 2.17
    other = make_fake_store(tmp_path / "synth_store", "synth")
    res = score(env, other, "--out", tmp_path / "o.jsonl").ok()
    assert "was trained under protocol 'tiny'" in res.output and "'synth'" in res.output


def test_training_with_another_protocol(env, tmp_path):  # 2.18
    synth_store = make_fake_store(tmp_path / "synth_store", "synth")
    run_cli("train-baseline", "--data", synth_store, "--out", tmp_path / "r1", "--protocol", "tiny",
            "--epochs", "1").ok()  # the same features: allowed
    run_cli("train-baseline", "--data", env["store"], "--out", tmp_path / "r2", "--protocol", "vegas5",
            "--epochs", "1").refused("fewer than one batch of 64")


# -- the audio of format 3 ------------------------------------------------------------------------------
def test_format_3_store_without_its_waveforms_is_refused(env, tmp_path):
    st = copy_store(env, tmp_path)
    (st / "waveforms.npy").unlink()
    score(env, st).refused("waveforms.npy: missing")


@pytest.mark.parametrize("bad", ["float32", "short", "edited"])
def test_bad_waveforms_are_named(env, tmp_path, bad):
    st = copy_store(env, tmp_path)
    wave = np.load(st / "waveforms.npy")
    if bad == "float32":
        np.save(st / "waveforms.npy", wave.astype(np.float32) / 32767)
        needle = "waveforms.npy: shape"
    elif bad == "short":
        np.save(st / "waveforms.npy", wave[:, :8000])
        needle = "waveforms.npy: shape"
    else:
        wave[3, 100] ^= 1
        np.save(st / "waveforms.npy", wave)
        needle = "waveforms.npy: its content"
    score(env, st).refused(needle)
