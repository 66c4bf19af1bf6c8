"""Fault catalogue, round two, section 3: a check that can be fooled is worse than none.
The verified-files cache keys on what a user cannot set back; `audit` hashes every byte; a record
says its numbers twice (shares as k / n, means, per-image decisions) and must agree with itself;
a record's checksum is called what it is (corruption detection) and required; the report prints
the bundle's hash, the one identity a reader can check; the classifier card is read from the
bundle; every protocol number has a declared range; an absurd `--samples` is refused at once."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest

from fakes import run_cli
from s2i_bench.errors import UserError
from s2i_bench.protocol import Protocol, load_protocol
from s2i_bench.protocol_ranges import RANGES, check_ranges
from s2i_bench.scoring import records

PROTO = load_protocol("tiny")


@pytest.fixture(scope="module")
def env(scored_tiny_run):
    return scored_tiny_run


# -- the verified-files cache -------------------------------------------------------------------------------
def test_an_array_edited_in_place_with_its_mtime_put_back_is_caught(env, tmp_path, monkeypatch):
    from s2i_bench import fileio
    from s2i_bench.data.store import open_store

    monkeypatch.setenv("S2I_BENCH_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    shutil.copytree(env["store"], store)
    open_store(store)  # verified, remembered
    path = store / "spectrograms.npy"
    st = path.stat()
    with open(path, "r+b") as f:  # same size, same inode: `touch -r` afterwards
        f.seek(st.st_size - 4)
        f.write(b"\x00\x3c\x00\x3c")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    with pytest.raises(UserError, match="spectrograms.npy"):
        open_store(store)
    fileio._VERIFIED.clear()  # a new process: only the cache file
    with pytest.raises(UserError, match="spectrograms.npy"):
        open_store(store)


def test_audit_hashes_even_when_the_cache_is_poisoned(env, tmp_path, monkeypatch):
    from s2i_bench import fileio

    monkeypatch.setenv("S2I_BENCH_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    shutil.copytree(env["store"], store)
    recorded = json.loads((store / "store.json").read_text())["files"]["frames.npy"]["sha256"]
    frames = np.load(store / "frames.npy")
    frames[0, 0, 0, 0] ^= 0xFF
    np.save(store / "frames.npy", frames)
    # someone who can write the cache file claims the new version has the old hash
    key = fileio._file_key(store / "frames.npy")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "verified-files.json").write_text(json.dumps({key: {"sha256": recorded, "finite": True}}))
    fileio._VERIFIED.clear()
    res = run_cli("audit", store)
    assert res.exit_code == 1 and "frames.npy" in res.output, res.output


# -- records say their numbers twice --------------------------------------------------------------------------
def first_record(env) -> dict:
    return json.loads((env["run"] / "metric-informativity.jsonl").read_text().splitlines()[0])


def rewrite(record: dict, path: Path, keep_checksum: bool = True) -> Path:
    """The record written back with a checksum recomputed, as anyone can (it is unkeyed)."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    if keep_checksum:
        body["checksum"] = records.checksum(body)
    path.write_text(json.dumps(body) + "\n")
    return path


def test_a_current_record_without_its_checksum_is_refused(env, tmp_path):
    path = rewrite(first_record(env), tmp_path / "m.jsonl", keep_checksum=False)
    run_cli("report", path, "--out", tmp_path / "rep").refused("line 1", "no checksum")


@pytest.mark.parametrize("case, edit, needle", [
    ("not_k_over_n", lambda r, k: r["classes"][k].update(raw_share=0.123456), "is not k / "),
    ("decisions", lambda r, k: r["classes"][k].update(
        raw_share=(round(r["classes"][k]["raw_share"] * r["classes"][k]["n_images"]) + 1) / r["classes"][k]["n_images"]
        if r["classes"][k]["raw_share"] < 1 else 0.0), "its per-image decisions give"),
    ("mean", lambda r, k: r["mean"].update(raw_share=0.5 if r["mean"]["raw_share"] != 0.5 else 0.25),
     "is not the mean of its classes"),
    ("class_match", lambda r, k: r["classes"][k].update(class_match_rate=(
        round(r["classes"][k]["class_match_rate"] * r["classes"][k]["n_images"]) + 1) / r["classes"][k]["n_images"]
        if r["classes"][k]["class_match_rate"] < 1 else 0.0), "class_match_rate"),
])
def test_an_edited_number_with_a_recomputed_checksum_is_still_caught(env, tmp_path, case, edit, needle):
    record = first_record(env)
    key = next(iter(record["classes"]))
    edit(record, key)
    if case in ("decisions", "class_match"):  # keep the mean consistent too: only the decisions can tell
        cls = record["mean"]["classes"]
        for m in ("raw_share", "class_match_rate"):
            record["mean"][m] = float(np.mean([record["classes"][c][m] for c in cls]))
    path = rewrite(record, tmp_path / f"{case}.jsonl")
    run_cli("report", path, "--out", tmp_path / "rep").refused("line 1", needle)


