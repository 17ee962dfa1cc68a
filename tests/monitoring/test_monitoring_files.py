"""deploy/monitoring/: alert rules pass their promtool unit tests, configs load, the dashboard is sound."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.monitoring.promql import ALERTS, DASHBOARD, MONITORING, dashboard_queries, metric_names, rule_queries

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (scripts/test-deps.sh)")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_every_alert_has_a_promtool_test() -> None:
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    alerts = {rule["alert"] for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]}
    assert alerts == tested


@needs_promtool
def test_static_prometheus_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_kubernetes_prometheus_config_is_valid() -> None:
    result = _promtool("check", "config", "prometheus-kubernetes.yml")
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        pytest.skip("this promtool build has no Kubernetes service discovery (Debian's drops it)")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_variant_keeps_the_job_names_the_rules_expect() -> None:
    config = yaml.safe_load((MONITORING / "prometheus-kubernetes.yml").read_text())
    relabels = config["scrape_configs"][0]["relabel_configs"]
    job = next(r for r in relabels if r.get("target_label") == "job")
    assert job["replacement"] == "tokenyard-$1"
    assert config["rule_files"] == ["alerts.yml"]


def test_every_runbook_link_has_a_section_in_operations_doc() -> None:
    operations = (MONITORING.parents[1] / "docs" / "operations.md").read_text().lower()
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert f"### {rule['alert'].lower()}" in operations, rule["alert"]


def test_dashboard_panels_have_queries_on_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 12
    for panel in graphs:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_metric_name_extraction() -> None:
    expr = 'sum by (model, le) (rate(tokenyard_x_bucket{model=~"a|b"}[5m])) / on(model) tokenyard_y > 0.5'
    assert metric_names(expr) == {"tokenyard_x_bucket", "tokenyard_y"}
    assert metric_names('up{job=~"tokenyard.*"} == 0 and deriv(z[10m]) > 0') == {"up", "z"}
    assert all(metric_names(q) for q in dashboard_queries() + rule_queries())
