"""Fixtures for the etcdctl judge.

`judge` is one pair of 3-member clusters (real etcd + raftnode) shared by
the whole judge package; tests on it use their own key prefixes and compare only
what they wrote. Tests whose commands change the cluster itself
(quota alarms) take a fresh pair from `judge_factory`; membership and
lease lists share `spare_judge`, a second pair they clean up after.
"""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.judge import framework


# Package scope: both pairs stop when the last judge test is done, not at the end of the
# whole session (six idle members cost ~3 % of this machine's CPU while later tests run).
@pytest.fixture(scope="package")
def judge(etcd_binaries, raftnode_binary, tmp_path_factory) -> Iterator[framework.Judge]:
    j = framework.start_judge(tmp_path_factory.mktemp("judge"))
    try:
        yield j
    finally:
        j.stop()


@pytest.fixture(scope="package")
def spare_judge(etcd_binaries, raftnode_binary, tmp_path_factory) -> Iterator[framework.Judge]:
    """A second pair, for the modules whose commands change the cluster itself but undo it
    after every test, passed or failed (CI time: one pair for both instead of one each):
    test_lease (`lease list` shows every lease: each case revokes its own) and
    test_membership (each test removes the members it added and stops their processes)."""
    j = framework.start_judge(tmp_path_factory.mktemp("sparepair"))
    try:
        yield j
    finally:
        j.stop()


@pytest.fixture(scope="module")
def judge_factory(etcd_binaries, raftnode_binary, tmp_path_factory) -> Iterator[Callable[..., framework.Judge]]:
    """make(extra_args=()) -> a fresh pair of 3-member clusters, stopped at the end of the module."""
    started: list[framework.Judge] = []

    def make(extra_args=()) -> framework.Judge:
        j = framework.start_judge(tmp_path_factory.mktemp("judgepair"), extra_args=extra_args)
        started.append(j)
        return j

    try:
        yield make
    finally:
        for j in started:
            j.stop()


@pytest.fixture
def case(judge) -> Iterator[framework.Case]:
    """A Case on the shared pair; background etcdctl processes are stopped afterwards."""
    c = judge.case()
    try:
        yield c
    finally:
        for s in judge.sides:
            s.stop_bg()
