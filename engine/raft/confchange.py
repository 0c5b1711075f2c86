"""Membership configurations, simple and joint, and the changes between them
(thesis §4.1 single-server changes, §4.3 joint consensus; the rules of
etcd-io/raft's confchange package, written here for our sets).

A configuration is pure data (`JointConfig`, frozen sets); a change computes
a new one or refuses with ConfChangeError and leaves nothing changed. The
core (raft.py) then makes its progress map follow the new configuration.

The three ways to change (`apply_change` picks one from the ConfChangeV2):

    simple       one voter added, removed, promoted or demoted at a time
                 (any number of learner-only operations with it); refused in
                 a joint config. Any two majorities of C_old and C_new
                 overlap, so no joint phase is needed (§4.1).
    enter joint  C_old becomes the outgoing set, the changes make C_new;
                 until the leave, every decision needs both majorities. A
                 voter being demoted stays a voter of C_old and waits in
                 learners_next (it cannot be learner and voter at once).
    leave joint  C_old is dropped: its voters that are not in C_new are
                 removed (learners_next become learners).

A v1 ConfChange is a ConfChangeV2 with one change and the Auto transition,
so etcdctl's single changes go through `simple` exactly as before. A change
of node 0 is skipped: the host applies `ConfChange()` for an entry it
refused, which must change nothing.
"""
from __future__ import annotations

import dataclasses

from engine.proto import raft_pb2 as pb
from engine.raft.errors import RaftError


class ConfChangeError(RaftError):
    """The change cannot be made from this configuration (etcd-io/raft's
    confchange errors). Nothing was changed."""


@dataclasses.dataclass(frozen=True)
class JointConfig:
    # Invariants (checked by `check`):
    #   learners ∩ (incoming ∪ outgoing) = ∅
    #   learners_next ⊆ outgoing, learners_next ∩ (incoming ∪ learners) = ∅
    #   not joint (outgoing empty) => learners_next empty and not auto_leave
    incoming: frozenset[int] = frozenset()   # C_new (the only set when not joint)
    outgoing: frozenset[int] = frozenset()   # C_old, while joint
    learners: frozenset[int] = frozenset()
    learners_next: frozenset[int] = frozenset()
    auto_leave: bool = False

    @property
    def joint(self) -> bool:
        return bool(self.outgoing)

    def voters(self) -> frozenset[int]:
        """Every member whose vote counts in some majority."""
        return self.incoming | self.outgoing

    def tracked(self) -> frozenset[int]:
        """Every member the leader replicates to."""
        return self.incoming | self.outgoing | self.learners

    def is_singleton(self, nid: int) -> bool:
        return self.incoming == {nid} and not self.outgoing

    def __str__(self) -> str:
        """etcd-io/raft's text: voters=(2 3)&&(1 2 3) learners=(4) learners_next=(1) autoleave"""
        def ids(s):
            return "(" + " ".join(str(i) for i in sorted(s)) + ")"
        out = "voters=" + ids(self.incoming)
        if self.joint:
            out += "&&" + ids(self.outgoing)
        if self.learners:
            out += " learners=" + ids(self.learners)
        if self.learners_next:
            out += " learners_next=" + ids(self.learners_next)
        if self.auto_leave:
            out += " autoleave"
        return out

    def conf_state(self) -> pb.ConfState:
        return pb.ConfState(voters=sorted(self.incoming), learners=sorted(self.learners),
                            voters_outgoing=sorted(self.outgoing),
                            learners_next=sorted(self.learners_next), auto_leave=self.auto_leave)

    @classmethod
    def from_conf_state(cls, cs: pb.ConfState) -> JointConfig:
        cfg = cls(frozenset(cs.voters), frozenset(cs.voters_outgoing), frozenset(cs.learners),
                  frozenset(cs.learners_next), cs.auto_leave)
        cfg.check()
        return cfg

    def check(self) -> None:
        both = self.learners & self.voters()
        if both:
            raise ConfChangeError(f"{sorted(both)} are learners and voters at once")
        if not self.learners_next <= self.outgoing:
            raise ConfChangeError(f"{sorted(self.learners_next - self.outgoing)} are in "
                                  "learners_next but not outgoing voters")
        if self.learners_next & (self.incoming | self.learners):
            raise ConfChangeError("learners_next overlaps incoming voters or learners")
        if not self.joint and (self.learners_next or self.auto_leave):
            raise ConfChangeError("learners_next and auto_leave need a joint config")


