"""Simple tokens (TTL, invalidation) and JWT tokens (--auth-token=jwt,...)."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.auth import errors
from engine.auth.tokens import (AuthInfo, JWTTokens, SimpleTokens, VerifyOnly, decompose_opts,
                                new_token_provider, parse_go_duration)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_simple_token_format_ttl_and_sliding_expiry():
    clock = Clock()
    t = SimpleTokens(ttl=300, clock=clock)
    t.enable()
    prefix = t.gen_token_prefix()
    assert len(prefix) == 16 and prefix.isalpha()
    tok = t.assign("u", 5, prefix=prefix, index=17)
    assert tok == f"{prefix}.17" and SimpleTokens.index_of(tok) == 17
    clock.t += 299
    assert t.info(tok, 9) == AuthInfo("u", 9)  # revision: the store's now
    clock.t += 299  # used at 299 s: alive for 300 s more
    assert t.info(tok, 9) is not None
    clock.t += 301
    assert t.info(tok, 9) is None


def test_simple_tokens_invalidated():
    t = SimpleTokens()
    assert t.assign("u", 1, prefix="x", index=1) == "x.1"
    assert t.info("x.1", 1) is None  # not enabled: nothing registered (etcd's nil keeper)
    t.enable()
    t.assign("u", 1, prefix="a", index=1)
    t.assign("v", 1, prefix="b", index=2)
    t.invalidate_user("u")
    assert t.info("a.1", 1) is None and t.info("b.2", 1) is not None
    t.disable()
    assert t.info("b.2", 1) is None
    for bad in ("b", "b.2.3", "b.x", ""):
        assert SimpleTokens.index_of(bad) is None


def _pem_pair(key):
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return priv, pub


@pytest.fixture(scope="module")
def rsa_keys():
    return _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys():
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("method", ["RS256", "PS384", "ES256"])
def test_jwt_sign_and_check(method, rsa_keys, ec_keys):
    priv, pub = ec_keys if method.startswith("ES") else rsa_keys
    clock = Clock()
    t = JWTTokens(method, private_key=priv, public_key=pub, ttl=60, clock=clock)
    tok = t.assign("alice", 7)
    assert tok.count(".") == 2
    assert t.info(tok, 99) == AuthInfo("alice", 7)  # the revision is the token's own
    assert t.info(tok[:-3] + "AAA", 99) is None  # forged signature
    # a member with only the public key checks but cannot sign
    v = JWTTokens(method, public_key=pub, clock=clock)
    assert v.info(tok, 1) == AuthInfo("alice", 7)
    with pytest.raises(VerifyOnly):
        v.assign("alice", 1)


def test_jwt_expired_and_wrong_method(rsa_keys):
    priv, pub = rsa_keys
    clock = Clock()
    t = JWTTokens("RS256", private_key=priv, ttl=10, clock=clock)
    tok = t.assign("a", 1)
    clock.t += 10
    assert t.info(tok, 1) == AuthInfo("a", 1)
    clock.t += 1
    assert t.info(tok, 1) is None  # expired
    live = JWTTokens("RS256", private_key=priv, ttl=60)
    assert JWTTokens("RS512", private_key=priv).info(live.assign("a", 1), 1) is None  # alg pinned
    hs = JWTTokens("HS256", private_key=b"a-secret-of-at-least-32-bytes-long")
    assert hs.info(hs.assign("h", 3), 0) == AuthInfo("h", 3)


def test_auth_token_option_parsing(tmp_path, rsa_keys):
    priv, pub = rsa_keys
    (tmp_path / "k").write_bytes(priv)
    (tmp_path / "k.pub").write_bytes(pub)
    assert isinstance(new_token_provider("simple", ttl=5), SimpleTokens)
    t = new_token_provider(f"jwt,pub-key={tmp_path / 'k.pub'},priv-key={tmp_path / 'k'},sign-method=RS256,ttl=1h30m")
    assert isinstance(t, JWTTokens) and t.ttl == 5400
    for bad in ("bogus", "jwt,sign-method", "jwt,a=1,a=2", "jwt,sign-method=XX256,priv-key=x",
                f"jwt,sign-method=RS256,priv-key={tmp_path / 'missing'}"):
        with pytest.raises(errors.AuthError):
            new_token_provider(bad)
    assert decompose_opts("jwt,a=b") == ("jwt", {"a": "b"})
    assert parse_go_duration("300ms") == pytest.approx(0.3)
    assert parse_go_duration("5m") == 300
    with pytest.raises(ValueError):
        parse_go_duration("5 minutes")
