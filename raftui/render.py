"""Server data as terminal text: the one place where strings that came over
the network (keys, values, member names, URLs, errors, alarms, watch events,
action results) become something the console draws.

Nothing a server sends is ever markup: Rich and Textual parse `[...]` in a
plain `str` given to a Static, a DataTable cell, a border title or a toast
(`[/]` raises MarkupError and ends the app, `[link=...]` makes a link). Every
panel therefore draws server strings through `safe_text()` (a rich `Text`,
never parsed) or `escape()` (for texts passed on as plain strings, e.g. to
`notify(..., markup=False)`).

Control characters and bytes that are not UTF-8 are escaped one way, the
WAL panel's way (engine/wal/describe.py, a Python literal without the
quotes), so one key looks the same in every panel:

    \\          a backslash (so the key `\\xff` is not the byte 0xff)
    \\n \\t \\r    newline, tab, carriage return
    \\xNN        another C0 control or DEL (\\x1b), or a byte that is not UTF-8
    \\uNNNN      another character that is not printable (C1 controls, bidi
                overrides, zero-width spaces, ...), \\UNNNNNNNN above U+FFFF

Printable characters (letters of any script, emoji, wide characters) stay as
they are. One rule for every character, engine/wal/describe.escape_char,
shared with the WAL's describe text and dump-logs. The escaping is injective: distinct keys never look the same, and
`unescape()` turns what is shown (or typed into a form the same way) back
into the key.
"""
from __future__ import annotations

import re

from rich.text import Text

from engine.wal.describe import escape_char
from raftui.source.codec import decode, encode

_NAMED_BACK = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
DEFAULT_LIMIT = 2000            # characters of one cell/line shown before "...(N bytes)"


def escape(value: str | bytes, *, backslash: bool = True, limit: int | None = None) -> str:
    """`value` as one line of printable text (bytes are decoded first).

    `backslash=False` is for text the server already escaped (the WAL
    panel's entry descriptions): control characters are still escaped, but
    its backslashes are left alone. `limit`: escaped characters shown before
    the rest is elided as `...(N bytes)`."""
    if isinstance(value, (bytes, bytearray)):
        value = decode(bytes(value))
    elif not isinstance(value, str):
        value = str(value)
    if value.isprintable() and (not backslash or "\\" not in value):
        out = value
    else:
        out = "".join(escape_char(c, backslash=backslash) for c in value)
    if limit is not None and len(out) > limit:
        out = f"{out[:limit]}...({len(encode(value))} bytes)"
    return out


def safe_text(value: str | bytes, style: str | object = "", *, backslash: bool = True,
              limit: int | None = DEFAULT_LIMIT) -> Text:
    """A rich Text that shows `value` literally (never parsed as markup)."""
    return Text(escape(value, backslash=backslash, limit=limit), style=style or "", end="", no_wrap=True)


def safe_lines(lines: list[str] | tuple[str, ...], style: str | object = "") -> Text:
    """Several lines (each escaped on its own) as one Text: a detail Static."""
    return Text("\n".join(escape(line, limit=DEFAULT_LIMIT) for line in lines), style=style or "", end="")


_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([ntr\\]))")


def unescape(text: str) -> str:
    """The inverse of escape(): what an operator types in a key/value field,
    with the escapes the panels show (`\\xff`, `\\n`, `\\\\`), as the key.
    A backslash that starts no escape is kept as it is (`C:\\dir`)."""
    if "\\" not in text:
        return text

    def one(m: re.Match) -> str:
        hex2, hex4, hex8, named = m.groups()
        if hex2 is not None:
            code = int(hex2, 16)
            return chr(code) if code < 0x80 else chr(0xDC00 + code)     # a raw byte, as decode() holds it
        if named is not None:
            return _NAMED_BACK[named]
        code = int(hex4 or hex8, 16)
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return m.group(0)
        return chr(code)

    return _ESCAPE.sub(one, text)


def count(n: int, noun: str) -> str:
    """'1 watcher', '2 watchers': a number and its noun, in English."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
