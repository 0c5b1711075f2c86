"""The v3 JSON gateway's KV paths beside real etcd 3.4.23's: the same script of
requests against a fresh etcd and a fresh raftnode member; status codes and
JSON bodies equal once the ids and term in the header are set aside."""
from __future__ import annotations

import json

import pytest

from tests.http.member import HttpMembers, fetch
from tests.support import etcd as support_etcd

# (path, body) in order; each answer is compared. Keys: foo=Zm9v, bar=YmFy, a=YQ==, b=Yg==.
SCRIPT = [
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmFy"}'),
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmFy","prev_kv":true}'),
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmFy","prevKv":true,"lease":"0"}'),
    ("/v3/kv/put", '{"key":"YQ==","value":""}'),
    ("/v3/kv/put", '{"key":"Yg==","value":"Yg==","ignore_lease":false}'),
    ("/v3/kv/range", '{"key":"Zm9v","bogus":1}'),
    ("/v3/kv/range", '{"key":"YQ==","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"KEY"}'),
    ("/v3/kv/range", '{"key":"YQ==","range_end":"Zm9w","sort_order":1,"limit":"2"}'),
    ("/v3/kv/range", '{"key":"AA==","range_end":"AA==","count_only":true}'),
    ("/v3/kv/range", '{"key":"AA==","range_end":"AA==","keys_only":true,"revision":3}'),
    ("/v3/kv/range", '{"key":"Zm9v","serializable":true,"min_mod_revision":"100"}'),
    ("/v3/kv/range", '{"key":"Zm9v","revision":"100"}'),
    ("/v3/kv/range", '{"key":"Zm9v","sort_order":"NOPE"}'),
    ("/v3/kv/range", '{"key":"!!"}'),
    ("/v3/kv/range", '{"key":"Zm9v_-"}'),
    ("/v3/kv/range", '{"key":5}'),
    ("/v3/kv/range", "[]"),
    ("/v3/kv/range", '"x"'),
    ("/v3/kv/range", ""),
    ("/v3/kv/range", "{}"),
    ("/v3/kv/range", "null"),
    ("/v3/kv/range", '{"key":"Zm9v"}trailing'),
    ("/v3/kv/range", '{"key":'),
    ("/v3/kv/put", '{"key":"Zm9v","value":"YmFy","lease":"12345"}'),
    ("/v3/kv/put", '{"key":"Zm9v","ignore_value":true,"value":"YQ=="}'),
    ("/v3/kv/deleterange", '{"key":"Zm9v","prev_kv":true}'),
    ("/v3/kv/deleterange", '{"key":"Zm9v"}'),
    ("/v3/kv/deleterange", '{"key":"YQ==","range_end":"AA=="}'),
    ("/v3/kv/txn", '{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VERSION","version":"0"}],'
                   '"success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}],'
                   '"failure":[{"request_range":{"key":"Zm9v"}}]}'),
    ("/v3/kv/txn", '{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VERSION","version":"0"}],'
                   '"success":[{"request_put":{"key":"Zm9v","value":"YmFy"}}],'
                   '"failure":[{"request_range":{"key":"Zm9v"}}]}'),
    ("/v3/kv/txn", '{"compare":[{"key":"Zm9v","result":"GREATER","target":"MOD","mod_revision":"1"}],'
                   '"success":[{"request_delete_range":{"key":"Zm9v","prev_kv":true}}]}'),
    ("/v3/kv/txn", '{"success":[{"request_put":{"key":"YQ=="}},{"request_put":{"key":"YQ=="}}]}'),
    ("/v3/kv/txn", '{"compare":[{"key":"YQ==","target":"VALUE","value":""}],"success":[{"request_range":'
                   '{"key":"YQ==","range_end":"Zm9w"}}]}'),
    ("/v3/kv/compaction", '{"revision":"3"}'),
    ("/v3/kv/range", '{"key":"Zm9v","revision":"2"}'),
    ("/v3/kv/compaction", '{"revision":"1000"}'),
    ("/v3beta/kv/range", '{"key":"YQ=="}'),
    ("/v3/kv/nothing", "{}"),
]


@pytest.fixture(scope="module")
def etcd(etcd_binaries, tmp_path_factory):
    cluster = support_etcd.start_etcd_cluster(tmp_path_factory.mktemp("etcd-gw"), size=1)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    members = HttpMembers(str(tmp_path_factory.mktemp("ours-gw")), 1).start()
    try:
        yield members
    finally:
        members.stop()


def _normal(resp) -> tuple:
    status, headers, body = resp
    ctype = headers.get("Content-Type")
    if ctype == "application/json":
        doc = json.loads(body)
        header = doc.get("header")
        if isinstance(header, dict):
            for k in ("cluster_id", "member_id", "raft_term"):
                if k in header:
                    header[k] = "*"
        return status, ctype, doc
    return status, ctype, body


def test_kv_gateway_answers_as_etcd(etcd, ours) -> None:
    e_url, o_url = etcd.client_urls[0], ours.client_url["n1"]
    for path, body in SCRIPT:
        e = _normal(fetch(e_url + path, "POST", body.encode()))
        o = _normal(fetch(o_url + path, "POST", body.encode()))
        assert o == e, (path, body)
    for method in ("GET", "PUT", "DELETE"):
        e = _normal(fetch(e_url + "/v3/kv/range", method, b"{}" if method != "GET" else None))
        o = _normal(fetch(o_url + "/v3/kv/range", method, b"{}" if method != "GET" else None))
        assert o == e, method
