"""raftui/render.py: server strings become literal, printable, distinct text.

Property tests (hypothesis) over arbitrary bytes: the text drawn never holds
a control character or anything Rich/Textual would parse, distinct byte
strings never look the same, and what is shown can be typed back into a
form (unescape) to get the very same bytes.
"""
from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from engine.wal.describe import quote
from raftui.commands import BY_ID, INT64_MAX, MAX_DELAY_MS, check_values
from raftui.render import escape, safe_text, unescape
from raftui.source.codec import decode, encode

HOSTILE = [b"[/]", b"[bold]x[/bold]", b"[link=https://example.com]y[/link]", b"\x1b[2J", b"\xff\xfe",
           b"\xfe\xff", b"a\nb", b"\t", b"\\xff", b"\xe2\x80\xae", b"\xc2\x85", b"\x85", b"\x00",
           "😀 漢字 é".encode()]


def _no_controls(s: str) -> bool:
    return all(unicodedata.category(c)[0] != "C" and unicodedata.category(c) not in ("Zl", "Zp") for c in s)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_render_printable_and_back(data):
    text = safe_text(data, limit=None)
    assert isinstance(text, Text) and text.plain == escape(data)
    assert _no_controls(text.plain)
    assert encode(unescape(text.plain)) == data            # what is shown, typed back, is the key


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=16), st.binary(max_size=16))
def test_distinct_bytes_look_distinct(a, b):
    if a != b:
        assert escape(a) != escape(b)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=32))
def test_any_text_round_trips(s):
    # Keys are held as decode(bytes); any str an operator types goes back unchanged too.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return                                      # lone surrogates are not typed
    assert unescape(escape(s)) == s
    assert _no_controls(escape(s))


def test_hostile_keys_literally():
    shown = {k: escape(k) for k in HOSTILE}
    assert shown[b"[/]"] == "[/]" and shown[b"[bold]x[/bold]"] == "[bold]x[/bold]"
    assert shown[b"\x1b[2J"] == "\\x1b[2J"
    assert shown[b"\xff\xfe"] == "\\xff\\xfe" and shown[b"\xfe\xff"] == "\\xfe\\xff"
    assert shown[b"a\nb"] == "a\\nb" and shown[b"\t"] == "\\t"
    assert shown[b"\\xff"] == "\\\\xff"                 # the text \xff is not the byte 0xff
    assert shown[b"\xe2\x80\xae"] == "\\u202e"           # a bidi override is not drawn
    assert shown[b"\xc2\x85"] == "\\u0085" and shown[b"\x85"] == "\\x85"
    assert shown["😀 漢字 é".encode()] == "😀 漢字 é"      # printable: as it is
    assert len(set(shown.values())) == len(HOSTILE)
    # Drawn by Rich: exactly those characters, no markup applied, no escape sequence.
    console = Console(width=200, color_system=None, force_terminal=True, legacy_windows=False)
    for k, s in shown.items():
        with console.capture() as cap:
            console.print(safe_text(k))
        assert cap.get().rstrip("\n") == s, k


def test_same_escapes_as_the_wal_panel():
    """The WAL panel's text comes from engine/wal/describe.quote: one key looks the same there."""
    for k in HOSTILE:
        assert quote(k) == '"' + escape(k).replace('"', '\\"') + '"'


def test_long_values_are_cut_with_their_size():
    value = "v" * 10240
    text = escape(value, limit=100)
    assert text == "v" * 100 + "...(10240 bytes)"
    assert escape(value) == value                     # no limit unless asked


def test_unescape_keeps_backslashes_that_start_no_escape():
    assert unescape("C:\\dir\\x4") == "C:\\dir\\x4"
    assert unescape("\\x41\\n\\\\") == "A\n\\"


def test_decode_encode_round_trip_non_utf8():
    assert encode(decode(b"\xff\xfe")) == b"\xff\xfe"
    assert decode(b"\xff\xfe") != decode(b"\xfe\xff")


# ------------------------------------------------------------ form numbers

def test_form_numbers_checked_before_sending():
    fd = BY_ID["drop_delay"]
    assert check_values(fd, {"drop": "0", "delay": "-5"}) == "Delay (ms): at least 0"
    assert check_values(fd, {"drop": "0", "delay": str(MAX_DELAY_MS + 1)}) == f"Delay (ms): at most {MAX_DELAY_MS}"
    assert check_values(fd, {"drop": "101", "delay": "0"}) == "Drop %: at most 100"
    assert check_values(fd, {"drop": "5", "delay": "250"}) == ""
    read = BY_ID["read"]
    for bad in ("99999999999999999999", str(INT64_MAX + 1)):
        assert check_values(read, {"key": "k", "revision": bad}) == f"Revision: at most {INT64_MAX}"
    for bad in ("abc", "1e3", "1.5", "0x10", "--1", "1 2"):
        assert "a whole number" in check_values(read, {"key": "k", "revision": bad}), bad
    assert check_values(read, {"key": "k", "revision": "-1"}) == "Revision: at least 0"
    assert check_values(read, {"key": "k", "revision": str(INT64_MAX)}) == ""
    assert check_values(read, {"key": "", "revision": "3"}) == "Key is required"
    assert check_values(BY_ID["compact"], {"revision": "0"}) == "Revision: at least 1"
    assert check_values(BY_ID["write"], {"key": "k", "value": "v", "ttl": "-3"}) == "Lease TTL (s): at least 0"
    assert check_values(BY_ID["write"], {"key": "k", "value": "v", "ttl": ""}) == ""


def test_key_fields_trailing_star_and_escapes():
    from raftui.commands import Context, _key_or_selected, split_prefix

    assert split_prefix("foo*") == ("foo", True)
    assert split_prefix("foo\\x2a") == ("foo*", False)              # a key that ends with a star
    assert split_prefix("[/]\\xff*") == ("[/]" + decode(b"\xff"), True)
    ctx = Context(source=None, host=None, state=None, member=None, key="foo*")
    assert split_prefix(_key_or_selected(ctx)) == ("foo*", False)   # r/d/W on the key foo* mean that key
    ctx.key = decode(b"a\n\xff")
    assert _key_or_selected(ctx) == "a\\n\\xff" and split_prefix("a\\n\\xff") == (ctx.key, False)
