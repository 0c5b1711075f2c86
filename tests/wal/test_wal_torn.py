"""Crashes and damage: a torn tail is cut off, anything else is refused.

A crash can only tear what was being written when it happened: the end of
the newest segment. Every other damage must stop open() with an error that
names the file and offset.
"""
from __future__ import annotations

import os
import random
import shutil

import pytest

from engine.wal import WAL, WALCorruptError

from .helpers import ent, hs, key, records, wal_files


def _tiny_wal(d, *, segment_bytes=64 << 20):
    """A small WAL whose last save is one batch of 3 entries + hard state
    (about 300 bytes). Returns (entries before, hard state before, the last
    batch's entries, its hard state)."""
    w = WAL.create(d, b"meta", segment_bytes=segment_bytes)
    before = []
    for i in range(1, 6):
        e = ent(i, 1, b"v%d" % i)
        w.save(hs(1, 1, i - 1), [e])
        before.append(e)
    last = [ent(6, 2, b"a" * 40), ent(7, 2, b"b" * 50), ent(8, 2, b"c" * 60)]
    w.save(hs(2, 2, 7), last)
    w.close()
    return before, hs(1, 1, 4), last, hs(2, 2, 7)


def _open(d):
    w, replay = WAL.open(d)
    w.close()
    return replay


def test_kill_at_every_offset_of_the_last_write(tmp_path):
    src = tmp_path / "src"
    before, hs_before, last, hs_last = _tiny_wal(src)
    (name,) = wal_files(src)
    data = (src / name).read_bytes()
    rs = records(src / name)
    batch = rs[-4:]  # 3 entries + hard state, written by one save()
    ends = [r.offset for r in batch[1:]] + [len(data)]
    start = batch[0].offset
    assert len(data) - start < 400  # small on purpose: one open per offset

    for cut in range(start, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / name).write_bytes(data[:cut])
        replay = _open(d)
        complete = sum(1 for end in ends if end <= cut)
        assert complete < 4
        assert [key(e) for e in replay.entries] == [key(e) for e in before + last[:complete]], cut
        assert replay.hard_state == hs_before, cut
        boundary = batch[complete].offset
        # the torn part is gone from the disk too, and only it
        assert os.path.getsize(d / name) == boundary, cut
        assert (d / name).read_bytes() == data[:boundary]
        if cut == boundary:
            assert replay.torn is None
        else:
            assert replay.torn.offset == boundary and replay.torn.dropped == cut - boundary
        shutil.rmtree(d)


def test_after_a_torn_tail_the_wal_appends_and_replays_cleanly(tmp_path):
    before, _, last, _ = _tiny_wal(tmp_path)
    (name,) = wal_files(tmp_path)
    path = tmp_path / name
    os.truncate(path, records(path)[-1].offset + 5)  # mid hard-state record
    w, replay = WAL.open(tmp_path)
    assert replay.torn is not None
    assert [e.index for e in replay.entries] == [1, 2, 3, 4, 5, 6, 7, 8]
    w.save(hs(3, 3, 8), [ent(9, 3, b"after")])
    w.close()
    replay = _open(tmp_path)
    assert replay.torn is None
    assert [key(e) for e in replay.entries] == [key(e) for e in before + last + [ent(9, 3, b"after")]]
    assert replay.hard_state == hs(3, 3, 8)


def test_zero_filled_tail_is_a_torn_tail(tmp_path):
    before, _, last, hs_last = _tiny_wal(tmp_path)
    (name,) = wal_files(tmp_path)
    path = tmp_path / name
    size = os.path.getsize(path)
    with open(path, "ab") as f:
        f.write(bytes(4096))  # e.g. a file extended but whose blocks never got written
    replay = _open(tmp_path)
    assert [key(e) for e in replay.entries] == [key(e) for e in before + last]
    assert replay.hard_state == hs_last
    assert replay.torn.offset == size and "zero" in replay.torn.reason
    assert os.path.getsize(path) == size


def test_last_record_zeroed_in_place_is_a_torn_tail(tmp_path):
    before, hs_before, last, _ = _tiny_wal(tmp_path)
    (name,) = wal_files(tmp_path)
    path = tmp_path / name
    hard_state_record = records(path)[-1]
    data = bytearray(path.read_bytes())
    # the header made it to disk, the payload's block did not
    data[hard_state_record.offset + 16:] = bytes(len(data) - hard_state_record.offset - 16)
    path.write_bytes(bytes(data))
    replay = _open(tmp_path)
    assert [key(e) for e in replay.entries] == [key(e) for e in before + last]
    assert replay.hard_state == hs_before
    assert replay.torn.offset == hard_state_record.offset


