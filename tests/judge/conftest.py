"""Fixtures for the etcdctl judge.

`judge` is one pair of 3-member clusters (real etcd + raftnode) shared by
the whole session; tests on it use their own key prefixes and compare only
what they wrote. Tests whose commands change the cluster itself
(membership, quota alarms, lease lists) take a fresh pair from
`judge_factory`.
"""
from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.judge import framework


@pytest.fixture(scope="session")
def judge(etcd_binaries, raftnode_binary, tmp_path_factory) -> Iterator[framework.Judge]:
    j = framework.start_judge(tmp_path_factory.mktemp("judge"))
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
