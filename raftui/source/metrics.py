"""Latency from a member's /metrics: WAL fsync p99, backend commit p99, peer RTT.

raftnode and etcd both export etcd's histograms in the Prometheus text
format (0.0.4) on their metrics URL; etcd 3.4 also on its plain-http client
URL. The console reads three of them each poll round:

    etcd_disk_wal_fsync_duration_seconds         WAL fsync
    etcd_disk_backend_commit_duration_seconds    backend commit
    etcd_network_peer_round_trip_time_seconds    peer RTT (every To summed, as
                                                 Grafana's sum by (le))

and turns each into the 99th percentile of what was observed since the
previous scrape: the bucket counts' deltas, interpolated inside the bucket
as Prometheus' histogram_quantile does. Nothing observed in between: the
last value is held (marked held); a counter that went down (the member
restarted) counts from zero.

    poller = MetricsPoller({"127.0.0.1:2379": "http://127.0.0.1:2381"})
    by_endpoint = await poller.poll(endpoints)     # never raises; {endpoint: MemberLatency}

Everything a server sends is untrusted: the answer is read with a deadline
and a size limit over asyncio streams (never blocking the loop the console
draws on), parsed on a worker thread by `parse()`, which never raises and
bounds what it keeps, and every string the result carries is plain data
(raftui/render.py draws it). No textual here: this is the data layer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import ssl
import time
import urllib.parse
from typing import Callable, Iterable, Mapping, Sequence

from .connection import TlsFiles

POLL_DEADLINE = 0.8          # seconds for one scrape, as poll.POLL_DEADLINE
MAX_BODY = 8 * 1024 * 1024   # a member's /metrics is ~100-200 KB; etcd's with many peers a few MB
MAX_HEAD = 16 * 1024
MAX_SAMPLES = 200_000
MAX_LABELS = 64
MAX_LINE = 64 * 1024
DERIVE_RETRY = 60.0          # seconds before an endpoint without metrics is tried again
QUANTILE = 0.99

WAL_FSYNC = "etcd_disk_wal_fsync_duration_seconds"
BACKEND_COMMIT = "etcd_disk_backend_commit_duration_seconds"
PEER_RTT = "etcd_network_peer_round_trip_time_seconds"
HISTOGRAMS = (WAL_FSYNC, BACKEND_COMMIT, PEER_RTT)

NO_URL = "no metrics URL (attach with --metrics-urls)"

Labels = tuple[tuple[str, str], ...]


# -- the text format ----------------------------------------------------------------

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FLOAT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf|inf|NaN|nan)")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


@dataclasses.dataclass
class Exposition:
    """What parse() kept: each sample name's (labels, value) list, the
    families' declared types, and how much it could not use."""
    samples: dict[str, list[tuple[Labels, float]]] = dataclasses.field(default_factory=dict)
    types: dict[str, str] = dataclasses.field(default_factory=dict)
    bad_lines: int = 0
    truncated: bool = False

    def histogram(self, name: str) -> dict[Labels, list[tuple[float, float]]]:
        """name's cumulative buckets, (upper bound, count) by its labels without `le`."""
        out: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in self.samples.get(name + "_bucket", ()):
            le = None
            rest = []
            for k, v in labels:
                if k == "le":
                    le = v
                else:
                    rest.append((k, v))
            bound = _parse_float(le) if le is not None else None
            if bound is None or math.isnan(bound) or math.isnan(value):
                continue
            out.setdefault(tuple(rest), []).append((bound, value))
        return out


def _parse_float(text: str) -> float | None:
    if not _FLOAT.fullmatch(text):
        return None
    return float(text)


def _parse_labels(line: str, i: int) -> tuple[Labels, int] | None:
    """Labels starting after '{' at i; (labels, index after '}') or None."""
    labels: list[tuple[str, str]] = []
    n = len(line)
    while True:
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == "}":
            return tuple(labels), i + 1
        m = _LABEL_NAME.match(line, i)
        if m is None or len(labels) >= MAX_LABELS:
            return None
        name, i = m.group(), m.end()
        while i < n and line[i] == " ":
            i += 1
        if line[i:i + 2] != '="':
            return None
        i += 2
        value = []
        while True:
            j = line.find('"', i)
            k = line.find("\\", i, j if j >= 0 else n)
            if j < 0:
                return None
            if k < 0:
                value.append(line[i:j])
                i = j + 1
                break
            value.append(line[i:k])
            esc = line[k + 1:k + 2]
            value.append(_ESCAPES.get(esc, "\\" + esc))
            i = k + 2
        labels.append((name, "".join(value)))
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == ",":
            i += 1
        elif i >= n or line[i] != "}":
            return None


