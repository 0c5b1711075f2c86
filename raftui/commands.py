"""Every operator command in one table: key, title, help, the form it asks
for, whether it asks for confirmation, and what it runs.

The same table makes the screen's key bindings (each with an id, so users can
remap them with Textual's keymap), the `?` help screen and the command
palette. A command's `run` gets a Context and the form's values and returns
an ActionResult; it never touches widgets.
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import pathlib
import re
import time
from typing import Awaitable, Callable

from raftui.host import ClusterHost, HostError, default_data_dir
from raftui.host.health import log_tail
from raftui.host.learner import add_hosted_learner
from raftui.render import escape, unescape
from raftui.source import ActionResult, ClusterSource, ClusterState, Member, links, recovery, txn

INT64_MAX = 2**63 - 1        # etcd's revisions, lease ids and TTLs are int64
MAX_DELAY_MS = 60_000        # a peer-message delay beyond a minute is an outage, not a delay


@dataclasses.dataclass
class Context:
    source: ClusterSource
    host: ClusterHost | None
    state: ClusterState
    member: Member | None        # the selected member
    key: str                     # the key highlighted in the keys panel
    link: tuple[int, int] | None = None   # (from, to) member ids: the link highlighted in the link matrix


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    label: str
    default: Callable[[Context], str] | str = ""
    placeholder: str = ""
    integer: bool = False
    optional: bool = False
    minimum: int = 0             # integer fields: the range the form accepts
    maximum: int = INT64_MAX
    escapes: bool = False        # keys and values: typed with the escapes the panels show (\xff, \n, \\)

    def check(self, text: str) -> str:
        """"" if `text` is acceptable for this field, else why not (one line)."""
        text = text.strip()
        if not text:
            return "" if self.optional else f"{self.label} is required"
        if not self.integer:
            return ""
        if not _INTEGER.fullmatch(text):
            return f"{self.label}: a whole number, like {max(self.minimum, 1)}"
        value = int(text)
        if value < self.minimum:
            return f"{self.label}: at least {self.minimum}"
        if value > self.maximum:
            return f"{self.label}: at most {self.maximum}"
        return ""


_INTEGER = re.compile(r"[+-]?[0-9]+")

Runner = Callable[[Context, dict], Awaitable[ActionResult]]


@dataclasses.dataclass(frozen=True)
class Command:
    id: str
    key: str
    title: str                   # short: the footer and the palette
    help: str                    # one sentence: `?` and the palette
    run: Runner | None = None    # None: the screen handles it (UI-only commands)
    fields: tuple[Field, ...] = ()
    # The question asked before running ("" asks nothing); a coroutine when it needs the cluster.
    confirm: Callable[[Context, dict], str | Awaitable[str]] | None = None
    needs: str = ""              # "member", "host", "key" (one highlighted in the keys panel), "link"
    footer: bool = False
    group: str = "cluster"
    result_view: str = ""        # "detail": result data in the keys detail table; "whole": one key shown whole;
                                 # "txn": a txn's compares and what they met
    reads: bool = False          # changes nothing anywhere: offered in --readonly mode too


# Textual names some keys; help, the footer and the palette show them as typed.
KEY_SHOWN = {"question_mark": "?", "slash": "/", "exclamation_mark": "!", "colon": ":"}


def key_shown(key: str) -> str:
    """"question_mark" -> "?", "escape,q" -> "escape / q": a key as the operator types it."""
    return " / ".join(KEY_SHOWN.get(k.strip(), k.strip()) for k in key.split(","))


def _member_name(ctx: Context) -> str:
    return ctx.member.label if ctx.member else "?"


def _key_or_selected(ctx: Context) -> str:
    """The highlighted key, as the form shows it (escaped: a key is data, see raftui/render.py;
    a star at its end written \\x2a, or the form would read it as "every key with this prefix")."""
    shown = escape(ctx.key)
    return shown[:-1] + "\\x2a" if shown.endswith("*") else shown


def _int(values: dict, name: str) -> int:
    text = str(values.get(name, "")).strip()
    return int(text) if _INTEGER.fullmatch(text) else 0


def _text(values: dict, name: str) -> str:
    """A key or value field: the form's escapes (\\xff, \\n) turned back into the data."""
    return unescape(values.get(name, ""))


