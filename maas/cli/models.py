"""`maas models` lifecycle commands: upload an archive, aliases, delete a version."""

from __future__ import annotations

import argparse
from pathlib import Path

from maas.cli.commands import add_client_flags, byte_progress, client_for, emit
from maas.client import Client, TensorSpecs
from maas.errors import FieldViolation, InvalidArgument
from maas.model_files import file_name
from maas.v1.model_service_pb2 import Model


def _model_text(m: Model) -> str:
    aliases = ", ".join(f"{a} → v{v}" for a, v in sorted(m.aliases.items())) or "none"
    return (f"{m.name}: versions {', '.join(v.version for v in m.versions)}; "
            f"latest v{m.latest_version}; aliases {aliases}")


def _doc(m: Model) -> dict[str, object]:
    return {"name": m.name, "latest_version": m.latest_version, "aliases": dict(m.aliases),
            "versions": [v.version for v in m.versions], "unloaded": m.unloaded}


def parse_specs(specs: list[str], flag: str) -> TensorSpecs:
    """`name:DATATYPE:d0,d1,...` each (-1 = any size), e.g. input:FP32:-1,4."""
    found: dict[str, tuple[str, list[int]]] = {}
    for spec in specs:
        name, datatype, dims = [*spec.split(":"), "", ""][:3]
        try:
            found[name] = (datatype, [int(d) for d in dims.split(",")])
        except ValueError:
            raise InvalidArgument(f"{flag} {spec!r}: use name:DATATYPE:d0,d1,... "
                                  "e.g. input:FP32:-1,4",
                                  violations=(FieldViolation(flag, "not name:type:dims"),)
                                  ) from None
    return found


def cmd_lifecycle(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        if args.models_command == "download":
            return _download(args, client)
        if args.models_command == "upload":
            with byte_progress(args, Path(args.archive).stat().st_size, "upload") as bar:
                v = client.upload_model(args.name, args.archive,
                                        parse_specs(args.input, "--input"),
                                        parse_specs(args.output, "--output"), progress=bar)
            emit(args, {"model": v.model, "version": v.version, "platform": v.platform,
                        "archive_sha256": v.archive_sha256},
                 f"registered {v.model} version {v.version} ({v.platform}, sha256 "
                 f"{v.archive_sha256})")
            return 0
        if args.models_command == "delete-version":
            m = client.delete_model_version(args.name, args.version)
        elif args.alias_command == "set":
            m = client.set_model_alias(args.name, args.alias, args.version)
        else:
            m = client.delete_model_alias(args.name, args.alias)
    emit(args, _doc(m), _model_text(m))
    return 0


def _download(args: argparse.Namespace, client: Client) -> int:
    with byte_progress(args, None, "download") as bar:
        v = client.download_model(args.name, args.output_dir, version=args.version,
                                  progress=bar)
    path = Path(args.output_dir) / file_name(v)
    emit(args, {"model": v.model, "version": v.version, "file": str(path),
                "sha256": v.weights_sha256 or v.archive_sha256,
                "manifest": str(Path(args.output_dir) / "manifest.json")},
         f"downloaded {v.model} version {v.version} to {path} (+ manifest.json)")
    return 0


def add_parsers(models: argparse.ArgumentParser) -> None:
    """Adds the lifecycle commands to the `models` parser of maas.cli.commands."""
    msub = next(a for a in models._actions if isinstance(a, argparse._SubParsersAction))
    upload = msub.add_parser("upload", help="a TorchScript or torch.export archive as the "
                             "next version of a model")
    upload.add_argument("--name", required=True)
    upload.add_argument("--archive", required=True,
                        help="torch.jit.save (.pt) or torch.export.save (.pt2) file")
    upload.add_argument("--input", action="append", required=True,
                        help="name:DATATYPE:dims, e.g. input:FP32:-1,4 (repeat per input)")
    upload.add_argument("--output", action="append", required=True,
                        help="name:DATATYPE:dims (repeat per output)")
    download = msub.add_parser("download", help="a version's weights or archive and its "
                               "manifest, to run elsewhere")
    download.add_argument("name")
    download.add_argument("--version", default="", help="number or alias (default: latest)")
    download.add_argument("-o", "--output-dir", required=True, help="folder to write into")
    delete = msub.add_parser("delete-version", help="delete a version (refused while an "
                             "alias points to it)")
    delete.add_argument("name")
    delete.add_argument("version")
    alias = msub.add_parser("alias", help="set or delete an alias (e.g. production → 3)")
    asub = alias.add_subparsers(dest="alias_command", required=True)
    set_ = asub.add_parser("set", help="point ALIAS at VERSION (atomic)")
    set_.add_argument("name")
    set_.add_argument("alias")
    set_.add_argument("version")
    drop = asub.add_parser("delete", help="remove an alias")
    drop.add_argument("name")
    drop.add_argument("alias")
    for p in (upload, download, delete, set_, drop):
        add_client_flags(p)
        p.set_defaults(func=cmd_lifecycle)
