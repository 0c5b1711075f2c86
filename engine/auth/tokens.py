"""Token providers: etcd's simple tokens and JWT (auth/simple_token.go, jwt.go).

``--auth-token`` picks one, in etcd's syntax: ``simple`` (the default) or
``jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256[,ttl=5m]``; anything else
is refused at start-up (``InvalidAuthOpts``, "auth: invalid auth options").

Simple tokens
  ``<16 random letters>.<raft index of the Authenticate entry>``. The letters
  are drawn by the proposer and travel in the log, so every member
  registers the same token when it applies the entry; a member asked with a
  token whose index it has not applied yet first waits for it (``index_of``
  tells the caller which index to wait for). They live only in memory: a
  restart forgets them all (as etcd), so does ``disable`` (auth disable), and
  deleting a user or changing its password drops that user's tokens. Each
  expires ``ttl`` seconds (etcd's --auth-token-ttl, 300) after its last use.

JWT
  Signed with the given key files and checked with the public key (or the
  HMAC secret); the claims are etcd's: ``username``, ``revision`` (the auth
  store's revision when the token was made) and ``exp``. A JWT is not
  registered anywhere: every member can check it, and a restart keeps it
  valid. Its revision makes it stale as soon as the auth store changes
  ("revision of auth store is old"): clients authenticate again, as with
  etcd. PyJWT (with `cryptography`) does the signing: it implements the same
  algorithm family as etcd's golang-jwt (HS/RS/PS/ES 256-512) and the checks
  a hand-written JWS would have to get right (alg pinning, exp).
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import time
from typing import Callable

from . import errors

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SIMPLE_TOKEN_LENGTH = 16
DEFAULT_TTL = 300.0  # seconds: etcd's --auth-token-ttl and jwt's ttl default


@dataclasses.dataclass(frozen=True)
class AuthInfo:
    """Who a request is from: the user and the auth revision it was checked at."""

    username: str
    revision: int


class SimpleTokens:
    kind = "simple"

    def __init__(self, ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl if ttl > 0 else DEFAULT_TTL
        self._clock = clock
        self._enabled = False
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (user, expiry)

    def enable(self) -> None:
        self._enabled = True

    def disable(self) -> None:
        """Auth disabled (or the member stops): every token is forgotten."""
        self._enabled = False
        self._tokens = {}

    def gen_token_prefix(self) -> str:
        return "".join(secrets.choice(_LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    def assign(self, username: str, revision: int, *, prefix: str = "", index: int = 0) -> str:
        """Register the token the Authenticate entry at ``index`` names."""
        token = f"{prefix}.{index}"
        if self._enabled:
            now = self._clock()
            if len(self._tokens) > 1024:
                self._sweep(now)
            self._tokens[token] = (username, now + self.ttl)
        return token

    def invalidate_user(self, username: str) -> None:
        self._tokens = {t: v for t, v in self._tokens.items() if v[0] != username}

    @staticmethod
    def index_of(token: str) -> int | None:
        """The raft index a simple token was made at (None: not a simple token)."""
        parts = token.split(".")
        if len(parts) != 2 or not re.fullmatch(r"[+-]?[0-9]+", parts[1]):
            return None
        return int(parts[1])

    def info(self, token: str, revision: int) -> AuthInfo | None:
        """The user of a live token (its TTL restarts), or None. The
        revision is the store's current one: simple tokens carry none."""
        if self.index_of(token) is None:
            return None
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = self._clock()
        if now > entry[1]:
            del self._tokens[token]
            return None
        self._tokens[token] = (entry[0], now + self.ttl)
        return AuthInfo(entry[0], revision)

    def _sweep(self, now: float) -> None:
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] >= now}

    def __len__(self) -> int:
        return len(self._tokens)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration ("5m", "1h30m", "1.5s", "300ms") in seconds."""
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s.lstrip("+-")
    if s == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise ValueError(f"time: invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0:
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


class VerifyOnly(errors.AuthError):
    etcd_message = "auth: token signing attempted with verify-only key"


class MissingKey(errors.AuthError):
    etcd_message = "auth: missing key data"


class KeyMismatch(errors.AuthError):
    etcd_message = "auth: public and private keys don't match"


class InvalidAuthMethod(errors.AuthError):
    etcd_message = "auth: invalid auth signature method"


_METHODS = {f"{fam}{bits}" for fam in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)}


class JWTTokens:
    kind = "jwt"

    def __init__(self, sign_method: str, *, private_key: bytes = b"", public_key: bytes = b"",
                 ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time) -> None:
        import jwt  # PyJWT; only a member started with --auth-token=jwt needs it
        from cryptography.hazmat.primitives import serialization

        self._jwt = jwt
        if sign_method not in _METHODS:
            raise InvalidAuthMethod()
        self.method = sign_method
        self.ttl = ttl
        self._clock = clock
        self.verify_only = False
        if sign_method.startswith("HS"):
            if not private_key:
                raise MissingKey()
            self._sign_key = self._verify_key = private_key
            return
        priv = pub = None
        try:
            if private_key:
                priv = serialization.load_pem_private_key(private_key, password=None)
            if public_key:
                pub = serialization.load_pem_public_key(public_key)
        except (ValueError, TypeError) as e:
            raise errors.InvalidAuthOpts(f"auth: bad key: {e}") from None
        if priv is None and pub is None:
            raise MissingKey()
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        want = ((rsa.RSAPrivateKey, rsa.RSAPublicKey) if sign_method[:2] in ("RS", "PS")
                else (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey))
        for k in (priv, pub):
            if k is not None and not isinstance(k, want):
                raise errors.InvalidAuthOpts(f"auth: key does not fit {sign_method}")
        if priv is not None and pub is not None and pub.public_numbers() != priv.public_key().public_numbers():
            raise KeyMismatch()
        if priv is None:
            self.verify_only = True
            self._sign_key, self._verify_key = None, pub
        else:
            self._sign_key, self._verify_key = priv, priv.public_key()

    def enable(self) -> None:
        pass

    def disable(self) -> None:
        pass

    def invalidate_user(self, username: str) -> None:
        pass

    def gen_token_prefix(self) -> str:
        return ""

    @staticmethod
    def index_of(token: str) -> int | None:
        return None

    def assign(self, username: str, revision: int, *, prefix: str = "", index: int = 0) -> str:
        if self.verify_only:
            raise VerifyOnly()
        claims = {"username": username, "revision": revision, "exp": int(self._clock() + self.ttl)}
        return self._jwt.encode(claims, self._sign_key, algorithm=self.method)

    def info(self, token: str, revision: int) -> AuthInfo | None:
        try:
            # The signature and alg by PyJWT; the times below, on our clock,
            # as golang-jwt v3 checks MapClaims: exp, iat, nbf when present.
            claims = self._jwt.decode(token, self._verify_key, algorithms=[self.method], options={
                "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                "verify_aud": False, "verify_iss": False})
        except Exception:  # any malformed or forged token
            return None
        now = self._clock()
        try:
            if "exp" in claims and now > float(claims["exp"]):
                return None
            if "iat" in claims and now < float(claims["iat"]):
                return None
            if "nbf" in claims and now < float(claims["nbf"]):
                return None
        except (TypeError, ValueError):
            return None
        user, rev = claims.get("username"), claims.get("revision")
        if not isinstance(user, str) or isinstance(rev, bool) or not isinstance(rev, (int, float)):
            return None
        return AuthInfo(user, int(rev))


def decompose_opts(opts: str) -> tuple[str, dict[str, str]]:
    """etcd's decomposeOpts: "type,k=v,..." -> (type, {k: v})."""
    parts = opts.split(",")
    kind, kv = parts[0], {}
    for p in parts[1:]:
        pair = p.split("=")
        if len(pair) != 2 or pair[0] in kv:
            raise errors.InvalidAuthOpts()
        kv[pair[0]] = pair[1]
    return kind, kv


def new_token_provider(opts: str = "simple", ttl: float = DEFAULT_TTL):
    """The provider ``--auth-token=opts`` asks for (``ttl``: --auth-token-ttl,
    seconds, for simple tokens). Raises errors.InvalidAuthOpts or a key error
    (a start-up failure, as etcd's)."""
    kind, kv = decompose_opts(opts)
    if kind == "simple":
        return SimpleTokens(ttl)
    if kind == "jwt":
        try:
            jwt_ttl = parse_go_duration(kv["ttl"]) if kv.get("ttl") else DEFAULT_TTL
            priv = _read(kv.get("priv-key", ""))
            pub = _read(kv.get("pub-key", ""))
        except (ValueError, OSError):
            raise errors.InvalidAuthOpts() from None
        if kv.get("sign-method", "") not in _METHODS:
            raise errors.InvalidAuthOpts()
        return JWTTokens(kv["sign-method"], private_key=priv, public_key=pub, ttl=jwt_ttl)
    raise errors.InvalidAuthOpts()


def _read(path: str) -> bytes:
    if not path:
        return b""
    with open(path, "rb") as f:
        return f.read()