def check_values(cmd: "Command", values: dict) -> str:
    """The first problem with a form's values ("" if none): nothing is sent before this passes."""
    for f in cmd.fields:
        problem = f.check(str(values.get(f.name, "")))
        if problem:
            return problem
    return ""


def split_prefix(typed: str) -> tuple[str, bool]:
    """etcdctl-like convenience: a trailing * typed in a key field means
    "every key with this prefix". Read before the escapes, so `\\x2a` at
    the end is a key that really ends with a star."""
    prefix = typed.endswith("*")
    return unescape(typed[:-1] if prefix else typed), prefix


# ------------------------------------------------------------------ runners

async def _write(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.put(_text(v, "key"), _text(v, "value"), _int(v, "ttl") or None)


async def _delete(ctx: Context, v: dict) -> ActionResult:
    key, prefix = split_prefix(v["key"])
    return await ctx.source.delete(key, prefix)


async def _read(ctx: Context, v: dict) -> ActionResult:
    key, prefix = split_prefix(v["key"])
    return await ctx.source.get(key, _int(v, "revision"), prefix)


async def _view(ctx: Context, v: dict) -> ActionResult:
    """The highlighted key and its value, read now, for showing whole."""
    got = await ctx.source.get(ctx.key)
    if not got.ok:
        return got
    return ActionResult(True, f"read {ctx.key} whole", (got.data or [None])[0])


async def _txn(ctx: Context, v: dict) -> ActionResult:
    try:
        compares = txn.parse_compares(v.get("compares", ""), unescape)
        then = txn.parse_ops(v.get("then", ""), unescape)
        otherwise = txn.parse_ops(v.get("otherwise", ""), unescape)
    except txn.TxnSyntaxError as exc:
        return ActionResult.fail(f"txn: {exc}")
    return await ctx.source.txn(compares, then, otherwise)


async def _history(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.history(_text(v, "key"))


async def _compact(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.compact(_int(v, "revision"))


async def _defrag(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.defrag(ctx.member.id)


async def _transfer(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.move_leader(ctx.member.id)


async def _snapshot(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.snapshot_save(v["path"], ctx.member.id if ctx.member else 0)


async def _add_learner(ctx: Context, v: dict) -> ActionResult:
    url = v.get("peer_url", "").strip()
    plan = getattr(ctx.host, "plan_member", None)
    if url or plan is None:
        if not url:
            return ActionResult.fail("add learner: its peer URL is needed (attach mode starts no process)")
        return await ctx.source.add_learner(url)
    # Host mode: pick ports, tell the cluster, then start the process that joins.
    result, _ = await add_hosted_learner(ctx.source, ctx.host)
    ctx.source.note(result.text, result.ok, "host" if result.ok else "error")
    return result


async def _promote(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.promote(ctx.member.id)


async def _remove(ctx: Context, v: dict) -> ActionResult:
    removed = await ctx.source.remove_member(ctx.member.id)
    name = ctx.member.name
    if not removed.ok or ctx.host is None or name not in ctx.host.names:
        return removed
    # Host mode: the member's process goes too, and cluster.json forgets it.
    try:
        await asyncio.to_thread(ctx.host.remove, name)
    except (HostError, OSError, KeyError) as exc:
        result = ActionResult.fail(f"{removed.text}, but its process was not stopped: {exc}")
    else:
        result = ActionResult(True, f"{removed.text}; stopped its process and dropped it from cluster.json")
    ctx.source.note(result.text, result.ok, "host" if result.ok else "error")
    return result


async def _alarms(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.alarm_list()


async def _disarm(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.alarm_disarm()


def _host_action(verb: str, method: str) -> Runner:
    async def run(ctx: Context, v: dict) -> ActionResult:
        name = ctx.member.name
        try:
            # kill waits for the process to be reaped; keep that off the UI loop.
            await asyncio.to_thread(getattr(ctx.host, method), name)
        except (HostError, OSError, KeyError) as exc:
            result = ActionResult.fail(f"{verb} {name}: {exc}")
        else:
            result = ActionResult(True, f"{verb} {name}")
        ctx.source.note(result.text, result.ok, "host" if result.ok else "error")
        return result
    return run


RESTART_ANSWER_WITHIN = 20.0   # seconds for a restarted member to answer (a WAL replay takes a moment)
RESTART_LOOK_EVERY = 0.2


async def _restart(ctx: Context, v: dict) -> ActionResult:
    """Start a member's process again, and say so only once the member answers.

    A member that answers is running, whoever started it: a second process
    on its data dir would die at once (the WAL is locked), so nothing is
    started. A new process that exits, or does not answer in time, is a
    failed restart, with the end of its log saying why."""
    m = ctx.member
    if await ctx.source.answers(m.id):
        result = ActionResult.fail(f"restart {m.name}: it is running (answers on {m.endpoint}); "
                                   "nothing started")
    else:
        result = await _start_and_wait(ctx, m)
    ctx.source.note(result.text, result.ok, "host" if result.ok else "error")
    return result


async def _start_and_wait(ctx: Context, m: Member) -> ActionResult:
    host = ctx.host
    try:
        await asyncio.to_thread(host.restart, m.name)
    except (HostError, OSError, KeyError) as exc:
        return ActionResult.fail(f"restart {m.name}: {exc}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESTART_ANSWER_WITHIN
    while True:
        if await ctx.source.answers(m.id):
            return ActionResult(True, f"restarted {m.name}: it answers on {m.endpoint}")
        process = host.state(m.name)
        if process not in ("running", "paused") or loop.time() >= deadline:
            why = await asyncio.to_thread(log_tail, host, m.name)
            what = "its process exited" if process not in ("running", "paused") else \
                f"no answer after {RESTART_ANSWER_WITHIN:.0f}s"
            return ActionResult.fail(f"restart {m.name} failed: {what}" + (f"; log: {why}" if why else ""))
        await asyncio.sleep(RESTART_LOOK_EVERY)   # between two looks at a starting process


async def _kill(ctx: Context, v: dict) -> ActionResult:
    m = ctx.member
    if ctx.host.state(m.name) not in ("running", "paused") and await ctx.source.answers(m.id):
        result = ActionResult.fail(f"kill {m.name}: it answers on {m.endpoint} but its process is not one "
                                   "this console runs (started by hand?); stop it by its PID")
        ctx.source.note(result.text, False, "error")
        return result
    return await _host_action("killed", "kill")(ctx, v)


async def _partition(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.partition([[ctx.member.id]])


async def _partition_groups(ctx: Context, v: dict) -> ActionResult:
    names = {unescape(n.strip()) for n in v["group"].split(",") if n.strip()}
    ids = [m.id for m in ctx.state.members if m.name in names]
    if not ids:
        # Escaped once, where the result is shown (the timeline, the toast).
        return ActionResult.fail(f"partition: no member named {', '.join(sorted(names)) or '?'}")
    return await ctx.source.partition([ids])


async def _heal(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.heal()


async def _drop_delay(ctx: Context, v: dict) -> ActionResult:
    return await ctx.source.drop_delay(ctx.member.id, _int(v, "drop"), _int(v, "delay"))


# ----------------------------------------------------- one link (the link matrix)

def _link_now(ctx: Context) -> links.Link:
    src, dst = ctx.link
    return links.matrix(ctx.state).get((src, dst), links.Link(src, dst))


def _link_label(ctx: Context) -> str:
    src, dst = (ctx.state.member(i) for i in ctx.link)
    return f"{src.label if src else '?'} → {dst.label if dst else '?'}"


async def _link_toggle(ctx: Context, v: dict) -> ActionResult:
    src, dst = ctx.link
    result = await ctx.source.link_cut(src, dst, cut=not _link_now(ctx).cut)
    await ctx.source.refresh_faults()      # the matrix shows what the members now say
    return result


async def _link_drop(ctx: Context, v: dict) -> ActionResult:
    result = await ctx.source.link_drop_delay(*ctx.link, drop_percent=_int(v, "drop"))
    await ctx.source.refresh_faults()
    return result


async def _link_delay(ctx: Context, v: dict) -> ActionResult:
    result = await ctx.source.link_drop_delay(*ctx.link, delay_ms=_int(v, "delay"))
    await ctx.source.refresh_faults()
    return result


def _confirm_link_toggle(ctx: Context, v: dict) -> str:
    if _link_now(ctx).cut:
        return ""              # opening a link, like heal, asks nothing
    src, dst = (ctx.state.member(i) for i in ctx.link)
    a, b = (src.label if src else "?"), (dst.label if dst else "?")
    text = (f"Cut {a} → {b} one way? {a}'s messages to {b} are lost; {b}'s to {a} still arrive "
            "(space again opens it, H heals everything).")
    if src is not None and ctx.state.leader_id == src.id:
        text += f" {b} stops hearing the leader and campaigns after an election timeout."
    matrix = dict(links.matrix(ctx.state))
    matrix[ctx.link] = links.Link(*ctx.link, cut=True)
    lost = [m.label for m in (src, dst) if m is not None and not m.is_learner
            and not links.quorum_reached(ctx.state, m.id, matrix)]
    if lost:
        text += f" Then {' and '.join(lost)} no longer talk{'s' if len(lost) == 1 else ''} both ways with a quorum."
    return text


def _confirm_link_value(what: str, unit: str):
    def ask(ctx: Context, v: dict) -> str:
        value = _int(v, what)
        if not value:
            return ""          # clears the link's rule: nothing to ask
        return (f"{'Drop' if what == 'drop' else 'Delay'} {value}{unit} of {_link_label(ctx)}'s messages? "
                "Replication along it slows; heavy loss or delay can cost elections.")
    return ask


def _link_default(what: str) -> Callable[[Context], str]:
    def current(ctx: Context) -> str:
        link = _link_now(ctx)
        return str(round(link.drop * 100)) if what == "drop" else str(link.delay_ms)
    return current


# ------------------------------------------------------------ questions
# Every destructive or disruptive command asks, saying what will happen; No is
# the default (raftui/screens/confirm.py). A question may need the cluster
# first (a delete counts its keys): then it is a coroutine.

async def _confirm_delete(ctx: Context, v: dict) -> str:
    key, prefix = split_prefix(v["key"])
    counted = await ctx.source.count(key, prefix)
    n = f"{counted.data:,}" if counted.ok else "an unknown number of"
    if prefix:
        what = f"every key starting with '{escape(key)}'" if key else "every key in the cluster"
        return (f"Delete {what}: {n} key{'s' if counted.data != 1 else ''}? They are gone from the next "
                "revision on (older revisions keep them until compacted).")
    if counted.ok and not counted.data:
        return f"'{escape(key)}' does not exist; delete anyway (a no-op)?"
    return f"Delete the key '{escape(key)}'? It is gone from the next revision on."


def _quorum_after(ctx: Context, losing: set[int]) -> str:
    """What losing these members (killed, paused, cut off) does to the quorum."""
    voters = [m for m in ctx.state.members if not m.is_learner]
    up = [m for m in voters if m.health == "up" and m.id not in losing]
    need = len(voters) // 2 + 1
    if not voters:
        return ""
    if len(up) < need:
        return f" Only {len(up)} of {len(voters)} voters would be left up: no quorum, writes will fail."
    return f" {len(up)} of {len(voters)} voters stay up (quorum needs {need})."


def _confirm_kill(ctx: Context, v: dict) -> str:
    return (f"kill -9 {_member_name(ctx)}? Its process dies at once, mid-write if need be (s starts it again)."
            + _quorum_after(ctx, {ctx.member.id}))


def _confirm_pause(ctx: Context, v: dict) -> str:
    return (f"Pause {_member_name(ctx)} (SIGSTOP)? It answers nothing until resumed (u); a paused leader "
            "is replaced after an election timeout." + _quorum_after(ctx, {ctx.member.id}))


def _confirm_partition(ctx: Context, v: dict) -> str:
    return (f"Cut {_member_name(ctx)} off from every other member? Its peer messages are dropped until heal (H)."
            + _quorum_after(ctx, {ctx.member.id}))


def _confirm_split(ctx: Context, v: dict) -> str:
    names = {unescape(n.strip()) for n in v["group"].split(",") if n.strip()}
    side = [m for m in ctx.state.members if m.name in names]
    others = [m for m in ctx.state.members if m.name not in names]
    voters = [m for m in ctx.state.members if not m.is_learner]
    need = len(voters) // 2 + 1
    smaller = side if len([m for m in side if not m.is_learner]) < need else others
    return (f"Split {{{', '.join(m.label for m in side) or '?'}}} from {{{', '.join(m.label for m in others)}}}? "
            f"The side without {need} voters ({', '.join(m.label for m in smaller) or 'none'}) cannot commit "
            "until heal (H).")


def _confirm_drop_delay(ctx: Context, v: dict) -> str:
    drop, delay = _int(v, "drop"), _int(v, "delay")
    if not drop and not delay:
        return ""          # clears the member's drop and delay: nothing to ask
    return (f"Drop {drop}% and delay {delay} ms of {_member_name(ctx)}'s peer messages? Replication from and to "
            "it slows; heavy loss or delay can cost elections.")


def _confirm_defrag(ctx: Context, v: dict) -> str:
    return (f"Defragment {_member_name(ctx)}? It rewrites its whole backend and answers nothing meanwhile "
            "(seconds for a large db; its peers carry on).")


def _confirm_transfer(ctx: Context, v: dict) -> str:
    leader = ctx.state.leader
    if leader is not None and ctx.member is not None and leader.id == ctx.member.id:
        return ""          # already the leader: nothing happens
    return (f"Move leadership from {leader.label if leader else '(no leader)'} to {_member_name(ctx)}? "
            "Writes wait for about an election while it takes over.")


def _confirm_add_learner(ctx: Context, v: dict) -> str:
    url = v.get("peer_url", "").strip()
    if url:
        return (f"Add a learner at {escape(url)}? The cluster will expect a member there (it does not vote "
                "until promoted).")
    if getattr(ctx.host, "plan_member", None) is None:
        return ""          # refused by the command itself: attach mode starts no process
    return ("Add a learner? A new local raftnode process starts on free ports and catches up from the leader "
            "(it does not vote until promoted).")


def _confirm_promote(ctx: Context, v: dict) -> str:
    voters = len([m for m in ctx.state.members if not m.is_learner]) + 1
    return (f"Promote {_member_name(ctx)} to voter? The cluster then has {voters} voters and needs "
            f"{voters // 2 + 1} of them for every write.")


def _confirm_remove(ctx: Context, v: dict) -> str:
    hosted = ctx.host is not None and ctx.member is not None and ctx.member.name in ctx.host.names
    return (f"Remove {_member_name(ctx)} from the cluster? It can never rejoin under its id"
            + ("; its process is stopped and its data moved aside." if hosted else ".")
            + _quorum_after(ctx, {ctx.member.id}))


def _confirm_compact(ctx: Context, v: dict) -> str:
    rev, head = int(v["revision"]), ctx.state.revision
    past = (f" It is past the head as last seen ({head}): the members will refuse it "
            "(etcd's 'required revision is a future revision') unless it was reached meanwhile."
            if head and rev > head else "")
    return f"Compact history up to revision {rev}? Older revisions become unreadable.{past}"


def _confirm_guided(ctx: Context, which: str) -> str:
    order = ", ".join(m.label + (" (leader)" if m.id == ctx.state.leader_id else "")
                      for m in recovery.defrag_order(ctx.state)) or "every member"
    if which == "nospace":
        raised = any("NOSPACE" in m.alarms for m in ctx.state.members)
        lead = "" if raised else "No NOSPACE alarm is raised now. "
        return (f"{lead}Recover from NOSPACE? This compacts the history up to revision {ctx.state.revision} (older "
                f"revisions become unreadable), defragments {order} one at a time (each answers nothing while it "
                "runs), disarms the alarms and writes a probe key to check. It stops at the first error.")
    return (f"Defragment every member one at a time: {order}? Each answers nothing while it runs; the next "
            "starts only once it answers again and has caught up. It stops at the first error.")


def _snapshot_path(ctx: Context) -> str:
    """A new file under the cluster's data dir (host mode), else under the per-user data dir."""
    base = getattr(ctx.host, "data_dir", None)
    folder = (pathlib.Path(base) if base else default_data_dir().parent) / "snapshots"
    return str(folder / time.strftime("snapshot-%Y%m%d-%H%M%S.db"))


def _confirm_snapshot(ctx: Context, v: dict) -> str:
    path = os.path.expanduser(v["path"])
    if os.path.exists(path):
        return f"{escape(path)} exists. Overwrite it with a new snapshot?"
    return ""


COMMANDS: tuple[Command, ...] = (
    # --- keys
    Command("write", "w", "Write", "Write a key (key, value, optional lease TTL)", _write, (
        Field("key", "Key", _key_or_selected, "foo", escapes=True),
        Field("value", "Value", "", "bar (may be empty)", optional=True, escapes=True),   # etcd allows b""
        Field("ttl", "Lease TTL (s)", "", "none", integer=True, optional=True),
    ), footer=True, group="keys"),
    Command("delete", "d", "Delete", "Delete a key (end it with * for a prefix)", _delete,
            (Field("key", "Key", _key_or_selected, escapes=True),),
            confirm=_confirm_delete, group="keys"),
    Command("read", "r", "Read@rev", "Read a key or prefix (key*) at a revision", _read, (
        Field("key", "Key", _key_or_selected, "foo or foo*", escapes=True),
        # The current revision shown, to edit down from (0 also means the latest).
        Field("revision", "Revision", lambda ctx: str(ctx.state.revision), "0: latest", integer=True),
    ), footer=True, reads=True, group="keys", result_view="detail"),
    Command("txn", "x", "Txn", "A txn in etcdctl's syntax; shows each compare's actual value and which one failed", _txn, (
                Field("compares", "If (; between compares)", "", 'value("k") = "v"; mod("k") < "10"',
                      optional=True, escapes=True),
                Field("then", "Then (; between ops)", "", "put k v; del k2; get k*", optional=True, escapes=True),
                Field("otherwise", "Else", "", "get k", optional=True, escapes=True),
            ), group="keys", result_view="txn"),
    Command("history", "h", "History", "A key's versions across revisions", _history,
            (Field("key", "Key", _key_or_selected, escapes=True),), reads=True, group="keys", result_view="detail"),
    Command("view", "v", "View", "Show the highlighted key and its value whole (wrapped)", _view,
            needs="key", reads=True, group="keys", result_view="whole"),
    Command("revisions", "R", "Revisions", "Scrub a key or prefix (key*) through revisions: [ ] step, { } changes, g jumps", None, (
                Field("key", "Key", _key_or_selected, "foo or foo*", escapes=True, optional=True),
                Field("revision", "Start at revision", lambda ctx: str(ctx.state.revision), "0: latest",
                      integer=True),
            ), reads=True, group="keys"),
    Command("filter", "slash", "Filter", "Show only keys with a prefix", None,
            (Field("prefix", "Prefix", "", "empty: all keys", optional=True, escapes=True),), reads=True, group="keys"),
    Command("watch", "W", "Watch", "Open a live watch on a key or prefix (key*)", None,
            (Field("key", "Key", _key_or_selected, "foo or foo*", escapes=True),), reads=True, group="keys"),
    Command("compact", "c", "Compact", "Compact the key-value history up to a revision", _compact,
            (Field("revision", "Revision", lambda ctx: str(ctx.state.revision), integer=True, minimum=1),),
            confirm=lambda ctx, v: _confirm_compact(ctx, v),
            group="keys"),
    # --- maintenance
    Command("defrag", "g", "Defrag", "Defragment the selected member's backend", _defrag,
            confirm=_confirm_defrag, needs="member", footer=True, group="maintenance"),
    Command("transfer", "t", "Leader→", "Transfer leadership to the selected member", _transfer,
            confirm=_confirm_transfer, needs="member", group="maintenance"),
    Command("snapshot", "S", "Snapshot", "Save a snapshot of the selected member to a file", _snapshot,
            (Field("path", "File", _snapshot_path),), confirm=_confirm_snapshot, reads=True, group="maintenance"),
    Command("recover", "N", "NOSPACE fix", "NOSPACE recovery: compact, defrag each member (leader last), disarm, check a write", None,
            confirm=lambda ctx, v: _confirm_guided(ctx, "nospace"), group="maintenance"),
    Command("rolling_defrag", "G", "Rolling defrag", "Defrag every member one at a time, the leader last, waiting for each to catch up", None,
            confirm=lambda ctx, v: _confirm_guided(ctx, "rolling"), group="maintenance"),
    Command("alarms", "A", "Alarms", "List the cluster's alarms", _alarms, reads=True, group="maintenance"),
    Command("disarm", "exclamation_mark", "Disarm", "Disarm every alarm", _disarm,
            confirm=lambda ctx, v: ("Disarm every alarm? Writes are accepted again; a db still over its quota "
                                    "raises NOSPACE again." if any(m.alarms for m in ctx.state.members) else
                                    "No alarm is raised now. Send a disarm anyway?"), group="maintenance"),
    # --- membership
    Command("add_learner", "a", "Add learner",
            "Add a learner (host mode: leave the URL empty and a new local member is started)",
            _add_learner,
            (Field("peer_url", "Peer URL", "", "empty: start a new local member (host mode)",
                   optional=True),), confirm=_confirm_add_learner, group="membership"),
    Command("promote", "o", "Promote", "Promote the selected learner to voter", _promote,
            confirm=_confirm_promote, needs="member", group="membership"),
    Command("remove", "X", "Remove", "Remove the selected member from the cluster", _remove,
            confirm=_confirm_remove, needs="member", group="membership"),
    # --- processes (host mode)
    Command("kill", "k", "Kill", "kill -9 the selected member (host mode)", _kill,
            confirm=_confirm_kill, needs="host", footer=True, group="processes"),
    Command("restart", "s", "Restart", "Restart a killed member (host mode)", _restart,
            needs="host", group="processes"),
    Command("pause", "z", "Pause", "Pause the selected member with SIGSTOP (host mode)",
            _host_action("paused", "pause"), confirm=_confirm_pause, needs="host", group="processes"),
    Command("resume", "u", "Resume", "Resume a paused member with SIGCONT (host mode)",
            _host_action("resumed", "resume"), needs="host", group="processes"),
    # --- network faults (raftnode's Fault service)
    Command("partition", "p", "Partition", "Cut the selected member off from all others", _partition,
            confirm=_confirm_partition, needs="member", group="faults"),
    Command("partition_groups", "P", "Split", "Partition the cluster into two groups", _partition_groups,
            (Field("group", "Members of one side", "", "n1,n2"),), confirm=_confirm_split, group="faults"),
    Command("heal", "H", "Heal", "Heal every partition, drop and delay", _heal, group="faults"),
    Command("drop_delay", "f", "Drop/delay", "Drop or delay the selected member's peer messages",
            _drop_delay, (
                Field("drop", "Drop %", "0", integer=True, maximum=100),
                Field("delay", "Delay (ms)", "0", integer=True, maximum=MAX_DELAY_MS),
            ), confirm=_confirm_drop_delay, needs="member", group="faults"),
    Command("links", "L", "Links", "The link matrix: every directed link; space cuts one way, d drop, l delay", None, reads=True, group="faults"),
)

# The link matrix's own keys (raftui/screens/links.py): commands of the table
# (asked, run and reported like every other), with no key on the dashboard.
LINK_COMMANDS: tuple[Command, ...] = (
    Command("link_toggle", "space", "Cut/open link", "Cut the highlighted link one way, or open it",
            _link_toggle, confirm=_confirm_link_toggle, needs="link", group="faults"),
    Command("link_drop", "d", "Link drop", "Drop a share of the highlighted link's messages", _link_drop,
            (Field("drop", "Drop % (this link, this way)", _link_default("drop"), integer=True, maximum=100),),
            confirm=_confirm_link_value("drop", "%"), needs="link", group="faults"),
    Command("link_delay", "l", "Link delay", "Delay the highlighted link's messages", _link_delay,
            (Field("delay", "Delay ms (this link, this way)", _link_default("delay"), integer=True,
                   maximum=MAX_DELAY_MS),),
            confirm=_confirm_link_value("delay", " ms"), needs="link", group="faults"),
)

# Commands only the `:` line runs, with an argument (raftui/scenario and
# raftui/lincheck open their own screens; shown in `?` as typed).
LINE_COMMANDS: tuple[Command, ...] = (
    Command("run", ":run NAME|FILE", "Scenario", "Run a scenario script: a shipped one by name or a file (:run leader-isolation)", None, reads=True, group="scenarios"),
    Command("lincheck", ":lincheck [N] [RATE]", "Live check", "Start or show the live linearizability check: N clients, RATE ops/s (4, 20)", None, reads=True,
            group="scenarios"),
)

BY_ID = {c.id: c for c in COMMANDS + LINK_COMMANDS + LINE_COMMANDS}
