"""The public API is exactly `maas.__all__`, and `import maas` stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import maas

ROOT = Path(__file__).resolve().parents[2]


def test_all_is_exactly_the_public_names() -> None:
    public = {name for name, value in vars(maas).items()
              if not name.startswith("_")
              and not isinstance(value, ModuleType)
              and type(value).__module__ != "__future__"}  # `annotations`
    assert set(maas.__all__) == public | {"__version__"}
    assert len(maas.__all__) == len(set(maas.__all__))
    assert maas.__all__ == sorted(maas.__all__)


def test_every_exported_name_exists() -> None:
    namespace: dict[str, object] = {}
    exec("from maas import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(maas.__all__)


def test_exported_errors_are_the_error_tree() -> None:
    for name in maas.__all__:
        value = getattr(maas, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, maas.MaasError) or value is maas.MaasError
    assert isinstance(maas.__version__, str) and maas.__version__


def loaded_after(statement: str) -> dict[str, bool]:
    """Which heavy modules a fresh interpreter has loaded after `statement`."""
    code = (f"{statement}; import sys; "
            "print(' '.join(str(m in sys.modules) for m in ('torch', 'redis')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return dict(zip(("torch", "redis"), (v == "True" for v in out), strict=True))


def test_import_maas_loads_neither_torch_nor_redis() -> None:
    assert loaded_after("import maas") == {"torch": False, "redis": False}


@pytest.mark.parametrize("module", ["runtime.architectures", "runtime.weights", "maas.tensors",
                                    "runtime.settings", "maas.client"])
def test_what_the_gateway_shares_loads_neither_torch_nor_redis(module: str) -> None:
    """The gateway validates requests and weights with these; none may pull in torch."""
    assert loaded_after(f"import {module}") == {"torch": False, "redis": False}


@pytest.mark.parametrize("module", ["gateway.server", "scheduler.daemon"])
def test_gateway_and_scheduler_never_import_torch(module: str) -> None:
    assert loaded_after(f"import {module}")["torch"] is False
