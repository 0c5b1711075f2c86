"""A small reader and writer of bbolt's on-disk format (etcd's backend file).

etcd keeps its store in one bbolt file (``member/snap/db``) and
``etcdctl snapshot save`` writes that file followed by its sha256. There is
no maintained Python library for the format, so this module reads and writes
the part of it etcd uses: a root bucket of top-level buckets, each a B+tree of
byte keys to byte values (no nested buckets below them).

The format (all integers little-endian; ``pgid`` is a uint64 page number, a
page starts at ``pgid * page_size``)::

    page header (16 bytes)   id u64 | flags u16 | count u16 | overflow u32
        flags: 0x01 branch, 0x02 leaf, 0x04 meta, 0x10 freelist. A page
        spans 1 + overflow consecutive pages (a big value makes one big page).

    meta page (pages 0 and 1; header then)
        magic u32 0xED0CDAED | version u32 2 | page_size u32 | flags u32 |
        root bucket (root pgid u64, sequence u64) | freelist pgid u64 |
        pgid u64 (high-water mark: pages in use) | txid u64 |
        checksum u64 (FNV-1a 64 of the 56 bytes before it)
        A reader takes the valid meta with the larger txid (bbolt writes the
        two alternately, so a torn write leaves the other intact).

    freelist page            count ids (u64 each) after the header; a count
        of 0xFFFF means the real count is the first u64. etcd 3.4 opens its
        db with NoFreelistSync: its meta then says 0xFFFF...FF (no freelist)
        and bbolt finds the free pages by walking the tree.

    branch page              count elements of (pos u32, ksize u32, pgid u64),
        each pointing at a child; the key (the child's first key) sits at
        ``pos`` bytes after the element itself.

    leaf page                count elements of (flags u32, pos u32, ksize u32,
        vsize u32); key then value at ``pos`` after the element. Flag 0x01: the
        value is a bucket: its header (root pgid u64, sequence u64), and when
        root is 0 the bucket is inline: a leaf page (header and elements)
        follows the header inside the value.

Keys are unique and in bytewise order within a bucket, across its pages.

The writer lays out a fresh file in one pass: meta 0 and 1, an empty
freelist (page 2), then each bucket's leaves and branch levels bottom up, the
root bucket's leaf last, and the metas at the end (txid 0 and 1, as bbolt's
own init). Every page it writes is reachable, so the empty freelist is exact;
bbolt (etcd, etcdctl) then opens, reads and writes such a file like its own.

The writer bounds its output: every page is checked, before it is written,
against the most a correct layout of the input seen so far can take
(``Writer.size_bound``, about three times the input at the default fill), so
a layout bug fails with BoltSizeError instead of filling the disk (one such
bug once wrote 43 GB in a test). A caller that knows how much input is
coming (``expected_input``) also gets BoltSizeError as soon as more arrives,
and the bound never grows past that amount's.

The reader treats the file as untrusted: every offset is checked against the
page it is in, each page is visited at most once per walk, and anything
wrong raises BoltError (a ValueError).
"""
from __future__ import annotations

import mmap
import os
import struct
from typing import Iterable, Iterator

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_SIZE = 4096

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01
NO_FREELIST = (1 << 64) - 1

_PAGE_HDR = struct.Struct("<QHHI")            # id, flags, count, overflow
_META = struct.Struct("<IIII QQ QQQ")         # without the checksum
_LEAF_ELEM = struct.Struct("<IIII")           # flags, pos, ksize, vsize
_BRANCH_ELEM = struct.Struct("<IIQ")          # pos, ksize, pgid
_BUCKET_HDR = struct.Struct("<QQ")            # root pgid, sequence
_U64 = struct.Struct("<Q")
HDR = _PAGE_HDR.size                          # 16
ELEM = _LEAF_ELEM.size                        # 16, branch elements too
_MAX_DEPTH = 64


class BoltSizeError(RuntimeError):
    """The writer refused to grow the file past its bound (a bug, or an input
    that does not end): the partial file is left empty."""


class BoltError(ValueError):
    """The file is not a bbolt database we can read."""


def fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def is_bbolt(path: str) -> bool:
    """True when the file starts with a bbolt meta page (magic and version),
    whatever else is wrong with it."""
    try:
        with open(path, "rb") as f:
            head = f.read(HDR + 8)
    except OSError:
        return False
    if len(head) < HDR + 8:
        return False
    magic, version = struct.unpack_from("<II", head, HDR)
    return magic == MAGIC and version == VERSION


# -- reading -------------------------------------------------------------------

class Meta:
    __slots__ = ("page_size", "flags", "root", "sequence", "freelist", "pgid", "txid")

    def __init__(self, page_size, flags, root, sequence, freelist, pgid, txid) -> None:
        self.page_size, self.flags, self.root, self.sequence = page_size, flags, root, sequence
        self.freelist, self.pgid, self.txid = freelist, pgid, txid


def _parse_meta(buf, off: int) -> Meta | None:
    """The meta at page offset ``off``, or None when it does not validate."""
    if off + HDR + _META.size + 8 > len(buf):
        return None
    body = bytes(buf[off + HDR: off + HDR + _META.size])
    magic, version, page_size, flags, root, seq, freelist, pgid, txid = _META.unpack(body)
    (checksum,) = _U64.unpack_from(buf, off + HDR + _META.size)
    if magic != MAGIC or version != VERSION or checksum != fnv64a(body):
        return None
    return Meta(page_size, flags, root, seq, freelist, pgid, txid)


