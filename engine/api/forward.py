"""Calls this member hands to the leader (lease renewal and time-to-live,
learner promotion): only the leader's lessor keeps time and only the leader
knows how far a learner got. etcd forwards them over its peer HTTP API; we
call the leader's client gRPC API, found through the member table (every
member publishes its client URLs through the log).
"""
from __future__ import annotations

import asyncio
import urllib.parse

import grpc

from engine.server import errors as server_errors
from engine.server.kvserver import KVServer

_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 << 20)]


class LeaderLink:
    """One gRPC channel per leader client URL, made on first use."""

    def __init__(self, server: KVServer) -> None:
        self.server = server
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def wait_leader(self, timeout: float) -> int:
        """The leader's id, waiting up to timeout for one (etcd's waitLeader)."""
        server = self.server
        if not server.leader_id and not await server.wait_leader(timeout):
            raise server_errors.NoLeader()
        return server.leader_id

    def channel(self, leader_id: int) -> grpc.aio.Channel:
        rec = self.server.member(leader_id)
        if rec is None or not rec.client_urls:
            # The leader has not published its client URLs yet.
            raise server_errors.NoLeader()
        url = rec.client_urls[0]
        ch = self._channels.get(url)
        if ch is None:
            ch = self._channels[url] = self._dial(url)
        return ch

    def _dial(self, url: str) -> grpc.aio.Channel:
        parts = urllib.parse.urlsplit(url)
        target = parts.netloc
        if parts.scheme == "https":
            cfg = self.server.config
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(cfg.trusted_ca_file) if cfg.trusted_ca_file else None,
                private_key=_read(cfg.key_file) if cfg.key_file else None,
                certificate_chain=_read(cfg.cert_file) if cfg.cert_file else None)
            return grpc.aio.secure_channel(target, creds, options=_CHANNEL_OPTIONS)
        return grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
