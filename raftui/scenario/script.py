"""Scenario scripts: the TOML format, parsed into steps (no I/O, no UI).

A scenario is a TOML file::

    [scenario]
    name = "leader isolation"
    description = "Cut the leader off; the majority elects another; no acknowledged write is lost."
    members = 3                      # at least this many members (host mode starts this many)
    flags = ["--snapshot-count=100"] # host mode only: extra member flags (a short allowed list)

    steps = [
      "wait leader within 10s",
      "put k1 v1",
      "let old = leader",
      "isolate $old",
      "wait leader != $old within 10s",
      "put k2 v2",
      "heal",
      "wait healthy within 15s",
      "assert committed k1",
      { repeat = 3, steps = ["transfer leader to follower", "wait leader within 5s"] },
      { for = "m", in = "each", steps = ["defrag $m"] },
    ]

Each step is one line of text (the grammar is in STEP_HELP), or a loop: an
inline table with `repeat = N` or `for = "var", in = "each" | "followers" |
["n1", "n2"]`, and its own `steps`. `steps` may also sit at the top level
instead of under [scenario].

Members are named by their member names (n1, n2, ... in host mode), `leader`
(the leader when the step runs), `follower` (the first up follower by name),
or a variable `$x` bound by `let x = MEMBER`, `kill MEMBER as x`,
`add learner as x`, or a `for` loop. Groups (partition sides, `each`) take
`[a, b]`, `rest` (every member not on the other side), `followers`, `each`.

Everything here is checked before anything runs: an unknown verb, a bad
duration, a variable used before it is bound, a loop nested too deep or a
scenario of more than MAX_STEPS_RUN steps once its loops are counted is a
ScriptError naming the line and step, never an exception from deeper down.
"""
from __future__ import annotations

import dataclasses
import re
import shlex
import tomllib
from typing import Iterator

MAX_STEPS_RUN = 10_000          # steps executed, loops counted: a scenario is not a load generator
MAX_REPEAT = 1_000
MAX_DEPTH = 4
MAX_DURATION = 600.0            # seconds, for any one `within`, `wait`, `pause`
MAX_MEMBERS = 7
MAX_FILE_BYTES = 1_000_000
DEFAULT_WITHIN = 10.0
MAX_FILL = 512 * 1024 * 1024

# Member flags a scenario may ask a hosted cluster for (both raftnode and etcd
# take them). Anything else is refused: a scenario picks the cluster's shape,
# not where it keeps its data or what it listens on.
ALLOWED_FLAGS = ("--snapshot-count", "--experimental-snapshot-catchup-entries", "--quota-backend-bytes",
                 "--heartbeat-interval", "--election-timeout", "--auto-compaction-retention",
                 "--auto-compaction-mode", "--max-request-bytes")

STEP_HELP = """\
put KEY VALUE [on MEMBER] [expect fail | expect TEXT]   write (expect: refused, or not done within 2s)
delete KEY                                              delete one key
fill KEY until nospace [max SIZE] | fill KEY SIZE       overwrite KEY with 256 KiB values
assert committed KEY                                    KEY holds the value last acknowledged here
assert KEY == VALUE | assert KEY absent                 a linearizable read
assert leader == MEMBER | assert leader != MEMBER
assert alarm NOSPACE | assert no alarm
wait DURATION                                           let time pass (e.g. wait 2s)
wait leader [== MEMBER | != MEMBER] [within DURATION]   until the members agree on such a leader
wait healthy [within DURATION]                          until every member answers and there is a leader
wait caught up [MEMBER | each] [within DURATION]        until applied >= the leader's commit index
wait alarm NOSPACE [within DURATION]
let NAME = MEMBER                                       bind $NAME (e.g. let old = leader)
partition [A, B] | [C, rest]                            cut the two sides apart (Fault service)
isolate MEMBER                                          partition [MEMBER] | [rest]
cut A -> B | uncut A -> B                               one way only: A's messages to B are lost
                                                        (A, B: members or groups; B hears nothing of A)
heal                                                    remove every cut, drop and delay
drop MEMBER|each PERCENT%                               drop that share of its peer messages (0 stops)
delay MEMBER|each Nms                                   delay its peer messages (0 stops)
kill MEMBER [as NAME] | restart MEMBER                  kill -9 / start again (host mode)
pause MEMBER [DURATION] | resume MEMBER                 SIGSTOP (and SIGCONT after DURATION)
transfer leader to MEMBER                               MoveLeader
defrag MEMBER | defrag each                             each: one at a time, the leader last
compact                                                 compact to the current revision
disarm                                                  disarm every alarm
add learner [as NAME] | promote MEMBER                  host mode: start a new member as a learner
note TEXT                                               a line in the report"""


