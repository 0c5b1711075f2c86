"""gRPC channels and stubs to each endpoint, with fast reconnects.

grpc's default reconnect backoff grows to two minutes; a member that comes
back must be seen within about a second, so the backoff is capped at 1 s.
Channels belong to the event loop that created them: make a `Connections`
inside the running loop (the app's `on_mount`, a test's coroutine).

With `--user NAME[:PASSWORD]` (a ClientAuth), every call carries the
`token` metadata clientv3 sends: the console authenticates before its first
call and again when a member answers that the token is invalid or the auth
store moved on (clientv3's shouldRefreshToken), then retries that call once.
The password lives only in memory, wrapped so no repr, log line or
traceback shows it; nothing here writes a file.
"""
from __future__ import annotations

import asyncio
import dataclasses
import getpass
import pathlib
from typing import Callable

import grpc
import grpc.aio

from engine.proto import rpc_pb2, rpc_pb2_grpc

CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Snapshots stream 32 KiB chunks, but Range answers over a large key space
    # can be big; etcd itself allows up to 2 MiB requests and larger answers.
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_http_proxy", 0),
)


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return pathlib.Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.cacert),
            private_key=read(self.key),
            certificate_chain=read(self.cert),
        )


def parse_endpoints(text: str) -> list[str]:
    """"h1:p1,http://h2:p2" -> ["h1:p1", "h2:p2"] (etcdctl accepts both forms)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        for scheme in ("http://", "https://", "unix://"):
            if part.startswith(scheme):
                part = part[len(scheme):]
        if part:
            out.append(part.rstrip("/"))
    return out


# -- auth: --user NAME[:PASSWORD] ------------------------------------------------------

AUTHENTICATE = "/etcdserverpb.Auth/Authenticate"
TOKEN_KEY = "token"                     # clientv3's metadata key (rpctypes.TokenFieldNameGRPC)
NOT_ENABLED = "etcdserver: authentication is not enabled"
# Answers after which clientv3 gets a new token and retries (3.4's
# shouldRefreshToken): the token is unknown/expired, or was checked at an
# older auth revision, or it never reached the member.
REFRESH_ON = frozenset({"etcdserver: invalid auth token", "etcdserver: revision of auth store is old",
                        "etcdserver: user name is empty"})
# Answers that say auth is on, whoever asks.
AUTH_ON_SIGNS = REFRESH_ON | {"etcdserver: permission denied"}
AUTHENTICATE_TIMEOUT = 5.0


class Secret:
    """A password: shown as *** by repr/str (tracebacks with locals, logs)."""
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __reduce__(self):   # never pickled (to a file) by accident
        raise TypeError("a Secret is not to be serialized")


class AuthFailed(Exception):
    """The members refused the user name and password (etcd's text)."""


class ClientAuth:
    """Who the console is to the members (etcdctl's --user), the token it
    holds and what it has learnt: `enabled` is True/False once a member
    said whether auth is on (None: not known yet), `error` the last
    authentication failure (etcd's text) or None."""

    def __init__(self, user: str, password: str | Secret) -> None:
        if not user:
            raise ValueError("--user needs a user name")
        self.user = user
        self._password = password if isinstance(password, Secret) else Secret(password)
        self.token: str | None = None
        self.enabled: bool | None = None
        self.error: str | None = None
        self._lock: asyncio.Lock | None = None

    @classmethod
    def from_flag(cls, text: str, prompt: Callable[[str], str] | None = None) -> "ClientAuth":
        """`NAME:PASSWORD`, or `NAME` and the password asked for without
        echo (etcdctl's "Password: " prompt; getpass unless `prompt`)."""
        name, sep, password = text.partition(":")
        if not name:
            raise ValueError("--user needs a user name (NAME or NAME:PASSWORD)")
        if not sep:
            password = (prompt or getpass.getpass)("Password: ")
        return cls(name, password)

    def __repr__(self) -> str:
        return f"ClientAuth(user={self.user!r}, enabled={self.enabled!r})"

    @property
    def has_password(self) -> bool:
        return bool(self._password.reveal())

    def request(self) -> rpc_pb2.AuthenticateRequest:
        return rpc_pb2.AuthenticateRequest(name=self.user, password=self._password.reveal())

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TOKEN_KEY, self.token),) if self.token else ()

    async def ensure_token(self, channel: grpc.aio.Channel, *, stale: str | None = None,
                           timeout: float | None = None) -> None:
        """Authenticate unless a token is held or auth is known to be off;
        with `stale` (the token a member refused), get a new one whatever
        is known. Never raises: for a member that cannot be reached the
        call itself will say so."""
        if stale is None and (self.token is not None or self.enabled is False):
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.token is not None and self.token != stale:
                return          # another call got one meanwhile
            self.token = None
            wait = AUTHENTICATE_TIMEOUT if timeout is None else max(0.1, min(timeout, AUTHENTICATE_TIMEOUT))
            try:
                resp = await rpc_pb2_grpc.AuthStub(channel).Authenticate(self.request(), timeout=wait)
            except grpc.aio.AioRpcError as e:
                if e.details() == NOT_ENABLED:
                    self.enabled, self.error = False, None
                elif e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                    self.enabled, self.error = True, e.details()
                return
            self.token, self.enabled, self.error = resp.token, True, None

    def observe(self, details: str | None) -> None:
        """A call's error text: does it say auth is on?"""
        if details in AUTH_ON_SIGNS:
            self.enabled = True


