"""Fault catalogue, section 1: translator files from strangers given to `score` and `pool`:
pickles that would run code, cut and foreign files, broken weights, broken fields, TorchScript
and torch.export programs that misbehave, write or read files, hang, or lie about their output.
A hostile file never acts; every bad file gets one line naming it."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from fakes import run_cli, write_bundle
from s2i_bench.protocol import load_protocol

PROTOCOL = load_protocol("tiny")
F = PROTOCOL.training.embedding_dim


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def env(tmp_path_factory, fake_store):
    """A store, a bundle in the real format and one good checkpoint of the tiny profile."""
    from s2i_translator.checkpoint import make_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    root = tmp_path_factory.mktemp("faults1")
    torch.manual_seed(0)
    enc, gen = AudioEncoder(F, PROTOCOL.model), DenseGenerator(F, PROTOCOL.model)
    ckpt = make_checkpoint(epoch=5, embedding_dim=F, spec=PROTOCOL.model, protocol_ref=PROTOCOL.ref(),
                           store_ref={"hash": "x"}, normalisation={"low": -10.0, "high": 2.0}, encoder=enc,
                           generator=gen, run="a")
    return {"root": root, "store": fake_store, "bundle": write_bundle(root / "bundle.pt", PROTOCOL), "ckpt": ckpt}


def score(env, translator, *extra):
    return run_cli("score", translator, "--data", env["store"], "--classifiers", env["bundle"], *extra)


def saved(env, name, obj) -> Path:
    path = env["root"] / name
    torch.save(obj, path)
    return path


def changed(ckpt: dict, part: str, key_end: str, fn) -> dict:
    out = {**ckpt, part: dict(ckpt[part])}
    key = next(k for k in out[part] if k.endswith(key_end))
    out[part][key] = fn(out[part][key].clone())
    return out


# -- pickles that would run code (1.1-1.5): refused, never run -----------------------------------------
@pytest.mark.parametrize("case", ["zip", "raw", "nested", "legacy"])
def test_pickle_payloads_are_refused_and_never_run(env, case, tmp_path):  # 1.1-1.4
    marker = tmp_path / f"PWNED_{case}"
    path = tmp_path / f"evil_{case}.pt"
    if case == "zip":
        torch.save({"format": "s2i-translator-checkpoint", "x": Evil(marker)}, path)
    elif case == "raw":
        path.write_bytes(pickle.dumps(Evil(marker)))
    elif case == "nested":
        torch.save({**env["ckpt"], "run": Evil(marker)}, path)
    else:
        torch.save({"x": Evil(marker)}, path, _use_new_zipfile_serialization=False)
    res = score(env, path).refused(str(path), "refused: not loadable with weights_only=True")
    assert "weights_only set to `False`" not in res.output and "Re-running" not in res.output  # no advice to run it
    assert not marker.exists()


def test_pool_refuses_payloads_and_leaves_no_folder(env, tmp_path):  # 1.5
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"x": Evil(marker)}, evil)
    run_cli("pool", evil, "--data", env["store"], "--out", tmp_path / "pool_x").refused(str(evil), "refused")
    assert not marker.exists() and not (tmp_path / "pool_x").exists()


# -- cut, empty and foreign files (1.6-1.9) --------------------------------------------------------------
def test_cut_empty_and_random_files_say_what_they_are(env, tmp_path):
    good = saved(env, "good.pt", env["ckpt"])
    data = good.read_bytes()
    half, tail = tmp_path / "half.pt", tmp_path / "tail.pt"
    half.write_bytes(data[: len(data) // 2])  # 1.6
    tail.write_bytes(data[:-100])
    for p in (half, tail):
        score(env, p).refused(str(p), "cut or corrupt")
    zero = tmp_path / "zero.pt"
    zero.write_bytes(b"")  # 1.7
    score(env, zero).refused(str(zero), "empty file (0 bytes)")
    rnd = tmp_path / "random.pt"
    rnd.write_bytes(np.random.default_rng(0).bytes(100_000))  # 1.8: not called code
    res = score(env, rnd).refused(str(rnd), "not a torch file")
    assert "code" not in res.output
    zipmagic = tmp_path / "zipmagic.pt"
    zipmagic.write_bytes(b"PK\x03\x04" + np.random.default_rng(1).bytes(10_000))  # 1.9
    score(env, zipmagic).refused(str(zipmagic))


# -- broken weights and fields (1.10-1.21) ---------------------------------------------------------------
@pytest.mark.parametrize("case, part, key, fn, message", [
    ("nan", "generator", "conv.weight", lambda t: t.fill_(float("nan")), "holds NaN or infinite"),  # 1.10
    ("inf", "generator", "conv.weight", lambda t: t.fill_(float("inf")), "holds NaN or infinite"),  # 1.11
    ("nan_bn", "encoder", "bn.running_var", lambda t: t.fill_(float("nan")), "holds NaN or infinite"),  # 1.12
    ("neg_var", "encoder", "bn.running_var", lambda t: t.fill_(-1.0), "NaN or infinite values"),  # 1.13
    ("shape", "encoder", "layers.0.conv.weight", lambda t: torch.zeros(5, 1, 7, 5), "has shape (5, 1, 7, 5)"),  # 1.15
])
def test_broken_weights_are_refused_naming_the_key(env, case, part, key, fn, message):
    path = saved(env, f"{case}.pt", changed(env["ckpt"], part, key, fn))
    score(env, path).refused(str(path), message)


def test_huge_but_finite_weights_score_normally(env):  # 1.14
    path = saved(env, "huge.pt", changed(env["ckpt"], "generator", "conv.weight", lambda t: t.fill_(1e38)))
    res = score(env, path, "--json", "--out", env["root"] / "huge.jsonl")
    assert res.exit_code in (0, 2)  # finite outputs are scored; a NaN they turn into is refused, named
    if res.exit_code == 2:
        res.refused(str(path), "NaN or infinite")


@pytest.mark.parametrize("case, change, message", [
    ("wrong_dim", {"embedding_dim": 32}, "shape"),  # 1.16
    ("str_epoch", {"epoch": "abc"}, "checkpoint epoch 'abc' is not a whole number"),  # 1.17
    ("neg_epoch", {"epoch": -5}, "checkpoint epoch -5 is not a whole number"),  # 1.18
    ("huge_epoch", {"epoch": 10**12}, "is not a whole number in 0.."),
])
def test_bad_checkpoint_fields_are_refused(env, case, change, message):
    path = saved(env, f"{case}.pt", {**env["ckpt"], **change})
    score(env, path).refused(str(path), message)


def test_missing_parts_and_foreign_objects(env):  # 1.20, 1.21
    no_gen = saved(env, "no_gen.pt", {k: v for k, v in env["ckpt"].items() if k != "generator"})
    score(env, no_gen).refused(str(no_gen), "missing 'generator'")
    for name, obj in (("other_dict.pt", {"weights": torch.zeros(3)}), ("list.pt", [1, 2, 3])):
        path = saved(env, name, obj)
        score(env, path).refused(str(path), "not a recognised translator")
    ae = saved(env, "ae.pt", {"format": "s2i-autoencoder"})
    score(env, ae).refused(str(ae), "an autoencoder, not a generator")


# -- programs that misbehave (1.22-1.33) -------------------------------------------------------------------
class Good(torch.nn.Module):
    def __init__(self, kind: str = "good"):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
        self.kind = kind

    def forward(self, x):
        y = torch.tanh(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), (96, 96)))
        b = x.shape[0]
        if self.kind == "nan":
            y = y * float("nan")
        elif self.kind == "nan_later" and b != 2:  # fine on the loader's probe of 2, NaN on real batches
            y = y * float("nan")
        elif self.kind == "range":
            y = y * 0 + 5.0
        elif self.kind == "float64":
            y = y.double()
        elif self.kind == "int64":
            y = (y * 100).long()
        elif self.kind == "batch_one" and b != 2:
            y = y[:1]
        elif self.kind == "batch_minus" and b != 2:
            y = y[:-1]
        elif self.kind == "batch_more" and b != 2:
            y = torch.cat([y, y])
        elif self.kind == "raises" and b != 2:
            raise RuntimeError("boom: this program refuses batches of " + str(b))
        elif self.kind == "raises_probe":
            raise RuntimeError("boom at once")
        elif self.kind == "wrong_size":
            y = y[:, :, :50, :70]
        return y


class TupleOut(torch.nn.Module):
    def forward(self, x):
        return x, x


class ThreeInputs(torch.nn.Module):
    def forward(self, x, seeds, other):
        return x


def program(env, name: str, module) -> Path:
    path = env["root"] / f"{name}.ts"
    torch.jit.script(module).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("kind, message", [
    ("nan", "NaN or infinite values in 6 of 6 images"),  # 1.24
    ("nan_later", "NaN or infinite values"),  # 1.25
    ("range", "values in [5, 5]"),  # 1.26
    ("int64", "torch.int64 images"),  # 1.28
    ("batch_one", "for 6 sounds"),  # 1.29-1.31: never broadcast, never a traceback
    ("batch_minus", "for 6 sounds"),
    ("batch_more", "for 6 sounds"),
    ("raises", "boom: this program refuses batches of 6"),  # 1.32: the program's own message
    ("raises_probe", "boom at once"),
])
def test_programs_that_misbehave_are_refused_with_their_own_words(env, kind, message):
    path = program(env, kind, Good(kind))
    res = score(env, path).refused(str(path), message)
    assert "The following operation failed" not in res.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_good_programs_of_any_size_and_float64_are_scored(env):  # 1.22, 1.23, 1.27
    for kind in ("good", "wrong_size", "float64"):
        path = program(env, kind, Good(kind))
        score(env, path, "--out", env["root"] / f"{kind}.jsonl").ok()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tuple_outputs_and_three_inputs(env):  # 1.33
    tup = program(env, "tuple", TupleOut())
    score(env, tup).refused(str(tup), "one image tensor")
    three = program(env, "three", ThreeInputs())
    score(env, three).refused(str(three), "takes 3 inputs")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_program_that_lies_about_its_batch_inside_a_run_folder(env, tmp_path):  # 1.30
    run = tmp_path / "tsrun" / "checkpoints"
    run.mkdir(parents=True)
    program(env, "batch_one_run", Good("batch_one")).rename(run / "generator-000000.pt")
    program(env, "good_run", Good("good")).rename(run / "generator-000001.pt")
    res = score(env, run.parent, "--split", "train", "--out", tmp_path / "o.jsonl")
    res.refused("generator-000000.pt", "for 12 sounds")
    assert not (tmp_path / "o.jsonl").exists()  # no record claiming images that were never made


# -- programs that act (1.34-1.36): refused before they run ---------------------------------------------------
class WritesFile(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        t = torch.from_file(self.path, shared=True, size=32, dtype=torch.uint8)
        t.fill_(65)  # the bytes go straight into the (shared, memory-mapped) file
        return torch.zeros(x.shape[0], 3, 96, 96) + 0 * t[0].float()  # used, so no compiler drops it


class ReadsFile(torch.nn.Module):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        t = torch.from_file(self.path, shared=False, size=288, dtype=torch.uint8)
        return (t[:288].float() / 127.5 - 1).view(1, 3, 96, 1).expand(x.shape[0], 3, 96, 96)


class SetsStateOnLoad(torch.nn.Module):
    """Code that TorchScript runs while the file loads (`__setstate__`): it writes a file."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.path = state[0]
        self.training = state[1]
        t = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8)
        t.fill_(66)
        self.training = bool(t[0] == 66) and state[1]

    def forward(self, x):
        return torch.zeros(x.shape[0], 3, 96, 96)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_program_that_writes_reads_or_overwrites_files_never_runs(env, tmp_path):
    marker = tmp_path / "PWNED_torchscript"
    writes = program(env, "writes", WritesFile(str(marker)))
    score(env, writes).refused(str(writes), "aten::from_file", "outside the allowlist")  # 1.34
    run_cli("pool", writes, "--data", env["store"], "--out", tmp_path / "pool_ts").refused("aten::from_file")
    assert not marker.exists() and not (tmp_path / "pool_ts").exists()
    victim = tmp_path / "victim.sh"
    victim.write_text("echo original; exit 0\n")
    before = victim.read_bytes()
    overwrite = program(env, "overwrite", WritesFile(str(victim)))
    score(env, overwrite).refused(str(overwrite), "aten::from_file")  # 1.36
    assert victim.read_bytes() == before
    reads = program(env, "reads", ReadsFile("/etc/passwd"))
    score(env, reads, "--out", tmp_path / "r.jsonl").refused(str(reads), "aten::from_file")  # 1.35
    assert not list(tmp_path.glob("samples-*.npz"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_code_that_runs_while_a_program_loads_is_refused_before_loading(env, tmp_path):
    marker = tmp_path / "PWNED_on_load"
    path = program(env, "setstate", SetsStateOnLoad(str(marker)))
    marker.unlink(missing_ok=True)
    score(env, path).refused(str(path), "__setstate__")
    assert not marker.exists()


# -- slow programs (1.37): a time limit, and Ctrl-C stops them at once -----------------------------------------
class Slow(torch.nn.Module):
    def forward(self, x):
        y = x
        for _ in range(2_000_000_000):
            y = y + 1
        return torch.zeros(x.shape[0], 3, 96, 96)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_slow_program_meets_its_time_limit(env, monkeypatch):
    import s2i_bench.translators.programs as programs

    path = program(env, "slow", Slow())
    monkeypatch.setattr(programs, "DEFAULT_TIMEOUT_S", 4.0)  # the probe already hangs (--program-timeout's default)
    started = time.monotonic()
    score(env, path).refused(str(path), "took longer than 4 s", "--program-timeout")
    assert time.monotonic() - started < 30


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ctrl_c_stops_a_hanging_program_at_once(env):
    path = program(env, "slow_cli", Slow())
    cli = Path(sys.executable).parent / "s2i-bench"
    proc = subprocess.Popen([str(cli), "score", str(path), "--data", str(env["store"]), "--classifiers",
                             str(env["bundle"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, S2I_BENCH_QUIET="1"))
    time.sleep(8)  # the child has started and hangs in the TorchScript interpreter
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    assert time.monotonic() - started < 10


# -- torch.export programs (1.38-1.43) -------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(env):
    model = Good().eval()
    example = (torch.rand(2, 1, 128, 100) * 2 - 1,)
    dyn, static = env["root"] / "good.pt2", env["root"] / "static4.pt2"
    torch.export.save(torch.export.export(model, example, dynamic_shapes={"x": {0: torch.export.Dim("b")}}), dyn)
    torch.export.save(torch.export.export(model, (torch.rand(4, 1, 128, 100),)), static)
    return dyn, static


def test_export_programs_work_and_pickled_members_are_refused(env, exported, tmp_path):  # 1.38-1.42
    dyn, static = exported
    for path in (dyn, static):
        score(env, path, "--split", "train", "--out", tmp_path / "pt2.jsonl").ok()
    marker = tmp_path / "PWNED_pt2"
    for where in ("sample_inputs", "weights_config"):
        evil = tmp_path / f"evil_{where}.pt2"
        with zipfile.ZipFile(dyn) as zin, zipfile.ZipFile(evil, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if where == "sample_inputs" and item.filename.endswith("sample_inputs/model.pt"):
                    data = pickle.dumps(Evil(marker))
                if where == "weights_config" and item.filename.endswith("model_weights_config.json"):
                    import json

                    cfg = json.loads(data)
                    first = next(iter(cfg["config"]))
                    cfg["config"][first]["use_pickle"] = True
                    data = json.dumps(cfg).encode()
                zout.writestr(item, data)
        score(env, evil).refused(str(evil))
        assert not marker.exists()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(dyn.read_bytes()[:2000])
    score(env, cut).refused(str(cut), "not a zip archive, or cut short")


# -- folders and links (1.44-1.48) -------------------------------------------------------------------------
def test_empty_folders_and_link_loops(env, tmp_path):
    empty = tmp_path / "emptydir"
    empty.mkdir()
    score(env, empty).refused(str(empty), "no checkpoints")  # 1.44
    run_cli("pool", empty, "--data", env["store"], "--out", tmp_path / "pool_e").refused("without checkpoints")
    (tmp_path / "loop1.pt").symlink_to("loop2.pt")  # 1.45
    (tmp_path / "loop2.pt").symlink_to("loop1.pt")
    assert score(env, tmp_path / "loop1.pt").exit_code == 2
    looprun = tmp_path / "looprun" / "checkpoints"  # 1.46, 1.47
    looprun.mkdir(parents=True)
    (looprun / "generator-000001.pt").symlink_to("generator-000001.pt")
    score(env, looprun.parent).refused("no checkpoints")
    run_cli("pool", looprun.parent, "--data", env["store"], "--out", tmp_path / "pool_l").refused("without checkpoints")
    (tmp_path / "dirloop").symlink_to(".")  # 1.48
    score(env, tmp_path / "dirloop" / "dirloop").refused()