def parse(text: bytes | str, wanted: Iterable[str] | None = None) -> Exposition:
    """The Prometheus text format, leniently and safely: a line that is not
    a comment or a well-formed sample is counted in bad_lines and skipped;
    at most MAX_SAMPLES samples are kept (then truncated). `wanted`: family
    names to keep (their _bucket/_sum/_count too); None keeps every one.
    Never raises."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        return Exposition(bad_lines=1)
    prefixes = tuple(wanted) if wanted is not None else None
    out = Exposition()
    kept = 0
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line or line.isspace():
            continue
        if len(line) > MAX_LINE:
            out.bad_lines += 1
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE" and _NAME.fullmatch(parts[2]):
                if prefixes is None or parts[2] in prefixes:
                    out.types[parts[2]] = parts[3].strip()
            continue
        line = line.lstrip(" \t")
        if prefixes is not None and not line.startswith(prefixes):
            continue
        m = _NAME.match(line)
        if m is None:
            out.bad_lines += 1
            continue
        name, i = m.group(), m.end()
        labels: Labels = ()
        if i < len(line) and line[i] == "{":
            parsed = _parse_labels(line, i + 1)
            if parsed is None:
                out.bad_lines += 1
                continue
            labels, i = parsed
        rest = line[i:].split()
        value = _parse_float(rest[0]) if 1 <= len(rest) <= 2 else None
        if value is None or (len(rest) == 2 and not re.fullmatch(r"-?\d{1,19}", rest[1])):
            out.bad_lines += 1
            continue
        if kept >= MAX_SAMPLES:
            out.truncated = True
            break
        out.samples.setdefault(name, []).append((labels, value))
        kept += 1
    return out


# -- quantiles ------------------------------------------------------------------------

def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count)
    buckets: None without a +Inf bucket or observations; in the +Inf bucket,
    the highest finite bound; else linear inside the bucket."""
    if not 0 <= q <= 1:
        return None
    # One count per bound (a duplicate: the larger); bounds finite but +Inf.
    merged: dict[float, float] = {}
    for bound, count in buckets:
        if (math.isfinite(bound) or bound == math.inf) and not math.isnan(count):
            merged[bound] = max(count, merged.get(bound, count))
    bs = sorted(merged.items())
    if len(bs) < 2 or bs[-1][0] != math.inf:
        return None
    # Counts must not go down with the bound (a broken server, a torn scrape).
    fixed, top = [], 0.0
    for bound, count in bs:
        top = max(top, count)
        fixed.append((bound, top))
    total = fixed[-1][1]
    if not total > 0 or math.isinf(total):
        return None
    rank = q * total
    i = next(i for i, (_, count) in enumerate(fixed) if count >= rank)
    if i == len(fixed) - 1:
        return fixed[-2][0]
    bound, count = fixed[i]
    start, below = (fixed[i - 1][0], fixed[i - 1][1]) if i > 0 else (0.0, 0.0)
    if i == 0 and bound <= 0:
        return bound
    in_bucket = count - below
    if in_bucket <= 0:
        return bound
    value = start + (bound - start) * ((rank - below) / in_bucket)
    return value if math.isfinite(value) else None


def deltas(now: Mapping[Labels, Sequence[tuple[float, float]]],
           before: Mapping[Labels, Sequence[tuple[float, float]]] | None) -> list[tuple[float, float]]:
    """Every child's buckets minus the previous scrape's, summed by bound
    (Grafana's sum(rate(...)) by (le)). A child whose counts went down was
    reset (the member restarted): its counts are taken whole."""
    summed: dict[float, float] = {}
    for labels, buckets in now.items():
        prev = dict(before.get(labels, ())) if before else {}
        diff = [(b, c - prev.get(b, 0.0)) for b, c in buckets]
        if any(d < 0 for _, d in diff):
            diff = list(buckets)
        for b, d in diff:
            summed[b] = summed.get(b, 0.0) + d
    return sorted(summed.items())


@dataclasses.dataclass(frozen=True)
class Quantile:
    seconds: float | None     # the p99; None: nothing observed yet
    observed: int = 0         # observations it is computed from
    held: bool = False        # nothing observed since the last scrape: the last value, kept


@dataclasses.dataclass(frozen=True)
class MemberLatency:
    url: str = ""
    wal_fsync: Quantile | None = None        # None: the member does not export it
    backend_commit: Quantile | None = None
    peer_rtt: Quantile | None = None
    note: str = ""                           # why nothing (or not everything) is shown

    def get(self, family: str) -> Quantile | None:
        return {WAL_FSYNC: self.wal_fsync, BACKEND_COMMIT: self.backend_commit, PEER_RTT: self.peer_rtt}[family]


