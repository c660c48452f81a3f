"""deploy/grafana/maas-dashboard.json reads only metrics that runtime/metrics.py defines, and
shows each family the dashboards need."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtime import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "maas-dashboard.json"
METRIC = re.compile(r"\bmaas_[a-z0-9_]+")


def expressions(doc: Any) -> Iterator[str]:
    """Every PromQL expression: panel targets' `expr` and template variables' queries."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield value["query"]
            else:
                yield from expressions(value)
    elif isinstance(doc, list):
        for item in doc:
            yield from expressions(item)


def load() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def test_every_expression_names_defined_metrics_only() -> None:
    defined = metrics.exposed_names()
    exprs = list(expressions(load()))
    assert len(exprs) >= 15
    for expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, f"no maas metric in {expr!r}"
        assert used <= defined, f"{expr!r}: undefined {sorted(used - defined)}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_the_dashboard_covers_the_metric_families() -> None:
    used = {m for expr in expressions(load()) for m in METRIC.findall(expr)}
    for family in ("maas_inference_request_success_total",
                   "maas_inference_request_failure_total",
                   "maas_inference_queue_duration_us_bucket",
                   "maas_inference_compute_duration_us_bucket", "maas_queue_depth",
                   "maas_queue_oldest_age_seconds", "maas_batch_size_bucket",
                   "maas_worker_busy_seconds_total", "maas_dead_letters_total",
                   "maas_leases_reclaimed_total", "maas_training_jobs"):
        assert family in used, family


def test_panels_are_well_formed() -> None:
    doc = load()
    panels = doc["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    names = {v["name"] for v in doc["templating"]["list"]}
    assert {"datasource", "model"} <= names