class ScriptError(ValueError):
    """A scenario file that cannot run: the message names the line and step."""


@dataclasses.dataclass(frozen=True)
class Ref:
    """A member named in a step: a member name, `leader`, `follower`, or `$var`."""
    text: str

    @property
    def var(self) -> str | None:
        return self.text[1:] if self.text.startswith("$") else None


def _where(index: int, line: int | None) -> str:
    """How a report names a step or loop: 'step 3 (line 12)'."""
    return f"step {index + 1}" + (f" (line {line})" if line else "")


@dataclasses.dataclass(frozen=True)
class Step:
    index: int                      # position in the script, 0.. in reading order (loops included)
    line: int | None                # 1-based line in the file, when found
    text: str                       # as written
    verb: str
    args: dict
    depth: int = 0

    @property
    def where(self) -> str:
        return _where(self.index, self.line)


@dataclasses.dataclass(frozen=True)
class Loop:
    index: int
    line: int | None
    text: str                       # "repeat 3" / "for m in each"
    body: tuple["Step | Loop", ...]
    repeat: int = 0                 # >0: repeat loop
    var: str = ""                   # for loop variable
    over: tuple[str, ...] | str = ()   # for loop: "each" / "followers" / member refs
    depth: int = 0

    @property
    def where(self) -> str:
        return _where(self.index, self.line)


@dataclasses.dataclass(frozen=True)
class Script:
    name: str
    description: str
    members: int
    flags: tuple[str, ...]
    steps: tuple[Step | Loop, ...]
    source: str = ""                # file path or library name

    def flat(self) -> list[Step | Loop]:
        """Every step and loop header in reading order (what a UI lists)."""
        out: list[Step | Loop] = []

        def walk(items):
            for s in items:
                out.append(s)
                if isinstance(s, Loop):
                    walk(s.body)
        walk(self.steps)
        return out

    def needs(self) -> dict[str, list[Step]]:
        """Steps by what they need: "faults" (raftnode's Fault service), "host" (local processes)."""
        out: dict[str, list[Step]] = {"faults": [], "host": []}
        for s in self.flat():
            if isinstance(s, Step):
                if s.verb in FAULT_VERBS:
                    out["faults"].append(s)
                if s.verb in HOST_VERBS:
                    out["host"].append(s)
        return out

    def member_names(self) -> list[tuple[Step | Loop, str]]:
        """(step, name) for every literal member name used (checked against the cluster before running)."""
        out = []
        for s in self.flat():
            for r in _refs_of(s):
                if r.var is None and r.text not in KEYWORDS:
                    out.append((s, r.text))
        return out


FAULT_VERBS = {"partition", "heal", "drop", "delay", "cut"}
HOST_VERBS = {"kill", "restart", "pause", "resume", "add_learner"}
KEYWORDS = {"leader", "follower", "rest", "each", "followers"}

# ---------------------------------------------------------------- values

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SIZE = re.compile(r"^(\d+)(B|KiB|MiB|GiB|kB|MB|GB)?$", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_VAR = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "kb": 1000, "mb": 1000 ** 2,
               "gb": 1000 ** 3}


def duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (like 500ms, 3s, 2m)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    if value > MAX_DURATION:
        raise ValueError(f"{text} is longer than the {MAX_DURATION:.0f}s a step may take")
    return value


def size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (like 16MiB, 512KiB)")
    value = int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]
    if value > MAX_FILL:
        raise ValueError(f"{text} is more than the {MAX_FILL // 2 ** 20} MiB a fill may write")
    return value


def ref(text: str) -> Ref:
    if text.startswith("$"):
        if not _VAR.match(text[1:]):
            raise ValueError(f"{text!r} is not a variable ($ and lower-case letters, digits, _)")
        return Ref(text)
    if not _NAME.match(text) or text in ("rest", "each", "followers"):
        raise ValueError(f"{text!r} is not a member (a name, leader, follower or $variable)")
    return Ref(text)