class Reader:
    """Read access to a bbolt file: ``buckets()`` and ``items(name)``.

    Use as a context manager (the file is memory-mapped)."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")
        try:
            size = os.fstat(self._f.fileno()).st_size
            if size < 2 * 512:
                raise BoltError(f"{path}: too small for a bbolt file ({size} bytes)")
            self._buf = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._f.close()
            raise
        try:
            self.meta = self._pick_meta()
        except BaseException:
            self.close()
            raise
        self.page_size = self.meta.page_size

    def _pick_meta(self) -> Meta:
        m0 = _parse_meta(self._buf, 0)
        # Meta 1 sits one page further; the page size comes from meta 0, or
        # (meta 0 torn) is found by trying the usual sizes.
        sizes = [m0.page_size] if m0 else [512 << i for i in range(8)]
        m1 = None
        for ps in sizes:
            m1 = _parse_meta(self._buf, ps)
            if m1 is not None and m1.page_size == ps:
                break
            m1 = None
        metas = [m for m in (m0, m1) if m is not None]
        if not metas:
            raise BoltError("not a bbolt database (no valid meta page)")
        m = max(metas, key=lambda x: x.txid)
        if m.page_size < 512 or m.page_size & (m.page_size - 1) or m.page_size > 1 << 20:
            raise BoltError(f"bad page size {m.page_size}")
        if m.pgid * m.page_size > len(self._buf):
            raise BoltError("file shorter than its meta says (truncated?)")
        return m

    def close(self) -> None:
        buf = getattr(self, "_buf", None)
        if buf is not None:
            buf.close()
            self._buf = None
        self._f.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # pages

    def _page(self, pgid: int) -> tuple[int, int, int, int]:
        """(offset, flags, count, end) of page ``pgid``, checked."""
        if pgid < 2 or pgid >= self.meta.pgid:
            raise BoltError(f"page {pgid} out of range")
        off = pgid * self.page_size
        pid, flags, count, overflow = _PAGE_HDR.unpack_from(self._buf, off)
        end = off + (overflow + 1) * self.page_size
        if pid != pgid or end > self.meta.pgid * self.page_size:
            raise BoltError(f"page {pgid}: bad header")
        return off, flags, count, end

    def freelist(self) -> list[int]:
        """The free page ids the file records ([] when it has no freelist)."""
        if self.meta.freelist == NO_FREELIST:
            return []
        off, flags, count, end = self._page(self.meta.freelist)
        if not flags & FREELIST_PAGE:
            raise BoltError("freelist page has the wrong type")
        start = off + HDR
        if count == 0xFFFF:
            (count,) = _U64.unpack_from(self._buf, start)
            start += 8
        if start + 8 * count > end:
            raise BoltError("freelist overruns its page")
        return list(struct.unpack_from(f"<{count}Q", self._buf, start))

    def _leaf_elems(self, buf, off: int, count: int, end: int) -> Iterator[tuple[int, bytes, bytes]]:
        if off + HDR + ELEM * count > end:
            raise BoltError("leaf elements overrun their page")
        for i in range(count):
            at = off + HDR + ELEM * i
            flags, pos, ksize, vsize = _LEAF_ELEM.unpack_from(buf, at)
            k0 = at + pos
            if k0 + ksize + vsize > end:
                raise BoltError("leaf element overruns its page")
            yield flags, bytes(buf[k0:k0 + ksize]), bytes(buf[k0 + ksize:k0 + ksize + vsize])

    def _walk(self, pgid: int, seen: set[int], depth: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        if depth > _MAX_DEPTH:
            raise BoltError("tree too deep")
        if pgid in seen:
            raise BoltError(f"page {pgid} reached twice")
        seen.add(pgid)
        off, flags, count, end = self._page(pgid)
        if flags & LEAF_PAGE:
            yield from self._leaf_elems(self._buf, off, count, end)
        elif flags & BRANCH_PAGE:
            if off + HDR + ELEM * count > end:
                raise BoltError("branch elements overrun their page")
            children = [_BRANCH_ELEM.unpack_from(self._buf, off + HDR + ELEM * i)[2] for i in range(count)]
            for child in children:
                yield from self._walk(child, seen, depth + 1)
        else:
            raise BoltError(f"page {pgid}: neither branch nor leaf (flags {flags:#x})")

    def _bucket_elems(self, header: bytes, seen: set[int]) -> Iterator[tuple[int, bytes, bytes]]:
        if len(header) < _BUCKET_HDR.size:
            raise BoltError("bucket value too short")
        root, _seq = _BUCKET_HDR.unpack_from(header)
        if root != 0:
            yield from self._walk(root, seen)
            return
        page = header[_BUCKET_HDR.size:]        # inline bucket: a leaf page inside the value
        if len(page) < HDR:
            raise BoltError("inline bucket too short")
        _pid, flags, count, _ovf = _PAGE_HDR.unpack_from(page)
        if not flags & LEAF_PAGE:
            raise BoltError("inline bucket is not a leaf")
        yield from self._leaf_elems(page, 0, count, len(page))

    def buckets(self) -> list[bytes]:
        """The names of the top-level buckets, in key order."""
        return [k for flags, k, _ in self._walk(self.meta.root, set()) if flags & BUCKET_LEAF_FLAG]

    def _bucket_header(self, name: bytes) -> bytes | None:
        for flags, k, v in self._walk(self.meta.root, set()):
            if k == name and flags & BUCKET_LEAF_FLAG:
                return v
        return None

    def items(self, name: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of top-level bucket ``name`` in key order; nothing
        when there is no such bucket. Nested buckets are skipped."""
        header = self._bucket_header(name)
        if header is None:
            return
        for flags, k, v in self._bucket_elems(header, set()):
            if not flags & BUCKET_LEAF_FLAG:
                yield k, v

    def page_ids(self) -> set[int]:
        """Every page id reachable from the root (metas and freelist
        included, overflow pages too): for checks."""
        out = {0, 1}
        if self.meta.freelist != NO_FREELIST:
            off, _, _, end = self._page(self.meta.freelist)
            out.update(range(self.meta.freelist, self.meta.freelist + (end - off) // self.page_size))

        def pages_of(pgid: int, depth: int = 0) -> None:
            if depth > _MAX_DEPTH or pgid in out:
                raise BoltError(f"page {pgid} reached twice")
            off, flags, count, end = self._page(pgid)
            out.update(range(pgid, pgid + (end - off) // self.page_size))
            if flags & BRANCH_PAGE:
                for i in range(count):
                    pages_of(_BRANCH_ELEM.unpack_from(self._buf, off + HDR + ELEM * i)[2], depth + 1)
            else:
                for flags2, _k, v in self._leaf_elems(self._buf, off, count, end):
                    if flags2 & BUCKET_LEAF_FLAG:
                        root = _BUCKET_HDR.unpack_from(v)[0]
                        if root:
                            pages_of(root, depth + 1)

        pages_of(self.meta.root)
        return out


# -- writing -------------------------------------------------------------------

def _page_bytes(pgid: int, elems: list[tuple[int, bytes, bytes]], page_size: int,
                branch: bool = False) -> tuple[bytes, int]:
    """A leaf page (elements (flags, key, value)) or branch page (elements
    (child pgid, key, b"")), padded to whole pages; (bytes, pages used)."""
    n = len(elems)
    head = bytearray()
    data = bytearray()
    base = HDR + ELEM * n
    for i, (f, k, v) in enumerate(elems):
        pos = base + len(data) - (HDR + ELEM * i)
        if branch:
            head += _BRANCH_ELEM.pack(pos, len(k), f)
            data += k
        else:
            head += _LEAF_ELEM.pack(f, pos, len(k), len(v))
            data += k
            data += v
    size = base + len(data)
    pages = max(1, -(-size // page_size))
    out = _PAGE_HDR.pack(pgid, BRANCH_PAGE if branch else LEAF_PAGE, n, pages - 1) + head + data
    return bytes(out) + b"\0" * (pages * page_size - size), pages


class _TreeWriter:
    """Appends one bucket's B+tree to the file: leaves as keys come, then
    the branch levels; ``finish()`` returns the root pgid."""

    def __init__(self, w: "Writer") -> None:
        self.w = w
        self.elems: list[tuple[int, bytes, bytes]] = []
        self.size = HDR
        self.leaves: list[tuple[bytes, int]] = []   # (first key, pgid)
        self.last: bytes | None = None

    def add(self, flags: int, key: bytes, value: bytes, *, counted: bool = True) -> None:
        if self.last is not None and key <= self.last:
            raise ValueError(f"keys not in ascending order: {key!r} after {self.last!r}")
        self.last = key
        need = ELEM + len(key) + len(value)
        self.w.account(need, len(key), counted)
        if self.elems and self.size + need > self.w.fill:
            self._flush()
        self.elems.append((flags, key, value))
        self.size += need

    def _flush(self) -> None:
        pgid = self.w.alloc_write(self.elems, branch=False)
        self.leaves.append((self.elems[0][1] if self.elems else b"", pgid))
        self.elems, self.size = [], HDR

    def finish(self) -> int:
        if self.elems or not self.leaves:
            self._flush()
        level = self.leaves
        while len(level) > 1:
            nxt: list[tuple[bytes, int]] = []
            group: list[tuple[int, bytes, bytes]] = []
            size = HDR
            for key, pgid in level:
                need = ELEM + len(key)
                # (at least two children a page, so each level is smaller)
                if len(group) >= 2 and size + need > self.w.fill:
                    nxt.append((group[0][1], self.w.alloc_write(group, branch=True)))
                    group, size = [], HDR
                group.append((pgid, key, b""))
                size += need
            nxt.append((group[0][1], self.w.alloc_write(group, branch=True)))
            level = nxt
        return level[0][1]


class Writer:
    """Writes a fresh bbolt file: ``bucket(name, items)`` for each
    top-level bucket in ascending name order, items (key, value) in
    ascending key order; then ``close()``. Writes to ``path`` directly (the
    caller renames it into place)."""

    def __init__(self, path: str, page_size: int = PAGE_SIZE, fill: float = 1.0, *,
                 expected_input: int | None = None) -> None:
        self.page_size = page_size
        self.fill = max(HDR + ELEM, int(page_size * fill))
        self.path = path
        # The input so far, for the size bound: element bytes (ELEM + key +
        # value, every tree's), the longest key, the trees begun; and the
        # bucket items' bytes against what the caller said would come.
        self.input_bytes = 0
        self.items_bytes = 0
        self.expected_input = expected_input
        self._kmax = 0
        self._elems = 0
        self._trees = 1                        # the root bucket's
        self._f = open(path, "wb")
        self._next = 3                         # 0, 1: metas; 2: the freelist
        self._f.write(b"\0" * (3 * page_size))
        self._root: list[tuple[bytes, bytes]] = []

    def account(self, elem_bytes: int, key_len: int, item: bool) -> None:
        self.input_bytes += elem_bytes
        self._elems += 1
        self._kmax = max(self._kmax, key_len)
        if item:
            self.items_bytes += elem_bytes
            if self.expected_input is not None and self.items_bytes > self.expected_input:
                raise BoltSizeError(f"bbolt writer: more input than announced ({self.items_bytes:,} bytes "
                                    f"of items, {self.expected_input:,} expected): the source did not end")

    def size_bound(self) -> int:
        """The most a correct layout of the input so far can take, in bytes.

        Leaves: a page is closed only when the next element does not fit in
        `fill` (F), so two neighbours hold more than F - HDR: at most
        2S/(F-HDR) + 2 pages per tree (S: element bytes), and never more
        than one per element; each is its content plus at most one page of
        padding. Branches: a branch page takes at least two children (the
        last of a level may take one), so a level has at most half its
        children's count plus one: at most P + 2 pages a level deep (P: leaf
        pages) and 3P elements of ELEM + the longest key; by content, the
        same closing rule as the leaves.
        """
        ps, f, hdr = self.page_size, self.fill, HDR
        s = self.input_bytes
        if self.expected_input is not None:
            s = max(s, self.expected_input + self.input_bytes - self.items_bytes)
        elems = self._elems
        if self.expected_input is not None:
            elems = max(elems, self.expected_input // ELEM + self._elems)
        leaves = min(2 * s // (f - hdr), elems) + 2 * self._trees
        branch_content = 3 * leaves * (ELEM + self._kmax)
        branch_pages = min(2 * branch_content // (f - hdr), leaves) + 2 * _MAX_DEPTH * self._trees
        return (3 * ps + s + leaves * (hdr + ps)
                + branch_content + branch_pages * (hdr + ps))

    def alloc_write(self, elems, branch: bool) -> int:
        pgid = self._next
        data, pages = _page_bytes(pgid, elems, self.page_size, branch)
        end = (self._next + pages) * self.page_size
        bound = self.size_bound()
        if end > bound:
            raise BoltSizeError(
                f"bbolt writer: the file would grow to {end:,} bytes, past the {bound:,} bytes "
                f"{self.input_bytes:,} bytes of input can take (a bug in the writer); stopped")
        self._f.write(data)
        self._next += pages
        return pgid

    def bucket(self, name: bytes, items: Iterable[tuple[bytes, bytes]]) -> int:
        """Write one top-level bucket; the number of keys written."""
        if self._root and name <= self._root[-1][0]:
            raise ValueError(f"bucket names not in ascending order: {name!r}")
        t = _TreeWriter(self)
        self._trees += 1
        n = 0
        for k, v in items:
            if not k:
                raise ValueError("empty key")
            t.add(0, bytes(k), bytes(v))
            n += 1
        if n == 0:
            # An empty bucket is inline, as bbolt creates one: root 0 and an
            # empty leaf page inside the value.
            header = _BUCKET_HDR.pack(0, 0) + _PAGE_HDR.pack(0, LEAF_PAGE, 0, 0)
        else:
            header = _BUCKET_HDR.pack(t.finish(), 0)
        self._root.append((bytes(name), header))
        return n

    def close(self) -> int:
        """Write the root bucket, the freelist and the metas, fsync; the
        file's size."""
        t = _TreeWriter(self)
        for name, header in self._root:
            t.add(BUCKET_LEAF_FLAG, name, header, counted=False)
        root = t.finish()
        hwm = self._next
        ps = self.page_size
        self._f.seek(2 * ps)
        self._f.write(_PAGE_HDR.pack(2, FREELIST_PAGE, 0, 0))
        for i in (0, 1):
            body = _META.pack(MAGIC, VERSION, ps, 0, root, 0, 2, hwm, i)
            self._f.seek(i * ps)
            self._f.write(_PAGE_HDR.pack(i, META_PAGE, 0, 0) + body + _U64.pack(fnv64a(body)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return hwm * ps

    def abort(self) -> None:
        """Empty and close the partial file (it is no bbolt file yet): its
        space goes back at once; its name is the caller's to remove."""
        try:
            self._f.truncate(0)
        finally:
            self._f.close()


def write(path: str, buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]],
          page_size: int = PAGE_SIZE, fill: float = 1.0, *, expected_input: int | None = None) -> int:
    """Write a fresh bbolt file holding ``buckets`` ((name, items) in
    ascending name order, items in ascending key order); its size.
    ``expected_input``: the items' bytes (sum of ELEM + len(key) + len(value))
    the caller knows are coming; more raises BoltSizeError. Any failure
    leaves the file empty."""
    w = Writer(path, page_size, fill, expected_input=expected_input)
    try:
        for name, items in buckets:
            w.bucket(name, items)
    except BaseException:
        w.abort()
        raise
    return w.close()