def test_crc_mismatch_in_the_final_record_is_a_torn_tail(tmp_path):
    before, _, last, hs_last = _tiny_wal(tmp_path)
    w = WAL.open(tmp_path)[0]
    w.save(None, [ent(9, 2, b"last one")])
    w.close()
    (name,) = wal_files(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[records(path)[-1].offset + 20] ^= 0xFF  # inside the last entry's payload
    path.write_bytes(bytes(data))
    replay = _open(tmp_path)
    assert "checksum" in replay.torn.reason
    assert [key(e) for e in replay.entries] == [key(e) for e in before + last]
    assert replay.hard_state == hs_last


def test_garbage_tail_without_a_valid_header_is_a_torn_tail(tmp_path):
    before, _, last, _ = _tiny_wal(tmp_path)
    (name,) = wal_files(tmp_path)
    path = tmp_path / name
    with open(path, "ab") as f:
        f.write(random.Random(7).randbytes(300))
    replay = _open(tmp_path)
    assert replay.torn is not None
    assert [key(e) for e in replay.entries] == [key(e) for e in before + last]


def test_damage_before_the_last_record_raises_naming_file_and_offset(tmp_path):
    src = tmp_path / "src"
    _tiny_wal(src)
    (name,) = wal_files(src)
    data = (src / name).read_bytes()
    rs = records(src / name)
    last_start = rs[-1].offset
    starts = [r.offset for r in rs]

    # every byte of every record but the last, flipped one at a time: the
    # error names the record holding the byte. (Plus seeded random flips of
    # several bits at once.)
    rng = random.Random(1)
    cases = [(off, 0xFF) for off in range(last_start)]
    cases += [(rng.randrange(last_start), rng.randrange(1, 256)) for _ in range(50)]
    d = tmp_path / "d"
    d.mkdir()
    for off, mask in cases:
        bad = bytearray(data)
        bad[off] ^= mask
        (d / name).write_bytes(bytes(bad))
        with pytest.raises(WALCorruptError) as info:
            WAL.open(d)
        holder = max(s for s in starts if s <= off)
        err = info.value
        assert err.path == str(d / name) and err.offset == holder, (off, str(err))
        assert str(d / name) in str(err) and f"offset {holder}" in str(err)
        assert (d / name).read_bytes() == bytes(bad), "a refused WAL is left as it was"


def _segmented(tmp_path):
    _tiny_wal(tmp_path, segment_bytes=120)
    names = wal_files(tmp_path)
    assert len(names) >= 4
    return names


def test_truncated_older_segment_raises(tmp_path):
    names = _segmented(tmp_path)
    victim = tmp_path / names[1]
    size = os.path.getsize(victim)
    data = victim.read_bytes()
    for cut in (size - 1, size - 8, size // 2, 17):
        victim.write_bytes(data[:cut])
        with pytest.raises(WALCorruptError) as info:
            WAL.open(tmp_path)
        assert info.value.path == str(victim)
        assert "not the last" in str(info.value)
    victim.write_bytes(data + bytes(512))  # zeros are not excused before the newest segment
    with pytest.raises(WALCorruptError, match="offset"):
        WAL.open(tmp_path)
    victim.write_bytes(data)
    _open(tmp_path)


def test_missing_middle_segment_raises(tmp_path):
    names = _segmented(tmp_path)
    os.unlink(tmp_path / names[2])
    with pytest.raises(WALCorruptError) as info:
        WAL.open(tmp_path)
    assert info.value.path == str(tmp_path / names[3])


def test_segment_from_another_wal_breaks_the_crc_chain(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, fill in ((a, b"x"), (b, b"y")):
        w = WAL.create(d, b"meta", segment_bytes=200)
        for i in range(1, 12):
            w.save(hs(1, 1, i), [ent(i, 1, fill * 30)])
        w.close()
    names = wal_files(a)
    assert names == wal_files(b) and len(names) >= 4
    shutil.copy(b / names[1], a / names[1])  # same name, same shape, other log
    with pytest.raises(WALCorruptError) as info:
        WAL.open(a)
    # segment 1 is self-consistent but does not continue segment 0's chain
    assert info.value.path == str(a / names[1]) and info.value.offset == 0
    assert "chain" in str(info.value)


def test_opening_from_a_later_segment_does_not_need_the_chain_before_it(tmp_path):
    w = WAL.create(tmp_path, b"meta", segment_bytes=200)
    for i in range(1, 12):
        w.save(hs(1, 1, i), [ent(i, 1, b"z" * 30)])
    w.save_snapshot(9, 1)
    w.close()
    names = wal_files(tmp_path)
    (tmp_path / names[0]).write_bytes(b"garbage, but released-to-be")
    w, replay = WAL.open(tmp_path, 9, 1)
    w.close()
    assert [e.index for e in replay.entries] == [10, 11]
