"""engine/mvcc/bbolt.py: what the writer lays out, the reader reads back, page
for page; real bbolt (inside etcdctl) reads it too; a damaged file is refused
with BoltError, never another exception."""
from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.mvcc import bbolt
from tests.support import require
from tests.support.etcd import etcdctl

_CRC32C = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C.append(_c)


def crc32c(crc: int, data: bytes) -> int:
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def status_of(path: str) -> dict:
    """`etcdctl snapshot status` as etcd 3.4 computes it (v3_snapshot.go):
    crc32c over every bucket's name then its keys and values, the last main
    revision of the key bucket, the number of keys of all buckets."""
    h, rev, total = 0, 0, 0
    with bbolt.Reader(path) as r:
        for name in r.buckets():
            h = crc32c(h, name)
            for k, v in r.items(name):
                h = crc32c(crc32c(h, k), v)
                if name == b"key":
                    rev = struct.unpack(">Q", k[:8])[0]
                total += 1
        size = r.meta.pgid * r.page_size
    return {"hash": h, "revision": rev, "totalKey": total, "totalSize": size}


def rev(main: int, sub: int = 0) -> bytes:
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub)


def read_all(path: str) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    with bbolt.Reader(path) as r:
        return [(b, list(r.items(b))) for b in r.buckets()]


def test_pages_as_bbolt_lays_them_out(tmp_path):
    big = b"x" * 10000                       # a leaf of three pages (overflow 2)
    items = [(rev(i), b"v%d" % i) for i in range(1, 700)] + [(rev(700), big)]
    p = str(tmp_path / "db")
    size = bbolt.write(p, [(b"empty", []), (b"key", items)])
    assert size % bbolt.PAGE_SIZE == 0
    with bbolt.Reader(p) as r:
        assert (r.meta.page_size, r.meta.txid, r.meta.freelist) == (4096, 1, 2)
        assert r.freelist() == []
        assert r.meta.pgid * 4096 == size
        # every page is reachable exactly once (what bbolt's tx.Check insists on)
        assert r.page_ids() == set(range(r.meta.pgid))
        assert r.buckets() == [b"empty", b"key"]
        assert list(r.items(b"key")) == items
        assert list(r.items(b"empty")) == [] == list(r.items(b"absent"))
    data = open(p, "rb").read()
    # the key bucket needs branch pages: 700 revisions do not fit one leaf
    flags = {struct.unpack_from("<H", data, i * 4096 + 8)[0] for i in range(size // 4096)}
    assert {bbolt.META_PAGE, bbolt.FREELIST_PAGE, bbolt.LEAF_PAGE, bbolt.BRANCH_PAGE} <= flags


keys = st.binary(min_size=1, max_size=40)
values = st.one_of(st.binary(max_size=60), st.binary(min_size=500, max_size=2500))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(buckets=st.dictionaries(st.binary(min_size=1, max_size=12),
                               st.dictionaries(keys, values, max_size=50), max_size=4),
       page_size=st.sampled_from([512, 1024, 4096]),
       fill=st.sampled_from([0.1, 0.5, 1.0]))
def test_round_trip(tmp_path, buckets, page_size, fill):
    want = [(b, sorted(kv.items())) for b, kv in sorted(buckets.items())]
    p = str(tmp_path / "db")
    bbolt.write(p, want, page_size=page_size, fill=fill)
    assert read_all(p) == want
    with bbolt.Reader(p) as r:
        assert r.page_ids() == set(range(r.meta.pgid))


def test_size_bound_holds_for_correct_layouts(tmp_path):
    """The bound is never reached by what the writer lays out, also in the
    layouts that waste most: values just over half a fill (one a page), keys
    as long as values, a tiny fill, overflow pages."""
    cases = [
        (4096, 1.0, [(rev(i), b"v" * 2100) for i in range(1, 300)]),
        (4096, 1.0, [(rev(i), b"v" * 4097) for i in range(1, 100)]),
        (512, 0.1, [(b"%0400d" % i, b"w" * 400) for i in range(200)]),
        (1024, 0.5, [(b"k%05d" % i, b"") for i in range(5000)]),
    ]
    for page_size, fill, items in cases:
        p = str(tmp_path / "db")
        w = bbolt.Writer(p, page_size, fill)
        w.bucket(b"key", items)
        bound = w.size_bound()
        size = w.close()
        assert size <= bound < 8 * size + 64 * page_size, (page_size, fill, size, bound)
        assert read_all(p) == [(b"key", items)]


def test_runaway_layout_stops_at_the_bound(tmp_path, monkeypatch):
    """A layout bug that never ends (7c97f53's branch levels that never shrank
    wrote 43 GB) fails with BoltSizeError near the bound, and the partial file
    is emptied."""
    def never_shrinks(self):
        self._flush()
        while True:
            self.w.alloc_write([(3, b"k" * 30, b""), (4, b"l" * 30, b"")], branch=True)
    monkeypatch.setattr(bbolt._TreeWriter, "finish", never_shrinks)
    p = tmp_path / "db"
    items = [(rev(i), b"v%d" % i) for i in range(1, 2000)]
    with pytest.raises(bbolt.BoltSizeError, match="a bug in the writer"):
        bbolt.write(str(p), [(b"key", items)])
    assert p.stat().st_size == 0   # emptied; the name is the caller's


def test_input_that_does_not_end_stops(tmp_path):
    """A source that yields more than the caller announced (a row loop that
    never ends) stops at once; without an announcement the bound grows with
    the input, so only the announced amount protects against that."""
    def endless():
        i = 0
        while True:
            i += 1
            yield rev(i), b"x" * 100
    p = tmp_path / "db"
    with pytest.raises(bbolt.BoltSizeError, match="more input than announced"):
        bbolt.write(str(p), [(b"key", endless())], expected_input=10 * (bbolt.ELEM + 17 + 100))
    assert p.stat().st_size == 0   # emptied; the name is the caller's


def test_convert_announces_its_input(tmp_path, monkeypatch):
    """to_bbolt tells the writer what the store holds: a row iterator that
    repeats itself forever is stopped."""
    from engine.mvcc import backend, etcd_snapshot
    from tests.snapshot.test_convert import _store   # a small store db of ours, every table
    src = _store(tmp_path)
    real = backend.file_rows

    def forever(path, batch=10000):
        rows = list(real(path, batch))
        n = 0
        while True:
            for _, kv in rows:
                n += 1
                yield rev(n), kv
    monkeypatch.setattr(backend, "file_rows", forever)
    out = tmp_path / "out.db"
    with pytest.raises(bbolt.BoltSizeError):
        etcd_snapshot.to_bbolt(src, str(out))
    assert out.stat().st_size == 0
    monkeypatch.setattr(backend, "file_rows", real)
    assert etcd_snapshot.to_bbolt(src, str(out)) > 0


def test_writer_refuses_unordered_input(tmp_path):
    with pytest.raises(ValueError):
        bbolt.write(str(tmp_path / "a"), [(b"k", [(b"b", b""), (b"a", b"")])])
    with pytest.raises(ValueError):
        bbolt.write(str(tmp_path / "b"), [(b"z", []), (b"a", [])])


def test_torn_meta_falls_back_to_the_other(tmp_path):
    p = str(tmp_path / "db")
    want = [(b"key", [(rev(2), b"v")])]
    bbolt.write(p, want)
    with open(p, "r+b") as f:           # meta 1 (the newer) torn: meta 0 still validates
        f.seek(4096 + 40)
        f.write(b"\xff" * 8)
    assert read_all(p) == want
    with open(p, "r+b") as f:           # both torn: not a database
        f.seek(40)
        f.write(b"\xff" * 8)
    with pytest.raises(bbolt.BoltError):
        bbolt.Reader(p)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 8 * 4096 - 1), st.integers(1, 255)), min_size=1, max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 8 * 4096)))
