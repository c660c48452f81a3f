"""`maas explain`: attributions of a model's output to its inputs (computed on a worker)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from maas.cli.commands import _read_input, add_client_flags, client_for, emit
from maas.explanation import METHODS, Explanation


def _text(e: Explanation) -> str:
    lines = [f"{e.method}, model version {e.model_version}"]
    for row, target in enumerate(e.targets):
        line = f"row {row}: class {target}, output {e.target_outputs[row]:.6g}"
        if e.convergence_deltas.size:
            line += (f", baseline {e.baseline_outputs[row]:.6g}, "
                     f"convergence delta {e.convergence_deltas[row]:.3g}")
        lines.append(line)
    for name, a in e.attributions.items():
        lines.append(f"{name} {list(a.shape)}:\n{np.array2string(a, precision=4)}")
    return "\n".join(lines)


def cmd_explain(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        meta = client.model_metadata(args.model, args.version)
        shapes = {t.name: list(t.shape) for t in meta.inputs}
        inputs = dict(_read_input(s, shapes, args.seed)
                      for s in args.input or [f"{n}=random" for n in shapes])
        baselines = dict(_read_input(s, shapes, args.seed) for s in args.baseline or [])
        e = client.explain(args.model, inputs, version=args.version, method=args.method,
                           target=args.target_class, baselines=baselines, n_steps=args.steps)
    if args.output:
        arrays: dict[str, np.ndarray] = e.attributions  # float32 arrays: nothing to pickle
        np.savez(Path(args.output), allow_pickle=False, **arrays)
    doc = {"model": args.model, "model_version": e.model_version, "method": e.method,
           "targets": e.targets.tolist(), "target_outputs": e.target_outputs.tolist(),
           "baseline_outputs": e.baseline_outputs.tolist(),
           "convergence_deltas": e.convergence_deltas.tolist(),
           "attributions": {n: {"shape": list(a.shape), "data": a.tolist()}
                            for n, a in e.attributions.items()}}
    emit(args, doc, _text(e))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("explain", help="attributions of a model's output to its inputs "
                                       "(Integrated Gradients or saliency)")
    p.add_argument("model")
    p.add_argument("--version", default="")
    p.add_argument("--input", action="append",
                   help="name=file.npy or name=random (default: every input random)")
    p.add_argument("--baseline", action="append",
                   help="name=file.npy: Integrated Gradients' start (default: zeros)")
    p.add_argument("--method", choices=sorted(METHODS), default="ig")
    p.add_argument("--class", type=int, default=None, dest="target_class",
                   help="class to explain (default: each row's predicted class)")
    p.add_argument("--steps", type=int, default=0, help="Integrated Gradients' steps (0 = 50)")
    p.add_argument("--output", default=None, help="also write the attributions to this .npz")
    p.add_argument("--seed", type=int, default=0, help="seed of random inputs")
    add_client_flags(p)
    p.set_defaults(func=cmd_explain)
