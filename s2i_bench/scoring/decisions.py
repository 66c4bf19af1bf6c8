"""The per-image decisions a record carries (format 3 on), packed: what paired comparisons,
series intervals and audits need image by image.

    encode_decisions(segment_ids, informative, truth, matched, iis) -> the record's `decisions`
    unpack_decisions(packed, where) -> {order, shape, informative, truth, class_match, iis}

The arrays are (K, N): K images per sound, N sounds in the plan's order (class by class, manifest
order within a class). `order` is the sha256 of the segment ids in that order, so two records pair
image for image only when it matches. Booleans are packed bits (numpy.packbits, row-major) in
base64; IIS ranks are k / 40 (20 negatives, ties counting half), exact as bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any, Mapping

import numpy as np

from s2i_bench.errors import UserError

ENCODING = "base64 numpy.packbits, row-major (K, N)"
FIELDS = ("informative", "truth", "class_match")


def _pack(bits: np.ndarray) -> str:
    return base64.b64encode(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes()).decode("ascii")


def _unpack(text: str, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        raw = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype=np.uint8)
    except (binascii.Error, ValueError, UnicodeEncodeError, AttributeError):
        raise UserError(f"{where}: decisions are not base64 packed bits") from None
    bits = np.unpackbits(raw)
    size = shape[0] * shape[1]
    if bits.size < size or bits.size - size >= 8:
        raise UserError(f"{where}: decisions hold {bits.size} bits, expected {size}")
    return bits[:size].reshape(shape).astype(bool)


def order_of(segment_ids) -> str:
    """The plan order a record's decisions are in: sha256 of the segment ids, one per line."""
    return hashlib.sha256("\n".join(map(str, segment_ids)).encode()).hexdigest()


def encode_decisions(segment_ids, informative, truth=None, matched=None, iis=None) -> dict[str, Any]:
    """The `decisions` of a record (module docstring): (K, N) bool arrays, packed."""
    informative = np.asarray(informative, dtype=bool)
    order = order_of(segment_ids)
    out = {"order": order, "shape": list(informative.shape), "encoding": ENCODING, "informative": _pack(informative)}
    out["truth"] = None if truth is None else _pack(truth)
    out["class_match"] = None if matched is None else _pack(matched)
    if iis is not None:  # per-image IIS ranks, k / 40 with 20 negatives: exact as bytes
        out["iis_x40"] = base64.b64encode(np.round(np.asarray(iis) * 40).astype(np.uint8).tobytes()).decode("ascii")
    return out


def unpack_decisions(packed: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """{order, shape, informative, truth, class_match, iis} with (K, N) arrays, or None for a
    record without decisions (format 1-2). Every problem names `where`."""
    if not packed:
        return None
    if not isinstance(packed, Mapping):
        raise UserError(f"{where}: decisions is not an object")
    shape = packed.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and all(isinstance(v, int) and v >= 0 for v in shape)):
        raise UserError(f"{where}: decisions.shape {shape!r} is not [K, N]")
    out: dict[str, Any] = {"order": packed.get("order"), "shape": tuple(shape)}
    for field in FIELDS:
        text = packed.get(field)
        out[field] = None if text is None else _unpack(text, tuple(shape), f"{where}: decisions.{field}")
    out["iis"] = None
    if packed.get("iis_x40"):
        try:
            raw = np.frombuffer(base64.b64decode(packed["iis_x40"].encode("ascii"), validate=True), dtype=np.uint8)
        except (binascii.Error, ValueError, AttributeError):
            raise UserError(f"{where}: decisions.iis_x40 is not base64") from None
        if raw.size != shape[0] * shape[1] or raw.max(initial=0) > 40:
            raise UserError(f"{where}: decisions.iis_x40 holds {raw.size} values, expected {shape[0] * shape[1]} "
                            f"in 0..40")
        out["iis"] = raw.reshape(tuple(shape)) / 40.0
    return out
