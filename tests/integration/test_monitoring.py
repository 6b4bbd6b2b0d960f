"""The shipped dashboard and alert rules (monitoring/) query only what a real agent exports, in valid PromQL."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import eventually
from tests.integration.agent import REPO_ROOT

pytestmark = pytest.mark.timeout(120)

DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "fondation-agent.json"
RULES = REPO_ROOT / "monitoring" / "prometheus" / "fondation-agent.rules.yml"
# Grafana's variables, replaced by values of the right kind so that promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "fondation-agent", "$instance": ".+"}


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def queried_metrics(queries: list[str]) -> set[str]:
    return {name for query in queries for name in re.findall(r"\b(fondation_agent_\w+|up)\b", query)}


def scraped_metrics(url: str) -> set[str]:
    text = requests.get(url, timeout=5).text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_every_metric_of_the_dashboard_and_the_rules_is_one_a_real_agent_exports(repo, queue, agents):
    agent = agents()
    job_id = queue.enqueue(repository=repo, prompt="slow:0.2")
    assert queue.wait_finished(job_id)["status"] == "completed"
    eventually(lambda: agent.metric("fondation_agent_jobs_finished_total", 'outcome="completed"') == 1)
    # `up` is Prometheus's own, for every target.
    exported = scraped_metrics(agent.url("/metrics")) | {"up"}
    for source, queries in (("dashboard", dashboard_queries()), ("rules", rule_queries())):
        assert queries, source
        assert queried_metrics(queries) - exported == set(), f"the {source} queries metrics no agent exports"


def test_the_dashboard_covers_the_agents_metrics_and_its_queries_parse(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queries = dashboard_queries()
    for name, value in GRAFANA_VARIABLES.items():
        queries = [query.replace(name, value) for query in queries]
    # promtool parses PromQL only in rule files: each query becomes a recording rule.
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": query}
                                                        for i, query in enumerate(queries)]}]}
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    check = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
