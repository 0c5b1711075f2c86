"""Keys and values as the console holds them: `str`, decoded from the
server's bytes with "surrogateescape", so that every byte string -- valid
UTF-8 or not -- becomes a distinct str and goes back to exactly the same
bytes when the console reads, deletes or watches that key.

Such a str may hold lone surrogates (one per byte that is not UTF-8) and
control characters: it is data, never something to print. raftui/render.py
turns it into terminal text.
"""
from __future__ import annotations


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    """The bytes `decode` came from (UTF-8 for text typed by the operator)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:   # a surrogate no decode() made: keep it visible, never raise
        return text.encode("utf-8", "backslashreplace")
