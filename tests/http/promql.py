"""A small PromQL evaluator over a few scrapes: enough of the language for
etcd's Grafana dashboard and alert rules, to tell whether a panel would
draw something against a cluster (tests/http/grafana_check.py).

    scrapes = [Scrape(t0, series), Scrape(t1, series)]       # oldest first
    result = evaluate('sum(rate(x_total{job="a"}[5m])) by (instance)', scrapes)
    -> [({"instance": "..."}, 1.5), ...]                      # an instant vector

Supported: number literals; selectors with =, !=, =~, !~ matchers and a
range; rate, irate, increase, changes, histogram_quantile; sum, avg, min,
max, count with `by`/`without` before or after their argument; + - * / and
comparisons (filtering, or `bool`) between vectors (matched on equal label
sets) and scalars. A range covers every scrape given (the tests span
seconds, the panels' ranges minutes), and rate() is the counter's increase
(resets counted from zero) over the time between the first and the last
sample, without Prometheus' extrapolation to the range's edges: it tells
whether there is data, not the exact figure.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from raftui.source.metrics import quantile

Labels = dict[str, str]
Vector = list[tuple[Labels, float]]


@dataclasses.dataclass
class Scrape:
    at: float
    series: list[tuple[str, Labels, float]]   # (sample name, labels with job/instance, value)


class PromQLError(ValueError):
    pass


_TOKEN = re.compile(r"""\s*(?:
    (?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<dur>\[\d+[smhdwy]\])
  | (?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/(){},=<>])
)""", re.X)
AGGREGATIONS = {"sum", "avg", "min", "max", "count"}
FUNCTIONS = {"rate", "irate", "increase", "changes", "histogram_quantile"}


def tokenize(text: str) -> list[tuple[str, str]]:
    out, i = [], 0
    text = text.strip()
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None or m.end() == i:
            raise PromQLError(f"cannot read {text[i:i + 20]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        i = m.end()
        while i < len(text) and text[i].isspace():
            i += 1
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str] | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise PromQLError(f"expected {value!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        node = self.comparison()
        if self.peek() is not None:
            raise PromQLError(f"left over: {self.peek()!r}")
        return node

    def comparison(self) -> Any:
        left = self.additive()
        while self.peek() and self.peek()[1] in ("==", "!=", ">", "<", ">=", "<="):
            op = self.take()[1]
            keep_bool = False
            if self.peek() == ("name", "bool"):
                self.take()
                keep_bool = True
            left = ("cmp", op, keep_bool, left, self.additive())
        return left

    def additive(self) -> Any:
        return self._left_assoc(("+", "-"), self.multiplicative)

    def multiplicative(self) -> Any:
        return self._left_assoc(("*", "/"), self.unary)

    def _left_assoc(self, ops: tuple[str, ...], operand) -> Any:
        left = operand()
        while self.peek() and self.peek()[1] in ops:
            op = self.take()[1]
            left = ("bin", op, left, operand())
        return left

    def unary(self) -> Any:
        tok = self.peek()
        if tok is None:
            raise PromQLError("unexpected end")
        kind, value = tok
        if kind == "num":
            self.take()
            return ("num", float(value))
        if value == "(":
            self.take()
            node = self.comparison()
            self.take(")")
            return node
        if kind == "name" and value in AGGREGATIONS:
            return self.aggregation()
        if kind == "name" and value in FUNCTIONS:
            self.take()
            self.take("(")
            args = [self.comparison()]
            while self.peek() and self.peek()[1] == ",":
                self.take()
                args.append(self.comparison())
            self.take(")")
            return ("call", value, args)
        if kind == "name" or value == "{":
            return self.selector()
        raise PromQLError(f"unexpected {value!r}")

    def _grouping(self) -> tuple[str, list[str]] | None:
        tok = self.peek()
        if tok and tok[1].lower() in ("by", "without"):
            how = self.take()[1].lower()
            self.take("(")
            labels = []
            while self.peek()[1] != ")":
                labels.append(self.take()[1])
                if self.peek()[1] == ",":
                    self.take()
            self.take(")")
            return how, labels
        return None

    def aggregation(self) -> Any:
        op = self.take()[1]
        grouping = self._grouping()
        self.take("(")
        arg = self.comparison()
        self.take(")")
        grouping = grouping or self._grouping()
        return ("agg", op, grouping, arg)

    def selector(self) -> Any:
        name = None
        if self.peek()[0] == "name":
            name = self.take()[1]
        matchers = []
        if self.peek() and self.peek()[1] == "{":
            self.take()
            while self.peek()[1] != "}":
                label = self.take()[1]
                op = self.take()[1]
                kind, raw = self.take()
                if kind != "str" or op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher {label}{op}{raw}")
                matchers.append((label, op, bytes(raw[1:-1], "utf-8").decode("unicode_escape")))
                if self.peek()[1] == ",":
                    self.take()
            self.take("}")
        if name is not None:
            matchers.append(("__name__", "=", name))
        rng = None
        if self.peek() and self.peek()[0] == "dur":
            rng = self.take()[1]
        return ("sel", matchers, rng)


def parse(text: str) -> Any:
    return _Parser(text).parse()


def selectors(node: Any) -> list[list[tuple[str, str, str]]]:
    """Every selector's matchers in an expression, in order."""
    if not isinstance(node, tuple):
        return []
    if node[0] == "sel":
        return [node[1]]
    out = []
    for part in node[1:]:
        if isinstance(part, list):
            for p in part:
                out += selectors(p)
        else:
            out += selectors(part)
    return out


def metric_names(expr: str) -> list[str]:
    return [v for sel in selectors(parse(expr)) for k, op, v in sel if k == "__name__"]


