"""The base install is the SDK and the client commands: the CLI imports no server part, and
the server-only commands know which extra of pyproject.toml brings what they miss."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from maas.cli import server_parts

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SERVER_MODULES = ("redis", "uvloop", "prometheus_client", "boto3", "torch")


def distribution(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0]


@pytest.mark.parametrize("extra", ["server", "worker", "console"])
def test_the_module_map_is_the_extras_of_pyproject(extra: str) -> None:
    given = {distribution(r) for r in PROJECT["optional-dependencies"][extra]}
    assert given - {"maas-cluster"} == set(server_parts.EXTRA_MODULES[extra].values()) | (
        {"uvloop"} if extra == "server" and sys.platform == "win32" else set())


def test_the_base_install_has_no_server_part() -> None:
    base = {distribution(r) for r in PROJECT["dependencies"]}
    for extra in server_parts.EXTRA_MODULES.values():
        assert not base & set(extra.values())


@pytest.mark.parametrize("module", ["maas", "maas.cli.main"])
def test_the_client_path_imports_no_server_part(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print([m for m in {SERVER_MODULES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_a_client_command_is_never_refused() -> None:
    assert server_parts.refusal("infer") is None
    assert server_parts.refusal("models") is None


def test_here_every_server_part_is_installed() -> None:
    """The dev install (scripts/bootstrap.sh) has them all: `maas up` is not refused."""
    for command in server_parts.COMMAND_EXTRAS:
        assert server_parts.refusal(command) is None, command
