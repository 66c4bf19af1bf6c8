"""Submission bundles from strangers (`s2i-bench bundle-results` / `leaderboard`): every way a
bundle can be tampered with, mismatched or crafted is refused by `leaderboard` with one line
naming the file and the reason, before anything is written (and, for crafted zips, before any
member is read); and what a bundle cannot prove, stated by a test.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fakes import make_run, make_scored_system, run_cli, touched
from s2i_bench.errors import UserError
from s2i_bench.report.results_bundle import bundle_results, open_results_bundle
from s2i_bench.scoring.records import checksum


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundles")
    run = make_scored_system(root / "runs", "alpha", 0.6)
    out = root / "alpha.zip"
    bundle_results(run, out)
    return out


def members_of(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:  # our own test zip, not a stranger's
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path: Path, members, method=zipfile.ZIP_DEFLATED) -> Path:
    """`members`: a dict, or (name, bytes) pairs (a name may repeat)."""
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", compression=method) as z:
        for name, data in items:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, compress_type=method)
    return path


def rehash(m: dict[str, bytes]) -> dict[str, bytes]:
    """The manifest's sha256 and sizes recomputed for the members as they are now (what anyone
    tampering with a bundle can do)."""
    manifest = json.loads(m["manifest.json"])
    manifest["files"] = {n: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)} for n, b in m.items()
                         if n != "manifest.json"}
    m["manifest.json"] = json.dumps(manifest).encode()
    return m


def edit_records(m: dict[str, bytes], edit) -> dict[str, bytes]:
    """Each record edited by `edit(record)`, its checksum recomputed, the manifest's record list
    and hashes updated: a careful forger's bundle."""
    recs = [json.loads(line) for line in m["records.jsonl"].decode().splitlines() if line.strip()]
    for r in recs:
        edit(r)
        r["checksum"] = checksum(r)
    m["records.jsonl"] = "".join(json.dumps(r) + "\n" for r in recs).encode()
    manifest = json.loads(m["manifest.json"])
    for entry, r in zip(manifest["records"], recs):
        entry["checksum"] = r["checksum"]
    m["manifest.json"] = json.dumps(manifest).encode()
    return rehash(m)


def refused(bundle: Path, tmp_path: Path, *needles: str) -> None:
    """`leaderboard BUNDLE` refuses with one line naming the bundle, and writes nothing."""
    before = touched(tmp_path)
    out = tmp_path / "board"
    run_cli("leaderboard", bundle, "--out", out).refused(bundle.name, "bundle refused", *needles)
    assert not out.exists()
    assert touched(tmp_path) == before


def test_a_good_bundle_is_accepted_and_its_checks_are_listed(good):
    b = open_results_bundle(good)
    assert b.system == "alpha" and len(b.records) == 2 and b.options is not None
    assert list(b.sheets.values()) == [5] and len(b.checks) == 6


# -- tampered ----------------------------------------------------------------------------------------------------
def test_a_changed_file_is_refused(good, tmp_path):
    m = members_of(good)
    m["records.jsonl"] = m["records.jsonl"].replace(b'"epoch": 1', b'"epoch": 7', 1)
    refused(write_zip(tmp_path / "changed.zip", m), tmp_path, "records.jsonl", "changed after packing")


def test_a_tampered_and_rehashed_bundle_is_refused_by_the_records_own_checks(good, tmp_path):
    def more_informative(r):  # two more informative images in one class, the mean updated too
        k = next(iter(r["classes"]))
        r["classes"][k]["raw_share"] = min(1.0, r["classes"][k]["raw_share"] + 2 / r["classes"][k]["n_images"])
        r["mean"]["raw_share"] = float(np.mean([c["raw_share"] for c in r["classes"].values()]))

    bundle = write_zip(tmp_path / "forged.zip", edit_records(members_of(good), more_informative))
    refused(bundle, tmp_path, "per-image decisions give", "edited or damaged")


def test_a_record_with_values_of_the_wrong_type_is_refused(good, tmp_path):
    def odd(r):
        r["mean"]["raw_share"] = "very high"

    bundle = write_zip(tmp_path / "odd.zip", edit_records(members_of(good), odd))
    refused(bundle, tmp_path, "records.jsonl line 1", "wrong type")


