"""Fault catalogue, round two, section 2: s2i-bench never deletes or writes outside what the
user named. A planted file manifest, a legacy report.json, a link in a report folder or a run
folder, a planted `scenes.json`: each tries to make a command delete, truncate or append to a
file elsewhere, and each is refused or ignored with the victim untouched. Also: two scorings
into one folder keep their own sample sheets, a full disk leaves no half-built folder behind
and names the file, and a folder that cannot be written is found before the work."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fakes import run_cli, touched
from s2i_bench.publish import OWNED_MANIFEST
from s2i_bench.protocol import load_protocol

PROTO = load_protocol("tiny")


@pytest.fixture(scope="module")
def env(scored_tiny_run):
    return scored_tiny_run


def victim(folder: Path, name: str = "victim.txt") -> Path:
    path = folder / name
    path.write_text("the user's own file\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- report --out trusts nothing it reads back --------------------------------------------------------------
@pytest.mark.parametrize("digest", ["null", "right"])
def test_a_planted_manifest_cannot_delete_outside_the_report_folder(env, tmp_path, digest):
    outside = tmp_path / "keep"
    outside.mkdir()
    target = victim(outside)
    out = tmp_path / "deep" / "report"
    out.mkdir(parents=True)
    # The manifest names a file above --out; with "right" even its true sha256, as an attacker who
    # can read the victim would write it. Neither may make `report` delete it.
    files = {"../../keep/victim.txt": None if digest == "null" else sha(target), "/etc/hostname": None}
    (out / OWNED_MANIFEST).write_text(json.dumps({"kind": "s2i-bench-report", "files": files}))
    res = run_cli("report", env["run"], "--out", out).ok()
    assert target.read_text() == "the user's own file\n"
    assert outside.is_dir() and (tmp_path / "deep").is_dir()  # no emptied parent removed either
    assert "outside the folder" in res.output


def test_a_legacy_report_json_cannot_delete_outside(env, tmp_path):
    target = victim(tmp_path, "victim2.txt")
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"format": "s2i-bench-report", "files": ["../victim2.txt"]}))
    run_cli("report", env["run"], "--out", out).ok()
    assert target.read_text() == "the user's own file\n"


def test_a_file_of_unknown_hash_is_never_deleted(env, tmp_path):
    """A report folder of the old kind lists its files without hashes: they may have changed, so
    they are kept (and written over only with --overwrite)."""
    out = tmp_path / "rep"
    (out / "tables").mkdir(parents=True)
    old = out / "tables" / "old-table.csv"
    old.write_text("maybe edited since\n")
    (out / "report.json").write_text(json.dumps({"format": "s2i-bench-report", "files": ["tables/old-table.csv"]}))
    res = run_cli("report", env["run"], "--out", out).ok()
    assert old.read_text() == "maybe edited since\n"
    assert "unknown hash" in res.output


def test_links_inside_the_report_folder_are_never_followed(env, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    target = victim(outside, "index.md")
    out = tmp_path / "rep"
    out.mkdir()
    run_cli("report", env["run"], "--out", out).ok()
    # a link where the report writes a file, and a linked folder the manifest claims a file in
    (out / "index.md").unlink()
    (out / "index.md").symlink_to(target)
    (out / "figures").symlink_to(outside)
    doc = json.loads((out / OWNED_MANIFEST).read_text())
    doc["files"]["figures/index.md"] = sha(target)
    (out / OWNED_MANIFEST).write_text(json.dumps(doc))
    for extra in ((), ("--overwrite",)):
        run_cli("report", env["run"], "--out", out, *extra).refused("index.md (a link is in the way)")
    assert target.read_text() == "the user's own file\n"
    assert (out / "index.md").is_symlink()


def test_a_planted_lock_link_is_refused_not_truncated(env, tmp_path):
    target = victim(tmp_path)
    out = tmp_path / "rep"
    out.mkdir()
    (out / ".lock").symlink_to(target)
    run_cli("report", env["run"], "--out", out).refused(".lock", "symbolic link")
    assert target.read_text() == "the user's own file\n"


# -- run folders and records files ----------------------------------------------------------------------------
def test_a_records_link_in_a_run_folder_is_not_appended_to(env, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(env["run"], run)
    target = victim(tmp_path, "victim.jsonl")
    (run / "metric-informativity.jsonl").unlink()
    (run / "metric-informativity.jsonl").symlink_to(target)
    run_cli("score", run, "--data", env["store"], "--classifiers", env["bundle"]).refused(
        "metric-informativity.jsonl", "symbolic link")
    assert target.read_text() == "the user's own file\n"
    run_cli("report", run, "--out", tmp_path / "rep").refused("metric-informativity.jsonl", "symbolic link")


def test_a_log_link_in_a_run_folder_is_not_appended_to(env, tmp_path):
    from s2i_bench.errors import UserError
    from s2i_bench.runs import RunFolder

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    target = victim(tmp_path, "victim.csv")
    run.log_path.symlink_to(target)
    with pytest.raises(UserError, match="symbolic link"):
        run.append_log({"epoch": 0}, ["epoch"])
    assert target.read_text() == "the user's own file\n"


# -- sample sheets -------------------------------------------------------------------------------------------
def test_one_generator_on_two_splits_keeps_two_sheets(env, tmp_path):
    ckpt = sorted((env["run"] / "checkpoints").glob("generator-*.pt"))[-1]
    out = tmp_path / "res" / "m.jsonl"
    for split in ("test", "val"):
        run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--split", split,
                "--out", out).ok()
    records = [json.loads(x) for x in out.read_text().splitlines()]
    sheets = [Path(r["sample_sheet"]) for r in records]
    assert [r["split"] for r in records] == ["test", "val"]
    assert sheets[0] != sheets[1] and all(s.is_file() for s in sheets)
    ids = [set(np.load(s)["segment_ids"].tolist()) for s in sheets]
    assert not ids[0] & ids[1]  # each sheet shows its own split's sounds


# -- disk and permissions --------------------------------------------------------------------------------------
def test_a_full_disk_in_pool_leaves_nothing_half_built_and_says_so(env, tmp_path, monkeypatch):
    def full(file, array, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", full)  # the array write itself (atomic_save_npy names the file)
    ckpt = sorted((env["run"] / "checkpoints").glob("generator-*.pt"))[-1]
    before = set(os.listdir(tmp_path))
    run_cli("pool", ckpt, "--data", env["store"], "--out", tmp_path / "pool").refused("disk full", "images.npy")
    assert set(os.listdir(tmp_path)) == before  # no pool, no pool.partial-PID


def test_a_full_disk_names_the_file(tmp_path, monkeypatch):
    """A write through a file object raises ENOSPC without a file name: the atomic writer adds it."""
    from s2i_bench import fileio

    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as e:
        fileio.atomic_write_text(tmp_path / "x.json", "{}")
    monkeypatch.setattr(fileio.os, "fsync", real_fsync)
    assert fileio.describe_os_error(e.value) == f"{tmp_path / 'x.json'}: disk full (No space left on device)"
    assert os.listdir(tmp_path) == []  # the temporary file went with it


@pytest.fixture
def immutable(tmp_path):
    """A folder nobody can write to, root included (ext4's immutable flag)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_a_read_only_output_is_found_before_the_work(env, immutable, monkeypatch):
    import s2i_bench.scoring.score as score_module

    def never(*args, **kwargs):
        raise AssertionError("the work started although the output cannot be written")

    monkeypatch.setattr(score_module, "collect", never)
    ckpt = sorted((env["run"] / "checkpoints").glob("generator-*.pt"))[-1]
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"],
            "--out", immutable / "m.jsonl").refused("cannot write", "nothing was done")
    run_cli("pool", ckpt, "--data", env["store"], "--out", immutable / "pool").refused("cannot write")
    run_cli("report", env["run"], "--out", immutable / "rep").refused("cannot write")


# -- owned folders replaced with --overwrite -------------------------------------------------------------------
def test_overwrite_replaces_only_a_folder_of_its_own_files(env, tmp_path):
    ckpt = sorted((env["run"] / "checkpoints").glob("generator-*.pt"))[-1]
    pool = tmp_path / "pool"
    run_cli("pool", ckpt, "--data", env["store"], "--out", pool).ok()
    notes = victim(pool, "my-notes.txt")
    run_cli("pool", ckpt, "--data", env["store"], "--out", pool, "--overwrite").refused("my-notes.txt")
    assert notes.is_file()


def test_a_planted_scenes_json_does_not_make_a_folder_deletable(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    keep = victim(folder, "holiday.jpg")
    (folder / "scenes.json").write_text(json.dumps({"videos": [], "faults": []}))
    before = touched(folder)
    run_cli("synth", folder, "--protocol", "tiny", "--videos-per-class", "1", "--overwrite").refused(
        "holiday.jpg", "not a file that `s2i-bench synth` wrote")
    assert touched(folder) == before and keep.is_file()
