"""How bytes from a log are shown on one line: keys and values quoted and
escaped (quote, escape_char), undecodable data as hex (hex_bytes).

One escape rule for every character, shared by `dump-logs`, the Inspect
service's entry texts (engine/api/entry_text.py, which decodes the requests
in the entries: the WAL itself only frames them) and the console's render.
"""
from __future__ import annotations

_MAX_SHOWN = 64  # bytes of a key/value shown before eliding: one line stays one line


def quote(b: bytes) -> str:
    """A key or value in double quotes, escaped like a Python literal so
    binary keys stay on one line, cut after _MAX_SHOWN bytes."""
    text = b[:_MAX_SHOWN].decode("utf-8", "surrogateescape")
    text = '"' + "".join(map(_escape, text)) + '"'
    if len(b) > _MAX_SHOWN:
        text += f"...({len(b)} bytes)"
    return text


def _escape(c: str) -> str:
    return escape_char(c, quote='"')


def escape_char(c: str, *, quote: str = "", backslash: bool = True) -> str:
    """One character as it is shown: printable ones as they are, a
    backslash (and `quote`) with a backslash before it, named controls as
    \\n \\t \\r, other ASCII controls and bytes that are not UTF-8 (from
    surrogateescape) as \\xNN, other unprintable code points as \\uNNNN or
    \\UNNNNNNNN. Injective: U+0085 and the byte 0x85 never look the same.
    Shared with the console (raftui.render). `backslash=False` leaves
    backslashes alone (text escaped already)."""
    if c == "\\":
        return "\\\\" if backslash else c
    if quote and c == quote:
        return "\\" + c
    if c.isprintable():
        return c
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, from surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    named = _NAMED.get(c)
    if named is not None:
        return named
    if code < 0x80:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def hex_bytes(b: bytes) -> str:
    if len(b) > _MAX_SHOWN:
        return f"{b[:_MAX_SHOWN].hex()}...({len(b)} bytes)"
    return b.hex()
