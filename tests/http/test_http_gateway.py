"""The v3 JSON gateway's KV paths beside real etcd 3.4.23's: the same script of
requests against a fresh etcd and a fresh raftnode member; status codes and
JSON bodies equal once the ids and term in the header are set aside."""
from __future__ import annotations

import json
import time

from engine.server.kvserver import KVServer
from tests.http.member import fetch

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


def _normal(resp) -> tuple:
    status, headers, body = resp
    ctype = headers.get("Content-Type")
    if ctype == "application/json":
        doc = json.loads(body)
        inner = doc.get("result", doc) if isinstance(doc, dict) else doc   # a streamed answer
        header = inner.get("header") if isinstance(inner, dict) else None
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


# Lease, Maintenance, Cluster and Auth, after the KV script. Values that differ
# by implementation or by the clock (db sizes, raft indexes, hashes, member
# names and URLs, a remaining TTL) are set aside by _VARIES.
SCRIPT2 = [
    ("/v3/lease/grant", '{"TTL":"60","ID":"1000"}'),
    ("/v3/lease/grant", '{"TTL":60,"ID":1001}'),
    ("/v3/lease/grant", '{"TTL":"60","ID":"1000"}'),
    ("/v3/lease/grant", '{"TTL":"99999999999","ID":"1002"}'),
    ("/v3/lease/keepalive", '{"ID":"1000"}'),
    ("/v3/lease/keepalive", '{"ID":"999"}'),
    ("/v3/kv/put", '{"key":"bA==","value":"dg==","lease":"1000"}'),
    ("/v3/lease/timetolive", '{"ID":"1000","keys":true}'),
    ("/v3/kv/lease/timetolive", '{"ID":"999"}'),
    ("/v3/lease/leases", "{}"),
    ("/v3/lease/revoke", '{"ID":"1001"}'),
    ("/v3/kv/lease/revoke", '{"ID":"1001"}'),
    ("/v3/kv/range", '{"key":"bA=="}'),
    ("/v3/maintenance/status", "{}"),
    ("/v3/maintenance/alarm", "{}"),
    ("/v3/maintenance/alarm", '{"action":"GET"}'),
    ("/v3/maintenance/hash", "{}"),
    ("/v3/maintenance/hashkv", "{}"),
    ("/v3/maintenance/defragment", "{}"),
    ("/v3/cluster/member/list", "{}"),
    ("/v3/cluster/member/remove", '{"ID":"12345"}'),
    ("/v3/auth/user/list", "{}"),
    ("/v3/auth/user/add", '{"name":"u","password":"p"}'),
    ("/v3/auth/user/add", '{"name":"u","password":"p"}'),
    ("/v3/auth/user/add", '{"name":"","password":"p"}'),
    ("/v3/auth/user/get", '{"name":"u"}'),
    ("/v3/auth/role/add", '{"name":"r"}'),
    ("/v3/auth/role/grant", '{"name":"r","perm":{"permType":"READWRITE","key":"YQ==","range_end":"Yg=="}}'),
    ("/v3/auth/role/get", '{"role":"r"}'),
    ("/v3/auth/role/get", '{"role":"nobody"}'),
    ("/v3/auth/user/grant", '{"user":"u","role":"r"}'),
    ("/v3/auth/user/get", '{"name":"u"}'),
    ("/v3/auth/role/list", "{}"),
    ("/v3/auth/authenticate", '{"name":"u","password":"p"}'),
    ("/v3/auth/enable", "{}"),
    ("/v3/auth/user/revoke", '{"name":"u","role":"r"}'),
    ("/v3/auth/role/delete", '{"role":"r"}'),
    ("/v3/auth/user/delete", '{"name":"u"}'),
]
_VARIES = {"/v3/maintenance/status": ("dbSize", "dbSizeInUse", "raftIndex", "raftAppliedIndex", "leader",
                                      "raftTerm"),
           "/v3/maintenance/hash": ("hash",),
           "/v3/lease/timetolive": ("TTL",)}


