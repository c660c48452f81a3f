"""The operators an uploaded archive may use: pure tensor computation, nothing else.

Allowed: the `aten` namespace (tensor math) except the operators below that reach files,
storage, futures or the console; the listed `prim` nodes (constants, containers, control
flow, attribute access); for torch.export graphs also control-flow higher-order operators
and Python's scalar arithmetic on symbolic sizes. Anything else (another namespace, custom
classes, RPC, threads, Python calls, an unknown node) is refused, naming the operator and
where it appears. TorchScript methods are inspected inlined (every call to a submodule or
function expanded), every method of every submodule, every nested block.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch

DENIED_ATEN = frozenset({
    "aten::from_file",  # maps any file into a tensor
    "aten::save",  # writes a file
    "aten::load",
    "aten::set_",  # re-points a tensor at another storage
    "aten::set_data",
    "aten::record_stream",
    "aten::wait",  # futures (threads)
    "aten::warn",  # writes to the worker's log
    "aten::_print",
    "aten::get_gradients",  # distributed autograd
})
ALLOWED_PRIM = frozenset({
    "prim::Constant", "prim::ListConstruct", "prim::ListUnpack", "prim::TupleConstruct",
    "prim::TupleUnpack", "prim::TupleIndex", "prim::TupleSlice", "prim::DictConstruct",
    "prim::DictIndex", "prim::If", "prim::Loop", "prim::GetAttr", "prim::SetAttr",
    "prim::RaiseException", "prim::Uninitialized", "prim::unchecked_cast",
    "prim::unchecked_unwrap_optional", "prim::NumToTensor", "prim::ImplicitTensorToNum",
    "prim::device", "prim::dtype", "prim::layout", "prim::min", "prim::max", "prim::abs",
    "prim::isinstance", "prim::is_cuda", "prim::is_cpu", "prim::requires_grad",
    "prim::shape", "prim::data", "prim::tolist", "prim::EnumName", "prim::EnumValue",
    "prim::StringIndex", "prim::AutogradZero", "prim::BroadcastSizes",
    "prim::ConstantChunk", "prim::TypeCheck", "prim::RequiresGradCheck", "prim::Return",
    "prim::Param", "prim::is_quantized", "prim::is_meta", "prim::is_sparse",
    "prim::is_mkldnn", "prim::is_xpu", "prim::is_mps", "prim::name", "prim::id",
})
ALLOWED_HIGHER_ORDER = frozenset({"higher_order::cond", "higher_order::while_loop",
                                  "higher_order::map_impl"})
_SCALAR_FUNCTIONS = frozenset({
    "_operator.getitem", "_operator.add", "_operator.sub", "_operator.mul",
    "_operator.floordiv", "_operator.truediv", "_operator.mod", "_operator.neg",
    "_operator.pos", "_operator.pow", "_operator.lt", "_operator.le", "_operator.gt",
    "_operator.ge", "_operator.eq", "_operator.ne", "_operator.and_", "_operator.or_",
    "_operator.not_", "math.ceil", "math.floor", "math.sqrt", "torch.sym_int",
    "torch.sym_float", "torch.sym_max", "torch.sym_min", "torch.sym_not", "torch.sym_ite",
    "torch._sym_sqrt", "torch.sym_sum",
})
_LINE = re.compile(r"line (\d+)")


def is_allowed(op: str) -> bool:
    namespace = op.split("::", 1)[0]
    if namespace == "aten":
        return op not in DENIED_ATEN
    return op in ALLOWED_PRIM or op in ALLOWED_HIGHER_ORDER or op in _SCALAR_FUNCTIONS


def _refusal(op: str, method: str, line: str) -> str:
    where = f"{method}, line {line}" if line else method
    return f"operator {op} is not allowed ({where})"


def _nodes(block: Any) -> Iterator[Any]:
    """Every node of a TorchScript graph or block, nested blocks included."""
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def _line(node: Any) -> str:
    """The line of the archive's code (the serialized source) where a node comes from."""
    found = _LINE.search(node.sourceRange() or "")
    return found.group(1) if found else ""


def torchscript_violations(module: torch.jit.ScriptModule) -> list[str]:
    """Each operator not allowed, once per operator and method, in graph order."""
    found: dict[tuple[str, str], str] = {}
    for prefix, sub in module.named_modules():
        for name in sub._c._method_names():
            method = f"{prefix}.{name}" if prefix else name
            graph = sub._c._get_method(name).graph.copy()
            torch._C._jit_pass_inline(graph)
            for node in _nodes(graph):
                op = node.kind()
                if not is_allowed(op) and (op, method) not in found:
                    found[op, method] = _refusal(op, method, _line(node))
    return list(found.values())


def _target_name(target: Any) -> str:
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(target._schema.name) if hasattr(target, "_schema") else str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order::{target.name()}"  # type: ignore[no-untyped-call]
    module = getattr(target, "__module__", None) or "?"
    return f"{module}.{getattr(target, '__name__', repr(target))}"


def export_violations(program: Any) -> list[str]:
    """The same for a torch.export program: every call in every (sub)graph."""
    found: dict[tuple[str, str], str] = {}
    for prefix, sub in program.graph_module.named_modules():
        graph = getattr(sub, "graph", None)
        if graph is None:
            continue
        where = prefix or "forward"
        for node in graph.nodes:
            if node.op == "call_function":
                op = _target_name(node.target)
            elif node.op == "call_method":
                op = f"method::{node.target}"
            else:
                continue
            if not is_allowed(op) and (op, where) not in found:
                found[op, where] = _refusal(op, where, "")
    return list(found.values())