def _matches(labels: Labels, matchers) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value or op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have) or op == "!~" and re.fullmatch(value, have):
            return False
    return True


def _key(labels: Labels) -> tuple:
    return tuple(sorted(labels.items()))


def _select(matchers, scrapes: list[Scrape], rng: str | None):
    def pick(s: Scrape) -> dict[tuple, tuple[Labels, float]]:
        out = {}
        for name, labels, value in s.series:
            full = {**labels, "__name__": name}
            if _matches(full, matchers):
                out[_key(full)] = (full, value)
        return out
    if rng is None:
        return [(labels, v) for labels, v in pick(scrapes[-1]).values()] if scrapes else []
    ranged: dict[tuple, tuple[Labels, list[tuple[float, float]]]] = {}
    for s in scrapes:
        for key, (labels, v) in pick(s).items():
            ranged.setdefault(key, (labels, []))[1].append((s.at, v))
    return ("range", list(ranged.values()))


def _drop_name(labels: Labels) -> Labels:
    return {k: v for k, v in labels.items() if k != "__name__"}


def _increase(points: list[tuple[float, float]]) -> float:
    total = 0.0
    for (_, a), (_, b) in zip(points, points[1:]):
        total += b - a if b >= a else b       # a reset counts from zero
    return total


def evaluate(expr: str | Any, scrapes: list[Scrape]) -> Vector | float:
    node = parse(expr) if isinstance(expr, str) else expr
    return _eval(node, scrapes)


def _eval(node: Any, scrapes: list[Scrape]):
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "sel":
        return _select(node[1], scrapes, node[2])
    if kind == "call":
        name, args = node[1], node[2]
        if name == "histogram_quantile":
            q = _eval(args[0], scrapes)
            vec = _eval(args[1], scrapes)
            groups: dict[tuple, tuple[Labels, list[tuple[float, float]]]] = {}
            for labels, v in vec:
                if "le" not in labels:
                    continue
                rest = {k: x for k, x in _drop_name(labels).items() if k != "le"}
                groups.setdefault(_key(rest), (rest, []))[1].append((float(labels["le"]), v))
            out = []
            for rest, buckets in groups.values():
                value = quantile(q, buckets)
                out.append((rest, math.nan if value is None else value))
            return out
        rng = _eval(args[0], scrapes)
        if not (isinstance(rng, tuple) and rng[0] == "range"):
            raise PromQLError(f"{name}() needs a range")
        out = []
        for labels, points in rng[1]:
            if name == "changes":
                out.append((_drop_name(labels), float(sum(1 for (_, a), (_, b) in zip(points, points[1:])
                                                          if a != b))))
                continue
            if len(points) < 2 or points[-1][0] <= points[0][0]:
                continue
            if name == "increase":
                out.append((_drop_name(labels), _increase(points)))
            elif name == "rate":
                out.append((_drop_name(labels), _increase(points) / (points[-1][0] - points[0][0])))
            else:   # irate: the last two
                (t1, a), (t2, b) = points[-2:]
                out.append((_drop_name(labels), (b - a if b >= a else b) / (t2 - t1)))
        return out
    if kind == "agg":
        op, grouping, arg = node[1], node[2], node[3]
        vec = _eval(arg, scrapes)
        groups: dict[tuple, tuple[Labels, list[float]]] = {}
        for labels, v in vec:
            labels = _drop_name(labels)
            if grouping is None:
                g = {}
            elif grouping[0] == "by":
                g = {k: labels[k] for k in grouping[1] if k in labels}
            else:
                g = {k: x for k, x in labels.items() if k not in grouping[1]}
            groups.setdefault(_key(g), (g, []))[1].append(v)
        fn = {"sum": sum, "min": min, "max": max, "count": len,
              "avg": lambda vs: sum(vs) / len(vs)}[op]
        return [(g, float(fn(vs))) for g, vs in groups.values()]
    if kind in ("bin", "cmp"):
        if kind == "bin":
            op, left, right = node[1], _eval(node[2], scrapes), _eval(node[3], scrapes)
            keep_bool = False
        else:
            op, keep_bool, left, right = node[1], node[2], _eval(node[3], scrapes), _eval(node[4], scrapes)
        return _binary(op, keep_bool, kind == "cmp", left, right)
    raise PromQLError(f"cannot evaluate {kind}")


def _apply(op: str, a: float, b: float) -> float:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a))
    return float({"==": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op])


def _binary(op, keep_bool, comparison, left, right):
    """Scalar with scalar, scalar with each element, or vector with vector
    matched on equal label sets. A comparison without `bool` filters (keeps
    the left value where true); otherwise the result is the operation's."""
    if isinstance(left, float) and isinstance(right, float):
        return _apply(op, left, right)
    if isinstance(left, float):
        pairs = [(labels, left, v, v) for labels, v in right]
    elif isinstance(right, float):
        pairs = [(labels, v, right, v) for labels, v in left]
    else:
        rights = {_key(_drop_name(labels)): v for labels, v in right}
        pairs = [(labels, v, rights[_key(_drop_name(labels))], v) for labels, v in left
                 if _key(_drop_name(labels)) in rights]
    out = []
    for labels, a, b, kept in pairs:
        r = _apply(op, a, b)
        if not (comparison and not keep_bool):
            out.append((_drop_name(labels), r))
        elif r:
            out.append((_drop_name(labels), kept))
    return out


def has_data(result) -> bool:
    """What Grafana would draw: at least one finite value."""
    if isinstance(result, float):
        return math.isfinite(result)
    if isinstance(result, tuple):
        return False
    return any(math.isfinite(v) for _, v in result)
