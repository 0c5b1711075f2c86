"""HPACK (RFC 7541): a decoder and a stateless encoder (bench/h2floor's prototype server uses it too).

Decoder: full RFC 7541 decoding (indexed fields, the three literal forms,
dynamic table with size updates, Huffman strings via a 4-bit state machine
built at import from Appendix B). Header names and values are returned as
str (latin-1, so binary "-bin" metadata survives untouched).

Encoder: never touches the peer's dynamic table (static-table indexes and
"literal without indexing" only), so an encoded block does not depend on
connection state and can be computed once and reused for every response.
"""
from __future__ import annotations

from .rfc7541 import HUFFMAN_CODES, STATIC_TABLE


class HPACKError(Exception):
    pass


# -- Huffman decoding: a nibble-at-a-time state machine ----------------------

def _build_fsm():
    # Build the code tree. Nodes are lists [child0, child1]; leaves are ints
    # (the symbol).
    root: list = [None, None]
    for sym, (code, length) in enumerate(HUFFMAN_CODES):
        node = root
        for i in range(length - 1, 0, -1):
            bit = (code >> i) & 1
            if node[bit] is None:
                node[bit] = [None, None]
            node = node[bit]
        node[code & 1] = sym
    # Number the internal nodes; note which are on the all-ones path from the
    # root no deeper than 7 bits (legal padding ends there).
    ids: dict[int, int] = {}
    nodes: list = []

    def number(n):
        ids[id(n)] = len(nodes)
        nodes.append(n)
        for c in n:
            if isinstance(c, list):
                number(c)
    number(root)
    accept = [False] * len(nodes)
    n, depth = root, 0
    while isinstance(n, list) and depth <= 7:
        accept[ids[id(n)]] = True
        n, depth = n[1], depth + 1
    # table[state * 16 + nibble] = (next_state, symbol or -1), or None = error
    table = []
    for n in nodes:
        for nib in range(16):
            cur, sym = n, -1
            ok = True
            for i in (3, 2, 1, 0):
                nxt = cur[(nib >> i) & 1]
                if isinstance(nxt, int):
                    if nxt == 256:      # EOS inside a string: error
                        ok = False
                        break
                    sym = nxt            # at most one symbol per nibble (codes >= 5 bits)
                    cur = root
                else:
                    cur = nxt
            table.append((ids[id(cur)], sym) if ok else None)
    return table, accept


_FSM, _ACCEPT = _build_fsm()


def huffman_decode(data: bytes) -> bytes:
    fsm = _FSM
    state = 0
    out = bytearray()
    for b in data:
        e = fsm[(state << 4) | (b >> 4)]
        if e is None:
            raise HPACKError("EOS in Huffman string")
        state, sym = e
        if sym >= 0:
            out.append(sym)
        e = fsm[(state << 4) | (b & 15)]
        if e is None:
            raise HPACKError("EOS in Huffman string")
        state, sym = e
        if sym >= 0:
            out.append(sym)
    if not _ACCEPT[state]:
        raise HPACKError("bad Huffman padding")
    return bytes(out)


# -- decoding ----------------------------------------------------------------

_STATIC = tuple((n, v) for n, v in STATIC_TABLE)
_NSTATIC = len(_STATIC)


