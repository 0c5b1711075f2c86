"""The WAL panel's escaping tells apart what the console tells apart:
U+0085 (bytes c2 85) is \\u0085, the lone byte 0x85 is \\x85."""
from engine.wal.describe import _escape


def test_escapes():
    assert [_escape(c) for c in ["\x00", "\x7f", "\n", "\t", "\x85", "\udc85", "\u2028", "\U000e0001"]] == [
        "\\x00", "\\x7f", "\\n", "\\t", "\\u0085", "\\x85", "\\u2028", "\\U000e0001"]
    assert _escape("a") == "a" and _escape('"') == '\\"' and _escape("\\") == "\\\\"
