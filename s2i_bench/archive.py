"""Zip archives from strangers: one strict reader.

Checkpoints, bundles, TorchScript files and `torch.export` programs are zip archives. Two zip
readers look at each of them: this module (Python) and torch's own (miniz, which takes the FIRST
of two entries of the same name, compares names without regard to case, and trusts the central
directory). Every zip s2i-bench opens from a stranger is read first by `StrictZip`, which
refuses what the two readers could see differently, or what could make either allocate without
bound:

  * two entries whose names are equal, or equal but for case;
  * encrypted entries, unknown flags, compression other than stored (0) and deflate (8);
  * a local header that disagrees with the central directory (name, method, flags, sizes, CRC);
  * entries that overlap (the "overlapping files" zip bomb), data outside the archive, bytes
    before the first entry or after the end record, multi-disk archives;
  * names that are absolute, contain `..`, `.`, empty parts, backslashes or non-printable bytes;
  * more than MAX_ENTRIES entries; declared sizes past the limits below; a deflated entry that
    expands more than MAX_DEFLATE_RATIO times (above RATIO_FLOOR bytes).

Members are read with a hard cap (the declared size, itself capped by the caller): a lying size
header can make `read` refuse, never allocate more. Every refusal is a UserError of one line
naming the file and the reason.

The program archives (TorchScript, `torch.export`) are then checked by parsing what torch
would later parse: `s2i_bench.translators.program_archives`.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from s2i_bench.errors import UserError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MAX_ENTRIES = 65_536
MAX_NAME_LENGTH = 1024
MAX_CENTRAL_DIRECTORY = 128 * MiB
# Stored entries cannot be bombs (their bytes are in the file), so their limit is a file size:
# the paper's translator is ~160 MB of float32 weights; allow large models.
MAX_STORED_ENTRY = 16 * GiB
MAX_STORED_TOTAL = 16 * GiB
# Deflated entries can expand ~1000x; torch writes none of its own (code files of TorchScript
# are deflated, and small).
MAX_DEFLATED_ENTRY = 1 * GiB
MAX_DEFLATED_TOTAL = 4 * GiB
MAX_DEFLATE_RATIO = 200
RATIO_FLOOR = 1 * MiB  # entries this small may compress better (a zero tensor, say)
# What the program checks read into memory themselves.
MAX_NESTED_BYTES = 256 * MiB  # a deflated zip inside the archive (sample inputs)

_CHUNK = 1 * MiB
_EOCD, _EOCD64, _LOC64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"
_CENTRAL, _LOCAL = b"PK\x01\x02", b"PK\x03\x04"
_ALLOWED_FLAGS = 0x0002 | 0x0004 | 0x0008 | 0x0800  # deflate options, data descriptor, UTF-8 names
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "LZMA", 93: "zstandard",
                 95: "xz", 96: "JPEG", 97: "WavPack", 98: "PPMd", 99: "AES encryption"}


class ArchiveError(UserError):
    """A zip archive refused by the strict reader (the message names the file and the reason)."""

    def __init__(self, label: str, reason: str):
        self.label, self.reason = label, _one_line(reason)
        super().__init__(f"{label}: {self.reason}")


class NotAZip(ArchiveError):
    """No zip end record: not a zip archive at all, or one cut short."""

    def __init__(self, label: str):
        UserError.__init__(self, f"{label}: not a zip archive, or cut short (no zip end record)")
        self.label, self.reason = label, "no zip end record"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:600]


def _shown(name: str, n: int = 80) -> str:
    """A name from the archive as it may appear in a one-line message."""
    r = repr(name)
    return r if len(r) <= n else r[: n - 4] + "...'"


class Entry:
    """One member as the central directory declares it (checked against its local header)."""

    __slots__ = ("name", "method", "flags", "crc", "compressed_size", "size", "header_offset", "data_offset")

    def __init__(self, name, method, flags, crc, compressed_size, size, header_offset):
        self.name, self.method, self.flags, self.crc = name, method, flags, crc
        self.compressed_size, self.size, self.header_offset = compressed_size, size, header_offset
        self.data_offset = -1


def _extra_fields(extra: bytes) -> dict[int, bytes] | None:
    """The extra fields of a header by id, or None when malformed (lengths overrun, repeats)."""
    out: dict[int, bytes] = {}
    i = 0
    while i < len(extra):
        if i + 4 > len(extra):
            return None
        tag, size = struct.unpack_from("<HH", extra, i)
        if i + 4 + size > len(extra) or tag in out:
            return None
        out[tag] = extra[i + 4: i + 4 + size]
        i += 4 + size
    return out


def _name_problem(name: str) -> str | None:
    if not name:
        return "an empty name"
    if len(name) > MAX_NAME_LENGTH:
        return f"a name longer than {MAX_NAME_LENGTH} characters"
    if any(not (32 <= ord(c) < 127) for c in name):
        return "a name with non-printable or non-ASCII characters"
    if "\\" in name:
        return "a name with a backslash"
    if name.startswith("/"):
        return "an absolute name"
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if any(p == ".." for p in parts):
        return "a name with '..'"
    if any(p in ("", ".") for p in parts):
        return "a name with an empty or '.' part"
    return None


class StrictZip:
    """A zip archive, checked as a whole when opened (see the module docstring).

    `StrictZip(path)` reads a file; `fileobj`/`start`/`length` read a window of an open file
    or a BytesIO (an archive inside an archive)."""

    def __init__(self, path: str | Path, *, label: str | None = None, fileobj: BinaryIO | None = None,
                 start: int = 0, length: int | None = None):
        self.path = Path(path)
        self.label = label or str(path)
        self._own = fileobj is None
        try:
            self._f = open(self.path, "rb") if fileobj is None else fileobj
        except OSError as e:
            raise ArchiveError(self.label, f"cannot read ({e.strerror or e})") from None
        self._start = start
        try:
            if length is None:
                self._f.seek(0, os.SEEK_END)
                length = self._f.tell() - start
            self.size = length
            self.entries = self._parse()
        except OSError as e:
            self.close()
            raise ArchiveError(self.label, f"cannot read ({e.strerror or e})") from None
        except BaseException:
            self.close()
            raise
        self._by_name = {e.name: e for e in self.entries}

    # -- plumbing ----------------------------------------------------------------------------
    def close(self) -> None:
        f, self._f = getattr(self, "_f", None), None
        if f is not None and self._own:
            f.close()

    def __enter__(self) -> "StrictZip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _refuse(self, reason: str) -> ArchiveError:
        """Every refusal happens before torch reads the file: nothing in it was loaded."""
        return ArchiveError(self.label, f"refused: {reason}; it was not loaded")

    def _read_at(self, offset: int, n: int, what: str) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.size:
            raise self._refuse(f"{what} lies outside the file (cut short, or a damaged or crafted zip)")
        self._f.seek(self._start + offset)
        data = self._f.read(n)
        if len(data) != n:
            raise self._refuse(f"{what} is cut short")
        return data

    # -- the structure -----------------------------------------------------------------------
    def _end_records(self) -> tuple[int, int, int]:
        """(number of entries, central directory offset, its size), from the end record(s)."""
        tail_len = min(self.size, 22 + 65535)
        tail = self._read_at(self.size - tail_len, tail_len, "the end of the archive")
        pos = tail.rfind(_EOCD)
        if pos < 0 or pos + 22 > tail_len:
            raise NotAZip(self.label)
        eocd = self.size - tail_len + pos
        (_, disk, cd_disk, n_here, n_total, cd_size, cd_offset, comment_len) = struct.unpack_from(
            "<4sHHHHIIH", tail, pos)
        if eocd + 22 + comment_len != self.size:
            raise self._refuse("the zip end record does not end the file (cut short, or data appended)")
        cd_end = eocd
        if eocd >= 20 and self._read_at(eocd - 20, 4, "the zip64 locator") == _LOC64:
            _, loc_disk, rec_offset, disks = struct.unpack("<4sIQI", self._read_at(eocd - 20, 20, "the zip64 locator"))
            if loc_disk != 0 or disks > 1:
                raise self._refuse("a multi-disk (split) zip archive")
            head = self._read_at(rec_offset, 56, "the zip64 end record")
            (sig, rec_size, _, _, disk64, cd_disk64, here64, total64, cd_size64, cd_offset64) = struct.unpack(
                "<4sQHHIIQQQQ", head)
            if sig != _EOCD64 or rec_offset + 12 + rec_size != eocd - 20:
                raise self._refuse("a damaged zip64 end record")
            for small, big in ((disk, disk64), (cd_disk, cd_disk64)):
                if small not in (big, 0xFFFF):
                    raise self._refuse("zip end records that disagree")
            for small, big, most in ((n_here, here64, 0xFFFF), (n_total, total64, 0xFFFF),
                                     (cd_size, cd_size64, 0xFFFFFFFF), (cd_offset, cd_offset64, 0xFFFFFFFF)):
                if small not in (big, most):
                    raise self._refuse("zip end records that disagree")
            disk, cd_disk, n_here, n_total, cd_size, cd_offset = (disk64, cd_disk64, here64, total64,
                                                                  cd_size64, cd_offset64)
            cd_end = rec_offset
        elif 0xFFFF in (n_here, n_total) or 0xFFFFFFFF in (cd_size, cd_offset):
            raise self._refuse("a zip64 archive without its zip64 end record")
        if disk != 0 or cd_disk != 0 or n_here != n_total:
            raise self._refuse("a multi-disk (split) zip archive")
        if n_total > MAX_ENTRIES:
            raise self._refuse(f"{n_total} entries, more than the {MAX_ENTRIES} allowed")
        if cd_size > MAX_CENTRAL_DIRECTORY:
            raise self._refuse(f"a central directory of {cd_size} bytes, more than {MAX_CENTRAL_DIRECTORY}")
        if cd_offset + cd_size != cd_end:
            raise self._refuse("the central directory is not where the end record says (bytes before the first "
                               "entry, or a crafted zip)")
        return n_total, cd_offset, cd_size

    def _parse(self) -> list[Entry]:
        n, cd_offset, cd_size = self._end_records()
        cd = self._read_at(cd_offset, cd_size, "the central directory")
        entries: list[Entry] = []
        seen: dict[str, str] = {}
        totals = {"stored": 0, "deflated": 0}  # declared bytes, summed over the entries
        i = 0
        for _ in range(n):
            entry, i = self._central_entry(cd, i)
            self._check_entry(entry, seen, totals)
            entries.append(entry)
        if i != len(cd):
            raise self._refuse("the central directory holds more than its entries (a crafted zip)")
        self._check_local_headers(entries, cd_offset)
        return entries

    def _central_entry(self, cd: bytes, i: int) -> tuple[Entry, int]:
        """The entry of the central directory at `i` (its name checked, zip64 values resolved),
        and where the next one starts."""
        if i + 46 > len(cd) or cd[i:i + 4] != _CENTRAL:
            raise self._refuse("a damaged central directory")
        (_, _, _, flags, method, _, _, crc, csize, usize, name_len, extra_len, comment_len, disk_start, _, _,
         offset) = struct.unpack_from("<4sHHHHHHIIIHHHHHII", cd, i)
        end = i + 46 + name_len + extra_len + comment_len
        if end > len(cd):
            raise self._refuse("a damaged central directory")
        raw = cd[i + 46: i + 46 + name_len]
        extra = _extra_fields(cd[i + 46 + name_len: i + 46 + name_len + extra_len])
        try:
            name = raw.decode("ascii")
        except UnicodeDecodeError:
            raise self._refuse(f"an entry with a non-ASCII name ({_shown(raw.decode('latin-1'))})") from None
        problem = _name_problem(name)
        if problem:
            raise self._refuse(f"entry {_shown(name)} has {problem}")
        if extra is None:
            raise self._refuse(f"entry {_shown(name)} has a damaged extra field")
        if 0xFFFFFFFF in (usize, csize, offset) or disk_start == 0xFFFF:
            usize, csize, offset, disk_start = self._zip64_values(name, extra, usize, csize, offset, disk_start)
        if disk_start != 0:
            raise self._refuse("a multi-disk (split) zip archive")
        return Entry(name, method, flags, crc, csize, usize, offset), end

    def _zip64_values(self, name: str, extra: dict[int, bytes], usize: int, csize: int, offset: int,
                      disk_start: int) -> tuple[int, int, int, int]:
        """(size, compressed size, header offset, first disk) with the zip64 extra field's values
        in place of the 32-bit fields that say 0xFFFFFFFF (0xFFFF for the disk)."""
        z64 = extra.get(0x0001, b"")
        values: list[int | None] = []
        k = 0  # the zip64 field holds only the values whose 32-bit field is 0xFFFFFFFF, in order
        for value in (usize, csize, offset):
            if value == 0xFFFFFFFF:
                if len(z64) < 8 * (k + 1):
                    raise self._refuse(f"entry {_shown(name)} has a damaged zip64 extra field")
                values.append(struct.unpack_from("<Q", z64, 8 * k)[0])
                k += 1
            else:
                values.append(None)
        usize = usize if values[0] is None else values[0]
        csize = csize if values[1] is None else values[1]
        offset = offset if values[2] is None else values[2]
        if disk_start == 0xFFFF:
            k = sum(v is not None for v in values)
            if len(z64) < 8 * k + 4 or struct.unpack_from("<I", z64, 8 * k)[0] != 0:
                raise self._refuse("a multi-disk (split) zip archive")
            disk_start = 0
        return usize, csize, offset, disk_start

    def _check_entry(self, entry: Entry, seen: dict[str, str], totals: dict[str, int]) -> None:
        """One entry against the others (no name twice, in any case) and the rules: no
        encryption, stored or deflate only, sizes within the limits (`totals` adds them up)."""
        name, flags, method, csize, usize = entry.name, entry.flags, entry.method, entry.compressed_size, entry.size
        key = name.lower()  # torch's reader finds names without regard to case
        if key in seen:
            same = "twice" if seen[key] == name else f"twice, as {_shown(seen[key])} and {_shown(name)} (torch " \
                                                      f"finds names without regard to case)"
            raise self._refuse(f"the archive lists {_shown(name)} {same}: two zip readers would read different "
                               f"files")
        seen[key] = name
        if flags & 0x0001 or flags & 0x0040 or flags & 0x2000:
            raise self._refuse(f"entry {_shown(name)} is encrypted")
        if method not in (0, 8):
            label = _METHOD_NAMES.get(method, "unknown")
            raise self._refuse(f"entry {_shown(name)} uses compression method {method} ({label}); only stored (0) "
                               f"and deflate (8) are read")
        if flags & ~_ALLOWED_FLAGS:
            raise self._refuse(f"entry {_shown(name)} has unsupported zip flags 0x{flags:04x}")
        if method == 0:
            if csize != usize:
                raise self._refuse(f"stored entry {_shown(name)} declares {usize} bytes but holds {csize}")
            if usize > MAX_STORED_ENTRY:
                raise self._refuse(f"entry {_shown(name)} declares {usize} bytes, more than the "
                                   f"{MAX_STORED_ENTRY} allowed")
            totals["stored"] += usize
            if totals["stored"] > MAX_STORED_TOTAL:
                raise self._refuse(f"its entries declare more than {MAX_STORED_TOTAL} bytes in all")
        else:
            if usize > MAX_DEFLATED_ENTRY:
                raise self._refuse(f"compressed entry {_shown(name)} declares {usize} bytes once expanded, more "
                                   f"than the {MAX_DEFLATED_ENTRY} allowed (a zip bomb?)")
            if usize > RATIO_FLOOR and usize > MAX_DEFLATE_RATIO * csize:
                raise self._refuse(f"compressed entry {_shown(name)} would expand {usize / max(csize, 1):.0f} times "
                                   f"({csize} -> {usize} bytes), more than the {MAX_DEFLATE_RATIO}:1 allowed (a "
                                   f"zip bomb?)")
            totals["deflated"] += usize
            if totals["deflated"] > MAX_DEFLATED_TOTAL:
                raise self._refuse(f"its compressed entries declare more than {MAX_DEFLATED_TOTAL} bytes in all "
                                   f"once expanded (a zip bomb?)")

    def _check_local_headers(self, entries: list[Entry], cd_offset: int) -> None:
        for e in entries:
            head = self._read_at(e.header_offset, 30, f"the local header of {_shown(e.name)}")
            (sig, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = struct.unpack(
                "<4sHHHHHIIIHH", head)
            if sig != _LOCAL:
                raise self._refuse(f"entry {_shown(e.name)} points at no local header (a damaged or crafted zip)")
            rest = self._read_at(e.header_offset + 30, name_len + extra_len, f"the local header of {_shown(e.name)}")
            local_name = rest[:name_len]
            if local_name != e.name.encode("ascii"):
                raise self._refuse(f"entry {_shown(e.name)}: its local header names "
                                   f"{_shown(local_name.decode('latin-1'))} (the central directory and the local "
                                   f"header disagree)")
            if method != e.method or flags != e.flags:
                raise self._refuse(f"entry {_shown(e.name)}: its local header declares another compression method or "
                                   f"flags than the central directory")
            extra = _extra_fields(rest[name_len:])
            if extra is None:
                raise self._refuse(f"entry {_shown(e.name)} has a damaged extra field in its local header")
            if 0xFFFFFFFF in (csize, usize):
                z64 = extra.get(0x0001, b"")
                if len(z64) < 16:
                    raise self._refuse(f"entry {_shown(e.name)} has a damaged zip64 extra field in its local header")
                usize, csize = struct.unpack_from("<QQ", z64, 0)
            descriptor = bool(flags & 0x0008)  # sizes and CRC may follow the data instead (0 here)
            for local, central, what in ((crc, e.crc, "CRC"), (csize, e.compressed_size, "compressed size"),
                                         (usize, e.size, "size")):
                if local != central and not (descriptor and local == 0):
                    raise self._refuse(f"entry {_shown(e.name)}: its local header declares another {what} than the "
                                       f"central directory ({local} vs {central})")
            e.data_offset = e.header_offset + 30 + name_len + extra_len
            if e.data_offset + e.compressed_size > cd_offset:
                raise self._refuse(f"the data of entry {_shown(e.name)} runs past the end of the entries")
        ordered = sorted(entries, key=lambda x: x.header_offset)
        for a, b in zip(ordered, ordered[1:]):
            if a.data_offset + a.compressed_size > b.header_offset:
                raise self._refuse(f"entries {_shown(a.name)} and {_shown(b.name)} overlap (an \"overlapping files\" "
                                   f"zip bomb, or a crafted zip)")

    # -- reading -----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [e.name for e in self.entries]

    def entry(self, name: str) -> Entry:
        return self._by_name[name]

    def _stream(self, e: Entry, sink: Callable[[bytes], None]) -> None:
        """Feed the member's bytes to `sink`, never more than its declared size, checking the
        size and CRC."""
        produced, crc = 0, 0
        pos, left = e.data_offset, e.compressed_size
        if e.method == 0:
            while left:
                chunk = self._read_at(pos, min(_CHUNK, left), f"the data of {_shown(e.name)}")
                pos, left = pos + len(chunk), left - len(chunk)
                crc = zlib.crc32(chunk, crc)
                sink(chunk)
            produced = e.size
        else:
            d = zlib.decompressobj(-15)
            pending = b""
            while not d.eof:
                if not pending and left:
                    pending = self._read_at(pos, min(_CHUNK, left), f"the data of {_shown(e.name)}")
                    pos, left = pos + len(pending), left - len(pending)
                try:
                    out = d.decompress(pending, min(_CHUNK, e.size - produced + 1))
                except zlib.error as err:
                    raise self._refuse(f"entry {_shown(e.name)} holds damaged compressed data ({err})") from None
                pending = d.unconsumed_tail
                if not out and not pending and not left and not d.eof:
                    raise self._refuse(f"the compressed data of {_shown(e.name)} ends early")
                produced += len(out)
                if produced > e.size:
                    raise self._refuse(f"entry {_shown(e.name)} expands past the {e.size} bytes it declares (a zip "
                                       f"bomb, or a crafted zip); reading stopped there")
                crc = zlib.crc32(out, crc)
                sink(out)
            if d.unused_data or pending or left:
                raise self._refuse(f"entry {_shown(e.name)} holds bytes after its compressed data")
        if produced != e.size:
            raise self._refuse(f"entry {_shown(e.name)} holds {produced} bytes, not the {e.size} it declares")
        if crc != e.crc:
            raise self._refuse(f"entry {_shown(e.name)} fails its CRC check (damaged or altered)")

    def read(self, name: str, limit: int) -> bytes:
        """The member's bytes; refused when it declares more than `limit` bytes, and reading
        stops as soon as it expands past what it declares."""
        e = self._by_name[name]
        if e.size > limit:
            raise self._refuse(f"member {_shown(name)} is {e.size} bytes, more than the {limit} s2i-bench reads")
        parts: list[bytes] = []
        self._stream(e, parts.append)
        return b"".join(parts)

    def check_compressed(self) -> None:
        """Expand every deflated member (discarding the bytes): each holds exactly what it
        declares, with its CRC. Memory stays at a chunk; stored members cannot lie."""
        for e in self.entries:
            if e.method == 8:
                self._stream(e, lambda chunk: None)

    def nested(self, name: str) -> StrictZip:
        """The member, itself a zip archive, opened strictly (without copying a stored one)."""
        e = self._by_name[name]
        label = f"{self.label} (member {name})"
        if e.method == 0:
            return StrictZip(self.path, label=label, fileobj=self._f, start=self._start + e.data_offset,
                             length=e.size)
        return StrictZip(self.path, label=label, fileobj=io.BytesIO(self.read(name, MAX_NESTED_BYTES)))

    def root(self) -> str:
        """The one top folder every member is under (torch archives have one); refused otherwise."""
        roots = {n.split("/", 1)[0] for n in self.names}
        if len(roots) != 1 or any("/" not in n or n.endswith("/") for n in self.names):
            raise self._refuse("members outside the archive's one top folder (torch reads only the first entry's "
                               "folder)")
        return roots.pop()


def open_zip(path: str | Path) -> StrictZip:
    """The archive at `path`, checked (see StrictZip); NotAZip when it has no zip end record."""
    return StrictZip(path)


def starts_like_zip(path: str | Path) -> bool:
    """Whether the file begins with a zip local header (what torch.load tests)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == _LOCAL
    except OSError:
        return False
