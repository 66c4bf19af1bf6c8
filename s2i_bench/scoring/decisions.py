"""The per-image decisions a record carries (format 3 on), packed: what paired comparisons,
series intervals and audits need image by image.

    encode_decisions(segment_ids, informative, truth, matched, iis, probability) -> the record's `decisions`
    unpack_decisions(packed, where) -> {order, shape, informative, truth, class_match, iis, probability}

The arrays are (K, N): K images per sound, N sounds in the plan's order (class by class, manifest
order within a class). `order` is the sha256 of the segment ids in that order, so two records pair
image for image only when it matches. Booleans are packed bits (numpy.packbits, row-major) in
base64; IIS ranks are k / 40 (20 negatives, ties counting half), exact as bytes.

Each image's probability of "informative" by its class's classifier (`probability_x65535`,
None in older records and for bundles that give none): base64 of little-endian uint16
round(p * 65535), row-major (K, N), held on its decision's side of 1/2 (at most 32767 where the
decision is "not informative", at least 32768 where it is "informative"), so that after
unpacking (q / 65535) `informative == (probability > 0.5)` holds exactly, image by image: the
threshold rule of `informativity.bundle.decide`, which `unpack_decisions` checks. Images of a
class without a classifier have probability 0 (and decision False). The rounding moves a
probability by at most 1 / 131070. Sharded scoring writes the bytes one process writes because the
classifiers' forward pass on the CPU gives each image the same float32 outputs whatever its batch
companions and the thread count (measured: docs/metrics.md, "The instrument"; kept by
tests/scoring/test_probabilities.py).
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
PROBABILITY_SCALE = 65535  # P(informative) packed as uint16 round(p * 65535)
HALF = 32768  # the smallest packed value above 1/2: q >= HALF exactly where the decision is informative


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


def encode_decisions(segment_ids, informative, truth=None, matched=None, iis=None,
                     probability=None) -> dict[str, Any]:
    """The `decisions` of a record (module docstring): (K, N) bool arrays, packed; with
    `probability` ((K, N) float in [0, 1]) each image's P(informative) too."""
    informative = np.asarray(informative, dtype=bool)
    order = order_of(segment_ids)
    out = {"order": order, "shape": list(informative.shape), "encoding": ENCODING, "informative": _pack(informative)}
    out["truth"] = None if truth is None else _pack(truth)
    out["class_match"] = None if matched is None else _pack(matched)
    if iis is not None:  # per-image IIS ranks, k / 40 with 20 negatives: exact as bytes
        out["iis_x40"] = base64.b64encode(np.round(np.asarray(iis) * 40).astype(np.uint8).tobytes()).decode("ascii")
    if probability is not None:
        out["probability_x65535"] = pack_probability(probability, informative)
    return out


def pack_probability(probability, informative) -> str:
    """(K, N) P(informative) -> base64 of uint16 round(p * 65535), little-endian, row-major, held
    on the side of 1/2 its decision `informative` says (module docstring)."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    if p.shape != np.shape(informative) or not np.isfinite(p).all():
        raise ValueError(f"probability must be finite and of the decisions' shape {np.shape(informative)}")
    q = np.round(p * PROBABILITY_SCALE).astype(np.int64)
    q = np.where(np.asarray(informative, dtype=bool), np.maximum(q, HALF), np.minimum(q, HALF - 1))
    return base64.b64encode(q.astype("<u2").tobytes()).decode("ascii")


def _unpack_probability(text: Any, shape: tuple[int, int], informative, where: str) -> np.ndarray:
    """(K, N) float64 q / 65535, checked: its size, and the threshold rule against the decisions."""
    try:
        q = np.frombuffer(base64.b64decode(text.encode("ascii"), validate=True), dtype="<u2")
    except (binascii.Error, ValueError, AttributeError, UnicodeEncodeError):
        raise UserError(f"{where}: decisions.probability_x65535 is not base64 uint16") from None
    if q.size != shape[0] * shape[1]:
        raise UserError(f"{where}: decisions.probability_x65535 holds {q.size} values, expected {shape[0] * shape[1]}")
    q = q.reshape(shape)
    if informative is None or not np.array_equal(q >= HALF, informative):
        raise UserError(f"{where}: decisions.probability_x65535 does not give the decisions (informative exactly where "
                        f"the probability is above 1/2): the record was edited or damaged")
    return q / float(PROBABILITY_SCALE)


def unpack_decisions(packed: Mapping[str, Any] | None, where: str) -> dict[str, Any] | None:
    """{order, shape, informative, truth, class_match, iis, probability} with (K, N) arrays (iis
    and probability None where the record has none), or None for a record without decisions
    (format 1-2). Every problem names `where`."""
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
    text = packed.get("probability_x65535")
    out["probability"] = None if text is None else _unpack_probability(text, tuple(shape), out["informative"], where)
    return out
