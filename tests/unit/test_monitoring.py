"""The example alert rules and Grafana dashboard under docs/monitoring/ are valid PromQL and
name only metrics and labels the controller exports, so that a renamed metric or label
cannot leave an alert that silently never fires."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from failover.controller.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "docs" / "monitoring"
# Prometheus adds these to every scraped series.
TARGET_LABELS = frozenset({"instance", "job"})
# How Prometheus exposes each kind of metric: suffixes, and the labels they add.
EXPOSED_AS: dict[type[MetricWrapperBase], dict[str, frozenset[str]]] = {
    Gauge: {"": frozenset()},
    Counter: {"_total": frozenset()},
    Histogram: {"_bucket": frozenset({"le"}), "_sum": frozenset(), "_count": frozenset()},
}
METRIC = re.compile(r"\b(failover_\w+)(?:\{([^}]*)\})?")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the controller's registry exposes, with its label names."""
    metrics = Metrics("us-east-1")
    series: dict[str, frozenset[str]] = {}
    families = set()
    for collector in vars(metrics).values():
        if not isinstance(collector, MetricWrapperBase):
            continue
        [family] = collector.describe()
        families.add(family.name)
        labels = frozenset(collector._labelnames)  # no public accessor for a wrapper's labels
        [exposed] = [as_ for kind, as_ in EXPOSED_AS.items() if isinstance(collector, kind)]
        for suffix, added in exposed.items():
            series[family.name + suffix] = labels | added
    assert families == {family.name for family in metrics.registry.collect()}, \
        "a metric of the registry is not an attribute of Metrics"
    return series


def alert_expressions() -> Iterator[tuple[str, str]]:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", rule["expr"]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    """(where, PromQL, legend) of every panel target and annotation of the dashboard."""
    board = dashboard()
    # A collapsed row holds its panels.
    panels = [*board["panels"], *(p for row in board["panels"] for p in row.get("panels", []))]
    for panel in panels:
        for target in panel.get("targets", []):
            yield (f"panel {panel['title']!r} {target['refId']}", target["expr"],
                   target.get("legendFormat", ""))
    for annotation in board["annotations"]["list"]:
        yield (f"annotation {annotation['name']!r}", annotation["expr"],
               annotation.get("titleFormat", ""))


def family(series: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", series)


def problems(expr: str, series: dict[str, frozenset[str]], legend: str = "") -> list[str]:
    found = []
    labels = set(TARGET_LABELS)
    for name, matchers in METRIC.findall(expr):
        if name not in series:
            found.append(f"{name}: not exported")
            continue
        labels |= series[name]
        found += [f"{name}: no label {label!r}" for label in MATCHER_LABEL.findall(matchers)
                  if label not in series[name] | TARGET_LABELS]
    grouped = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",")}
    found += [f"grouping by {label!r}: no metric here has it" for label in grouped - labels - {""}]
    found += [f"legend {{{{{label}}}}}: not a label of the result"
              for label in set(LEGEND_LABEL.findall(legend)) - labels]
    return found


def test_the_registry_is_read_as_prometheus_exposes_it() -> None:
    series = exported_series()
    assert series["failover_plans_total"] == {"service", "outcome"}
    assert series["failover_plan_step_seconds_bucket"] == {"kind", "outcome", "le"}
    assert "failover_plans" not in series and "failover_region_verdict_total" not in series


@pytest.mark.parametrize(("where", "expr"), list(alert_expressions()))
def test_alert_rules_are_promql_on_exported_metrics(where: str, expr: str) -> None:
    promql_parser.parse(expr)  # ValueError with the position of a syntax error
    assert METRIC.search(expr) or "up{" in expr, f"{where} uses no failover metric"
    assert problems(expr, exported_series()) == [], where


def test_every_alert_says_what_and_how_bad() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_dashboard_queries_are_promql_on_exported_metrics() -> None:
    series = exported_series()
    queries = list(dashboard_queries())
    assert len(queries) >= 15
    for where, expr, legend in queries:
        # Grafana's variables stand in for a range ($__rate_interval) or a regex ($service).
        promql_parser.parse(GRAFANA_VARIABLE.sub(
            lambda m: "5m" if m.group(1).startswith("__") else ".*", expr))
        assert problems(expr, series, legend) == [], where


def test_dashboard_variables_read_exported_labels() -> None:
    series = exported_series()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["query"]["query"])
        assert match is not None, variable["name"]
        name, label = match.groups()
        assert label in series[name], variable["name"]


def test_every_exported_metric_is_on_the_dashboard_or_in_an_alert() -> None:
    exprs = [expr for _, expr in alert_expressions()]
    exprs += [expr for _, expr, _ in dashboard_queries()]
    used = {family(name) for expr in exprs for name, _ in METRIC.findall(expr)}
    assert sorted({family(name) for name in exported_series()} - used) == []
