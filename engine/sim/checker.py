"""Safety properties of Raft, checked by the simulator after every step.

Each check raises InvariantViolation naming the property (Raft paper §5.2,
Figure 3) and the evidence, so a failing seed says what broke, not just that
something did.
"""
from __future__ import annotations

from engine.proto import raft_pb2 as pb


class InvariantViolation(AssertionError):
    pass


class SafetyChecker:
    def __init__(self, commit_durability: bool = True) -> None:
        # on_leader_commit is the direct check (a quorum holds a commit index
        # durably before it can leave the leader), with on_elected's count of
        # the votes a leader was elected by; turned off, only the
        # consequences a user would see remain: diverging logs, a changed
        # committed entry, different applied states.
        self.commit_durability = commit_durability
        self.leader_of_term: dict[int, int] = {}   # election safety
        self.committed_term: dict[int, int] = {}   # index -> term of the committed entry
        self.applied_payload: dict[int, bytes] = {}  # index -> what was applied there
        self.applied_digest: dict[int, bytes] = {}   # index -> state-machine hash after it
        self.max_committed = 0
        self.checks = 0
        # (index, term) -> (type, data, term of index-1) of every entry that
        # ever left a node (sent in a MsgApp) or became durable anywhere.
        self.entry_at: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}

    def fail(self, what: str) -> None:
        raise InvariantViolation(what)

    # Election Safety: at most one leader can be elected in a given term.
    def on_leader(self, node: int, term: int) -> None:
        prev = self.leader_of_term.setdefault(term, node)
        if prev != node:
            self.fail(f"election safety: term {term} has leaders {prev} and {node}")

    # Leader Completeness / committed entries never change: every node's log
    # agrees with the committed record up to its commit index.
    def on_commit(self, node: int, log, old_commit: int, new_commit: int) -> None:
        self.checks += 1
        lo = max(old_commit + 1, log.first_index())
        if lo > new_commit:
            return
        for e in log.slice(lo, new_commit + 1):
            t = self.committed_term.setdefault(e.index, e.term)
            if t != e.term:
                self.fail(f"leader completeness: node {node} committed {e.term}/{e.index}, "
                          f"but {t}/{e.index} was committed before")
        self.max_committed = max(self.max_committed, new_commit)

    # Durability: a leader only commits what a majority of its voters hold in
    # stable storage (what survives a crash) -- of each voter set while a
    # joint configuration is in force (C_new and C_old, thesis §4.3).
    def on_leader_commit(self, leader: int, quorums, commit: int, term_of_stable) -> None:
        if commit == 0 or not self.commit_durability:
            return
        want = self.committed_term.get(commit)
        for voters in quorums:
            holders = [v for v in voters if term_of_stable(v, commit) == want]
            if len(holders) < len(voters) // 2 + 1:
                self.fail(f"commit quorum: leader {leader} committed index {commit} held durably "
                          f"only by {holders} of voters {list(voters)} (config {_text(quorums)})")

    # State Machine Safety: all nodes apply the same entry at each index.
    def on_apply(self, node: int, index: int, payload: bytes, digest: bytes) -> None:
        prev = self.applied_payload.setdefault(index, payload)
        if prev != payload:
            self.fail(f"state machine safety: node {node} applied {payload!r} at {index}, "
                      f"another node applied {prev!r}")
        d = self.applied_digest.setdefault(index, digest)
        if d != digest:
            self.fail(f"state machine safety: node {node} has a different state after {index}")

    def on_restore(self, node: int, index: int, digest: bytes) -> None:
        d = self.applied_digest.get(index)
        if d is not None and d != digest:
            self.fail(f"snapshot safety: node {node} restored a state at {index} nobody applied")

    # A leader was elected by a majority of the voters of its config (of
    # each voter set, when joint), and the core counted no vote of a learner
    # or of a non-member.
    def on_elected(self, leader: int, term: int, quorums, learners, counted: dict[int, bool],
                   granted: set[int]) -> None:
        every = {v for q in quorums for v in q}
        bad = [v for v, ok in counted.items() if ok and v not in every]
        if bad:
            self.fail(f"learner vote: {leader} counted votes of non-voters {bad} in term {term} "
                      f"(voters {_text(quorums)}, learners {list(learners)})")
        if not self.commit_durability:
            return  # direct quorum checks off: only visible consequences count
        for voters in quorums:
            got = {v for v in granted if v in voters} | ({leader} & set(voters))
            if len(voters) and len(got) < len(voters) // 2 + 1:
                self.fail(f"election quorum: {leader} leads term {term} with votes of {sorted(got)} "
                          f"of voters {list(voters)} (config {_text(quorums)})")

    # Log Matching, checked on every entry as it leaves a node or becomes
    # durable, so after every step and at O(entries) cost: an (index, term)
    # names one entry (same type and data) and one predecessor term. By
    # induction on the index, two logs made of such entries that share an
    # (index, term) agree on everything below it (§5.3) — the full pairwise
    # comparison (check_log_matching) would cost O(nodes² × log) per step.
    # Entries that never leave a node's memory (lost in a crash before being
    # sent or synced) are not registered: nobody can have seen them.
    def on_entries(self, node: int, entries, prev_term: int | None) -> None:
        for e in entries:
            key = (e.index, e.term)
            got = self.entry_at.get(key)
            if got is None:
                self.entry_at[key] = (e.type, e.data, prev_term)
            else:
                typ, data, prev = got
                if typ != e.type or data != e.data:
                    self.fail(f"log matching: two different entries at {e.term}/{e.index}: "
                              f"{data!r} and {e.data!r} (the second at or from node {node})")
                if prev is not None and prev_term is not None and prev != prev_term:
                    self.fail(f"log matching: entry {e.term}/{e.index} follows term {prev} in one "
                              f"log and term {prev_term} in another (node {node})")
                if prev is None and prev_term is not None:
                    self.entry_at[key] = (typ, data, prev_term)
            prev_term = e.term

    # Log Matching: if two logs hold an entry with the same index and term,
    # they are identical in all entries up to it.
    def check_log_matching(self, logs: dict[int, list[pb.Entry]]) -> None:
        ids = sorted(logs)
        for ai, a in enumerate(ids):
            la = {e.index: e for e in logs[a]}
            for b in ids[ai + 1 :]:
                lb = logs[b]
                # Walk b's log downward from the highest common (index, term);
                # below it everything in both logs must be equal.
                matched = False
                for e in reversed(lb):
                    ea = la.get(e.index)
                    if ea is None:
                        continue
                    if not matched:
                        matched = ea.term == e.term
                        if not matched:
                            continue
                    if ea.term != e.term or ea.data != e.data or ea.type != e.type:
                        self.fail(f"log matching: nodes {a} and {b} share an entry above "
                                  f"{e.index} but differ at {e.index}: {ea.term} vs {e.term}")


def _text(quorums) -> str:
    return "&&".join("(" + " ".join(str(v) for v in q) + ")" for q in quorums)