HOST_ROOT_PROMPT = "Password of the hosted cluster's root user: "


def console_auth(user: str | None, host_auth: bool = False,
                 prompt: Callable[[str], str] | None = None) -> ClientAuth | None:
    """The console's --user / --auth flags: a ClientAuth, or None. With
    --auth (host mode) the user is root, its password from `--user
    root:PASSWORD` or asked for. Raises ValueError with a one-line message."""
    if host_auth:
        name = (user or "root").partition(":")[0]
        if name != "root":
            raise ValueError("--auth runs the hosted cluster with its root user: give --user root[:PASSWORD] or no --user")
        ask = prompt or getpass.getpass
        auth = ClientAuth.from_flag(user or "root", prompt=lambda _text: ask(HOST_ROOT_PROMPT))
        if not auth.has_password:
            raise ValueError("--auth needs a root password")
        return auth
    if user is None:
        return None
    return ClientAuth.from_flag(user, prompt=prompt)


def _method(details) -> str:
    m = details.method
    return m.decode() if isinstance(m, bytes) else m


def _with_metadata(details: grpc.aio.ClientCallDetails, extra) -> grpc.aio.ClientCallDetails:
    if not extra:
        return details
    md = [(k, v) for k, v in (details.metadata or ()) if k != TOKEN_KEY]
    md.extend(extra)
    return grpc.aio.ClientCallDetails(details.method, details.timeout, grpc.aio.Metadata(*md),
                                      details.credentials, details.wait_for_ready)


class _TokenInterceptor:
    """Puts the token on every call of one channel. A unary call refused
    for its token is made again once with a new one; a stream refused so
    drops the token, and the next call authenticates again. (grpc.aio
    files an interceptor under the first call kind it implements, so the
    channel gets one adapter per kind: `interceptors()`.)"""

    def __init__(self, auth: ClientAuth) -> None:
        self.auth = auth
        self.channel: grpc.aio.Channel | None = None   # set once the channel exists
        self._tasks: set[asyncio.Task] = set()

    async def _prepare(self, details):
        if _method(details) == AUTHENTICATE or self.channel is None:
            return details, None
        await self.auth.ensure_token(self.channel, timeout=details.timeout)
        token = self.auth.token
        return _with_metadata(details, self.auth.metadata()), token

    async def intercept_unary_unary(self, continuation, details, request):
        details2, token = await self._prepare(details)
        call = await continuation(details2, request)
        if _method(details) == AUTHENTICATE:
            return call
        code, text = await call.code(), await call.details()
        if code == grpc.StatusCode.OK:
            return call
        self.auth.observe(text)
        if text not in REFRESH_ON or self.channel is None:
            return call
        await self.auth.ensure_token(self.channel, stale=token or "", timeout=details.timeout)
        if self.auth.token == token:
            return call       # no new token (a wrong password, a member down): that answer stands
        # A new token, or none because auth turned out to be off: once more.
        return await continuation(_with_metadata(details, self.auth.metadata()), request)

    def _watch_stream(self, call, token) -> None:
        async def ended(c) -> None:
            try:
                text = await c.details()
            except BaseException:  # cancelled before any status
                return
            self.auth.observe(text)
            if text in REFRESH_ON and self.auth.token == token:
                self.auth.token = None   # the next call authenticates again

        def done(c) -> None:
            try:
                task = asyncio.get_running_loop().create_task(ended(c))
            except RuntimeError:   # the loop is closing
                return
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            call.add_done_callback(done)
        except Exception:
            pass

    async def intercept_unary_stream(self, continuation, details, request):
        details2, token = await self._prepare(details)
        call = await continuation(details2, request)
        self._watch_stream(call, token)
        return call

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        details2, token = await self._prepare(details)
        call = await continuation(details2, request_iterator)
        self._watch_stream(call, token)
        return call

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        details2, token = await self._prepare(details)
        call = await continuation(details2, request_iterator)
        self._watch_stream(call, token)
        return call


