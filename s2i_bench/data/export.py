"""`s2i-bench export-sounds`: the sounds of a split as WAV files, for systems that run elsewhere.

    s2i-bench export-sounds --data STORE --split test --out DIR [--audio-context-s C] [--samples K]
                            [--sample-rate R]

    DIR/sounds/<segment_id>.wav     each segment's own second, mono 16-bit PCM: at 16 kHz the audio
                                    its log-Mel was computed from; at --sample-rate R the store's
                                    high-rate copy (`prepare --audio-rate`, `data/hires.py`),
                                    resampled down from it when R is lower than the rate it keeps
    DIR/context/<segment_id>.wav    with --audio-context-s C: the C s centred on the segment
                                    (zeros outside the clip), from a store prepared with a context
    DIR/manifest.csv                segment_id, file, context_file, seed_0 .. seed_{K-1}
    DIR/export.json                 the store hash, split, seeds and what to do with the images

`segment_id` here is opaque ("s" + 16 hex digits of sha256(store hash | the store's segment id)):
the store's own ids name the video and the class, which a system under test must not see. Rows
are sorted by that id, so their order says nothing about the class either. Run the system on the
files anywhere, save image k of sound `<segment_id>` as `<segment_id>.png` (one image per
sound) or `<segment_id>_<k>.png` (K images, k = 0 .. K-1; seed_k is the seed to draw it with),
then `s2i-bench score IMAGES_DIR --data STORE` scores them (`translators.folder`).
"""

from __future__ import annotations

import logging
import hashlib
import io
import wave
from pathlib import Path

import numpy as np

from s2i_bench.data.store import SPLITS, open_store
from s2i_bench.errors import UserError
from s2i_bench.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, progress
from s2i_bench.provenance import code_version, now_iso
from s2i_bench.seeding import item_seeds

logger = logging.getLogger(__name__)

EXPORT_KIND = "s2i-bench-sounds"


def sound_id(store_hash: str, segment_id: str) -> str:
    """The opaque id of a store's segment (see the module docstring)."""
    return "s" + hashlib.sha256(f"{store_hash}|{segment_id}".encode()).hexdigest()[:16]


def sound_ids(store, rows) -> np.ndarray:
    return np.array([sound_id(store.store_hash, str(s)) for s in store.segment_ids[np.asarray(rows)]], dtype=object)


def wav_bytes(samples_int16: np.ndarray, sample_rate: int) -> bytes:
    """(T,) int16 -> a mono 16-bit PCM WAV file."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(samples_int16, dtype="<i2").tobytes())
    return buf.getvalue()


def _audio_from(store, rate: int) -> str:
    """Which copy of the store's audio the WAVs are (export.json `audio_from`): the one at `rate`,
    else the lowest one above it, resampled (as `Store.audio_at` chooses)."""
    copies = {store.sample_rate: "waveforms.npy"} | ({store.hires_rate: "waveforms_hr.npy"} if store.hires_rate else {})
    source = min(r for r in copies if r >= rate)
    resampled = f" resampled to {rate} Hz (torchaudio's windowed sinc, segment by segment)" if source != rate else ""
    return f"{copies[source]} ({source} Hz){resampled}"


def _check_out(out: Path, overwrite: bool) -> None:
    """OUT is new, empty, or an earlier export (with --overwrite): never a folder of the user's."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / "export.json").is_file()
        if not ours:
            raise UserError(f"--out {out}: not empty and not an earlier export (no export.json); give a new folder")
        if not overwrite:
            raise UserError(f"--out {out}: holds an earlier export; pass --overwrite to replace its files")