def group(text: str) -> tuple[Ref, ...]:
    """`[a, b]`, or a bare word for one member/keyword."""
    t = text.strip()
    if t.startswith("["):
        if not t.endswith("]"):
            raise ValueError(f"{text!r}: a group is [name, name, ...]")
        items = [x.strip() for x in t[1:-1].split(",") if x.strip()]
        if not items:
            raise ValueError("an empty group")
    else:
        items = [t]
    out = []
    for x in items:
        out.append(Ref(x) if x in ("rest", "each", "followers") else ref(x))
    if len(out) > MAX_MEMBERS * 2:
        raise ValueError("too many members in one group")
    return tuple(out)


def _within(words: list[str]) -> tuple[list[str], float]:
    if len(words) >= 2 and words[-2] == "within":
        return words[:-2], duration(words[-1])
    return words, DEFAULT_WITHIN


def _member_or_each(word: str) -> Ref:
    return Ref("each") if word == "each" else ref(word)


# ---------------------------------------------------------------- steps


def parse_step(text: str) -> tuple[str, dict]:
    """One step's text -> (verb, arguments). ValueError with the reason."""
    if not isinstance(text, str):
        raise ValueError("a step is a string or a loop table")
    t = text.strip()
    if not t:
        raise ValueError("an empty step")
    if len(t) > 4096:
        raise ValueError("a step longer than 4096 characters")
    if t.startswith("partition"):
        m = re.match(r"^partition\s+(\[[^\]]*\]|\S+)\s*\|\s*(\[[^\]]*\]|\S+)$", t)
        if not m:
            raise ValueError("partition wants two sides: partition [n1] | [n2, n3]")
        a, b = group(m.group(1)), group(m.group(2))
        if any(r.text == "rest" for r in a) and any(r.text == "rest" for r in b):
            raise ValueError("only one side of a partition may be `rest`")
        return "partition", {"a": a, "b": b}
    m = re.match(r"^(un)?cut\s+(\[[^\]]*\]|[^\s\[]+)\s*->\s*(\[[^\]]*\]|\S+)$", t)
    if m:
        src, dst = group(m.group(2)), group(m.group(3))
        if any(r.text == "rest" for r in src) and any(r.text == "rest" for r in dst):
            raise ValueError("only one end of a cut may be `rest`")
        return "cut", {"a": src, "b": dst, "cut": not m.group(1)}
    if re.match(r"^(un)?cut\b", t):
        raise ValueError("usage: cut A -> B | uncut A -> B (A, B: a member, [a, b], rest)")
    try:
        words = shlex.split(t)
    except ValueError as exc:
        raise ValueError(f"cannot split the step into words: {exc}") from None
    verb, rest = words[0], words[1:]

    def arity(n: int, usage: str) -> None:
        if len(rest) != n:
            raise ValueError(f"usage: {usage}")

    if verb == "put":
        if len(rest) < 2:
            raise ValueError("usage: put KEY VALUE [on MEMBER] [expect fail | expect TEXT]")
        key, value, tail = rest[0], rest[1], rest[2:]
        on, expect = None, None
        while tail:
            if tail[0] == "on" and len(tail) >= 2:
                on, tail = ref(tail[1]), tail[2:]
            elif tail[0] == "expect" and len(tail) >= 2:
                expect, tail = " ".join(tail[1:]), []
            else:
                raise ValueError(f"put: unexpected {tail[0]!r} (usage: put KEY VALUE [on MEMBER] [expect fail])")
        return "put", {"key": key, "value": value, "on": on, "expect": expect}
    if verb == "delete":
        arity(1, "delete KEY")
        return "delete", {"key": rest[0]}
    if verb == "fill":
        if len(rest) >= 3 and rest[1:3] == ["until", "nospace"]:
            cap = 256 * 1024 * 1024
            if len(rest) == 5 and rest[3] == "max":
                cap = size(rest[4])
            elif len(rest) != 3:
                raise ValueError("usage: fill KEY until nospace [max SIZE]")
            return "fill", {"key": rest[0], "until_nospace": True, "bytes": cap}
        arity(2, "fill KEY SIZE | fill KEY until nospace [max SIZE]")
        return "fill", {"key": rest[0], "until_nospace": False, "bytes": size(rest[1])}
    if verb == "assert":
        if rest[:1] == ["committed"]:
            arity(2, "assert committed KEY")
            return "assert_committed", {"key": rest[1]}
        if rest[:1] == ["leader"] and len(rest) == 3 and rest[1] in ("==", "!="):
            return "assert_leader", {"op": rest[1], "who": ref(rest[2])}
        if rest[:1] == ["alarm"]:
            arity(2, "assert alarm NOSPACE")
            return "assert_alarm", {"alarm": rest[1].upper(), "present": True}
        if rest == ["no", "alarm"]:
            return "assert_alarm", {"alarm": "", "present": False}
        if len(rest) == 3 and rest[1] == "==":
            return "assert_value", {"key": rest[0], "value": rest[2]}
        if len(rest) == 2 and rest[1] == "absent":
            return "assert_value", {"key": rest[0], "value": None}
        raise ValueError("usage: assert committed KEY | assert KEY == VALUE | assert KEY absent | "
                         "assert leader ==/!= MEMBER | assert alarm NOSPACE | assert no alarm")
    if verb == "wait":
        if len(rest) == 1 and _DURATION.match(rest[0]):
            return "sleep", {"seconds": duration(rest[0])}
        words, within = _within(rest)
        if words[:1] == ["leader"]:
            if len(words) == 1:
                return "wait_leader", {"op": None, "who": None, "within": within}
            if len(words) == 3 and words[1] in ("==", "!="):
                return "wait_leader", {"op": words[1], "who": ref(words[2]), "within": within}
        elif words == ["healthy"]:
            return "wait_healthy", {"within": within}
        elif words[:2] == ["caught", "up"] and len(words) <= 3:
            who = _member_or_each(words[2]) if len(words) == 3 else Ref("each")
            return "wait_caught_up", {"who": who, "within": within}
        elif words[:1] == ["alarm"] and len(words) == 2:
            return "wait_alarm", {"alarm": words[1].upper(), "within": within}
        raise ValueError("usage: wait DURATION | wait leader [==/!= MEMBER] [within D] | wait healthy "
                         "[within D] | wait caught up [MEMBER|each] [within D] | wait alarm NOSPACE [within D]")
    if verb == "let":
        if len(rest) != 3 or rest[1] != "=" or not _VAR.match(rest[0]):
            raise ValueError("usage: let NAME = MEMBER (NAME: lower-case letters, digits, _)")
        return "let", {"name": rest[0], "who": ref(rest[2])}
    if verb == "isolate":
        arity(1, "isolate MEMBER")
        return "partition", {"a": (ref(rest[0]),), "b": (Ref("rest"),)}
    if verb == "heal":
        arity(0, "heal")
        return "heal", {}
    if verb in ("drop", "delay"):
        arity(2, f"{verb} MEMBER|each {'PERCENT%' if verb == 'drop' else 'Nms'}")
        who = _member_or_each(rest[0])
        if verb == "drop":
            m = re.match(r"^(\d{1,3})%?$", rest[1])
            if not m or int(m.group(1)) > 100:
                raise ValueError(f"{rest[1]!r} is not a percentage 0-100")
            return "drop", {"who": who, "percent": int(m.group(1))}
        ms = duration(rest[1] if not rest[1].isdigit() else rest[1] + "ms")
        return "delay", {"who": who, "ms": int(round(ms * 1000))}
    if verb == "kill":
        if len(rest) == 3 and rest[1] == "as" and _VAR.match(rest[2]):
            return "kill", {"who": ref(rest[0]), "as": rest[2]}
        arity(1, "kill MEMBER [as NAME]")
        return "kill", {"who": ref(rest[0]), "as": None}
    if verb in ("restart", "resume", "promote"):
        arity(1, f"{verb} MEMBER")
        return verb, {"who": ref(rest[0])}
    if verb == "pause":
        if len(rest) == 2:
            return "pause", {"who": ref(rest[0]), "seconds": duration(rest[1])}
        arity(1, "pause MEMBER [DURATION]")
        return "pause", {"who": ref(rest[0]), "seconds": None}
    if verb == "transfer":
        if len(rest) == 3 and rest[:2] == ["leader", "to"]:
            return "transfer", {"who": ref(rest[2])}
        raise ValueError("usage: transfer leader to MEMBER")
    if verb == "defrag":
        arity(1, "defrag MEMBER | defrag each")
        return "defrag", {"who": _member_or_each(rest[0])}
    if verb in ("compact", "disarm"):
        arity(0, verb)
        return verb, {}
    if verb == "add":
        if rest[:1] == ["learner"]:
            if len(rest) == 1:
                return "add_learner", {"as": None}
            if len(rest) == 3 and rest[1] == "as" and _VAR.match(rest[2]):
                return "add_learner", {"as": rest[2]}
        raise ValueError("usage: add learner [as NAME]")
    if verb == "note":
        return "note", {"text": " ".join(rest)}
    known = sorted({alt.split()[0] for line in STEP_HELP.splitlines() if line and not line[0].isspace()
                    for alt in re.split(r"  +", line)[0].split(" | ") if alt.split()[0].isalpha()} - {"expect"})
    raise ValueError(f"unknown step {verb!r} (steps: {', '.join(known)}; `raftui run --steps` explains each)")