def test_the_report_prints_the_bundle_hash(env, tmp_path):
    from s2i_bench.fileio import sha256_file

    digest = sha256_file(env["bundle"])
    res = run_cli("report", env["run"], "--out", tmp_path / "rep").ok()
    assert f"sha256 {digest}" in res.output
    assert digest in (tmp_path / "rep" / "index.md").read_text()
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["scored_with_bundles"] == [digest]


# -- the classifier card ------------------------------------------------------------------------------------
def card_beside(env, tmp_path) -> Path:
    from s2i_bench.fileio import sha256_file, to_jsonable
    from s2i_bench.safeload import load_weights_only

    bundle = tmp_path / "bundle.pt"
    shutil.copy(env["bundle"], bundle)
    card = dict(to_jsonable(load_weights_only(bundle)["card"]), bundle_sha256=sha256_file(bundle))
    (tmp_path / "bundle.json").write_text(json.dumps(card))
    return bundle


def test_an_edited_card_is_refused_not_shown(env, tmp_path):
    bundle = card_beside(env, tmp_path)
    run_cli("report", env["run"], "--out", tmp_path / "ok", "--classifiers", bundle.with_suffix(".json")).ok()
    card = json.loads(bundle.with_suffix(".json").read_text())
    key = next(iter(card["classes"]))
    card["classes"][key]["sensitivity"] = 0.99
    bundle.with_suffix(".json").write_text(json.dumps(card))
    for given in (bundle, bundle.with_suffix(".json")):
        run_cli("report", env["run"], "--out", tmp_path / "rep", "--classifiers", given).refused(
            "bundle.json", f"classes.{key}.sensitivity", "edited")


def test_a_card_inside_the_bundle_must_match_its_test_outcomes(env, tmp_path):
    import torch

    raw = torch.load(env["bundle"], weights_only=True)
    key = raw["class_keys"][0]
    raw["card"]["classes"][key]["specificity"] = 0.95  # the stored outcomes give 0.7
    edited = tmp_path / "edited.pt"
    torch.save(raw, edited)
    run_cli("report", env["run"], "--out", tmp_path / "rep", "--classifiers", edited).refused(
        "edited.pt", "specificity", "test outcomes")
    run_cli("score", sorted((env["run"] / "checkpoints").glob("*.pt"))[-1], "--data", env["store"],
            "--classifiers", edited, "--out", tmp_path / "m.jsonl").refused("specificity")


def test_a_card_alone_is_shown_as_unverified(env, tmp_path):
    bundle = card_beside(env, tmp_path)
    bundle.unlink()
    run_cli("report", env["run"], "--out", tmp_path / "rep", "--classifiers", bundle.with_suffix(".json")).ok()
    assert "UNVERIFIED" in (tmp_path / "rep" / "tables" / "table-classifiers.md").read_text()


# -- protocol numbers ---------------------------------------------------------------------------------------
def numeric_keys(cls=Protocol, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out += numeric_keys(tp, prefix + f.name + ".")
        elif any(t in (int, float) for t in typing.get_args(tp) + (tp,)) or "int" in str(tp) or "float" in str(tp):
            out.append(prefix + f.name)
    return out


def test_every_numeric_protocol_key_has_a_declared_range():
    keys = numeric_keys()
    assert len(keys) > 80
    assert sorted(set(keys) - set(RANGES)) == []
    for name in ("vegas5", "vegas10", "synth", "tiny"):
        check_ranges(load_protocol(name))


@pytest.mark.parametrize("table, line, needle", [
    ("training", "batch_size = -16", "training.batch_size = -16 is out of its range"),
    ("training", "epochs = 0", "training.epochs = 0"),
    ("metrics", "confidence = nan", "metrics.confidence = nan"),
    ("classifiers", "dropout = [0.1, 0.2, 0.3, 0.4, 1.5]", "classifiers.dropout = 1.5"),
    ("scoring", "samples = 1000000000", "scoring.samples"),
    ("audio", "f_max = inf", "audio.f_max = inf"),
])
def test_out_of_range_protocol_numbers_fail_when_it_loads(tmp_path, table, line, needle):
    path = tmp_path / "bad.toml"
    path.write_text(f'extends = "tiny"\nname = "bad"\n\n[{table}]\n{line}\n')
    with pytest.raises(UserError, match=needle.replace("[", r"\[").replace(".", r"\.")):
        load_protocol(path)
    run_cli("synth", tmp_path / "w", "--protocol", path).refused("bad.toml", needle)


def test_absurd_samples_are_refused_before_any_work(env, tmp_path):
    ckpt = sorted((env["run"] / "checkpoints").glob("*.pt"))[-1]
    run_cli("score", ckpt, "--data", env["store"], "--classifiers", env["bundle"], "--samples", "1000000000",
            "--out", tmp_path / "m.jsonl").refused("--samples 1000000000", "1..1000")
    assert not (tmp_path / "m.jsonl").exists()
