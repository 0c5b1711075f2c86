"""The console's txn text (etcdctl's syntax) and etcd's compare rules, no network."""
from __future__ import annotations

import pytest

from raftui.render import unescape
from raftui.source.model import KeyValue
from raftui.source.txn import (CompareSpec, OpSpec, TxnSyntaxError, holds, parse_compares, parse_ops)


def test_compares_and_ops_parse_as_etcdctl_writes_them():
    got = parse_compares('mod("k1") > "5"; value("a b") = "x;y"; version(k3) = 0; lease("k") != "1f"', unescape)
    assert got == [CompareSpec("mod", "k1", ">", "5"), CompareSpec("value", "a b", "=", "x;y"),
                   CompareSpec("version", "k3", "=", "0"), CompareSpec("lease", "k", "!=", "1f")]
    assert parse_compares('value("q\\"uote\\xff") == "\\n"', unescape) == [
        CompareSpec("value", 'q"uote\udcff', "=", "\n")]
    ops = parse_ops('put k1 "v 1"; del k2*; get "k3*"; get \\x00', unescape)
    assert ops == [OpSpec("put", "k1", "v 1"), OpSpec("del", "k2", prefix=True),
                   OpSpec("get", "k3*"), OpSpec("get", "\x00")]          # a quoted star is part of the key
    assert parse_compares("", unescape) == [] and parse_ops("  ", unescape) == []


@pytest.mark.parametrize("text", ['mod("k") > "x"', 'size("k") = "1"', 'value("k") ~ "1"', 'value("k" = "1"',
                                  'value("k) = "1"', "put k", "del a b", "rm k", 'get "k'])
def test_bad_text_says_what_is_wrong(text):
    with pytest.raises(TxnSyntaxError):
        (parse_ops if text.split()[0] in ("put", "del", "rm", "get") else parse_compares)(text, unescape)


def test_compares_follow_etcd_for_present_and_missing_keys():
    kv = KeyValue("k", "b", create_revision=4, mod_revision=9, version=3, lease=0x1f)
    assert holds(CompareSpec("value", "k", "=", "b"), kv) and holds(CompareSpec("value", "k", ">", "a"), kv)
    assert holds(CompareSpec("mod", "k", "<", "10"), kv) and not holds(CompareSpec("mod", "k", ">", "9"), kv)
    assert holds(CompareSpec("version", "k", "=", "3"), kv) and holds(CompareSpec("create", "k", "!=", "5"), kv)
    assert holds(CompareSpec("lease", "k", "=", "1f"), kv)
    # A missing key: numbers are 0, and any value compare is false (etcd's applyCompare).
    assert holds(CompareSpec("version", "k", "=", "0"), None) and holds(CompareSpec("create", "k", "<", "1"), None)
    assert not holds(CompareSpec("value", "k", "=", ""), None) and not holds(CompareSpec("value", "k", "!=", "x"), None)