def _set_aside(path: str, doc):
    if not isinstance(doc, dict):
        return doc
    for k in _VARIES.get(path, ()):
        if k in doc:
            doc[k] = "*"
    if path == "/v3/lease/leases":   # etcd lists them in Go's map order
        doc["leases"] = sorted(doc.get("leases", []), key=lambda x: int(x["ID"]))
    if path == "/v3/cluster/member/list":
        doc["members"] = len(doc.get("members", []))
    return doc


def test_lease_maintenance_cluster_auth_gateway_as_etcd(etcd, ours) -> None:
    e_url, o_url = etcd.client_urls[0], ours.client_url["n1"]
    for path, body in SCRIPT2:
        e = _normal(fetch(e_url + path, "POST", body.encode()))
        o = _normal(fetch(o_url + path, "POST", body.encode()))
        e, o = (e[0], e[1], _set_aside(path, e[2])), (o[0], o[1], _set_aside(path, o[2]))
        assert o == e, (path, body)


def _watch_lines(base: str, body: bytes, put_path: str, n: int, put_after: int) -> list[dict]:
    """Open /v3/watch, make one put once put_after lines came, read n answer lines."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("POST", "/v3/watch", body=body)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
        out = []
        while len(out) < n:
            line = resp.readline()
            assert line, out
            out.append(_normal((200, {"Content-Type": "application/json"}, line))[2])
            if len(out) == put_after:
                assert fetch(base + put_path, "POST", b'{"key":"dw==","value":"MQ=="}')[0] == 200
        return out
    finally:
        conn.close()


def test_watch_gateway_streams_as_etcd(etcd, ours) -> None:
    body = b'{"create_request":{"key":"dw==","prev_kv":true}} {"create_request":{"key":"dw=="}}'
    # Both created, then the put; its event comes once per watcher, in either order.
    by_watch = lambda lines: sorted(lines, key=lambda x: (  # noqa: E731
        "events" in x["result"], x["result"].get("watch_id", "0")))
    e = by_watch(_watch_lines(etcd.client_urls[0], body, "/v3/kv/put", 4, put_after=2))
    o = by_watch(_watch_lines(ours.client_url["n1"], body, "/v3/kv/put", 4, put_after=2))
    assert o == e
    assert e[2]["result"]["events"][0]["kv"]["value"] == "MQ=="
    # The client went away: its two watchers are cancelled on our member.
    hub = KVServer(ours.node()).watch_hub

    async def watchers() -> int:
        return len(hub._watchers)
    deadline = time.monotonic() + 10
    while ours.lt.call(watchers()) and time.monotonic() < deadline:
        time.sleep(0.02)   # poll interval, not synchronisation
    assert ours.lt.call(watchers()) == 0
    # A body that does not decode: etcd's gateway answers Unknown, 500.
    e, o = (_normal(fetch(etcd.client_urls[0] + "/v3/watch", "POST", b"xx")),
            _normal(fetch(ours.client_url["n1"] + "/v3/watch", "POST", b"xx")))
    assert o == e and e[0] == 500


def test_snapshot_streams_chunks_and_digest_as_etcd(etcd, ours) -> None:
    import base64
    import hashlib

    shapes = []
    for base in (etcd.client_urls[0], ours.client_url["n1"]):
        status, headers, body = fetch(base + "/v3/maintenance/snapshot", "POST", b"{}")
        assert status == 200 and headers["Content-Type"] == "application/json"
        lines = [json.loads(line)["result"] for line in body.splitlines()]
        data = b"".join(base64.b64decode(r["blob"]) for r in lines[:-1])
        assert base64.b64decode(lines[-1]["blob"]) == hashlib.sha256(data).digest()
        assert len(data) % 512 == 0
        # remaining_bytes counts down to 0 (then left out); the digest line has the blob only
        assert [r.get("remaining_bytes", "0") for r in lines][-2:] == ["0", "0"]
        shapes.append({k for r in lines for k in r})
    assert shapes[1] == shapes[0] or shapes[1] <= {"blob", "remaining_bytes"}


def test_auth_through_the_gateway_as_etcd(etcd, ours) -> None:
    """With auth on, the gateway checks what gRPC checks, with the token from
    the Authorization header (last in this module: it turns auth off again)."""
    def both(path: str, body: str, token: dict[str, str] | None = None) -> tuple:
        answers = []
        for base in (etcd.client_urls[0], ours.client_url["n1"]):
            auth = {"Authorization": token[base]} if token else None
            answers.append(_normal(fetch(base + path, "POST", body.encode(), headers=auth)))
        return tuple(answers)

    for path, body in (("/v3/auth/user/add", '{"name":"root","password":"rp"}'),
                       ("/v3/auth/user/grant", '{"user":"root","role":"root"}'),
                       ("/v3/auth/user/add", '{"name":"v","password":"vp"}'),
                       ("/v3/auth/enable", "{}")):
        e, o = both(path, body)
        assert o == e and e[0] == 200, (path, e, o)
    try:
        e, o = both("/v3/kv/range", '{"key":"YQ=="}')            # no token
        assert o == e and e[0] != 200, (e, o)
        e, o = both("/v3/kv/range", '{"key":"YQ=="}', {etcd.client_urls[0]: "nonsense",
                                                       ours.client_url["n1"]: "nonsense"})
        assert o == e and e[0] != 200, (e, o)
        tokens, v_tokens = {}, {}
        for base in (etcd.client_urls[0], ours.client_url["n1"]):
            tokens[base] = json.loads(fetch(base + "/v3/auth/authenticate", "POST",
                                            b'{"name":"root","password":"rp"}')[2])["token"]
            v_tokens[base] = json.loads(fetch(base + "/v3/auth/authenticate", "POST",
                                              b'{"name":"v","password":"vp"}')[2])["token"]
        e, o = both("/v3/kv/range", '{"key":"YQ=="}', tokens)
        assert o == e and e[0] == 200, (e, o)
        e, o = both("/v3/kv/put", '{"key":"YQ==","value":"eA=="}', v_tokens)   # v has no role
        assert o == e and e[0] != 200, (e, o)
        e, o = both("/v3/auth/user/list", "{}", v_tokens)
        assert o == e and e[0] != 200, (e, o)
    finally:
        for base in (etcd.client_urls[0], ours.client_url["n1"]):
            token = json.loads(fetch(base + "/v3/auth/authenticate", "POST",
                                     b'{"name":"root","password":"rp"}')[2]).get("token", "")
            fetch(base + "/v3/auth/disable", "POST", b"{}", headers={"Authorization": token})
    e, o = both("/v3/kv/range", '{"key":"YQ=="}')
    assert o == e and e[0] == 200


def test_json_text_escapes_as_go(etcd, ours) -> None:
    """Strings go out as Go writes them: UTF-8 as is, <, >, & and U+2028 as \\u escapes."""
    name = '{"name":"\u00fc<&>\u2028x"}'.encode()
    answers = []
    for base in (etcd.client_urls[0], ours.client_url["n1"]):
        assert fetch(base + "/v3/auth/role/add", "POST", name)[0] == 200
        roles = fetch(base + "/v3/auth/role/list", "POST", b"{}")[2].split(b'"roles":', 1)[1]
        error = fetch(base + "/v3/kv/range", "POST", '{"key":"Zm9v","sort_order":"\u00fc<"}'.encode())[2]
        fetch(base + "/v3/auth/role/delete", "POST", '{"role":"\u00fc<&>\u2028x"}'.encode())
        answers.append((roles, error))
    assert answers[1] == answers[0]
    assert answers[0][0] == '["\u00fc\\u003c\\u0026\\u003e\\u2028x"]}'.encode()
