"""alarm list / disarm with a real NOSPACE alarm: a fresh pair with a 1 MiB backend quota.

How many puts fit under the quota depends on the storage engine (bbolt vs
SQLite), so the fill loop runs until the first refusal on each side and only
what happens from there on is compared. How many members raise the alarm
(one or several) is up to timing in etcd, so `alarm list` is compared as the
set of alarm kinds, with every listed member checked to be a member.
"""
from __future__ import annotations

import re

import pytest

from tests.judge.framework import Case, Judge, Outcome, Side, assert_same

QUOTA = 1 << 20
VALUE = "x" * 100_000
NOSPACE = "etcdserver: mvcc: database space exceeded"


@pytest.fixture(scope="module")
def quota_judge(judge_factory) -> Judge:
    return judge_factory(extra_args=[f"--quota-backend-bytes={QUOTA}"])


def _fill(side: Side) -> Outcome:
    for i in range(200):
        r = side.ctl("put", f"q/{i % 4}", VALUE)
        if r.returncode != 0:
            return Outcome(side, ["put", "q/N", "<100 kB>"], r.returncode, r.stdout, r.stderr)
    raise AssertionError(f"[{side.label}] 200 puts of 100 kB fitted under a {QUOTA}-byte quota")


def _alarm_set(case: Case, o: Outcome) -> set[str]:
    """Lines like "memberID:<m1> alarm:NOSPACE" -> {"memberID:<member> alarm:NOSPACE"}; members checked."""
    out = set()
    for line in o.norm[1]:
        m = re.fullmatch(r"memberID:(\S+) alarm:(\w+)", line.strip())
        assert m, f"[{o.side.label}] unexpected alarm line {line!r}"
        assert re.fullmatch(r"<m\d+>", m.group(1)), f"[{o.side.label}] alarm for a non-member: {line!r}"
        out.add(f"memberID:<member> alarm:{m.group(2)}")
    return out


def test_nospace_alarm_list_disarm(quota_judge: Judge) -> None:
    case = quota_judge.case()
    case.same("alarm", "list", rc=0)
    fails = [_fill(s) for s in quota_judge.sides]
    for o in fails:
        case.normalise(o, "simple")
        assert NOSPACE in o.stderr, o
    assert_same(*fails, what="the first put over the quota")
    case.same("put", "q/more", "y", rc=1)                      # still refused: the alarm is raised
    lists = case.both("alarm", "list")
    sets = [_alarm_set(case, o) for o in lists]
    assert sets[0] == {"memberID:<member> alarm:NOSPACE"}, lists[0]
    assert sets[0] == sets[1], f"alarm list differs:\n{lists[0]}\n{lists[1]}"
    case.same("get", "q/0", "--keys-only", rc=0)               # reads still work
    case.same("del", "q/", "--prefix", rc=0)                   # deletes still work
    case.same("put", "q/more", "y", rc=1)
    # etcd's recovery procedure: compact, defrag, disarm.
    for side in quota_judge.sides:
        case.vars[side.label]["rev"] = side.revision()
    # (the revision differs between the sides here: each filled to its own quota)
    for o in case.both("compaction", lambda s: str(case.vars[s.label]["rev"])):
        assert (o.rc, o.stdout) == (0, f"compacted revision {case.vars[o.side.label]['rev']}\n"), o
    case.same("defrag", rc=0)
    disarmed = case.both("alarm", "disarm")
    sets = [_alarm_set(case, o) for o in disarmed]
    assert sets[0] == sets[1] == {"memberID:<member> alarm:NOSPACE"}, disarmed
    case.same("alarm", "list", rc=0)                           # empty now
    case.same("put", "q/more", "y", rc=0)
    case.same("get", "q/", "--prefix", rc=0)