# -- what a ConfChangeV2 asks for ------------------------------------------------------

def as_v2(cc: pb.ConfChange | pb.ConfChangeV2) -> pb.ConfChangeV2:
    """A v1 change as the ConfChangeV2 that does the same (etcd-io/raft AsV2)."""
    if isinstance(cc, pb.ConfChangeV2):
        return cc
    return pb.ConfChangeV2(changes=[pb.ConfChangeSingle(type=cc.type, node_id=cc.node_id)],
                           context=cc.context)


def leaves_joint(cc: pb.ConfChangeV2) -> bool:
    """An empty ConfChangeV2 (Auto, no changes; context aside) leaves."""
    return cc.transition == pb.ConfChangeTransitionAuto and not cc.changes


def enters_joint(cc: pb.ConfChangeV2) -> tuple[bool, bool]:
    """(enters a joint config?, leaves it automatically?). More than one
    change with Auto uses joint consensus too, auto-left: that covers
    learner-only batches as well, as in etcd-io/raft."""
    if cc.transition == pb.ConfChangeTransitionAuto and len(cc.changes) <= 1:
        return False, False
    if cc.transition not in (pb.ConfChangeTransitionAuto, pb.ConfChangeTransitionJointImplicit,
                             pb.ConfChangeTransitionJointExplicit):
        raise ConfChangeError(f"unknown transition {cc.transition}")
    return True, cc.transition != pb.ConfChangeTransitionJointExplicit


def decode(entry: pb.Entry) -> pb.ConfChange | pb.ConfChangeV2:
    """The change an EntryConfChange / EntryConfChangeV2 carries. Raises
    ConfChangeError for bytes that are none (a forwarded proposal is a
    peer's data)."""
    cc = pb.ConfChangeV2() if entry.type == pb.EntryConfChangeV2 else pb.ConfChange()
    try:
        cc.ParseFromString(entry.data)
    except Exception as e:  # google.protobuf.message.DecodeError
        raise ConfChangeError(f"undecodable conf change: {e}") from None
    return cc


def is_conf_change(entry: pb.Entry) -> bool:
    return entry.type in (pb.EntryConfChange, pb.EntryConfChangeV2)


# -- the changes ------------------------------------------------------------------------

class _Sets:
    """Mutable working copy of a JointConfig while a change list is applied."""

    def __init__(self, cfg: JointConfig) -> None:
        self.incoming = set(cfg.incoming)
        self.outgoing = set(cfg.outgoing)
        self.learners = set(cfg.learners)
        self.learners_next = set(cfg.learners_next)
        # Ids dropped from tracking and tracked again within this change:
        # their progress must start afresh (a new process may own the id).
        self.fresh: set[int] = set()
        self._dropped: set[int] = set()

    def tracked(self, nid: int) -> bool:
        return nid in self.incoming or nid in self.outgoing or nid in self.learners

    def _track(self, nid: int) -> None:
        if nid in self._dropped:
            self.fresh.add(nid)

    def make_voter(self, nid: int) -> None:
        if not self.tracked(nid):
            self._track(nid)
        self.learners.discard(nid)
        self.learners_next.discard(nid)
        self.incoming.add(nid)

    def make_learner(self, nid: int) -> None:
        if nid in self.learners:
            return
        if not self.tracked(nid):
            self._track(nid)
            self.learners.add(nid)
            return
        self.incoming.discard(nid)
        self.learners_next.discard(nid)
        if nid in self.outgoing:
            # Still a voter of C_old: becomes a learner when C_old goes.
            self.learners_next.add(nid)
        else:
            self.learners.add(nid)

    def remove(self, nid: int) -> None:
        if not self.tracked(nid):
            return
        self.incoming.discard(nid)
        self.learners.discard(nid)
        self.learners_next.discard(nid)
        if nid not in self.outgoing:
            self._dropped.add(nid)  # otherwise tracked until the leave

    def apply(self, changes) -> None:
        for ch in changes:
            if ch.node_id == 0:
                continue  # refused by the host: changes nothing (etcd-io/raft)
            if ch.type == pb.ConfChangeAddNode:
                self.make_voter(ch.node_id)
            elif ch.type == pb.ConfChangeAddLearnerNode:
                self.make_learner(ch.node_id)
            elif ch.type == pb.ConfChangeRemoveNode:
                self.remove(ch.node_id)
            elif ch.type == pb.ConfChangeUpdateNode:
                pass  # the host's business (addresses); no membership change
            else:
                raise ConfChangeError(f"unexpected conf type {ch.type}")
        if not self.incoming:
            raise ConfChangeError("removed all voters")

    def result(self, auto_leave: bool) -> JointConfig:
        cfg = JointConfig(frozenset(self.incoming), frozenset(self.outgoing),
                          frozenset(self.learners), frozenset(self.learners_next),
                          auto_leave and bool(self.outgoing))
        cfg.check()
        return cfg


