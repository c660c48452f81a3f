"""The operator allowlist of uploaded archives, and the code check the gateway runs first."""

from __future__ import annotations

import io
import re
import warnings

import torch

from runtime.archives import check_code
from tests.hostile_archives import (
    Prints,
    ReadsFile,
    RunsAtLoad,
    Writer,
    loads_a_file,
    scripted,
    unknown_namespace,
)
from tests.model_archives import exported, torchscript
from worker.sandbox.allowlist import (
    export_violations,
    is_allowed,
    torchscript_violations,
)


def _loaded(data: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(io.BytesIO(data))  # type: ignore[no-untyped-call]


def test_clean_archives_pass_both_checks() -> None:
    assert check_code(torchscript(2.0)) == []
    assert torchscript_violations(_loaded(torchscript(2.0))) == []
    assert check_code(exported(2.0)) == []
    program = torch.export.load(io.BytesIO(exported(2.0)))
    assert export_violations(program) == []


def test_the_code_check_finds_files_namespaces_and_setstate_without_torch() -> None:
    [reads] = check_code(scripted(ReadsFile("/etc/passwd")))
    assert re.fullmatch(r"operator aten::from_file is not allowed \(forward, "
                        r"code/__torch__/tests/hostile_archives.py line \d+\)", reads)
    assert any("aten::save" in v for v in check_code(scripted(Writer("/tmp/x"))))
    assert any("aten::load" in v for v in check_code(loads_a_file()))
    found = check_code(unknown_namespace())
    assert found and "evil::steal" in found[0] and "unknown namespace" in found[0]
    [setstate] = check_code(scripted(RunsAtLoad()))
    assert re.fullmatch(r"method __setstate__ runs while the archive loads and is not allowed "
                        r"\(__setstate__, code/__torch__/tests/hostile_archives.py line \d+\)",
                        setstate)


def test_the_graph_check_names_operator_method_and_line() -> None:
    """Found in the loaded graph: inlined from a submodule, and ops the text check misses."""
    writer = torchscript_violations(_loaded(scripted(Writer("/tmp/x"))))
    assert [v.split(", line")[0] for v in writer] == [  # inlined into forward, and its own
        "operator aten::save is not allowed (forward",
        "operator aten::save is not allowed (inner.forward"]
    reads = torchscript_violations(_loaded(scripted(ReadsFile("/etc/passwd"))))
    assert reads[0].startswith("operator aten::from_file is not allowed (forward")
    printing = scripted(Prints())
    assert check_code(printing) == []  # nothing to see in the text
    assert torchscript_violations(_loaded(printing))[0].startswith(
        "operator prim::Print is not allowed (forward")


def test_the_allowlist() -> None:
    for op in ("aten::conv2d", "aten::add", "prim::If", "prim::Loop", "higher_order::cond",
               "_operator.getitem"):
        assert is_allowed(op), op
    for op in ("aten::from_file", "aten::save", "aten::set_", "prim::Print", "prim::fork",
               "prim::rpc_async", "prim::CreateObject", "prim::PythonOp", "evil::steal",
               "quantized::linear", "builtins.open", "os.system"):
        assert not is_allowed(op), op