def export_sounds(store_path, out, *, split: str = "test", audio_context_s: float | None = None,
                  samples: int = 1, seed: int | None = None, overwrite: bool = False,
                  sample_rate: int | None = None) -> Path:
    """Write the sounds of `split` (see the module docstring); returns the manifest path.
    `sample_rate`: the rate to write (default the store's 16 kHz); an encoder gets its own."""
    import pandas as pd


    if split not in SPLITS:
        raise UserError(f"--split {split!r}: valid are {', '.join(SPLITS)}")
    if samples < 1:
        raise UserError(f"--samples {samples}: must be 1 or more")
    store = open_store(store_path)
    store.require_waveforms("export-sounds")
    protocol = store.protocol
    seed = protocol.scoring.seed if seed is None else int(seed)
    sr = store.sample_rate if sample_rate is None else int(sample_rate)
    context_n = None
    if sr != store.sample_rate:
        if audio_context_s:
            raise UserError(f"--audio-context-s is kept at the store's {store.sample_rate} Hz only; export the "
                            f"context with --sample-rate {store.sample_rate}")
        store.audio_at(store.split_indices(split)[:1], sr)  # refuses a rate the store cannot give, before any work
    if audio_context_s:
        have = store.context_seconds
        if have is None or audio_context_s > have + 1e-9:
            raise UserError(f"{store.path}: --audio-context-s {audio_context_s} needs a store prepared with a context "
                            f"of at least that long (this one has {'none' if have is None else f'{have:g} s'}); "
                            f"rebuild it with {store.rebuild_hint(f'--audio-context-s {audio_context_s:g}')}")
        context_n = int(round(audio_context_s * sr))
    out = Path(out)
    _check_out(out, overwrite)
    rows = store.split_indices(split)
    if len(rows) == 0:
        raise UserError(f"{store.path}: no {split} segments")
    ids = sound_ids(store, rows)
    seeds = np.stack([item_seeds(seed, store.segment_ids[rows], draw=k) for k in range(samples)])  # (K, N)
    order = np.argsort(ids.astype(str), kind="stable")  # by opaque id: the order says nothing of the class
    (out / "sounds").mkdir(parents=True, exist_ok=True)
    if context_n:
        (out / "context").mkdir(exist_ok=True)
    table = []
    for i in progress(order.tolist(), desc="export-sounds", unit="sound"):
        r, sid = int(rows[i]), str(ids[i])
        audio = store.waveforms[r] if sr == store.sample_rate else store.audio_at([r], sr)[0]
        atomic_write_bytes(out / "sounds" / f"{sid}.wav", wav_bytes(audio, sr))
        entry = {"segment_id": sid, "file": f"sounds/{sid}.wav", "context_file": ""}
        if context_n:
            ctx = np.asarray(store.context[r])
            start = (len(ctx) - context_n) // 2  # the centred C s of the store's (longer) window
            atomic_write_bytes(out / "context" / f"{sid}.wav", wav_bytes(ctx[start:start + context_n], sr))
            entry["context_file"] = f"context/{sid}.wav"
        entry.update({f"seed_{k}": int(seeds[k, i]) for k in range(samples)})
        table.append(entry)
    atomic_write_text(out / "manifest.csv", pd.DataFrame(table).to_csv(index=False))
    atomic_write_json(out / "export.json", {
        "kind": EXPORT_KIND, "format_version": 1, "store": store.ref(), "split": split, "seed": seed,
        "samples": samples, "num_sounds": int(len(rows)), "sample_rate": sr, "audio_from": _audio_from(store, sr),
        "audio": "16-bit PCM mono; sounds/: the segment's own second; context/: the centred window",
        "audio_context_s": audio_context_s or None, "protocol": protocol.ref(),
        "images": "save image k of sound ID as ID.png (K = 1) or ID_k.png (k = 0..K-1), any size, PNG or JPEG; "
                  "then: s2i-bench score IMAGES_DIR --data STORE",
        "code_version": code_version(), "created": now_iso()})
    logger.info(f"export-sounds: {len(rows)} {split} sounds of {store.path} -> {out}/sounds"
                f"{' and context/' if context_n else ''}; manifest {out / 'manifest.csv'}; "
                f"{samples} seed(s) per sound. Save the images as <segment_id>.png"
                f"{' or <segment_id>_<k>.png' if samples > 1 else ''} and run "
                f"`s2i-bench score IMAGES_DIR --data {store.path}`")
    return out / "manifest.csv"