def enter_joint(cfg: JointConfig, auto_leave: bool, changes) -> tuple[JointConfig, set[int]]:
    if cfg.joint:
        raise ConfChangeError("config is already joint")
    if not cfg.incoming:
        # An empty C_old would make every majority of it trivial.
        raise ConfChangeError("can't make a zero-voter config joint")
    s = _Sets(cfg)
    s.outgoing = set(cfg.incoming)
    s.apply(changes)
    return s.result(auto_leave), s.fresh


def leave_joint(cfg: JointConfig) -> tuple[JointConfig, set[int]]:
    if not cfg.joint:
        raise ConfChangeError("can't leave a non-joint config")
    new = JointConfig(cfg.incoming, frozenset(), cfg.learners | cfg.learners_next)
    new.check()
    return new, set()


def simple(cfg: JointConfig, changes) -> tuple[JointConfig, set[int]]:
    if cfg.joint:
        raise ConfChangeError("can't apply simple config change in joint config")
    s = _Sets(cfg)
    s.apply(changes)
    if len(set(cfg.incoming) ^ s.incoming) > 1:
        # Two majorities of configs two voters apart may not overlap.
        raise ConfChangeError("more than one voter changed without entering joint config")
    return s.result(False), s.fresh


def apply_change(cfg: JointConfig, cc: pb.ConfChange | pb.ConfChangeV2) -> tuple[JointConfig, set[int]]:
    """The configuration after `cc`, and the ids whose progress must be new
    although they were tracked before. Raises ConfChangeError."""
    v2 = as_v2(cc)
    if leaves_joint(v2):
        return leave_joint(cfg)
    joint, auto = enters_joint(v2)
    if joint:
        return enter_joint(cfg, auto, v2.changes)
    return simple(cfg, v2.changes)


# -- text -------------------------------------------------------------------------------

_LETTER = {pb.ConfChangeAddNode: "v", pb.ConfChangeAddLearnerNode: "l",
           pb.ConfChangeRemoveNode: "r", pb.ConfChangeUpdateNode: "u"}
_TRANSITION = {pb.ConfChangeTransitionAuto: "", pb.ConfChangeTransitionJointImplicit: " implicit",
               pb.ConfChangeTransitionJointExplicit: " explicit"}


def describe_changes(cc: pb.ConfChange | pb.ConfChangeV2) -> str:
    """etcd-io/raft's short text: "v4 r1 explicit" (v voter, l learner,
    r remove, u update), "leave-joint" for the empty change."""
    v2 = as_v2(cc)
    if leaves_joint(v2):
        return "leave-joint"
    text = " ".join(f"{_LETTER.get(c.type, '?')}{c.node_id}" for c in v2.changes)
    return text + _TRANSITION.get(v2.transition, f" transition={v2.transition}")


def parse_changes(text: str) -> pb.ConfChangeV2:
    """The inverse of describe_changes for scripts: "v4 r1 explicit"."""
    words = text.split()
    cc = pb.ConfChangeV2()
    types = {v: k for k, v in _LETTER.items()}
    for w in words:
        if w == "implicit":
            cc.transition = pb.ConfChangeTransitionJointImplicit
        elif w == "explicit":
            cc.transition = pb.ConfChangeTransitionJointExplicit
        elif w == "leave-joint":
            pass
        else:
            cc.changes.append(pb.ConfChangeSingle(type=types[w[0]], node_id=int(w[1:])))
    return cc