def test_damage_is_refused_or_harmless(tmp_path, flips, cut):
    """Flipped bytes, a cut file: the reader answers BoltError or some
    content, never another exception, never a hang."""
    p = str(tmp_path / "db")
    bbolt.write(p, [(b"key", [(rev(i), b"v" * (i * 37 % 900)) for i in range(2, 40)]), (b"meta", [(b"a", b"b")])],
                page_size=1024)
    data = bytearray(open(p, "rb").read())
    for at, x in flips:
        if at < len(data):
            data[at] ^= x
    if cut is not None:
        del data[cut:]
    open(p, "wb").write(bytes(data))
    try:
        with bbolt.Reader(p) as r:
            for b in r.buckets():
                list(r.items(b))
            r.freelist()
    except bbolt.BoltError:
        pass


def test_not_bbolt(tmp_path):
    p = tmp_path / "db"
    p.write_bytes(b"SQLite format 3\0" + b"\0" * 8000)
    assert not bbolt.is_bbolt(str(p))
    with pytest.raises(bbolt.BoltError):
        bbolt.Reader(str(p))


def test_etcdctl_reads_what_we_write(tmp_path):
    """bbolt itself (etcdctl snapshot status runs its tx.Check, then hashes
    every bucket) accepts the file and counts as we do."""
    if require.etcdctl_path() is None:
        pytest.skip("etcdctl not installed")
    items = [(rev(i), b"v" * (i % 5000)) for i in range(2, 400)] + [(rev(400, 1) + b"t", b"")]
    p = str(tmp_path / "db")
    bbolt.write(p, [(b"alarm", []), (b"key", items), (b"meta", [(b"consistent_index", bytes(8))])])
    r = etcdctl([], "snapshot", "status", p, "-w", "json", check=True)
    got = json.loads(r.stdout)
    assert got == status_of(p)
    assert got["revision"] == 400 and got["totalKey"] == len(items) + 1
