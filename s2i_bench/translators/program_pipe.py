"""What the two sides of a program's process agree on (`programs`: the parent, `program_child`:
the child): the messages on the protocol pipe, the defaults, and where the child's output goes."""

from __future__ import annotations

import json

import numpy as np

SPECTROGRAM_SHAPE = (1, 128, 100)
DEFAULT_TIMEOUT_S = 120.0  # per call, and for loading + checking + probing; --program-timeout
OUTPUT_NAME = "output.txt"  # the child's stdout and stderr, in its private folder


def short_error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def send(conn, header: dict, arrays: tuple = ()) -> None:
    """A JSON header and raw array bytes: nothing is pickled across the process boundary."""
    meta = [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]
    conn.send_bytes(json.dumps({**header, "arrays": meta}).encode())
    for a in arrays:
        conn.send_bytes(np.ascontiguousarray(a).tobytes())


def recv(conn) -> tuple[dict, list[np.ndarray]]:
    header = json.loads(conn.recv_bytes().decode())
    arrays = []
    for meta in header.get("arrays", []):
        dtype = np.dtype(meta["dtype"])
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        arrays.append(np.frombuffer(conn.recv_bytes(), dtype=dtype).reshape(meta["shape"]))
    return header, arrays
