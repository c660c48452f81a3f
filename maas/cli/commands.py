"""Client commands of the CLI: infer and models. Each prints text, or one JSON document."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.json_format import MessageToDict

from maas.client import Client
from maas.errors import FieldViolation, InvalidArgument


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=2) if args.json else text)


def _read_input(spec: str, shapes: dict[str, list[int]], seed: int) -> tuple[str, np.ndarray]:
    name, sep, source = spec.partition("=")
    if not sep:
        raise InvalidArgument(f"--input {spec!r}: use name=file.npy or name=random",
                              violations=(FieldViolation("--input", "not name=value"),))
    if source == "random":
        if name not in shapes:
            raise InvalidArgument(f"--input {name}=random: the model has no input {name!r}; "
                                  f"its inputs: {sorted(shapes)}")
        shape = [1 if d == -1 else d for d in shapes[name]]
        return name, np.random.default_rng(seed).random(shape, dtype=np.float32)
    return name, np.load(source, allow_pickle=False)


def cmd_infer(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        meta = client.model_metadata(args.model, args.version)
        shapes = {t.name: list(t.shape) for t in meta.inputs}
        specs = args.input or [f"{n}=random" for n in shapes]
        inputs = dict(_read_input(s, shapes, args.seed) for s in specs)
        outputs = client.infer(args.model, inputs, version=args.version)
    doc = {"model": args.model, "model_version": args.version or meta.versions[-1],
           "outputs": {n: {"datatype": str(a.dtype), "shape": list(a.shape),
                           "data": a.tolist()} for n, a in outputs.items()}}
    lines = [f"{n} {list(a.shape)} {a.dtype}:\n{np.array2string(a, precision=4)}"
             for n, a in outputs.items()]
    emit(args, doc, "\n".join(lines))
    return 0


@contextlib.contextmanager
def byte_progress(args: argparse.Namespace, total: int | None, what: str
                  ) -> Iterator[Callable[[int], None]]:
    """A progress bar (bytes, MB/s) on stderr while a file moves; silent with --json or
    when stderr is not a terminal."""
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what,
              file=sys.stderr, disable=bool(getattr(args, "json", False))
              or not sys.stderr.isatty()) as bar:
        yield bar.update


def _version_doc(v: Any) -> dict[str, Any]:
    return MessageToDict(v, preserving_proto_field_name=True)


def cmd_models(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.models_command == "register":
            with byte_progress(args, Path(args.weights).stat().st_size, "upload") as bar:
                v = client.register_model(args.name, args.architecture, args.weights,
                                          args.config, progress=bar)
            emit(args, _version_doc(v),
                 f"registered {v.model} version {v.version} (sha256 {v.weights_sha256})")
        elif args.models_command == "get":
            m = client.get_model(args.name)
            lines = [f"{m.name} (latest {m.latest_version})"] + [
                f"  v{v.version}  {v.architecture}  sha256 {v.weights_sha256}"
                for v in m.versions]
            emit(args, _version_doc(m), "\n".join(lines))
        else:
            models = client.list_models()
            emit(args, {"models": [_version_doc(m) for m in models]},
                 "\n".join(f"{m.name}  latest v{m.latest_version}  "
                           f"({len(m.versions)} versions)" for m in models) or "no models")
    return 0


def client_for(args: argparse.Namespace, api_key: str | None = None) -> Client:
    """The client the common flags ask for (with another API key when given)."""
    return Client(args.target, timeout_s=args.timeout, api_key=api_key or args.api_key,
                  root_certificates=args.ca_file, certificate_chain=args.cert_file,
                  private_key=args.key_file)


def add_client_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None,
                   help="gateway HOST:PORT (default: MAAS_TARGET, else 127.0.0.1:50051)")
    p.add_argument("--api-key", default=None,
                   help="API key sent as `authorization: Bearer` (default: MAAS_API_KEY)")
    p.add_argument("--ca-file", default=None, help="TLS: the gateway's CA (PEM); turns TLS on")
    p.add_argument("--cert-file", default=None, help="mutual TLS: client certificate (PEM)")
    p.add_argument("--key-file", default=None, help="mutual TLS: client private key (PEM)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each call, seconds")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    infer = sub.add_parser("infer", help="run a model on inputs and print its outputs")
    infer.add_argument("model")
    infer.add_argument("--version", default="")
    infer.add_argument("--input", action="append",
                       help="name=file.npy or name=random (default: every input random)")
    infer.add_argument("--seed", type=int, default=0, help="seed of random inputs")
    add_client_flags(infer)
    infer.set_defaults(func=cmd_infer)

    models = sub.add_parser("models", help="register, list and describe models")
    msub = models.add_subparsers(dest="models_command", required=True)
    reg = msub.add_parser("register", help="register weights as the next version of a model")
    reg.add_argument("--name", required=True)
    reg.add_argument("--architecture", required=True)
    reg.add_argument("--weights", required=True, help="a .safetensors file")
    reg.add_argument("--config", default=None, help="the architecture's config as JSON")
    get = msub.add_parser("get", help="a model and its versions")
    get.add_argument("name")
    lst = msub.add_parser("list", help="every model")
    for p in (reg, get, lst):
        add_client_flags(p)
        p.set_defaults(func=cmd_models)


def fail(message: str) -> int:
    print(f"maas: {message}", file=sys.stderr)
    return 1
