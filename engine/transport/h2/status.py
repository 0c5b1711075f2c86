"""gRPC status on the wire: codes, grpc-message percent-encoding, trailer
and metadata header lists, grpc-timeout parsing (gRPC over HTTP/2 spec,
PROTOCOL-HTTP2.md)."""
from __future__ import annotations

import base64
import struct
import urllib.parse

import grpc

from . import hpack
from .frames import DATA, END_HEADERS, END_STREAM, HEADERS

OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED = 0, 1, 2, 3, 4
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = 8, 12, 13, 14

CODE_OF = {c: c.value[0] for c in grpc.StatusCode}
STATUS_OF = {c.value[0]: c for c in grpc.StatusCode}

# The spec: percent-encode everything outside printable ASCII, and '%'.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}

# What grpc C-core keeps out of invocation_metadata() (it keeps user-agent).
HIDDEN_METADATA = frozenset({"te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                             "accept-encoding", "grpc-previous-rpc-attempts"})

RESPONSE_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]


def percent_encode(message: str) -> str:
    return urllib.parse.quote(message, safe=_SAFE)


def parse_timeout(value: str) -> float | None:
    """'100m' -> 0.1; None for anything malformed (ignored, as grpc-go does).
    At most 8 digits (the spec's TimeoutValue)."""
    digits = value[:-1]
    if not 0 < len(digits) <= 8 or not digits.isdigit():
        return None
    unit = _UNITS.get(value[-1:])
    return None if unit is None else int(digits) * unit


def metadata_pairs(metadata) -> list[tuple[str, str]]:
    """A handler's metadata (key, str | bytes) as header pairs: keys lowercase,
    "-bin" values base64 (unpadded, as grpc sends them)."""
    out = []
    for key, value in metadata or ():
        key = key.lower()
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("latin-1")
            value = base64.b64encode(value).rstrip(b"=").decode("ascii")
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        out.append((key, value))
    return out


def decode_bin(value: str) -> bytes:
    """A "-bin" header value: base64, padded or not (both are sent).
    Raises ValueError when it is not base64."""
    raw = value.encode("latin-1").rstrip(b"=")
    if len(raw) % 4 == 1:
        raise ValueError("illegal base64 encoding")
    return base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)


def trailer_pairs(code: int, details: str, trailing) -> list[tuple[str, str]]:
    out = [("grpc-status", str(code))]
    if details:
        out.append(("grpc-message", percent_encode(details)))
    if trailing:
        out += metadata_pairs(trailing)
    return out


# Stateless response header blocks (no dynamic table: reusable forever).
RESP_BLOCK = hpack.encode(RESPONSE_HEADERS)
TRAILERS_OK_BLOCK = hpack.encode([("grpc-status", "0")])
_HL, _TL = len(RESP_BLOCK), len(TRAILERS_OK_BLOCK)
# A whole unary response in one pack: HEADERS frame, DATA frame header,
# gRPC message prefix (then the payload, then UNARY_TAIL).
UNARY_HEAD = struct.Struct(f">BHBBL{_HL}sBHBBLBL")
UNARY_TAIL = struct.Struct(f">BHBBL{_TL}s")


def unary_head(sid: int, n: int) -> bytes:
    """HEADERS + the DATA frame header for an n-byte message (+5 prefix)."""
    m = n + 5
    return UNARY_HEAD.pack(0, _HL, HEADERS, END_HEADERS, sid, RESP_BLOCK, m >> 16, m & 0xFFFF, DATA, 0, sid, 0, n)


def unary_tail(sid: int) -> bytes:
    return UNARY_TAIL.pack(0, _TL, HEADERS, END_HEADERS | END_STREAM, sid, TRAILERS_OK_BLOCK)
