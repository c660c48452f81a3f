"""The Dockerfile, read as text (no docker here): the targets the manifests pull, exec-form
entry points so SIGTERM reaches python, a non-root user that matches the pods' runAsUser,
torch only in the worker, and a build context that holds every package the wheel needs.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Rendered

REPO = Path(__file__).resolve().parents[2]
FROM = re.compile(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if match := FROM.match(line):
            current = stages.setdefault(match.group(2) or f"stage{len(stages)}", [])
            current.append(("FROM", match.group(1)))
        else:
            current.append((keyword.upper(), args.strip()))
    return stages


def _last(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for k, args in stage if k == keyword]
    assert found, f"no {keyword}"
    return found[-1]


@pytest.mark.parametrize(("target", "role"), [("gateway", "gateway"), ("worker", "worker")])
def test_targets_run_their_entry_point_in_exec_form(target: str, role: str) -> None:
    stage = _stages()[target]
    command = json.loads(_last(stage, "ENTRYPOINT")) + json.loads(_last(stage, "CMD"))
    assert command in (["python", "-m", role], ["maas", role])


@pytest.mark.parametrize("target", ["gateway", "worker"])
def test_targets_run_as_the_pods_non_root_user(target: str, rendered: Rendered) -> None:
    user, _, group = _last(_stages()[target], "USER").partition(":")
    assert user.isdigit() and int(user) != 0, "numeric, so runAsNonRoot can verify it"
    for role in ("gateway", "scheduler", "worker"):
        pod = rendered.workload(role)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(user), role
        assert pod["securityContext"]["runAsGroup"] == int(group or user), role


def test_torch_only_in_the_worker_image() -> None:
    stages = _stages()
    runs = {name: " ".join(a for k, a in s if k == "RUN") for name, s in stages.items()}
    copies = {name: [a for k, a in s if k == "COPY" and "--from=" in a]
              for name, s in stages.items()}
    assert "[server,worker]" in runs["worker-venv"] and "torch" in runs["worker-venv"]
    assert "torch" not in runs["gateway-venv"] and "worker]" not in runs["gateway-venv"]
    assert "[server]" in runs["gateway-venv"], "the base install has no server parts"
    assert copies["gateway"] == ["--from=gateway-venv /opt/maas /opt/maas"]
    assert copies["worker"] == ["--from=worker-venv /opt/maas /opt/maas"]


def test_build_context_holds_every_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted(p.rstrip("*") for p in includes)
    allowed = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()}
    copied = [a.split()[0].rstrip("/") for k, a in _stages()["wheel"] if k == "COPY"]
    for package in packages:
        assert f"!{package}/" in allowed, package
        assert package in copied, package
    assert "pyproject.toml" in " ".join(copied)
