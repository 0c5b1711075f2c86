"""etcd's Cluster service: membership changes as raft ConfChange entries.

Peer URLs are checked as etcd's types.NewURLs does (engine.transport.urls),
in MemberAdd and, stricter than etcd 3.4, in MemberUpdate.

The checks etcd makes (etcdserver/server.go: mayAddMember, mayRemoveMember,
mayPromoteMember, isLearnerReady; membership's ValidateConfigurationChange)
are made here, against this member's member table, before proposing.
(etcd validates once more when applying; our apply trusts the proposer, so
two racing changes on different members are not caught.)

Responses carry a header without a revision, like etcd 3.4's.
"""
from __future__ import annotations

import asyncio
import hashlib
import time

from engine.proto import internal_pb2, raft_pb2, rpc_pb2, rpc_pb2_grpc
from engine.server import errors as server_errors
from engine.server.kvserver import KVServer
from engine.server.membership import MemberRecord
from engine.transport.urls import URLError, new_urls

from .auth import TOKEN_KEYS, require_root
from .errors import abort
from .forward import LeaderLink
from .gate import check, checked, request_timeout

# A member counts as connected only after this long (etcd's HealthInterval).
HEALTH_INTERVAL = 5.0
MAX_LEARNERS = 1
LEARNER_READY_PERCENT = 0.9


def parse_peer_urls(urls) -> list[str]:
    """etcd's types.NewURLs (engine.transport.urls.new_urls): at least one;
    scheme http, https, unix or unixs; host:port; no path. Returns them
    trimmed, scheme lower-cased, sorted (what etcd stores and answers with);
    raises BadURLs ("etcdserver: given member URLs are invalid").

    A URL that passes but cannot be dialled (https without peer TLS, a unix
    socket, port 0) is accepted, as etcd accepts it: that member is simply
    unreachable."""
    try:
        return new_urls(list(urls))
    except URLError:
        raise server_errors.BadURLs() from None


