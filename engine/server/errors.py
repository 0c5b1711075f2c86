"""Conditions the node server decides (no leader, timeouts, membership...).

Like engine/mvcc/errors.py, each carries etcd's exact text; engine/api/errors.py
maps every one to its gRPC code in one table.
"""
from __future__ import annotations

from engine.mvcc.errors import MVCCError


class ServerError(MVCCError):
    pass


class NoLeader(ServerError):
    etcd_message = "etcdserver: no leader"


class NotLeader(ServerError):
    etcd_message = "etcdserver: not leader"


class LeaderChanged(ServerError):
    etcd_message = "etcdserver: leader changed"


class Stopped(ServerError):
    etcd_message = "etcdserver: server stopped"


class Timeout(ServerError):
    etcd_message = "etcdserver: request timed out"


class DeadlineExceeded(ServerError):
    """The request's time ran out before it was proposed (no leader): it was
    never proposed. etcd answers this with its context's error, code
    UNKNOWN (measured, see etcd-compat.md "A member without quorum")."""
    etcd_message = "context deadline exceeded"
    grpc_code_name = "UNKNOWN"


class ApplyFailed(ServerError):
    """A committed request whose apply raised (a bug its content triggers):
    skipped on every member, nothing of it applied. etcd would panic; this
    text is ours."""
    etcd_message = "etcdserver: request could not be applied (skipped on every member)"


class TimeoutDueToLeaderFail(ServerError):
    etcd_message = "etcdserver: request timed out, possibly due to previous leader failure"


class TimeoutWaitAppliedIndex(ServerError):
    etcd_message = "etcdserver: request timed out, waiting for the applied index took too long"


class TooManyRequests(ServerError):
    etcd_message = "etcdserver: too many requests"


class RequestTooLarge(ServerError):
    etcd_message = "etcdserver: request is too large"


class MemberNotFound(ServerError):
    etcd_message = "etcdserver: member not found"


class MemberExists(ServerError):
    etcd_message = "etcdserver: member ID already exist"


class PeerURLExists(ServerError):
    etcd_message = "etcdserver: Peer URLs already exists"


class NotEnoughStartedMembers(ServerError):
    etcd_message = "etcdserver: re-configuration failed due to not enough started members"


class BadURLs(ServerError):
    etcd_message = "etcdserver: given member URLs are invalid"


class MemberNotLearner(ServerError):
    etcd_message = "etcdserver: can only promote a learner member"


class LearnerNotReady(ServerError):
    etcd_message = "etcdserver: can only promote a learner member which is in sync with leader"


class TooManyLearners(ServerError):
    etcd_message = "etcdserver: too many learner members in cluster"


class NotSupportedForLearner(ServerError):
    etcd_message = "etcdserver: rpc not supported for learner"


class BadLeaderTransferee(ServerError):
    etcd_message = "etcdserver: bad leader transferee"


class Unhealthy(ServerError):
    etcd_message = "etcdserver: unhealthy cluster"