class _UU(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, core: _TokenInterceptor) -> None:
        self.core = core

    async def intercept_unary_unary(self, continuation, details, request):
        return await self.core.intercept_unary_unary(continuation, details, request)


class _US(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, core: _TokenInterceptor) -> None:
        self.core = core

    async def intercept_unary_stream(self, continuation, details, request):
        return await self.core.intercept_unary_stream(continuation, details, request)


class _SU(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, core: _TokenInterceptor) -> None:
        self.core = core

    async def intercept_stream_unary(self, continuation, details, request_iterator):
        return await self.core.intercept_stream_unary(continuation, details, request_iterator)


class _SS(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, core: _TokenInterceptor) -> None:
        self.core = core

    async def intercept_stream_stream(self, continuation, details, request_iterator):
        return await self.core.intercept_stream_stream(continuation, details, request_iterator)


def authenticate_now(endpoints: list[str], tls: "TlsFiles | None", auth: ClientAuth,
                     timeout: float = AUTHENTICATE_TIMEOUT) -> bool:
    """Before the console starts: check the user and password against the
    first endpoint that answers (blocking). True: a token was given (auth
    is on), False: auth is off (the console runs without a token). Raises
    AuthFailed with etcd's text for a wrong user or password, ConnectionError
    when no endpoint answers."""
    last = "no endpoint"
    for ep in endpoints:
        channel = (grpc.secure_channel(ep, tls.credentials(), options=CHANNEL_OPTIONS) if tls is not None
                   else grpc.insecure_channel(ep, options=CHANNEL_OPTIONS))
        try:
            resp = rpc_pb2_grpc.AuthStub(channel).Authenticate(auth.request(), timeout=timeout)
        except grpc.RpcError as e:
            if e.details() == NOT_ENABLED:
                auth.enabled = False
                return False
            if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
                auth.enabled, auth.error = True, e.details()
                raise AuthFailed(e.details()) from None
            last = f"{ep}: {e.details()}"
            continue
        finally:
            channel.close()
        auth.token, auth.enabled = resp.token, True
        return True
    raise ConnectionError(f"cannot authenticate: no endpoint answered ({last})")


class Stubs:
    """The etcd v3 stubs (and ours, when asked) for one endpoint."""

    def __init__(self, endpoint: str, tls: TlsFiles | None, auth: ClientAuth | None = None) -> None:
        self.endpoint = endpoint
        core = _TokenInterceptor(auth) if auth is not None else None
        interceptors = [k(core) for k in (_UU, _US, _SU, _SS)] if core is not None else None
        if tls is not None:
            self.channel = grpc.aio.secure_channel(endpoint, tls.credentials(), options=CHANNEL_OPTIONS,
                                                   interceptors=interceptors)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS,
                                                     interceptors=interceptors)
        if core is not None:
            core.channel = self.channel
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self._inspect = None
        self._fault = None

    @property
    def inspect(self):
        if self._inspect is None:
            from engine.proto import inspect_pb2_grpc
            self._inspect = inspect_pb2_grpc.InspectStub(self.channel)
        return self._inspect

    @property
    def fault(self):
        """The Fault stub, or None while engine/proto/fault.proto is not generated yet."""
        if self._fault is None:
            try:
                from engine.proto import fault_pb2_grpc  # written by the fault-injection work
            except ImportError:
                return None
            self._fault = fault_pb2_grpc.FaultStub(self.channel)
        return self._fault

    async def close(self) -> None:
        await self.channel.close(grace=None)


class Connections:
    """One `Stubs` per endpoint, created lazily, closed together."""

    def __init__(self, endpoints: list[str], tls: TlsFiles | None = None,
                 auth: ClientAuth | None = None) -> None:
        self.tls = tls
        self.auth = auth
        self._stubs: dict[str, Stubs] = {}
        self.endpoints = list(endpoints)

    def get(self, endpoint: str) -> Stubs:
        stubs = self._stubs.get(endpoint)
        if stubs is None:
            stubs = self._stubs[endpoint] = Stubs(endpoint, self.tls, self.auth)
        return stubs

    def add(self, endpoint: str) -> None:
        if endpoint not in self.endpoints:
            self.endpoints.append(endpoint)

    async def close(self) -> None:
        stubs, self._stubs = list(self._stubs.values()), {}
        for s in stubs:
            await s.close()
