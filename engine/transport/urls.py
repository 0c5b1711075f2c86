"""Peer URLs: what etcd accepts as a member URL, and what we can dial.

Two questions, kept apart on purpose:

- `new_urls(urls)` answers "is this a member URL?" the way etcd 3.4's
  types.NewURLs does (Go's url.Parse, then net.SplitHostPort on the host,
  then "no path"): scheme http, https, unix or unixs; an authority of the
  form host:port (the port may be empty, the host too); no path. Query,
  fragment and userinfo pass, as they do in etcd. It returns the URLs
  trimmed, with the scheme lower-cased, sorted -- what etcd stores and
  answers with. Measured against etcd 3.4.23 (tests/transport/test_urls.py).
- `dial_target(url)` answers "can this transport open a channel to it?":
  http or https with a host and a port in 1..65535. A member URL that is
  valid but not dialable (unix sockets, an empty or zero port, https without
  peer TLS credentials) is a peer that is simply unreachable: the transport
  never raises on it.

Written from Go's documented url.Parse / net.SplitHostPort behaviour; no code
copied.
"""
from __future__ import annotations

import dataclasses
import string

MEMBER_SCHEMES = ("http", "https", "unix", "unixs")
DIAL_SCHEMES = ("http", "https")

_ALNUM = frozenset(string.ascii_letters + string.digits)
_SCHEME_TAIL = frozenset(string.digits + "+-.")
_HEX = frozenset(string.hexdigits)
# Characters Go allows unescaped in a host besides letters and digits.
_HOST_OK = frozenset("!$&'()*+,;=:[]<>\"-_.~")
_USERINFO_OK = frozenset("-._:~!$&'()*+,;=%@")


class URLError(ValueError):
    """Not a member URL (etcd: "given member URLs are invalid")."""


@dataclasses.dataclass(frozen=True)
class ParsedURL:
    scheme: str          # lower-cased
    userinfo: str | None
    host: str            # Go's url.URL.Host: host[:port], brackets kept
    path: str
    query: str | None
    fragment: str | None
    opaque: str = ""

    def string(self) -> str:
        """Go's url.URL.String() for the URLs new_urls accepts."""
        out = f"{self.scheme}:"
        if self.opaque:
            out += self.opaque
        else:
            out += "//"
            if self.userinfo is not None:
                out += self.userinfo + "@"
            out += self.host + self.path
        if self.query is not None:
            out += "?" + self.query
        if self.fragment:
            out += "#" + self.fragment
        return out


def _check_escapes(s: str, what: str) -> None:
    i = 0
    while i < len(s):
        if s[i] == "%":
            if len(s) < i + 3 or s[i + 1] not in _HEX or s[i + 2] not in _HEX:
                raise URLError(f"invalid URL escape in {what}")
            i += 3
        else:
            i += 1


def _valid_optional_port(colon_port: str) -> bool:
    if colon_port == "":
        return True
    return colon_port[0] == ":" and all(c in string.digits for c in colon_port[1:])


def _parse_host(host: str) -> str:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise URLError("missing ']' in host")
        if not _valid_optional_port(host[end + 1:]):
            raise URLError(f"invalid port {host[end + 1:]!r} after host")
    else:
        i = host.rfind(":")
        if i >= 0 and not _valid_optional_port(host[i:]):
            raise URLError(f"invalid port {host[i:]!r} after host")
    i = 0
    while i < len(host):
        c = host[i]
        if c == "%":
            if len(host) < i + 3 or host[i + 1] not in _HEX or host[i + 2] not in _HEX:
                raise URLError("invalid URL escape in host")
            i += 3
            continue
        if ord(c) < 0x80 and c not in _ALNUM and c not in _HOST_OK:
            raise URLError(f"invalid character {c!r} in host name")
        i += 1
    return host


def parse_url(text: str) -> ParsedURL:
    """Go's url.Parse, as far as member URLs need it. Raises URLError."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise URLError("invalid control character in URL")
    text, hash_, frag = text.partition("#")
    fragment = frag if hash_ else None
    if fragment:
        _check_escapes(fragment, "fragment")
    # scheme
    scheme, rest = "", text
    for i, c in enumerate(text):
        if c in _ALNUM and not c.isdigit():
            continue
        if c in _SCHEME_TAIL:
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            scheme, rest = text[:i].lower(), text[i + 1:]
        break
    query = None
    if rest.endswith("?") and rest.count("?") == 1:
        rest, query = rest[:-1], ""
    elif "?" in rest:
        rest, _, query = rest.partition("?")
    if not rest.startswith("/"):
        if scheme:
            return ParsedURL(scheme, None, "", "", query, fragment, opaque=rest)
        if ":" in rest.split("/", 1)[0]:
            raise URLError("first path segment in URL cannot contain colon")
    userinfo, host = None, ""
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        at = authority.rfind("@")
        if at >= 0:
            userinfo = authority[:at]
            if any(c not in _ALNUM and c not in _USERINFO_OK for c in userinfo):
                raise URLError("invalid userinfo")
            host = _parse_host(authority[at + 1:])
        else:
            host = _parse_host(authority)
    _check_escapes(rest, "path")
    return ParsedURL(scheme, userinfo, host, rest, query, fragment)


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's net.SplitHostPort. Raises URLError."""
    i = hostport.rfind(":")
    if i < 0:
        raise URLError("missing port in address")
    j = k = 0
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise URLError("missing ']' in address")
        if end + 1 == len(hostport):
            raise URLError("missing port in address")
        if end + 1 != i:
            if hostport[end + 1] == ":":
                raise URLError("too many colons in address")
            raise URLError("missing port in address")
        host = hostport[1:end]
        j, k = 1, end + 1
    else:
        host = hostport[:i]
        if ":" in host:
            raise URLError("too many colons in address")
    if "[" in hostport[j:]:
        raise URLError("unexpected '[' in address")
    if "]" in hostport[k:]:
        raise URLError("unexpected ']' in address")
    return host, hostport[i + 1:]


def new_url(text: str) -> ParsedURL:
    """One member URL as etcd's types.NewURL checks it. Raises URLError."""
    u = parse_url(text.strip())
    if u.scheme not in MEMBER_SCHEMES:
        raise URLError(f"URL scheme must be http, https, unix, or unixs: {text!r}")
    split_host_port(u.host)
    if u.path:
        raise URLError(f"URL must not contain a path: {text!r}")
    return u


def new_urls(urls) -> list[str]:
    """etcd's types.NewURLs: at least one, each a member URL; returns them
    normalised (trimmed, scheme lower-cased) and sorted. Raises URLError."""
    urls = list(urls)
    if not urls:
        raise URLError("no URLs given")
    return sorted(new_url(u).string() for u in urls)


def dial_target(url: str) -> tuple[str, bool]:
    """'https://host:port' -> ('host:port', True) for a URL this transport can
    open a channel to; raises URLError saying why not otherwise."""
    u = new_url(url)
    if u.scheme not in DIAL_SCHEMES:
        raise URLError(f"{url}: scheme {u.scheme} is not supported by the peer transport")
    host, port = split_host_port(u.host)
    if not host:
        raise URLError(f"{url}: no host")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise URLError(f"{url}: port {port!r} is not in 1..65535")
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{int(port)}", u.scheme == "https"