def _refs_of(s: Step | Loop) -> list[Ref]:
    if isinstance(s, Loop):
        return [Ref(x) for x in s.over] if isinstance(s.over, tuple) else []
    out = []
    for v in s.args.values():
        if isinstance(v, Ref):
            out.append(v)
        elif isinstance(v, tuple):
            out.extend(x for x in v if isinstance(x, Ref))
    return [r for r in out if r.text not in KEYWORDS]


# ---------------------------------------------------------------- the file


class _Lines:
    """Finds the line each step string sits on (tomllib gives no positions)."""

    def __init__(self, text: str) -> None:
        self.text = text
        at = re.search(r"^\s*steps\s*=", text, re.M)     # not in the description above it
        self.pos = at.start() if at else 0

    def find(self, needle: str) -> int | None:
        at = self.text.find(needle, self.pos) if needle else -1
        if at < 0:
            return None
        self.pos = at + len(needle)
        return self.text.count("\n", 0, at) + 1


def parse(text: str, source: str = "") -> Script:
    """A scenario file's text -> Script; ScriptError (line, step, reason) if it cannot run."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise ScriptError(f"{source or 'scenario'}: larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = "" if "line" in str(exc) else f" (the file ends at line {text.count(chr(10)) + 1})"
        raise ScriptError(f"{source or 'scenario'}: not valid TOML: {exc}{at}") from None
    head = doc.get("scenario", {})
    if not isinstance(head, dict):
        raise ScriptError("[scenario] must be a table")
    unknown = set(head) - {"name", "description", "members", "flags", "steps"}
    unknown |= set(doc) - {"scenario", "steps"}
    if unknown:
        raise ScriptError(f"unknown setting(s) {', '.join(sorted(unknown))} (known: name, description, "
                          "members, flags, steps)")
    steps = head.get("steps", doc.get("steps"))
    if steps is None:
        raise ScriptError("no steps: write steps = [\"...\", ...] under [scenario]")
    if not isinstance(steps, list):
        raise ScriptError("steps must be a list")
    name = head.get("name", source or "scenario")
    description = head.get("description", "")
    members = head.get("members", 1)
    if not isinstance(name, str) or not isinstance(description, str):
        raise ScriptError("name and description must be strings")
    if isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= MAX_MEMBERS:
        raise ScriptError(f"members must be a whole number from 1 to {MAX_MEMBERS}")
    flags = head.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ScriptError("flags must be a list of strings like \"--snapshot-count=100\"")
    for f in flags:
        if f.split("=", 1)[0] not in ALLOWED_FLAGS or "=" not in f:
            raise ScriptError(f"flag {f!r} is not one a scenario may set; allowed (as --flag=value): "
                              + ", ".join(ALLOWED_FLAGS))
    lines = _Lines(text)
    counter = iter(range(10 ** 9))
    built = _build(steps, lines, counter, depth=0, bound=set())
    total = _runs(built)
    if total > MAX_STEPS_RUN:
        raise ScriptError(f"the scenario would run {total} steps once its loops are counted; at most "
                          f"{MAX_STEPS_RUN}")
    return Script(name, description, members, tuple(flags), tuple(built), source)


def _build(items: list, lines: _Lines, counter: Iterator[int], depth: int, bound: set[str]) -> list:
    out: list[Step | Loop] = []
    for item in items:
        index = next(counter)
        if isinstance(item, str):
            line = lines.find(item)
            where = f"step {index + 1}" + (f" (line {line})" if line else "")
            try:
                verb, args = parse_step(item)
            except ValueError as exc:
                raise ScriptError(f"{where}: {item.strip()!r}: {exc}") from None
            step = Step(index, line, item.strip(), verb, args, depth)
            for r in _refs_of(step):
                if r.var is not None and r.var not in bound:
                    raise ScriptError(f"{where}: {item.strip()!r}: ${r.var} is used before anything binds it "
                                      f"(let {r.var} = MEMBER, kill MEMBER as {r.var}, for = \"{r.var}\")")
            for key in ("as", "name"):
                if args.get(key):
                    bound.add(args[key])
            out.append(step)
        elif isinstance(item, dict):
            out.append(_loop(item, lines, counter, index, depth, bound))
        else:
            raise ScriptError(f"step {index + 1}: a step is a string or a loop table, not {type(item).__name__}")
    return out


def _loop(item: dict, lines: _Lines, counter, index: int, depth: int, bound: set[str]) -> Loop:
    where = f"step {index + 1}"
    line = lines.find("repeat") if "repeat" in item else lines.find("for")
    if line:
        where += f" (line {line})"
    if depth + 1 > MAX_DEPTH:
        raise ScriptError(f"{where}: loops nested deeper than {MAX_DEPTH}")
    unknown = set(item) - {"repeat", "for", "in", "steps"}
    if unknown:
        raise ScriptError(f"{where}: a loop has repeat = N or for = \"var\", in = ..., and steps; "
                          f"not {', '.join(sorted(unknown))}")
    body = item.get("steps")
    if not isinstance(body, list) or not body:
        raise ScriptError(f"{where}: a loop needs a non-empty steps = [...]")
    if "repeat" in item and "for" not in item:
        n = item["repeat"]
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPEAT:
            raise ScriptError(f"{where}: repeat must be a whole number from 1 to {MAX_REPEAT}")
        inner = _build(body, lines, counter, depth + 1, bound)
        return Loop(index, line, f"repeat {n}", tuple(inner), repeat=n, depth=depth)
    if "for" in item and "repeat" not in item:
        var, over = item["for"], item.get("in")
        if not isinstance(var, str) or not _VAR.match(var):
            raise ScriptError(f"{where}: for = \"name\" (lower-case letters, digits, _)")
        if over in ("each", "followers"):
            spec: tuple[str, ...] | str = over
        elif isinstance(over, list) and over and all(isinstance(x, str) for x in over) and len(over) <= 64:
            try:
                spec = tuple(ref(x).text for x in over)
            except ValueError as exc:
                raise ScriptError(f"{where}: {exc}") from None
            for x in spec:
                if x.startswith("$") and x[1:] not in bound:
                    raise ScriptError(f"{where}: {x} is used before anything binds it")
        else:
            raise ScriptError(f"{where}: in = \"each\", \"followers\" or a list of members")
        inner = _build(body, lines, counter, depth + 1, bound | {var})
        text = f"for {var} in {over if isinstance(over, str) else '[' + ', '.join(spec) + ']'}"
        return Loop(index, line, text, tuple(inner), var=var, over=spec, depth=depth)
    raise ScriptError(f"{where}: a loop is {{ repeat = N, steps = [...] }} or "
                      "{ for = \"m\", in = \"each\", steps = [...] }")


def _runs(items) -> int:
    """Steps executed, loops counted (a for loop over a group counts MAX_MEMBERS)."""
    total = 0
    for s in items:
        if isinstance(s, Loop):
            times = s.repeat or (MAX_MEMBERS if isinstance(s.over, str) else len(s.over))
            total += times * _runs(s.body)
            if total > MAX_STEPS_RUN:     # stop counting early: nested huge loops
                return total
        else:
            total += 1
    return total


def load(path: str) -> Script:
    """Read and parse a scenario file; ScriptError for any problem with it."""
    import pathlib

    p = pathlib.Path(path)
    try:
        if p.stat().st_size > MAX_FILE_BYTES:
            raise ScriptError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        raw = p.read_bytes()
    except OSError as exc:
        raise ScriptError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse(text, str(path))