def new_member_id(peer_urls: list[str], now: float) -> int:
    """etcd's membership.NewMember: sha1(sorted peer URLs + cluster name ("")
    + unix seconds), first 8 bytes big-endian."""
    b = "".join(sorted(peer_urls)).encode() + str(int(now)).encode()
    return int.from_bytes(hashlib.sha1(b).digest()[:8], "big")


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, server: KVServer, link: LeaderLink) -> None:
        self.server = server
        self.link = link

    def _header(self) -> rpc_pb2.ResponseHeader:
        return self.server.new_header()

    def _members(self) -> list[rpc_pb2.Member]:
        return [m.to_pb() for m in self.server.members()]

    async def MemberList(self, request, context):
        await checked(self.server, context)
        return rpc_pb2.MemberListResponse(header=self._header(), members=self._members())

    async def MemberAdd(self, request: rpc_pb2.MemberAddRequest, context):
        server = self.server
        try:
            check(server, context)
            await require_root(server, context)   # etcd's checkMembershipOperationPermission
            urls = parse_peer_urls(list(request.peerURLs))
            mid = new_member_id(urls, time.time())
            member = rpc_pb2.Member(ID=mid, peerURLs=urls, isLearner=request.isLearner)
            if not request.isLearner and not self._ready_to_add_voter():
                raise server_errors.NotEnoughStartedMembers()
            if not self._connected_to_all_voters():
                raise server_errors.Unhealthy()
            self._validate_add(member)
            cc = raft_pb2.ConfChange(
                type=raft_pb2.ConfChangeAddLearnerNode if request.isLearner else raft_pb2.ConfChangeAddNode,
                node_id=mid, context=_context(member))
            await server.propose_conf_change(cc, request_timeout(server, context))
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.MemberAddResponse(header=self._header(), member=member, members=self._members())

    async def MemberRemove(self, request: rpc_pb2.MemberRemoveRequest, context):
        server = self.server
        try:
            check(server, context)
            await require_root(server, context)   # etcd's checkMembershipOperationPermission
            mid = request.ID
            rec = server.member(mid)
            if rec is None:
                raise server_errors.MemberNotFound()
            if not rec.is_learner:
                self._may_remove_voter(mid)
            cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeRemoveNode, node_id=mid,
                                     context=_context(rpc_pb2.Member(ID=mid)))
            await server.propose_conf_change(cc, request_timeout(server, context))
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.MemberRemoveResponse(header=self._header(), members=self._members())

    async def MemberUpdate(self, request: rpc_pb2.MemberUpdateRequest, context):
        server = self.server
        try:
            check(server, context)
            mid = request.ID
            # etcd 3.4 itself does not check these URLs here (its etcdctl
            # does, client-side); a raw client could commit a member URL
            # nobody can parse. We refuse it as MemberAdd does.
            urls = parse_peer_urls(list(request.peerURLs))
            if server.member(mid) is None:
                raise server_errors.MemberNotFound()
            for m in server.members():
                if m.id != mid and set(m.peer_urls) & set(urls):
                    raise server_errors.PeerURLExists()
            cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeUpdateNode, node_id=mid,
                                     context=_context(rpc_pb2.Member(ID=mid, peerURLs=urls)))
            await server.propose_conf_change(cc, request_timeout(server, context))
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.MemberUpdateResponse(header=self._header(), members=self._members())

    async def MemberPromote(self, request: rpc_pb2.MemberPromoteRequest, context):
        server = self.server
        try:
            check(server, context)
            await require_root(server, context)   # etcd's checkMembershipOperationPermission
            if server.is_leader:
                await self._promote(request.ID, context)
            else:
                # Only the leader knows how far the learner got: ask it.
                await self._forward_promote(request, context)
        except Exception as e:
            await abort(context, e)
        return rpc_pb2.MemberPromoteResponse(header=self._header(), members=self._members())

    async def _promote(self, mid: int, context) -> None:
        server = self.server
        st = server.raft_status()
        pr = st.progress.get(mid)
        if pr is not None:
            leader_match = st.progress[server.member_id].match
            if pr.match < leader_match * LEARNER_READY_PERCENT:
                raise server_errors.LearnerNotReady()
        if not self._ready_to_promote():
            raise server_errors.NotEnoughStartedMembers()
        rec = server.member(mid)
        if rec is None:
            raise server_errors.MemberNotFound()
        if not rec.is_learner:
            raise server_errors.MemberNotLearner()
        ctx = internal_pb2.ConfChangeContext(member=rpc_pb2.Member(ID=mid), promote=True)
        cc = raft_pb2.ConfChange(type=raft_pb2.ConfChangeAddNode, node_id=mid,
                                 context=ctx.SerializeToString())
        await server.propose_conf_change(cc, request_timeout(server, context))

    async def _forward_promote(self, request, context) -> None:
        server = self.server
        timeout = request_timeout(server, context)
        deadline = time.monotonic() + timeout
        leader = await self.link.wait_leader(timeout)
        stub = rpc_pb2_grpc.ClusterStub(self.link.channel(leader))
        # The caller's token goes along: the leader checks it too.
        token = [(k, v) for k, v in context.invocation_metadata() or () if k in TOKEN_KEYS]
        await stub.MemberPromote(request, metadata=token, timeout=max(0.0, deadline - time.monotonic()))
        # Answer with our table once the promotion reached us too.
        while self._is_learner(request.ID) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def _is_learner(self, mid: int) -> bool:
        rec = self.server.member(mid)
        return rec is not None and rec.is_learner

    # -- etcd's safety checks ----------------------------------------------------------

    def _voters(self) -> list[MemberRecord]:
        return [m for m in self.server.members() if not m.is_learner]

    @staticmethod
    def _started(m) -> bool:
        # etcd: a member is started once it published its name.
        return bool(m.name)

    def _ready_to_add_voter(self) -> bool:
        voters = self._voters()
        members = len(voters) + 1
        started = sum(1 for m in voters if self._started(m))
        if started == 1 and members == 2:
            return True  # growing a 1-member cluster (restoring from a backup)
        return started >= members // 2 + 1

    def _ready_to_promote(self) -> bool:
        voters = self._voters()
        members = len(voters) + 1
        started = 1 + sum(1 for m in voters if self._started(m))
        return started >= members // 2 + 1

    def _active_since(self, mid: int) -> float | None:
        return self.server.peer_active_since(mid)

    def _connected_to_all_voters(self) -> bool:
        """etcd's isConnectedFullySince: every other voter connected for a while."""
        cutoff = time.time() - HEALTH_INTERVAL
        for m in self._voters():
            if m.id == self.server.member_id:
                continue
            since = self._active_since(m.id)
            if since is None or since > cutoff:
                return False
        return True

    def _may_remove_voter(self, mid: int) -> None:
        voters = self._voters()
        rest = [m for m in voters if m.id != mid]
        started = sum(1 for m in rest if self._started(m))
        if started < len(rest) // 2 + 1:
            raise server_errors.NotEnoughStartedMembers()
        if mid != self.server.member_id and self._active_since(mid) is None:
            return  # a member that is down is not part of the active quorum
        cutoff = time.time() - HEALTH_INTERVAL
        active = 1  # ourselves
        for m in voters:
            if m.id != self.server.member_id:
                since = self._active_since(m.id)
                if since is not None and since <= cutoff:
                    active += 1
        if active - 1 < 1 + (len(voters) - 1) // 2:
            raise server_errors.Unhealthy()

    def _validate_add(self, member: rpc_pb2.Member) -> None:
        server = self.server
        if server.member(member.ID) is not None:
            raise server_errors.MemberExists()
        if server.was_removed(member.ID):
            raise server_errors.MemberNotFound()  # etcd: ErrIDRemoved answers as "member not found"
        urls = set(member.peerURLs)
        members = server.members()
        for m in members:
            if urls & set(m.peer_urls):
                raise server_errors.PeerURLExists()
        if member.isLearner and sum(1 for m in members if m.is_learner) + 1 > MAX_LEARNERS:
            raise server_errors.TooManyLearners()


def _context(member: rpc_pb2.Member) -> bytes:
    return internal_pb2.ConfChangeContext(member=member).SerializeToString()

