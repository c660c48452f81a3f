"""Tenant names stay out of metric labels unless MAAS_METRICS_TENANT_LABELS=on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import metrics


@pytest.fixture
def showing() -> Iterator[None]:
    metrics.show_tenants(True)
    yield
    metrics.show_tenants(False)


def test_labels_hide_tenants_by_default() -> None:
    assert metrics.model_label("acme/digits") == "*/digits"
    assert metrics.model_label("digits") == "digits"  # shared: no tenant to hide
    assert metrics.tenant_label("acme") == "*"
    assert metrics.tenant_label("") == ""


@pytest.mark.usefixtures("showing")
def test_labels_name_tenants_when_asked() -> None:
    assert metrics.model_label("acme/digits") == "acme/digits"
    assert metrics.tenant_label("acme") == "acme"
