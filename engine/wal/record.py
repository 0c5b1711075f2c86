"""One WAL segment's records: encoding, and scanning a segment's bytes.

The format is described in engine/wal/wal.py's docstring; this module is its
executable form. It knows nothing of Raft: payloads are opaque bytes here.
"""
from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from engine.wal.errors import WALCorruptError

HEADER_SIZE = 16
ALIGN = 8
# length, type, pad, reserved | header_crc, crc   (all little-endian)
_HEAD = struct.Struct("<IBBH")
_CRCS = struct.Struct("<II")
_HEADER = struct.Struct("<IBBHII")
_U32 = struct.Struct("<I")
_SNAP = struct.Struct("<QQ")

# A record larger than this is refused on write and treated as damage on
# read, so a corrupted length that happens to pass the header CRC can never
# make the reader allocate gigabytes. Raft entries are capped far below it.
MAX_PAYLOAD = 256 << 20


class RecordType(enum.IntEnum):
    CRC = 1
    METADATA = 2
    ENTRY = 3
    HARD_STATE = 4
    SNAPSHOT = 5


_KNOWN_TYPES = frozenset(int(t) for t in RecordType)


def encode(parts: list[bytes], rtype: int, payload: bytes, prev_crc: int) -> int:
    """Append the framed record to `parts` and return its (chained) CRC.

    Appending to a caller's list lets save() frame a whole batch and hand it
    to one write() with one b"".join, instead of concatenating per record.
    """
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError(f"WAL record of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    pad = -n & (ALIGN - 1)
    head = _HEAD.pack(n, rtype, pad, 0)
    # A crc record stands alone (seed 0): its payload is the chain value, and
    # seeding with it would cancel out (crc32(x, x) is the same for every
    # 4-byte x), leaving the payload unprotected.
    crc = zlib.crc32(payload, 0 if rtype == RecordType.CRC else prev_crc)
    parts.append(head + _CRCS.pack(zlib.crc32(head), crc))
    parts.append(payload)
    if pad:
        parts.append(bytes(pad))
    return crc


def crc_payload(chain: int) -> bytes:
    return _U32.pack(chain)


def snapshot_payload(index: int, term: int) -> bytes:
    return _SNAP.pack(index, term)


def parse_snapshot_payload(payload: bytes) -> tuple[int, int]:
    """-> (index, term)"""
    return _SNAP.unpack(payload)


@dataclass(frozen=True, slots=True)
class Record:
    type: int
    payload: bytes
    offset: int  # where its header starts in the segment


@dataclass(frozen=True, slots=True)
class TornTail:
    """The unfinished end of the last segment: everything from `offset` on."""

    path: str
    offset: int
    dropped: int  # bytes from offset to the end of the file
    reason: str


@dataclass(slots=True)
class SegmentScan:
    records: list[Record]
    end: int  # byte offset just past the last good record
    crc: int  # chain value after the last good record
    torn: TornTail | None = None
    error: WALCorruptError | None = None


def scan(buf: bytes, path: str, *, final: bool, chain: int | None) -> SegmentScan:
    """Decode every record of one segment.

    `chain` is the CRC the previous segment ended with (None when this is the
    first segment read: its leading crc record is then taken on trust).
    `final` says this is the newest segment, the only one that may end in a
    torn write. Damage elsewhere, or damage followed by a valid record, ends
    the scan with `error` set; the records before it are still returned so a
    tool can show them.
    """
    records: list[Record] = []
    n = len(buf)
    off = 0
    crc = 0 if chain is None else chain
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32

    def corrupt(at: int, reason: str) -> SegmentScan:
        return SegmentScan(records, at, crc, error=WALCorruptError(path, at, reason))

    def damage(at: int, reason: str, resume: int) -> SegmentScan:
        # Torn tail or corruption? A crash mid-write leaves the unfinished
        # record as the last thing in the file, followed at most by zeros or
        # by bytes that never became a record. If any record header checks
        # out after the damage, acknowledged data sits behind it: corruption.
        later = _next_valid_header(buf, resume)
        if later is not None:
            return corrupt(at, f"{reason} (a valid record follows at offset {later})")
        if not final:
            return corrupt(at, f"{reason} in a segment that is not the last one")
        return SegmentScan(records, at, crc, torn=TornTail(path, at, n - at, reason))

    while off < n:
        if n - off < HEADER_SIZE:
            return damage(off, f"short header ({n - off} of {HEADER_SIZE} bytes)", n)
        length, rtype, pad, reserved, hcrc, rcrc = unpack(buf, off)
        if hcrc != crc32(buf[off:off + 8]):
            if buf.count(0, off) == n - off:
                return damage(off, "zero-filled tail", n)
            return damage(off, "header checksum mismatch", off + ALIGN)
        # The header is intact from here on, so `length` can be trusted, and
        # a header that passes its CRC but says nonsense was written by
        # something other than this code: never a torn write.
        if rtype not in _KNOWN_TYPES or reserved or pad != -length & (ALIGN - 1) or length > MAX_PAYLOAD:
            return corrupt(off, f"invalid header (type={rtype} length={length} pad={pad} reserved={reserved})")
        if (rtype == RecordType.CRC) != (off == 0):
            return corrupt(off, f"{_name(rtype)} record at offset {off}: every segment, and only its start, holds a crc record")
        start = off + HEADER_SIZE
        end = start + length + pad
        if end > n:
            return damage(off, f"short record ({n - off} of {end - off} bytes)", n)
        payload = buf[start:start + length]
        if rtype == RecordType.CRC:
            if length != 4:
                return corrupt(off, f"crc record of {length} bytes")
            seed = 0
        else:
            seed = crc
        if crc32(payload, seed) != rcrc:
            return damage(off, f"{_name(rtype)} record checksum mismatch", end)
        if pad and buf.count(0, end - pad, end) != pad:
            # Padding is not under the CRC, but a torn write leaves it zero
            # or missing, never set.
            return corrupt(off, "non-zero padding")
        if rtype == RecordType.CRC and chain is not None and payload != _U32.pack(chain):
            # Each segment restates the chain value its predecessor ended
            # with; a mismatch means a segment was lost, swapped or replaced.
            restated = _U32.unpack(payload)[0]
            return corrupt(0, f"crc chain broken: segment restates {restated:#010x}, previous segment ended at {chain:#010x}")
        crc = rcrc
        records.append(Record(rtype, payload, off))
        off = end
    return SegmentScan(records, off, crc)


def _next_valid_header(buf: bytes, start: int) -> int | None:
    """Offset of the first 8-aligned header at or after `start` whose header
    CRC and fields check out, or None. Records are 8-aligned, so that is
    where one would be; a random 8-byte window passes the header CRC with
    probability 2**-32."""
    n = len(buf)
    if start >= n or buf.count(0, start) == n - start:
        return None
    off = start + (-start & (ALIGN - 1))
    unpack = _HEADER.unpack_from
    crc32 = zlib.crc32
    while off + HEADER_SIZE <= n:
        length, rtype, pad, reserved, hcrc, _ = unpack(buf, off)
        if (
            hcrc == crc32(buf[off:off + 8])
            and rtype in _KNOWN_TYPES
            and not reserved
            and pad == -length & (ALIGN - 1)
            and off + HEADER_SIZE + length + pad <= n
        ):
            return off
        off += ALIGN
    return None


def _name(rtype: int) -> str:
    try:
        return RecordType(rtype).name.lower()
    except ValueError:
        return f"type-{rtype}"
