"""HTTP/2 framing constants (RFC 9113 section 6) and the few byte strings the
server sends unchanged on every connection."""
from __future__ import annotations

import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (unknown types are ignored, RFC 9113 4.1)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 4, 5, 6, 7, 8
COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM = 9, 10, 11
# settings
S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS = 1, 2, 3
S_INITIAL_WINDOW_SIZE, S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = 4, 5, 6

FH = struct.Struct(">BHBBL")          # length (high byte, low 16 bits), type, flags, stream id
U32 = struct.Struct(">L")
SETTING = struct.Struct(">HL")

MAX_WINDOW = 0x7FFFFFFF
OUR_MAX_FRAME = 16384                 # we never raise SETTINGS_MAX_FRAME_SIZE


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return FH.pack(n >> 16, n & 0xFFFF, ftype, flags, sid) + payload


def settings_frame(pairs) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(SETTING.pack(k, v) for k, v in pairs))


def goaway_frame(last_sid: int, code: int, debug: bytes = b"") -> bytes:
    return frame(GOAWAY, 0, 0, U32.pack(last_sid) + U32.pack(code) + debug)


def rst_frame(sid: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, sid, U32.pack(code))


def window_update_frame(sid: int, inc: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, U32.pack(inc))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)