def test_a_record_replaced_after_packing_is_refused(good, tmp_path):
    m = members_of(good)
    recs = [json.loads(line) for line in m["records.jsonl"].decode().splitlines()]
    recs[0]["seconds"] = 2.0  # a valid record, checksum and all, but not the one packed
    recs[0]["checksum"] = checksum(recs[0])
    m["records.jsonl"] = "".join(json.dumps(r) + "\n" for r in recs).encode()
    refused(write_zip(tmp_path / "replaced.zip", rehash(m)), tmp_path, "record 1", "differs from the manifest")


def test_an_added_or_missing_member_is_refused(good, tmp_path):
    m = members_of(good)
    m["sheets/extra.npz"] = m[next(n for n in m if n.startswith("sheets/"))]
    refused(write_zip(tmp_path / "added.zip", m), tmp_path, "sheets/extra.npz", "not in the manifest")
    m = members_of(good)
    del m["provenance/run-options.json"]
    refused(write_zip(tmp_path / "missing.zip", m), tmp_path, "run-options.json", "missing from the zip")


def test_a_consistent_forgery_cannot_be_detected(good, tmp_path):
    """What the docs say a bundle cannot prove: decisions, shares and means edited together, the
    checksums and hashes recomputed, pass every check. Only scoring again can tell."""
    def forge(r):
        from s2i_bench.scoring.decisions import encode_decisions, unpack_decisions

        d = unpack_decisions(r["decisions"], "forge")
        informative = np.ones_like(d["informative"])  # every image informative
        packed = encode_decisions([], informative, d["truth"], d["class_match"], d["iis"])
        r["decisions"] = {**r["decisions"], "informative": packed["informative"]}
        for c in r["classes"].values():
            c["raw_share"] = 1.0
        r["mean"]["raw_share"] = 1.0

    bundle = write_zip(tmp_path / "consistent.zip", edit_records(members_of(good), forge))
    assert all(r.mean("raw_share") == 1.0 for r in open_results_bundle(bundle).records)


# -- mismatched ----------------------------------------------------------------------------------------------------
def test_mismatched_identities_are_refused(good, tmp_path):
    m = members_of(good)
    manifest = json.loads(m["manifest.json"])
    manifest["identities"][0]["classifiers_sha256"] = "c" * 64  # the manifest claims other classifiers
    m["manifest.json"] = json.dumps(manifest).encode()
    refused(write_zip(tmp_path / "ident.zip", m), tmp_path, "mismatched identities", "classifiers_sha256")


def test_records_of_another_protocol_than_the_run_options_are_refused(good, tmp_path):
    m = members_of(good)
    options = json.loads(m["provenance/run-options.json"])
    options["protocol"]["fingerprint"] = "0" * 16
    m["provenance/run-options.json"] = json.dumps(options).encode()
    refused(write_zip(tmp_path / "options.zip", rehash(m)), tmp_path, "mismatched identities", "run's options")


def test_a_protocol_fingerprint_that_is_not_the_shipped_protocols_is_refused(good, tmp_path):
    def claim(r):
        for block in (r["protocol"], r["store"]["protocol"], r["classifiers"]["protocol"]):
            block["fingerprint"] = "0" * 16

    m = members_of(good)
    del m["provenance/run-options.json"]
    manifest = json.loads(m["manifest.json"])
    manifest["identities"][0]["protocol"]["fingerprint"] = "0" * 16
    m["manifest.json"] = json.dumps(manifest).encode()
    refused(write_zip(tmp_path / "proto.zip", edit_records(m, claim)), tmp_path, "protocol tiny 0.2.0",
            "that protocol is")


def test_a_manifest_naming_another_system_is_refused(good, tmp_path):
    m = members_of(good)
    manifest = json.loads(m["manifest.json"])
    manifest["system"] = "the best system"
    m["manifest.json"] = json.dumps(manifest).encode()
    refused(write_zip(tmp_path / "name.zip", m), tmp_path, "the best system")


# -- crafted zips: refused before any member is read ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["../evil.jsonl", "/tmp/evil.jsonl", "sheets/../../evil.npz", "a\\b.json"])
def test_path_traversal_names_are_refused(good, tmp_path, name):
    m = members_of(good)
    m[name] = b"{}"
    bundle = write_zip(tmp_path / "traversal.zip", m)
    refused(bundle, tmp_path, "refused")
    assert not (tmp_path.parent / "evil.jsonl").exists() and not Path("/tmp/evil.jsonl").exists()