class Decoder:
    """One per connection (the dynamic table is connection state).

    `generation` changes whenever the dynamic table changes, so a caller may
    cache the decoding of a block that changed nothing, keyed by
    (generation, block)."""

    def __init__(self, max_table_size: int = 4096):
        self.dynamic: list[tuple[str, str]] = []   # newest first
        self.size = 0
        self.max_size = max_table_size              # what the encoder set
        self.settings_max = max_table_size          # what we allowed in SETTINGS
        self.list_size = 0                           # of the last decoded block (RFC 9113 6.5.2)
        self.generation = 0
        self._hcache: dict[bytes, str] = {}

    def _add(self, name: str, value: str) -> None:
        self.generation += 1
        esize = len(name) + len(value) + 32
        if esize > self.max_size:
            self.dynamic.clear()
            self.size = 0
            return
        self.dynamic.insert(0, (name, value))
        self.size += esize
        while self.size > self.max_size:
            n, v = self.dynamic.pop()
            self.size -= len(n) + len(v) + 32

    def _resize(self, new: int) -> None:
        if new > self.settings_max:
            raise HPACKError("table size update above SETTINGS_HEADER_TABLE_SIZE")
        self.generation += 1
        self.max_size = new
        while self.size > new:
            n, v = self.dynamic.pop()
            self.size -= len(n) + len(v) + 32

    def _entry(self, index: int) -> tuple[str, str]:
        if index <= 0:
            raise HPACKError("index 0")
        if index <= _NSTATIC:
            return _STATIC[index - 1]
        try:
            return self.dynamic[index - _NSTATIC - 1]
        except IndexError:
            raise HPACKError(f"index {index} out of range") from None

    def decode(self, block: bytes, limit: int = 1 << 62) -> list[tuple[str, str]]:
        """The header list; once its size (RFC 9113 6.5.2) passes `limit`
        the rest is decoded for the table's sake only (not collected):
        list_size says how big it was."""
        out: list[tuple[str, str]] = []
        pos = 0
        end = len(block)
        total = 0
        static = _STATIC
        while pos < end:
            b = block[pos]
            if b & 0x80:                          # indexed field
                idx = b & 0x7F
                pos += 1
                if idx == 0x7F:
                    idx, pos = _int(block, pos, 0x7F)
                if 0 < idx <= _NSTATIC:
                    field = static[idx - 1]
                else:
                    field = self._entry(idx)
                total += len(field[0]) + len(field[1]) + 32
                if total <= limit:
                    out.append(field)
                continue
            if b & 0x40:                          # literal, incremental indexing
                mask, index_it = 0x3F, True
            elif b & 0x20:                        # dynamic table size update
                idx = b & 0x1F
                pos += 1
                if idx == 0x1F:
                    idx, pos = _int(block, pos, 0x1F)
                if total:
                    raise HPACKError("size update after a field")
                self._resize(idx)
                continue
            else:                                 # without / never indexing
                mask, index_it = 0x0F, False
            idx = b & mask
            pos += 1
            if idx == mask:
                idx, pos = _int(block, pos, mask)
            if idx:
                name = self._entry(idx)[0]
            else:
                name, pos = self._string(block, pos)
            value, pos = self._string(block, pos)
            if index_it:
                self._add(name, value)
            total += len(name) + len(value) + 32
            if total <= limit:
                out.append((name, value))
        # Over the limit is the caller's business (refuse the stream): the
        # block was decoded whole, so the table is still in sync.
        self.list_size = total
        return out

    def _string(self, block: bytes, pos: int) -> tuple[str, int]:
        try:
            b = block[pos]
        except IndexError:
            raise HPACKError("truncated block") from None
        n = b & 0x7F
        pos += 1
        if n == 0x7F:
            n, pos = _int(block, pos, 0x7F)
        raw = block[pos:pos + n]
        if len(raw) != n:
            raise HPACKError("truncated string")
        pos += n
        if b & 0x80 and n > 64:
            return huffman_decode(raw).decode("latin-1"), pos   # long strings: not cached (memory)
        if b & 0x80:
            s = self._hcache.get(raw)
            if s is None:
                s = huffman_decode(raw).decode("latin-1")
                if len(self._hcache) > 512:
                    self._hcache.clear()
                self._hcache[raw] = s
            return s, pos
        return raw.decode("latin-1"), pos


def _int(block: bytes, pos: int, prefix_max: int) -> tuple[int, int]:
    """Continue decoding an integer whose prefix was all ones."""
    value = prefix_max
    shift = 0
    while True:
        try:
            b = block[pos]
        except IndexError:
            raise HPACKError("truncated integer") from None
        pos += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise HPACKError("integer too large")


# -- stateless encoding --------------------------------------------------------

def _enc_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _enc_str(s: bytes) -> bytes:
    return _enc_int(len(s), 7, 0) + s


_STATIC_INDEX = {}
_STATIC_NAME = {}
for _i, (_n, _v) in enumerate(STATIC_TABLE, 1):
    _STATIC_INDEX.setdefault((_n, _v), _i)
    _STATIC_NAME.setdefault(_n, _i)


def encode(headers) -> bytes:
    """Encode without touching the dynamic table: a full static match as an
    indexed field, otherwise a literal without indexing (static name index
    when there is one). No Huffman: plain literals are cheaper to produce and
    the responses are tiny."""
    out = bytearray()
    for name, value in headers:
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("latin-1")
        key = (name.decode("latin-1"), value.decode("latin-1"))
        idx = _STATIC_INDEX.get(key)
        if idx:
            out += _enc_int(idx, 7, 0x80)
            continue
        nidx = _STATIC_NAME.get(key[0])
        if nidx:
            out += _enc_int(nidx, 4, 0x00)
        else:
            out += b"\x00" + _enc_str(name)
        out += _enc_str(value)
    return bytes(out)
