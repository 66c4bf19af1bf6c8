"""The VGGSound protocol: the official CSV as a manifest, VGGSounder's tags as a gate, and the whole
chain (prepare -> a class-match-only bundle -> score a plugin and a folder of images -> report) on
the stand-in `synth --vggsound` writes, with nothing downloaded."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fakes import FLOAT_64x48, run_cli
from s2i_bench.data.export import sound_ids
from s2i_bench.data.store import open_store
from s2i_bench.data.vggsound import (Row, Tags, gate_reason, labels_file, read_vggsound_csv, read_vggsounder,
                                     youtube_pairs)
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol, protocol_from_dict
from s2i_bench.scoring import records

VGGSOUND = load_protocol("vggsound")


# -- the protocol and the strict readers --------------------------------------------------------------
def test_the_protocol_has_vggsounds_309_labels_and_leaves_the_others_alone():
    assert len(VGGSOUND.class_keys) == 309 and len(set(VGGSOUND.class_keys)) == 309
    assert VGGSOUND.vggsound.visible == ("V", "AV") and VGGSOUND.vggsound.gated_splits == ("test",)
    assert set(VGGSOUND.vggsound.exclude) == {"static_image", "voice_over"}
    assert VGGSOUND.match_class("bird chirping, tweeting") == "bird_chirping_tweeting"
    assert protocol_from_dict(json.loads(json.dumps(VGGSOUND.to_dict()))) == VGGSOUND
    # protocols without the table do not spell it: their fingerprints are what they were
    for name in ("vegas5", "synth", "tiny"):
        assert "vggsound" not in load_protocol(name).to_dict() and load_protocol(name).vggsound is None


def test_a_bad_vggsound_table_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "vggsound"\nname = "p"\n[vggsound]\nlabels = "x.csv"\nvisible = ["A", "audible"]\n')
    with pytest.raises(UserError, match="vggsound.visible"):
        load_protocol(path)
    path.write_text('extends = "vggsound"\nname = "p"\n[vggsound]\nlabels = "x.csv"\nvisble = ["V"]\n')
    with pytest.raises(UserError, match="did you mean 'vggsound.visible'"):
        load_protocol(path)


def test_vggsounder_wheel_tags_name_exactly_the_protocols_labels():
    pytest.importorskip("vggsounder")  # its data files are read as data; none of its code runs
    path, origin = labels_file(VGGSOUND.vggsound, Path("/nonexistent/vggsound.csv"))
    assert origin.startswith("vggsounder ") and path.name == "vggsounder+background-music.csv"
    tags = read_vggsounder(path)
    labels = {label for t in tags.values() for label in t.labels}
    assert labels == set(VGGSOUND.class_names) and len(tags) > 10_000
    modalities = {m for t in tags.values() for m in t.labels.values()}
    assert modalities == {"A", "V", "AV"}
    assert any(t.flags["static_image"] for t in tags.values()) and any(t.flags["voice_over"] for t in tags.values())


@pytest.mark.parametrize("line, needle", [
    ("YouTube ID,start seconds,label,split", "a header line?"),
    ("abcdefghijk,30,dog barking", "3 fields, expected 4"),
    ("abcdefghij,30,dog barking,train", "not 11 characters"),
    ("abcdefghijk,3.5,dog barking,train", "not a whole number"),
    ("abcdefghijk,30,,train", "empty label"),
    ("abcdefghijk,30,dog barking,val", "not train or test"),
])
def test_the_official_csv_is_read_strictly(tmp_path, line, needle):
    path = tmp_path / "vggsound.csv"
    path.write_text(line + "\n")
    with pytest.raises(UserError, match=needle) as e:
        read_vggsound_csv(path)
    assert str(path) in str(e.value) and "line 1" in str(e.value)


def test_a_good_csv_line_with_a_quoted_label(tmp_path):
    rows = read_vggsound_csv(_write(tmp_path / "v.csv", '-0BIyqJj9ZU,30,"bird chirping, tweeting",test\n'))
    assert rows[0].clip_id == "-0BIyqJj9ZU_000030" and rows[0].label == "bird chirping, tweeting"


HEADER = "video_id,label,modality,background_music,static_image,voice_over\n"


@pytest.mark.parametrize("body, needle", [
    ("abcdefghijk_000030,dog barking,B,False,False,False\n", "modality"),
    ("abcdefghijk_30,dog barking,A,False,False,False\n", "video_id"),
    ("abcdefghijk_000030,dog barking,A,False,yes,False\n", "static_image"),
    ("abcdefghijk_000030,dog barking,A,False,False,False\nabcdefghijk_000030,cat,A,False,True,False\n", "flags"),
    ("abcdefghijk_000030,dog barking,A,False,False,False\nabcdefghijk_000030,dog barking,V,False,False,False\n",
     "listed twice"),
    ("abcdefghijk_000030,dog barking,A,False,False\n", "5 fields"),
])
def test_the_tag_file_is_read_strictly(tmp_path, body, needle):
    with pytest.raises(UserError, match=needle):
        read_vggsounder(_write(tmp_path / "tags.csv", HEADER + body))
    with pytest.raises(UserError, match="columns"):
        read_vggsounder(_write(tmp_path / "t2.csv", "video_id,label,modality\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_gate():
    spec = VGGSOUND.vggsound
    row = Row(1, "abcdefghijk", 30, "dog barking", "test")
    flags = {"background_music": True, "static_image": False, "voice_over": False}
    assert gate_reason(row, Tags({"dog barking": "AV", "male speech, man speaking": "A"}, flags), spec) is None
    assert gate_reason(row, Tags({"dog barking": "V"}, flags), spec) is None
    assert gate_reason(row, Tags({"dog barking": "A", "dog howling": "V"}, flags), spec) == "audible_only"
    assert gate_reason(row, Tags({"dog howling": "AV"}, flags), spec) == "label_not_tagged"
    assert gate_reason(row, Tags({"dog barking": "AV"}, dict(flags, static_image=True)), spec) == "static_image"
    assert gate_reason(row, Tags({"dog barking": "AV"}, dict(flags, voice_over=True)), spec) == "voice_over"
    assert gate_reason(row, None, spec) == "not_tagged"
    assert gate_reason(Row(1, "abcdefghijk", 30, "dog barking", "train"), None, spec) is None  # VGGSounder: test only


def test_clips_of_one_youtube_video_are_grouped():
    pairs = youtube_pairs(["abcdefghijk_000030", "abcdefghijk_000100", "zzzzzzzzzzz_000000", "abcdefghijk_000200"])
    assert sorted(pairs) == [("abcdefghijk_000030", "abcdefghijk_000100"), ("abcdefghijk_000030", "abcdefghijk_000200")]


# -- the stand-in, end to end ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def offline():
    """No socket may connect while the chain runs: nothing is downloaded."""
    real = socket.socket.connect

    def refuse(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a network connection to {address} was attempted")
        return real(self, address, *args)

    socket.socket.connect = refuse
    yield
    socket.socket.connect = real


@pytest.fixture(scope="module")
def chain(tmp_path_factory, offline):
    """synth --vggsound -> prepare -> train-classifiers --class-match-only -> {root, standin, store, bundle}."""
    root = tmp_path_factory.mktemp("vggsound")
    standin = root / "standin"
    run_cli("synth", standin, "--vggsound").ok()
    store = root / "store"
    run_cli("prepare", standin / "vggsound.csv", "--protocol", standin / "vggsound-standin.toml", "--out", store).ok()
    bundle = root / "bundle.pt"
    run_cli("train-classifiers", "--class-match-only", "--data", store, "--out", bundle).ok()
    return {"root": root, "standin": standin, "store": store, "bundle": bundle,
            "doc": json.loads((standin / "standin.json").read_text())}


def test_standin_follows_vggsounds_conventions(chain):
    standin, doc = chain["standin"], chain["doc"]
    rows = read_vggsound_csv(standin / "vggsound.csv")
    assert (standin / "vggsound.csv").read_text().splitlines()[0].count(",") >= 3  # no header
    assert {r.split for r in rows} == {"train", "test"}
    on_disk = {p.stem for p in (standin / "clips").iterdir()}
    assert all(n.count("_") >= 1 and len(n.rsplit("_", 1)[1]) == 6 for n in on_disk)
    assert {r.clip_id for r in rows} - on_disk == {"missingClip_000030"}
    tags = read_vggsounder(standin / "standin-vggsounder.csv")
    assert set(tags) == {f"{c['youtube_id']}_{c['start']:06d}" for c in doc["clips"] if c["tags"]}
    assert any(m == "A" for t in tags.values() for m in t.labels.values())  # audible-only labels are there


def test_the_gate_leaves_out_audible_only_labels_and_flagged_clips(chain):
    store, doc = open_store(chain["store"]), chain["doc"]
    want_out = {f"{c['youtube_id']}_{c['start']:06d}": c["left_out"] for c in doc["clips"] if c["left_out"]}
    assert sorted(set(want_out.values())) == ["audible_only", "file_not_found", "not_tagged", "static_image",
                                              "voice_over"]
    skipped = pd.read_csv(chain["store"] / "skipped.csv", dtype=str)
    assert dict(zip(skipped["video_id"], skipped["reason"])).keys() == want_out.keys()
    for vid, reason in zip(skipped["video_id"], skipped["reason"]):
        assert {"audible_only": "(not visible)", "static_image": "static_image", "voice_over": "voice_over",
                "not_tagged": "without VGGSounder tags", "file_not_found": "file not found"}[want_out[vid]] in reason
    assert not set(store.manifest["video_id"]) & set(want_out)
    # every test segment's clip has its label tagged visible, and is neither static nor voice-over
    tags = read_vggsounder(chain["standin"] / "standin-vggsounder.csv")
    test = store.manifest[store.manifest["split"] == "test"]
    label_of = {k: store.protocol.classes[store.protocol.class_index(k)].name for k in store.protocol.class_keys}
    assert len(test) and all(tags[v].labels[label_of[c]] in ("V", "AV") for v, c in zip(test["video_id"],
                                                                                        test["class"]))
    assert not any(tags[v].flags["static_image"] or tags[v].flags["voice_over"] for v in test["video_id"])
    # the official split: test stays test, val is carved from train, video-disjoint
    split_of = {f"{c['youtube_id']}_{c['start']:06d}": c["split"] for c in doc["clips"]}
    assert all(split_of[v] == "test" for v in test["video_id"])
    assert all(split_of[v] == "train" for v in store.manifest.loc[store.manifest["split"] != "test", "video_id"])
    assert (store.manifest["split"] == "val").any()
    assert store.manifest.groupby("video_id")["split"].nunique().max() == 1
    # said in store.json, table1.csv and every record's store
    gate = store.gate
    assert gate["left_out"] == {"static_image": 5, "voice_over": 5, "background_music": 0, "audible_only": 5,
                                "label_not_tagged": 0, "not_tagged": 1}
    assert gate["labels"]["file"] == "standin-vggsounder.csv" and len(gate["labels"]["sha256"]) == 64
    table1 = pd.read_csv(chain["store"] / "table1.csv")
    assert table1["left_out_audible_only"].tolist() == [1, 1, 1, 1, 1, 5]
    assert store.ref()["gate"]["left_out"] == gate["left_out"] and "per_class" not in store.ref()["gate"]
    assert store.format_version == 4


def test_the_labels_file_must_exist_and_the_gate_needs_the_official_csv(chain, tmp_path):
    standin = chain["standin"]
    protocol = standin / "vggsound-standin.toml"
    run_cli("prepare", standin / "clips", "--protocol", protocol, "--out", tmp_path / "s").refused("official CSV")
    run_cli("prepare", standin / "vggsound.csv", "--protocol", protocol, "--out", tmp_path / "s", "--split-policy",
            "video").refused("official split")
    run_cli("prepare", standin / "vggsound.csv", "--protocol", "tiny", "--out", tmp_path / "s",
            "--labels", standin / "standin-vggsounder.csv").refused("--clips and --labels")
    bad = tmp_path / "tags.csv"
    bad.write_text(HEADER + "abcdefghijk_000030,dog barking,X,False,False,False\n")
    run_cli("prepare", standin / "vggsound.csv", "--protocol", protocol, "--out", tmp_path / "s", "--labels", bad,
            "--clips", standin / "clips").refused(str(bad), "line 2", "modality")
    assert not (tmp_path / "s").exists()


def _score(spec, chain, out, *extra):
    return run_cli("score", spec, "--data", chain["store"], "--classifiers", chain["bundle"], "--out", out, "--json",
                   *extra).ok()


def test_score_a_plugin_and_a_folder_of_images_then_report(chain, tmp_path):
    store = open_store(chain["store"])
    plugin = tmp_path / "painter.py"
    plugin.write_text(FLOAT_64x48)
    scores = tmp_path / "scores"
    plugin_record = json.loads(_score(f"{plugin}:build", chain, scores / "metric-plugin.jsonl",
                                      "--metrics", "informativity,kid,prdc").stdout)
    # a folder of images answering export-sounds: the real frames (what a perfect system would draw)
    run_cli("export-sounds", "--data", chain["store"], "--out", tmp_path / "sounds").ok()
    images = tmp_path / "images"
    images.mkdir()
    test = store.split_indices("test")
    for sid, r in zip(sound_ids(store, test), test):
        Image.fromarray(np.asarray(store.frames[r])).save(images / f"{sid}.png")
    folder_record = json.loads(_score(images, chain, scores / "metric-folder.jsonl",
                                      "--metrics", "informativity,kid").stdout)
    for record in (plugin_record, folder_record):
        assert record["store"]["gate"]["left_out"]["audible_only"] == 5  # the record says what the gate did
        assert record["classifiers"]["class_match"] is True and record["untrained_classes"] == list(store.protocol
                                                                                                    .class_keys)
        assert all(c["raw_share"] is None and c["class_match_rate"] is not None for c in record["classes"].values())
        assert record["mean"]["class_match_rate"] == pytest.approx(
            np.mean([c["class_match_rate"] for c in record["classes"].values()]))
        assert "kid" in record["image_metrics"]
    assert plugin_record["translator"]["kind"] == "plugin" and folder_record["translator"]["kind"] == "image-folder"
    for path in scores.glob("*.jsonl"):
        assert len(records.read(path)) == 1  # the checked reader takes them
    out = tmp_path / "report"
    run_cli("report", scores / "metric-plugin.jsonl", scores / "metric-folder.jsonl", "--out", out, "--data",
            chain["store"], "--classifiers", chain["bundle"]).ok()
    index = (out / "index.md").read_text()
    assert "vggsound-standin" in index and "class match" in index.lower()
    assert (out / "tables" / "table1-segments.csv").is_file()