def test_a_zip_bomb_is_refused_before_it_expands(good, tmp_path):
    m = members_of(good)
    m["sheets/bomb.npz"] = bytes(200 * 2 ** 20)  # 200 MiB of zeros, deflated to ~200 KiB
    bundle = write_zip(tmp_path / "bomb.zip", m)
    assert bundle.stat().st_size < 2 * 2 ** 20
    refused(bundle, tmp_path, "zip bomb")


def test_a_bomb_inside_a_sample_sheet_is_refused(good, tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("images.npy", bytes(64 * 2 ** 20))
    m = members_of(good)
    sheet = next(n for n in m if n.startswith("sheets/"))
    m[sheet] = inner.getvalue()
    refused(write_zip(tmp_path / "nested.zip", rehash(m), zipfile.ZIP_STORED), tmp_path, "zip bomb")


def test_a_pickled_sample_sheet_is_refused(good, tmp_path):
    buf = io.BytesIO()
    np.savez(buf, images=np.array([{"x": 1}], dtype=object), segment_ids=np.array(["a"]))
    m = members_of(good)
    m[next(n for n in m if n.startswith("sheets/"))] = buf.getvalue()
    refused(write_zip(tmp_path / "pickle.zip", rehash(m)), tmp_path, "not a sample sheet", "no pickle")


def test_duplicate_names_are_refused(good, tmp_path):
    m = members_of(good)
    with pytest.warns(UserWarning):  # zipfile itself warns: two readers would disagree
        bundle = write_zip(tmp_path / "dup.zip", [*m.items(), ("records.jsonl", b"{}\n")])
    refused(bundle, tmp_path, "twice")


@pytest.mark.parametrize("name", ["run.sh", "records/extra.jsonl", "provenance/other.json"])
def test_a_member_outside_the_layout_is_refused(good, tmp_path, name):
    m = members_of(good)
    m[name] = b"#!/bin/sh\n"
    refused(write_zip(tmp_path / "layout.zip", rehash(m)), tmp_path, name, "not part of a results bundle")


def test_not_a_zip_a_newer_format_and_deep_json_are_refused(good, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    refused(junk, tmp_path, "not a zip archive")
    m = members_of(good)
    manifest = json.loads(m["manifest.json"])
    manifest["format_version"] = 99
    m["manifest.json"] = json.dumps(manifest).encode()
    refused(write_zip(tmp_path / "newer.zip", m), tmp_path, "format_version 99", "update s2i-bench")
    m["manifest.json"] = b"[" * 100_000 + b"]" * 100_000
    refused(write_zip(tmp_path / "deep.zip", m), tmp_path, "manifest.json is not valid UTF-8 JSON")


# -- packing what cannot be verified -----------------------------------------------------------------------------
def test_bundle_results_refuses_what_it_cannot_pack(tmp_path, fake_store):
    old = make_run(tmp_path / "runs", fake_store, 32, epochs=3, samples=False)  # format 1: no checksum
    run_cli("bundle-results", old, "--out", tmp_path / "old.zip").refused("format 1", "score the translator again")
    a = make_scored_system(tmp_path / "runs", "alpha", 0.5)
    make_scored_system(tmp_path / "runs", "beta", 0.5)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes((a / "metric-informativity.jsonl").read_bytes() +
                      (tmp_path / "runs" / "beta" / "metric-informativity.jsonl").read_bytes())
    run_cli("bundle-results", mixed, "--out", tmp_path / "m.zip").refused("2 translators", "--run NAME")
    run_cli("bundle-results", mixed, "--run", "beta", "--out", tmp_path / "m.zip").ok()
    assert open_results_bundle(tmp_path / "m.zip").system == "beta"
    run_cli("bundle-results", a, "--out", tmp_path / "m.zip").refused("exists", "--overwrite")
    run_cli("bundle-results", a, "--out", tmp_path / "m.tar").refused("ending in .zip")
    with pytest.raises(UserError, match="not a file"):
        open_results_bundle(tmp_path)
