"""The replicated state machine of the simulator: a running hash over every
applied entry. Two replicas that applied the same sequence have the same hash
at every index, which is what state-machine safety asks."""
from __future__ import annotations

import hashlib


class HashStateMachine:
    def __init__(self) -> None:
        self.applied = 0
        self.digest = b""
        self.values: list[bytes] = []  # recent applied payloads, for tests

    def apply(self, index: int, payload: bytes) -> None:
        if index != self.applied + 1:
            raise AssertionError(f"applied out of order: {index} after {self.applied}")
        self.applied = index
        self.digest = hashlib.blake2b(self.digest + payload, digest_size=8).digest()
        if payload:
            self.values.append(payload)

    def snapshot(self) -> bytes:
        return f"{self.applied}:{self.digest.hex()}".encode()

    def restore(self, data: bytes) -> None:
        idx, hexd = data.decode().split(":")
        self.applied = int(idx)
        self.digest = bytes.fromhex(hexd)
        self.values = []
