"""Nothing is ever unpickled: no pickle module, no torch.load without weights_only=True, no
allow_pickle=True, anywhere in the project's Python (generated stubs included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("maas", "gateway", "scheduler", "worker", "bench")
PICKLERS = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _call_problem(call: ast.Call) -> str | None:
    func = call.func
    keywords = {k.arg: k.value for k in call.keywords if k.arg}
    if (isinstance(func, ast.Attribute) and func.attr == "load"
            and isinstance(func.value, ast.Name) and func.value.id == "torch"
            and not _is_true(keywords.get("weights_only", ast.Constant(False)))):
        return "torch.load( without weights_only=True"
    if "allow_pickle" in keywords and not (isinstance(keywords["allow_pickle"], ast.Constant)
                                           and keywords["allow_pickle"].value is False):
        return "allow_pickle= other than False"
    if isinstance(func, ast.Attribute) and func.attr in ("read_pickle", "loads_pickle"):
        return f".{func.attr}("
    return None


def problems(source: str) -> list[str]:
    """Each unpickling construct in `source`, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
            what = f"import {sorted(names & PICKLERS)}" if names & PICKLERS else None
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLERS:
            what = f"from {node.module} import"
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
              and node.value.id in PICKLERS):
            what = f"{node.value.id}.{node.attr}"
        elif isinstance(node, ast.Call):
            what = _call_problem(node)
        if what:
            found.append(f"{getattr(node, 'lineno', 0)}: {what}")
    return found


def test_the_project_never_unpickles() -> None:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50, "the scan found too few files: wrong root?"
    found = {str(p.relative_to(ROOT)): hits for p in files
             if (hits := problems(p.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.mark.parametrize("source", [
    "import pickle", "import pickle as p", "from pickle import loads", "import dill",
    "x = pickle.loads(b'')", "import torch\ntorch.load('w.pt')",
    "torch.load(f, map_location='cpu')", "torch.load(f, weights_only=False)",
    "np.load(f, allow_pickle=True)", "np.load(f, allow_pickle=flag)",
    "pd.read_pickle('x')",
])
def test_the_scan_catches(source: str) -> None:
    assert problems(source), source


@pytest.mark.parametrize("source", [
    "torch.load(f, weights_only=True)", "safetensors.torch.load(data)",
    "np.load(f, allow_pickle=False)", "np.load(f)", "# import pickle", "'pickle.loads'",
])
def test_the_scan_lets_safe_code_be(source: str) -> None:
    assert problems(source) == [], source
