"""etcd's published Grafana dashboard against live members: which panels draw.

    python -m tests.http.grafana_check --metrics-urls http://127.0.0.1:2381,... [--interval 3]

scrapes every URL twice (`interval` seconds apart), as Prometheus would
(each series labelled job="raftnode" and instance=<host:port>), evaluates
every target of every panel of etcd 3.4.23's dashboard
(tests/http/data/etcd-3.4.23-grafana.json, Documentation/op-guide/grafana.json
in etcd's v3.4.23 tree) with `$cluster` set to that job, and prints one
Markdown row per target: the metric names it reads, whether each is
exported with etcd's type and label names (tests/http/data/
etcd-3.4.23-series.tsv, recorded from etcd 3.4.23's own /metrics), and
whether the expression has data (tests/http/promql.py).

Scrapes are parsed with prometheus_client's own parser, so the check also
says that a real Prometheus client library reads our exposition.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
import urllib.parse
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.http import promql

DATA = pathlib.Path(__file__).resolve().parent / "data"
DASHBOARD = DATA / "etcd-3.4.23-grafana.json"
REFERENCE = DATA / "etcd-3.4.23-series.tsv"
JOB = "raftnode"
# Labels Prometheus adds to every series of a target: not the exporter's.
TARGET_LABELS = {"job", "instance"}
BUCKET_LABELS = {"le", "quantile"}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclasses.dataclass(frozen=True)
class Target:
    panel_id: int
    panel: str
    ref: str
    expr: str          # with $cluster in it, as the dashboard has it


def load_dashboard(path: pathlib.Path = DASHBOARD) -> list[Target]:
    data = json.loads(path.read_text())
    board = data.get("etcd.json", data)
    out = []
    for row in board.get("rows", []):
        for p in row.get("panels", []):
            for t in p.get("targets", []):
                out.append(Target(p["id"], p["title"], t.get("refId", ""), t["expr"]))
    for p in board.get("panels", []):   # newer dashboards: no rows
        for t in p.get("targets", []):
            out.append(Target(p["id"], p["title"], t.get("refId", ""), t["expr"]))
    return out


def template_queries(path: pathlib.Path = DASHBOARD) -> list[tuple[str, str]]:
    """(variable name, its query) of the dashboard's query variables."""
    data = json.loads(path.read_text())
    board = data.get("etcd.json", data)
    return [(v["name"], v["query"]) for v in board.get("templating", {}).get("list", [])
            if v.get("type") == "query"]


def families(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    """Sample name -> (its family's type, the label names its samples carry)."""
    out: dict[str, tuple[str, set[str]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            kind, labels = out.setdefault(s.name, (fam.type, set()))
            labels.update(k for k in s.labels if k not in BUCKET_LABELS)
    return {k: (t, frozenset(ls)) for k, (t, ls) in out.items()}


def series(text: str, instance: str, job: str = JOB) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, {**s.labels, "job": job, "instance": instance}, float(s.value))
            for fam in text_string_to_metric_families(text) for s in fam.samples]


def load_reference(path: pathlib.Path = REFERENCE) -> dict[str, tuple[str, frozenset[str]]]:
    out = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, kind, labels = (line.split("\t") + [""])[:3]
        out[name] = (kind, frozenset(x for x in labels.split(",") if x))
    return out


def record_reference(text: str) -> str:
    rows = [f"{name}\t{kind}\t{','.join(sorted(labels))}" for name, (kind, labels) in sorted(families(text).items())]
    return "\n".join(rows) + "\n"


def scrape(url: str, timeout: float = 10.0) -> str:
    if not url.rstrip("/").endswith("/metrics"):
        url = url.rstrip("/") + "/metrics"
    with _OPENER.open(url, timeout=timeout) as r:
        return r.read().decode()


@dataclasses.dataclass
class Row:
    target: Target
    names: list[str]
    missing: list[str]             # read by the panel, exported by no member
    mismatched: list[str]          # exported, but not with etcd's type/labels
    unknown: list[str]             # not in etcd 3.4.23's own /metrics either
    data: bool

    def verdict(self) -> str:
        if self.data:
            return "has data"
        why = []
        if self.missing:
            why.append("not exported: " + ", ".join(self.missing))
        if self.mismatched:
            why.append("type/labels differ: " + ", ".join(self.mismatched))
        return "no data" + (f" ({'; '.join(why)})" if why else " (the series are there, no finite value)")


def check(scrapes: list[promql.Scrape], exported: dict[str, tuple[str, frozenset[str]]],
          reference: dict[str, tuple[str, frozenset[str]]], targets: list[Target],
          job: str = JOB) -> list[Row]:
    rows = []
    for t in targets:
        expr = t.expr.replace("$cluster", job)
        names = list(dict.fromkeys(promql.metric_names(expr)))
        missing = [n for n in names if n not in exported]
        unknown = [n for n in names if n not in reference]
        mismatched = [n for n in names if n in exported and n in reference and exported[n] != reference[n]]
        data = promql.has_data(promql.evaluate(expr, scrapes))
        rows.append(Row(t, names, missing, mismatched, unknown, data))
    return rows


def merged_families(texts: list[str]) -> dict[str, tuple[str, frozenset[str]]]:
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for text in texts:
        for name, (kind, labels) in families(text).items():
            if name in out:
                kind0, labels0 = out[name]
                out[name] = (kind0 if kind0 == kind else f"{kind0}|{kind}", labels0 | labels)
            else:
                out[name] = (kind, labels)
    return out


def markdown(rows: list[Row]) -> str:
    lines = ["| panel | target | reads | verdict |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.target.panel} | {r.target.ref} | {', '.join(f'`{n}`' for n in r.names)} "
                     f"| {r.verdict()} |")
    return "\n".join(lines)


def run(urls: list[str], interval: float, job: str = JOB) -> tuple[list[Row], list[promql.Scrape]]:
    scrapes = []
    texts = []
    for _ in range(2):
        at = time.time()
        got = []
        for url in urls:
            text = scrape(url)
            texts.append(text)
            got += series(text, urllib.parse.urlsplit(url).netloc, job)
        scrapes.append(promql.Scrape(at, got))
        if len(scrapes) < 2:
            time.sleep(interval)   # the time between two scrapes, as Prometheus' scrape interval
    return check(scrapes, merged_families(texts), load_reference(), load_dashboard(), job), scrapes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--metrics-urls", required=True, help="comma-separated member metrics URLs")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between the two scrapes")
    p.add_argument("--job", default=JOB)
    p.add_argument("--record", metavar="FILE", help="write the first URL's families as a reference table "
                                                     "(run against real etcd 3.4.23)")
    args = p.parse_args(argv)
    urls = [u.strip() for u in args.metrics_urls.split(",") if u.strip()]
    if args.record:
        pathlib.Path(args.record).write_text(
            "# sample name\ttype\tlabel names (without le/quantile), from etcd 3.4.23's /metrics\n"
            + record_reference(scrape(urls[0])))
        return 0
    rows, _ = run(urls, args.interval, args.job)
    print(markdown(rows))
    return 0 if all(r.data for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