def latency_between(url: str, now: Exposition, before: Exposition | None,
                    last: MemberLatency | None) -> MemberLatency:
    """The p99s over what the two scrapes' buckets tell (`last` for the
    values held when nothing was observed)."""
    found: dict[str, Quantile | None] = {}
    for family in HISTOGRAMS:
        buckets = now.histogram(family)
        if not buckets:
            found[family] = None
            continue
        d = deltas(buckets, before.histogram(family) if before is not None else None)
        total = max((c for b, c in d if b == math.inf), default=0.0)
        observed = int(total) if math.isfinite(total) and total > 0 else 0
        previous = last.get(family) if last is not None else None
        if before is None or observed <= 0:
            held = previous.seconds if previous is not None else None
            found[family] = Quantile(held, 0, held=held is not None)
            continue
        found[family] = Quantile(quantile(QUANTILE, d), observed)
    note = ""
    if all(v is None for v in found.values()):
        note = "metrics: none of etcd's latency histograms"
    return MemberLatency(url, found[WAL_FSYNC], found[BACKEND_COMMIT], found[PEER_RTT], note)


# -- fetching ---------------------------------------------------------------------------

class FetchError(Exception):
    """One line saying why a scrape gave nothing."""


def _target(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) metrics URL; ValueError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)   # .port raises ValueError itself
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    if parts.query:
        path += "?" + parts.query
    return parts.scheme, parts.hostname, port, path


def _dechunk(body: bytes) -> bytes:
    out, i = bytearray(), 0
    while True:
        j = body.find(b"\r\n", i)
        if j < 0:
            raise FetchError("metrics: broken chunked answer")
        size_text = body[i:j].split(b";")[0].strip()
        if not size_text or len(size_text) > 16 or not re.fullmatch(rb"[0-9a-fA-F]+", size_text):
            raise FetchError("metrics: broken chunked answer")
        size = int(size_text, 16)
        if size == 0:
            return bytes(out)
        out += body[j + 2:j + 2 + size]
        if len(out) > MAX_BODY or j + 2 + size > len(body):
            raise FetchError("metrics: broken chunked answer")
        i = j + 4 + size


async def fetch(url: str, *, tls: ssl.SSLContext | None = None, max_body: int | None = None) -> bytes:
    """GET url (HTTP/1.0, no compression): the body of a 200 answer, at most
    max_body (MAX_BODY) bytes. Raises FetchError (or ValueError for the
    URL); the caller sets the deadline."""
    max_body = MAX_BODY if max_body is None else max_body
    scheme, host, port, path = _target(url)
    ctx = None
    if scheme == "https":
        ctx = tls or ssl.create_default_context()
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, limit=MAX_HEAD,
                                                       server_hostname=host if ctx else None)
    except ssl.SSLError as e:   # (an OSError too: first)
        raise FetchError(f"metrics: TLS with {host}:{port}: {e.reason or e}") from None
    except OSError as e:
        raise FetchError(f"metrics: cannot connect to {host}:{port}: {e.strerror or e}") from None
    try:
        netloc = f"[{host}]" if ":" in host else host
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {netloc}:{port}\r\nAccept: text/plain\r\n"
                     f"User-Agent: raftui\r\n\r\n".encode("ascii", "replace"))
        await writer.drain()
        data = bytearray()
        while len(data) <= max_body + MAX_HEAD:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
        else:
            raise FetchError(f"metrics: answer over {max_body:,} bytes")
    except (OSError, ssl.SSLError, EOFError) as e:
        raise FetchError(f"metrics: {type(e).__name__}: {e}") from None
    finally:
        writer.close()
    head, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep or len(head) > MAX_HEAD:
        raise FetchError("metrics: not an HTTP answer")
    lines = head.split(b"\r\n")
    status = lines[0].split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or not status[1].isdigit():
        raise FetchError("metrics: not an HTTP answer")
    if status[1] != b"200":
        reason = status[2][:60].decode("utf-8", "replace") if len(status) > 2 else ""
        raise FetchError(f"metrics: HTTP {status[1][:3].decode('ascii', 'replace')} {reason}".rstrip())
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip().lower()
    if headers.get(b"content-encoding", b"identity") not in (b"identity", b""):
        raise FetchError("metrics: compressed answer")
    if headers.get(b"transfer-encoding") == b"chunked":
        body = _dechunk(body)
    elif b"content-length" in headers and headers[b"content-length"].isdigit():
        body = body[:int(headers[b"content-length"])]
    if len(body) > max_body:
        raise FetchError(f"metrics: answer over {max_body:,} bytes")
    return body


