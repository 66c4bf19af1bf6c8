"""Past one process: sharded scoring under torchrun (gloo, 2 processes on CPU) gives the records
one process gives; a rank that died leaves its records for the next run; the disk is checked
before a store is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2i_bench.scoring import records

VOLATILE = ("created", "seconds", "checksum", "sample_sheet")


def _strip(r) -> dict:
    r = {k: v for k, v in r.to_dict().items() if k not in VOLATILE}
    r["translator"] = {k: v for k, v in r["translator"].items() if k != "path"}
    return r


def _torchrun(n: int, *args, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "s2i_bench.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.slow
def test_sharded_scoring_equals_one_process(chain, tmp_path):
    from click.testing import CliRunner

    from s2i_bench.cli import main

    run, bundle, store = chain
    one, two = tmp_path / "one" / run.name, tmp_path / "two" / run.name
    for dst in (one, two):
        shutil.copytree(run, dst, ignore=shutil.ignore_patterns("metric-*.jsonl", "samples-*"))
    res = CliRunner().invoke(main, ["score", str(one), "--data", str(store), "--classifiers", str(bundle)])
    assert res.exit_code == 0, res.output
    done = _torchrun(2, "score", two, "--data", store, "--classifiers", bundle)
    assert done.returncode == 0, done.stderr[-3000:]
    a = [_strip(r) for r in records.read(one / "metric-informativity.jsonl")]
    b = [_strip(r) for r in records.read(two / "metric-informativity.jsonl")]
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [0, 2]
    assert a == b
    assert not list(two.glob(".*.partial"))
    assert done.stdout.count("run ") == 1  # one answer, rank 0's


@pytest.mark.slow
def test_a_dead_ranks_records_are_kept_and_the_rerun_completes(chain, tmp_path):
    run, bundle, store = chain
    dst = tmp_path / run.name
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("metric-*.jsonl", "samples-*"))
    # a first sharded run that "died" after rank 1 scored epoch 2: its partial file is all that is left
    full = _torchrun(2, "score", dst, "--data", store, "--classifiers", bundle)
    assert full.returncode == 0, full.stderr[-2000:]
    recs = records.read(dst / "metric-informativity.jsonl")
    (dst / "metric-informativity.jsonl").unlink()
    partial = dst / ".metric-informativity.jsonl.rank-1.partial"
    r2 = {k: v for k, v in [r for r in recs if r.epoch == 2][0].to_dict().items() if k != "checksum"}
    records.append(partial, r2)
    # more ranks than checkpoints left: said, and nothing is scored twice
    again = _torchrun(3, "score", dst, "--data", store, "--classifiers", bundle)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "merged" in again.stderr and "have nothing to do" in again.stderr
    final = records.read(dst / "metric-informativity.jsonl")
    assert sorted(r.epoch for r in final) == [0, 2] and not partial.exists()
    assert [r.to_dict()["created"] for r in final if r.epoch == 2] == [r2["created"]]  # the dead rank's record, kept


def test_a_store_that_does_not_fit_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil as sh

    from s2i_bench.data import prepare as prep
    from s2i_bench.errors import UserError
    from s2i_bench.protocol import load_protocol

    p = load_protocol("tiny")
    monkeypatch.setattr(sh, "disk_usage", lambda path: sh._ntuple_diskusage(10 ** 9, 10 ** 9 - 1000, 1000))
    with pytest.raises(UserError, match=r"needs about .* bytes.*has 1,000 free"):
        prep.check_disk_space(tmp_path / "store", tmp_path / "store.work", 61, p, 0.0)


def test_merging_rank_files_is_atomic_and_never_doubles_a_record(tmp_path):
    """A merge interrupted after the records file was replaced (the rank files still there) can
    be rerun: a record already in the file is not added again."""
    from s2i_bench.scoring import shards

    out = tmp_path / "metric-informativity.jsonl"
    base = {"kind": "informativity", "format_version": 3, "run": "r", "split": "test", "seed": 0,
            "classes": {"dog": {"raw_share": 0.5}}}
    records.append(out, {**base, "epoch": 0})
    recs = [{**base, "epoch": e, "created": f"t{e}"} for e in (3, 1, 2)]
    for rank, r in enumerate(recs):
        records.append(shards.partial_path(out, rank), r)
    before = out.read_bytes()
    # the first merge "crashed" after its replace: simulate by merging a copy of the rank files
    copies = {p: p.read_bytes() for p in tmp_path.glob(".*.partial")}
    assert shards.merge_partials(out) == 3
    assert out.read_bytes().startswith(before)
    for p, data in copies.items():
        p.write_bytes(data)
    assert shards.merge_partials(out) == 0  # nothing doubled
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1, 2, 3]  # rank files in epoch order
    assert not list(tmp_path.glob(".*.partial")) and not list(tmp_path.glob(".*.tmp-*"))


def test_released_pages_keep_the_data(tmp_path):
    """release_pages drops the process's mapping only: what was written is in the file, and what
    is read again is the same."""
    import numpy as np

    from s2i_bench.fileio import release_pages

    a = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float32, shape=(4096, 256))
    rng = np.random.default_rng(0)
    want = rng.normal(size=a.shape).astype(np.float32)
    for lo in range(0, len(a), 512):
        a[lo:lo + 512] = want[lo:lo + 512]
        release_pages(a, a[lo:lo + 512])
    np.testing.assert_array_equal(np.asarray(a), want)
    a.flush()
    del a
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), want)
    c = np.load(tmp_path / "a.npy", mmap_mode="c")
    c[0] = 0
    release_pages(c, np.zeros(3))  # copy-on-write and plain arrays: left alone
    assert (c[0] == 0).all()


@pytest.mark.slow
def test_sharded_pool_is_the_pool_one_process_makes(chain, tmp_path):
    """`pool` under torchrun (gloo, 2 processes; 3 models, so one rank translates two) writes the
    same pool, byte for byte, as one process; a rank's finished model left by a killed run is
    reused, not translated again."""
    from click.testing import CliRunner

    from s2i_bench.cli import main

    run, bundle, store = chain
    import torch

    from s2i_bench.data.store import open_store
    from s2i_bench.protocol import load_protocol
    from s2i_translator.checkpoint import make_checkpoint, save_checkpoint
    from s2i_translator.models import AudioEncoder, DenseGenerator

    # a third model, also named run-f16 at epoch 0: its id (run-f16-e000000-2) depends on the
    # models before it, which another rank translates
    p, st = load_protocol("tiny"), open_store(store)
    f = p.training.embedding_dim
    torch.manual_seed(7)
    single = tmp_path / "single.pt"
    save_checkpoint(single, make_checkpoint(epoch=0, embedding_dim=f, spec=p.model, protocol_ref=p.ref(),
                                            store_ref=st.ref(), normalisation=st.meta["normalisation"],
                                            encoder=AudioEncoder(f, p.model), generator=DenseGenerator(f, p.model),
                                            run=run.name))
    args = [run, single, "--data", store, "--per-model", "3"]
    res = CliRunner().invoke(main, ["pool", *map(str, args), "--out", str(tmp_path / "one")])
    assert res.exit_code == 0, res.output
    done = _torchrun(2, "pool", *args, "--out", tmp_path / "two")
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("pool.csv", "images.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    one, two = (json.loads((tmp_path / p / "pool.json").read_text()) for p in ("one", "two"))
    assert one["pool_hash"] == two["pool_hash"] and one["models"] == two["models"]
    assert [m["model_id"] for m in one["models"]] == ["run-f16-e000000", "run-f16-e000002", "run-f16-e000000-2"]
    assert not (tmp_path / ".two.shards").exists()
    # a killed run: its ranks finished models 1 and 2, not model 0 (simulated in-process: one
    # "rank" of a world of 1 that dies before the pool is written); the rerun on 3 ranks
    # translates model 0 only and reuses the others (model 2's images zeroed to tell)
    from s2i_bench import distributed
    from s2i_bench.informativity import pool as pool_mod

    class OneRank:
        rank, world, local_rank = 0, 1, 0

        def device(self, d):
            return d

        def barrier(self):
            pass

        def mine(self, items):
            return items

    mp = pytest.MonkeyPatch()
    mp.setattr(distributed, "current", lambda device="cpu": OneRank())
    mp.setattr(pool_mod, "_write_pool", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        pool_mod.build_pool([run, single], store, tmp_path / "three", per_model=3)
    mp.undo()
    shards = tmp_path / ".three.shards"
    for p in shards.glob("model-00000.*"):
        p.unlink()
    left = np.load(shards / "model-00002.npy")
    np.save(shards / "model-00002.npy", np.zeros_like(left))
    again = _torchrun(3, "pool", *args, "--out", tmp_path / "three")
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = np.load(tmp_path / "one" / "images.npy"), np.load(tmp_path / "three" / "images.npy")
    n = len(left)
    assert (b[:-n] == a[:-n]).all() and not b[-n:].any() and a[-n:].any()
    assert not shards.exists()


def test_the_gpu_machine_needs_neither_pyav_nor_tqdm():
    """The GPU machine's python has torch but no PyAV (and maybe no tqdm): the GPU check and what
    it runs (training, scoring, stores from arrays) import without them, and progress bars fall
    back to plain iteration. torchmetrics is imported first, while tqdm can still load: with the
    test extra installed it imports transformers, which needs tqdm (third-party, not ours)."""
    code = ("import sys; import torchmetrics\n"
            "sys.modules['av'] = None; sys.modules['tqdm'] = None\n"
            "import tests.fakes, tests.helpers, benchmarks.gpu_check, benchmarks.bench_train, benchmarks.bench_score\n"
            "import s2i_bench.cli, s2i_bench.training, s2i_bench.scoring.score, s2i_bench.informativity.pool\n"
            "from s2i_bench.fileio import progress\n"
            "bar = progress(total=3); bar.update(1); bar.set_postfix(x=1); bar.close()\n"
            "assert list(progress([1, 2, 3])) == [1, 2, 3]\n"
            "print('ok')")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
