"""Fault catalogue, section 3 (and 8.2): bad sources given to `prepare`. A bad file never stops
the run: it is skipped, with its reason in skipped.csv; a misnamed class folder is refused
before anything is decoded, naming the folder, its closest class and that class's names."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fakes import run_cli
from s2i_bench.data.prepare import prepare_store
from s2i_bench.data.store import open_store
from s2i_bench.errors import UserError
from s2i_bench.protocol import load_protocol

PROTO = load_protocol("tiny")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from s2i_bench.synth import write_world

    return write_world(tmp_path_factory.mktemp("faults3") / "world", PROTO, videos_per_class=4, seed=3)


def copy_world(world, tmp_path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(world, dst)
    return dst


def skipped(store: Path) -> dict[str, str]:
    table = pd.read_csv(store / "skipped.csv", dtype=str, keep_default_na=False)
    return dict(zip(table["source"], table["reason"]))


def test_a_misnamed_class_folder_is_refused_before_decoding(world, tmp_path, monkeypatch):  # 3.1
    import s2i_bench.data.extract as extract

    src = copy_world(world, tmp_path)
    (src / "rail_transport").rename(src / "Railz")
    decoded = []
    monkeypatch.setattr(extract, "_extract_to_cache", lambda *a: decoded.append(a) or {"segments": 0})
    res = run_cli("prepare", src, "--out", tmp_path / "store", "--protocol", "tiny")
    res.refused("no folder for class(es) rail_transport", "'Railz' matches no class",
                "closest class 'rail_transport'", "railway")
    assert not decoded and not (tmp_path / "store.work").exists()


def test_short_class_names_are_accepted(world, tmp_path):  # 3.1: "Rail", like "baby" and "water"
    src = copy_world(world, tmp_path)
    (src / "rail_transport").rename(src / "Rail")
    (src / "water_flowing").rename(src / "water")
    out = prepare_store(src, tmp_path / "store", PROTO)
    assert set(open_store(out).manifest["class"]) == set(PROTO.class_keys)


def test_bad_files_are_skipped_with_their_reason_and_never_stop_the_run(world, tmp_path, monkeypatch):
    import s2i_bench.data.extract as extract

    src = copy_world(world, tmp_path)
    dog = sorted((src / "dog").glob("*.mp4"))
    fire = sorted((src / "fireworks").glob("*.mp4"))
    # 3.11 a file name that is not valid UTF-8
    bad_name = os.fsencode(src / "baby_cry") + b"/bad\xff\xfename.mp4"
    with open(bad_name, "wb") as f:
        f.write(dog[0].read_bytes())
    # 3.8 a folder named like a video file, with a video in it
    (src / "water_flowing" / "DIRasfilexx.mp4").mkdir()
    shutil.copyfile(dog[1], src / "water_flowing" / "DIRasfilexx.mp4" / "INSIDEdirxx.mp4")
    # 3.15 a 0-byte file and a text file
    (src / "water_flowing" / "ZEROzeroxxx.mp4").write_bytes(b"")
    (src / "dog" / "notes.txt").write_text("not a video")
    # 3.12 an unreadable file (root reads everything, so its read fails by hand)
    real = extract.sha256_file
    unreadable = fire[0].resolve()

    def deny(path, *a, **k):
        if Path(path).resolve() == unreadable:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(extract, "sha256_file", deny)
    res = run_cli("prepare", src, "--out", tmp_path / "store", "--protocol", "tiny").ok()
    reasons = skipped(tmp_path / "store")
    assert any("not valid UTF-8" in r and "\\xff" in s for s, r in reasons.items()), reasons
    assert any("named like a video file" in r for r in reasons.values()), reasons
    assert any("Permission denied" in r for r in reasons.values()), reasons
    assert reasons.get("water_flowing/ZEROzeroxxx.mp4", "").startswith("cannot open")
    assert "not a video file" in reasons["dog/notes.txt"]
    # every source is used or skipped, and the summary says so: 20 clean + 4 added, 1 clean unreadable
    assert "24 sources: 19 used, 5 skipped" in res.output, res.output[-800:]


def test_a_file_under_two_classes_is_surfaced(world, tmp_path):  # 3.5
    src = copy_world(world, tmp_path)
    baby = sorted((src / "baby_cry").glob("*.mp4"))[0]
    rows = [("baby_cry/" + baby.name, "baby_cry"), ("baby_cry/" + baby.name, "dog")]
    rows += [(p.relative_to(src).as_posix(), p.parent.name) for p in sorted(src.glob("*/*.mp4"))
             if p.name != baby.name]
    pd.DataFrame(rows, columns=["path", "class"]).to_csv(src / "m.csv", index=False)
    res = run_cli("prepare", src / "m.csv", "--out", tmp_path / "store", "--protocol", "tiny").ok()
    assert "appear in several classes" in res.output and baby.stem in res.output


def test_manifest_faults(world, tmp_path):  # 3.2, 3.4, 3.6, 3.7, 3.9, 3.10
    src = copy_world(world, tmp_path)
    files = sorted(src.glob("*/*.mp4"))

    def write(name, rows, cols=("path", "class")):
        pd.DataFrame(rows, columns=list(cols)).to_csv(src / name, index=False)

    write("abs.csv", [(str(p.resolve()), p.parent.name) for p in files])
    run_cli("prepare", src / "abs.csv", "--out", tmp_path / "abs", "--protocol", "tiny").ok()  # 3.2
    write("dup.csv", [(p.relative_to(src).as_posix(), p.parent.name) for p in files] * 2)
    res = run_cli("prepare", src / "dup.csv", "--out", tmp_path / "dup", "--protocol", "tiny").ok()  # 3.4
    assert f"{2 * len(files)} sources: {len(files)} used, {len(files)} skipped" in res.output
    write("nocls.csv", [(p.name,) for p in files], cols=("path",))
    run_cli("prepare", src / "nocls.csv", "--out", tmp_path / "x", "--protocol", "tiny").refused(
        "missing columns ['class']")
    write("dir.csv", [(p.relative_to(src).as_posix(), p.parent.name) for p in files] + [("dog", "dog")])
    run_cli("prepare", src / "dir.csv", "--out", tmp_path / "dir", "--protocol", "tiny").ok()  # 3.7
    assert "a folder, not a video file" in skipped(tmp_path / "dir")["dog"]
    write("split.csv", [(p.relative_to(src).as_posix(), p.parent.name, "holdout") for p in files],
          cols=("path", "class", "split"))
    run_cli("prepare", src / "split.csv", "--out", tmp_path / "x", "--protocol", "tiny").refused("holdout")  # 3.9
    (src / "latin1.csv").write_bytes("path,class\ncaf\xe9.mp4,dog\n".encode("latin-1"))
    run_cli("prepare", src / "latin1.csv", "--out", tmp_path / "x", "--protocol", "tiny").refused("latin1.csv")  # 3.10


def _vfr_clip(path: Path) -> None:
    """Frames at 0-0.2, 1.5-1.6, 3.0-3.08 and 4.5-4.6 s only; 5 s of sound (catalogue 3.14)."""
    import av

    times = [0.0, 0.1, 0.2, 1.5, 1.6, 3.0, 3.04, 3.08, 4.5, 4.6]
    with av.open(str(path), "w", format="mp4") as box:
        v = box.add_stream("libx264", rate=100)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.time_base = Fraction(1, 100)
        a = box.add_stream("aac", rate=16000, layout="mono")
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 100)), Fraction(1, 100)
            box.mux(v.encode(frame))
        box.mux(v.encode(None))
        sound = (0.1 * np.sin(np.arange(5 * 16000) / 16000 * 2 * np.pi * 440)).astype(np.float32)[None]
        for start in range(0, sound.shape[1], 1024):
            chunk = np.ascontiguousarray(np.pad(sound[:, start:start + 1024],
                                                ((0, 0), (0, max(0, 1024 - sound[:, start:start + 1024].shape[1])))))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, start, Fraction(1, 16000)
            box.mux(a.encode(frame))
        box.mux(a.encode(None))


def test_a_frame_far_from_the_segment_centre_is_not_used(tmp_path):  # 3.14
    from s2i_bench.data.features import extract_clip

    path = tmp_path / "VFRxxxxxxxx.mp4"
    _vfr_clip(path)
    clip = extract_clip(path, PROTO)
    for k in clip.starts:  # every kept segment has a frame within half a frame interval of its centre
        assert k in (0, 1, 2, 3, 4)
    dropped = clip.info.get("dropped_segments", [])
    assert dropped and all(abs(d["nearest_frame_s"] - d["centre_s"]) > 0.05 for d in dropped)
    assert {d["start_s"] for d in dropped} & {2.0}  # segment 2 (2-3 s) once got the frame at 3.0 s


def test_a_second_prepare_into_the_same_store_refuses_at_once(world, tmp_path):  # 8.2
    from s2i_bench.locks import exclusive_lock

    work = tmp_path / "store.work"
    work.mkdir()
    with exclusive_lock(work / ".lock", "store"):
        with pytest.raises(UserError, match=r"being written by another process \(pid"):
            prepare_store(world, tmp_path / "store", PROTO)
    assert not (tmp_path / "store").exists()


def test_out_that_is_a_file_is_never_replaced(world, tmp_path):  # 9.4
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    run_cli("prepare", world, "--out", afile, "--protocol", "tiny", "--overwrite").refused("is a file")
    assert afile.read_text() == "mine" and not list(tmp_path.glob("afile.txt.*"))
    not_a_store = tmp_path / "folder"
    not_a_store.mkdir()
    (not_a_store / "keep.txt").write_text("mine")
    run_cli("prepare", world, "--out", not_a_store, "--protocol", "tiny", "--overwrite").refused("not a store")
    assert (not_a_store / "keep.txt").read_text() == "mine"
