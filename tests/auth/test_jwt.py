"""--auth-token=jwt,pub-key=...,priv-key=...,sign-method=...: a real member.

The token Authenticate returns is a JWT signed with the given key (checked
here with the public key) carrying etcd's claims; the member accepts it,
refuses a forged one ("invalid auth token"), refuses it once the auth store
has moved on ("revision of auth store is old": JWTs carry the revision they
were made at), and -- unlike a simple token -- still accepts it after a
restart. Run against raftnode and etcd 3.4 (how the expectations were
checked), under -m soak.
"""
from __future__ import annotations

import pathlib

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.proto import rpc_pb2, rpc_pb2_grpc
from tests.support import etcd as support_etcd
from tests.support import raftnode as support_raftnode

T = 10


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    d = tmp_path_factory.mktemp("jwtkeys")
    k = ec.generate_private_key(ec.SECP256R1())
    (d / "k.pem").write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    (d / "k.pub").write_bytes(k.public_key().public_bytes(serialization.Encoding.PEM,
                                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    return d / "k.pem", d / "k.pub"


# Under -m soak (~5 s a member start and restart): the default run checks
# JWT signing and checking in-process (tests/auth/test_tokens.py).
@pytest.mark.soak
@pytest.mark.parametrize("kind", ["raftnode", "etcd"])
def test_jwt_tokens(kind, keys, tmp_path, etcd_binaries, raftnode_binary):
    priv, pub = keys
    flags = [f"--auth-token=jwt,pub-key={pub},priv-key={priv},sign-method=ES256,ttl=10m"]
    if kind == "etcd":
        cluster = support_etcd.start_etcd_cluster(tmp_path / "c", size=1, extra_args=flags)
    else:
        cluster = support_raftnode.start_raftnode_cluster(tmp_path / "c", size=1, extra_args=flags)
    try:
        ep = cluster.endpoints[0]
        with grpc.insecure_channel(ep) as ch:
            auth, kv = rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)
            auth.UserAdd(rpc_pb2.AuthUserAddRequest(name="root", password="pw"), timeout=T)
            auth.UserGrantRole(rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root"), timeout=T)
            auth.AuthEnable(rpc_pb2.AuthEnableRequest(), timeout=T)
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="pw"), timeout=T).token
            claims = jwt.decode(token, pub.read_bytes(), algorithms=["ES256"])
            assert claims["username"] == "root" and claims["revision"] > 0 and "exp" in claims
            md = [("token", token)]
            kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), metadata=md, timeout=T)
            forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
            with pytest.raises(grpc.RpcError) as e:
                kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=[("token", forged)], timeout=T)
            assert (e.value.code(), e.value.details()) == (
                grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
            # the auth store moves on: the token's revision is old now
            auth.RoleAdd(rpc_pb2.AuthRoleAddRequest(name="r"), metadata=md, timeout=T)
            with pytest.raises(grpc.RpcError) as e:
                kv.Range(rpc_pb2.RangeRequest(key=b"k"), metadata=md, timeout=T)
            assert (e.value.code(), e.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: revision of auth store is old")
            token = auth.Authenticate(rpc_pb2.AuthenticateRequest(name="root", password="pw"), timeout=T).token
        if kind == "etcd":
            return  # the etcd helper restarts no member in place
        # a restart keeps a JWT valid: nothing of it lives in the member's memory
        cluster.kill(0)
        cluster.restart(0)
        cluster.wait_leader()
        with grpc.insecure_channel(ep) as ch:
            r = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), metadata=[("token", token)], timeout=T)
            assert r.kvs[0].value == b"v"
    finally:
        cluster.stop()
