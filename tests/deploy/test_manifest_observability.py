"""deploy/k8s, rendered per overlay: every process is scraped where it serves /metrics, and
workers and schedulers are probed where they serve grpc.health.v1 (runtime/health.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.health import LIVENESS

if TYPE_CHECKING:
    from conftest import Rendered

ROLES = ("gateway", "scheduler", "worker")


def _ports(container: dict) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def test_every_process_is_scraped_where_it_serves_metrics(rendered: Rendered) -> None:
    for role in ROLES:
        settings = rendered.settings(role)
        assert settings.metrics_port != 0, f"{role}: MAAS_METRICS_PORT=0 turns /metrics off"
        # /metrics listens on loopback by default: Prometheus, in another pod, needs more.
        assert settings.metrics_host == "0.0.0.0", f"{role}: set MAAS_METRICS_HOST=0.0.0.0"
        assert settings.metrics_tenant_labels == "off", role  # tenant names stay private
        assert _ports(rendered.container(role))["metrics"] == settings.metrics_port, role
        annotations = rendered.workload(role)["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {"prometheus.io/scrape": "true",
                               "prometheus.io/port": str(settings.metrics_port),
                               "prometheus.io/path": "/metrics"}, role


def test_workers_and_schedulers_are_probed_on_their_health_port(rendered: Rendered) -> None:
    for role in ("scheduler", "worker"):
        settings = rendered.settings(role)
        container = rendered.container(role)
        assert settings.health_port not in (0, settings.metrics_port), role
        assert _ports(container)["health"] == settings.health_port, role
        # Not ready while draining (""); restarted only when the process stops answering.
        assert container["readinessProbe"]["grpc"] == {"port": settings.health_port,
                                                       "service": ""}, role
        assert container["livenessProbe"]["grpc"] == {"port": settings.health_port,
                                                      "service": LIVENESS}, role
        assert container["livenessProbe"]["failureThreshold"] >= 3, role
