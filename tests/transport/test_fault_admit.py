"""The Fault service asks its admit hook first in every RPC: with auth on,
the member passes one that lets only root in (issue 10: our own services
need root), and a refusal goes out with etcd's auth status."""
from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import message_factory

from engine.auth import errors as auth_errors
from engine.proto import fault_pb2
from engine.transport.fault_service import FaultServicer
from engine.transport.faults import FaultFilter


class _Aborted(Exception):
    pass


class _Context:
    """The servicer's side of a call (unit test of this layer only)."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code, details):
        self.aborted = (code, details)
        raise _Aborted()


async def _refuse(context) -> None:
    raise auth_errors.PermissionDenied()


@pytest.mark.parametrize("rpc", ["Status", "Heal", "Cut", "Drop", "Delay"])
def test_every_rpc_asks_admit_first(rpc):
    faults = FaultFilter()
    svc = FaultServicer(faults, 1, admit=_refuse)
    ctx = _Context()
    request = _any_request(rpc)
    with pytest.raises(_Aborted):
        asyncio.run(getattr(svc, rpc)(request, ctx))
    assert ctx.aborted == auth_errors.status_of(auth_errors.PermissionDenied())
    assert not faults.status().cut and not faults.status().cut_all   # nothing done


def test_admitted_caller_is_served():
    async def allow(context) -> None:
        return None
    faults = FaultFilter()
    svc = FaultServicer(faults, 1, admit=allow)
    st = asyncio.run(svc.Cut(_any_request("Cut"), _Context()))
    assert st.cut_all


def _any_request(rpc: str):
    """A valid request for the RPC (all peers selected where it selects)."""
    desc = fault_pb2.DESCRIPTOR.services_by_name["Fault"].methods_by_name[rpc].input_type
    cls = message_factory.GetMessageClass(desc)
    msg = cls()
    if "all" in desc.fields_by_name:
        msg.all = True
    if "rate" in desc.fields_by_name:
        msg.rate = 0.5
    return msg