def parse_metrics_urls(text: str, endpoints: Sequence[str]) -> dict[str, str]:
    """--metrics-urls "URL,URL,..." (one per endpoint, same order; an empty
    entry: none for that endpoint) -> {endpoint: URL}. ValueError with one
    line for the operator."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(endpoints):
        raise ValueError(f"--metrics-urls names {len(parts)} URL(s) for {len(endpoints)} endpoint(s)")
    out = {}
    for ep, url in zip(endpoints, parts):
        if url:
            _target(url)
            out[ep] = url
    return out


def ssl_context(tls: TlsFiles | None) -> ssl.SSLContext | None:
    if tls is None:
        return None
    ctx = ssl.create_default_context(cafile=tls.cacert) if tls.cacert else ssl.create_default_context()
    if tls.cert:
        ctx.load_cert_chain(tls.cert, tls.key)
    return ctx


class MetricsPoller:
    """Scrapes each endpoint's metrics URL and keeps the previous scrape to
    take deltas from. `urls`: endpoint -> URL; `derive`: for an endpoint
    without one, try http(s)://<endpoint>/metrics (etcd 3.4 serves /metrics
    on its client URL; raftnode's gRPC port does not), again only every
    DERIVE_RETRY seconds once it failed."""

    def __init__(self, urls: Mapping[str, str] | None = None, *, tls: TlsFiles | None = None,
                 derive: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._urls = dict(urls or {})
        self._derive = derive
        self._tls_files = tls
        self._tls: ssl.SSLContext | None = None
        self._tls_error = ""
        self._clock = clock
        self._prev: dict[str, Exposition] = {}
        self._last: dict[str, MemberLatency] = {}
        self._derive_failed: dict[str, float] = {}

    def set_urls(self, urls: Mapping[str, str]) -> None:
        self._urls = dict(urls)

    def url_of(self, endpoint: str) -> str:
        if endpoint in self._urls:
            return self._urls[endpoint]
        if not self._derive:
            return ""
        failed = self._derive_failed.get(endpoint)
        if failed is not None and self._clock() - failed < DERIVE_RETRY:
            return ""
        return f"{'https' if self._tls_files else 'http'}://{endpoint}/metrics"

    def _context(self) -> ssl.SSLContext | None:
        if self._tls is None and self._tls_files is not None and not self._tls_error:
            try:
                self._tls = ssl_context(self._tls_files)
            except (OSError, ssl.SSLError, ValueError) as e:
                self._tls_error = f"metrics: TLS files: {e}"
        return self._tls

    async def poll(self, endpoints: Sequence[str], deadline: float = POLL_DEADLINE) -> dict[str, MemberLatency]:
        """One scrape of every endpoint at once, each within `deadline`. Never raises."""
        results = await asyncio.gather(*(self._one(ep, deadline) for ep in endpoints), return_exceptions=True)
        out = {}
        for ep, r in zip(endpoints, results):
            if isinstance(r, BaseException):
                if isinstance(r, asyncio.CancelledError):
                    raise r
                r = MemberLatency(note=f"metrics: {type(r).__name__}")
            out[ep] = r
        return out

    async def _one(self, endpoint: str, deadline: float) -> MemberLatency:
        url = self.url_of(endpoint)
        derived = endpoint not in self._urls
        if not url:
            return MemberLatency(note=NO_URL)
        try:
            async with asyncio.timeout(deadline):
                body = await fetch(url, tls=self._context() if url.startswith("https:") else None)
            text = await asyncio.to_thread(parse, body, HISTOGRAMS)
        except (FetchError, ValueError, TimeoutError) as e:
            why = f"metrics: no answer in {deadline:g} s" if isinstance(e, TimeoutError) else str(e)
            if derived:
                self._derive_failed[endpoint] = self._clock()
                return MemberLatency(note=NO_URL)
            self._prev.pop(endpoint, None)
            return MemberLatency(url, note=self._tls_error or why)
        result = latency_between(url, text, self._prev.get(endpoint), self._last.get(endpoint))
        if derived and result.note:
            # Something answered 200 that is not etcd's /metrics: not a metrics URL.
            self._derive_failed[endpoint] = self._clock()
            return MemberLatency(note=NO_URL)
        self._prev[endpoint] = text
        self._last[endpoint] = result
        return result

    async def close(self) -> None:
        self._prev.clear()
        self._last.clear()
