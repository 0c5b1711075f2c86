"""A decoded request header list -> what the call needs, or why the
request is refused: malformed (RFC 9113 8.2-8.3: a stream error, the
handler never runs) or not a gRPC request (a gRPC status)."""
from __future__ import annotations

from .status import DEADLINE_EXCEEDED, HIDDEN_METADATA, INTERNAL, UNIMPLEMENTED, decode_bin, parse_timeout

# RFC 9113 8.2.2: connection-specific fields make a request malformed.
_CONNECTION_FIELDS = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})
_PSEUDO = frozenset({":method", ":scheme", ":path", ":authority"})
MALFORMED = "malformed"


def parse_request(headers):
    """-> (path, timeout seconds or None, metadata tuple, error or None)"""
    path = None
    timeout = None
    method = None
    ctype = ""
    meta = []
    regular = False
    for name, value in headers:
        if not name:
            return None, None, (), MALFORMED
        if name[0] == ":":
            # RFC 9113 8.3: known request pseudo-headers, once each, before the rest.
            if regular or name not in _PSEUDO:
                return None, None, (), MALFORMED
            if name == ":path":
                if path is not None:
                    return None, None, (), MALFORMED
                path = value
            elif name == ":method":
                if method is not None:
                    return None, None, (), MALFORMED
                method = value
            continue
        regular = True
        if name in _CONNECTION_FIELDS or (name == "te" and value != "trailers") or name != name.lower():
            return None, None, (), MALFORMED
        if name == "content-type":
            ctype = value
        elif name == "grpc-timeout":
            timeout = parse_timeout(value)
            # grpc C-core's answers: a bad value fails the call, a zero one
            # has expired before the handler could start.
            if timeout is None:
                return None, None, (), (INTERNAL, "Error parsing 'grpc-timeout' metadata")
            if timeout == 0:
                return None, None, (), (DEADLINE_EXCEEDED, "Deadline Exceeded")
        elif name in HIDDEN_METADATA:
            if name == "grpc-encoding" and value != "identity":
                meta.append((name, value))
        elif name.endswith("-bin"):
            try:
                meta.append((name, decode_bin(value)))
            except ValueError:
                # grpc C-core's answer, word for word
                return None, None, (), (INTERNAL, f"Error parsing '{name}' metadata: illegal base64 encoding")
        else:
            meta.append((name, value))
    error = None
    if method != "POST" or path is None:
        error = (INTERNAL, "not a gRPC request")
    elif not ctype.startswith("application/grpc"):
        error = (UNIMPLEMENTED, f"unsupported content-type {ctype!r}")
    return path, timeout, tuple(meta), error
