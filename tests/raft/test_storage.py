"""MemoryStorage: appends in place, without changing what callers hold."""
import pytest

from engine.proto import raft_pb2 as pb
from engine.raft.errors import UnavailableError
from engine.raft.storage import MemoryStorage


def ents(lo, hi, term=1):
    return [pb.Entry(index=i, term=term, data=b"%d" % i) for i in range(lo, hi + 1)]


def test_append_extends_and_replaces_a_conflicting_suffix():
    s = MemoryStorage()
    s.append(ents(1, 5))
    held = s.entries(1, 6, 1 << 30)
    s.append(ents(4, 6, term=2))        # replaces 4 and 5, adds 6
    assert [(e.index, e.term) for e in s.entries(1, 7, 1 << 30)] == \
        [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    # What a caller took before is untouched by the in-place append.
    assert [(e.index, e.term) for e in held] == [(i, 1) for i in range(1, 6)]
    s.append(ents(7, 8, term=2))
    assert s.last_index() == 8


def test_append_across_a_compaction_and_a_gap():
    s = MemoryStorage()
    s.append(ents(1, 10))
    s.compact(5)
    s.append(ents(3, 11, term=1))       # 3..5 compacted away: only 6.. apply
    assert (s.first_index(), s.last_index()) == (6, 11)
    with pytest.raises(UnavailableError):
        s.append(ents(13, 14))          # a hole after 11


def test_clone_does_not_share_the_list():
    s = MemoryStorage()
    s.append(ents(1, 3))
    c = s.clone()
    s.append(ents(3, 4, term=2))
    assert [(e.index, e.term) for e in c.entries(1, 4, 1 << 30)] == [(1, 1), (2, 1), (3, 1)]
