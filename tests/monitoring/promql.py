"""Metric names in PromQL expressions and in Prometheus text exposition, for the monitoring tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "tokenyard.json"
ALERTS = MONITORING / "alerts.yml"

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
# Prometheus's own series, not the services'.
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (functions, keywords, labels and variables left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings: label values, regexes
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors: [5m], [$__rate_interval]
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or word in _KEYWORDS or re.fullmatch(r"\d", word[:1]):
            continue
        if not (match.start() and text[match.start() - 1].isdigit()):  # not the `m` of a duration
            names.add(word)
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(re.sub(r"^label_values\((\w+),.*\)$", r"\1", variable["definition"]))
    return queries


def rule_queries() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def exposed_names(exposition: str) -> set[str]:
    """Every family and sample name in Prometheus text (families with no samples yet included)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith(("# TYPE ", "# HELP ")):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def is_exported(name: str, exported: set[str]) -> bool:
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    return name in exported or base in exported
