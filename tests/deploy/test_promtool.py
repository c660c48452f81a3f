"""promtool (Prometheus' own checker, from Debian's prometheus package: scripts/bootstrap.sh)
on the rendered PrometheusRule: `check rules` parses every expression and annotation
template as Prometheus will, and `test rules` runs tests/deploy/alerts_test.yaml, series
in and alerts out, so an alert that would never fire, or fire on the wrong thing, fails here.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import K8S, REPO, Rendered, render

OVERLAY = "cpu-monitoring"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def promtool() -> str:
    found = shutil.which("promtool") or str(REPO / ".tools" / "bin" / "promtool")
    if not os.access(found, os.X_OK):
        pytest.fail("promtool is missing: run `make setup` (scripts/bootstrap.sh fetches it "
                    "from Debian's prometheus package) or put promtool on PATH")
    return found


def rule_groups() -> dict[str, object]:
    rendered = Rendered(OVERLAY, render(K8S / "overlays" / OVERLAY))
    (rule,) = [d for d in rendered.of_kind("PrometheusRule")]
    return {"groups": rule["spec"]["groups"]}


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def unit_test(groups: dict[str, object], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """alerts_test.yaml against `groups` without annotations (promtool would compare their
    rendered text word for word)."""
    bare = copy.deepcopy(groups)
    for group in bare["groups"]:  # type: ignore[attr-defined]
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(bare))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    return run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups()))
    result = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_every_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    result = unit_test(rule_groups(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"]}
    alerts = {r["alert"] for g in rule_groups()["groups"] for r in g["rules"]}  # type: ignore[attr-defined]
    assert tested == alerts, "every alert has a unit test"


@pytest.mark.parametrize("alert, expr_from, expr_to", [
    # `sum` over the schedulers' copies of one gauge doubles the workers wanted.
    ("MaasWorkersWantedUnmet", "max(maas_workers_wanted)", "sum(maas_workers_wanted)"),
    # Training jobs wait by design: an alert on them would page all night.
    ("MaasQueueAgeHigh", '{model!="_train"}', ""),
    # A Redis with no maxmemory (0) would divide to +Inf and page.
    ("MaasRedisMemoryNearMax", "(redis_memory_max_bytes > 0)", "redis_memory_max_bytes"),
])
def test_a_broken_alert_fails_its_unit_test(tmp_path: Path, alert: str, expr_from: str,
                                            expr_to: str) -> None:
    groups = rule_groups()
    (rule,) = [r for g in groups["groups"] for r in g["rules"]  # type: ignore[attr-defined]
               if r["alert"] == alert]
    assert expr_from in rule["expr"]
    rule["expr"] = rule["expr"].replace(expr_from, expr_to)
    result = unit_test(groups, tmp_path)
    assert result.returncode != 0 and alert in result.stdout + result.stderr


def test_a_broken_template_fails_the_check(tmp_path: Path) -> None:
    groups = rule_groups()
    groups["groups"][0]["rules"][0]["annotations"]["summary"] = "{{ $labels.model "  # type: ignore[index]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    result = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode != 0
