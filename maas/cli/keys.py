"""`maas keys`: create, list and revoke API keys, rotate the admin key (admin), or generate
one offline."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.api_keys import SCOPES, new_api_key
from maas.cli.commands import add_client_flags, client_for, emit
from maas.v1 import key_service_pb2 as kpb

ADMIN_TENANT = "admin"  # the tenant of the bootstrap key (gateway/auth.py)


def _doc(key: kpb.ApiKey) -> dict[str, Any]:
    return MessageToDict(key, preserving_proto_field_name=True)


def _line(key: kpb.ApiKey) -> str:
    note = f"  ({key.description})" if key.description else ""
    return f"{key.key_id}  tenant {key.tenant}  scopes {','.join(key.scopes)}{note}"


def write_key_file(path: Path, api_key: str) -> None:
    """Writes a key to `path`, mode 0600 from its first byte; replaces a file already there
    in one step (a reader sees the old key or the new one, never half of it)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(api_key + "\n")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def rotate_admin(args: argparse.Namespace) -> tuple[kpb.CreateKeyResponse, list[kpb.ApiKey]]:
    """A new admin key (tenant `admin`, every scope), then every other key of tenant `admin`
    with the admin scope revoked (the bootstrap key among them), through the new key. The
    new key is written first (with --write), so no failure leaves the cluster without a
    known admin key."""
    with client_for(args) as client:
        replaced = [k for k in client.list_keys(ADMIN_TENANT) if "admin" in k.scopes]
        made = client.create_key(ADMIN_TENANT, list(SCOPES), "maas keys rotate-admin")
        try:
            if args.write:
                write_key_file(Path(args.write), made.api_key)
        except OSError:
            client.revoke_key(made.key.key_id)  # nobody could use it: nothing changed
            raise
    with client_for(args, api_key=made.api_key) as client:  # the old key may be one revoked
        return made, [client.revoke_key(k.key_id) for k in replaced
                      if k.key_id != made.key.key_id]


def cmd_rotate_admin(args: argparse.Namespace) -> int:
    made, revoked = rotate_admin(args)
    doc: dict[str, Any] = {"key": _doc(made.key), "revoked": [_doc(k) for k in revoked]}
    if args.write:
        doc["written_to"] = args.write
        head = [f"new admin key {made.key.key_id} written to {args.write} (mode 0600)"]
    else:
        doc["api_key"] = made.api_key
        head = [made.api_key, f"(new admin key {made.key.key_id}: shown only now; send it as "
                "MAAS_API_KEY or --api-key)"]
    tail = [f"revoked {_line(k)}" for k in revoked] or ["no admin key to revoke"]
    emit(args, doc, "\n".join(head + tail))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    if args.keys_command == "generate":
        print(new_api_key())
        return 0
    with client_for(args) as client:
        if args.keys_command == "create":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            made = client.create_key(args.tenant, scopes, args.description)
            emit(args, {"api_key": made.api_key, "key": _doc(made.key)},
                 f"{made.api_key}\n(key {made.key.key_id} of tenant {made.key.tenant}: shown "
                 "only now; send it as MAAS_API_KEY or --api-key)")
        elif args.keys_command == "revoke":
            key = client.revoke_key(args.key_id)
            emit(args, _doc(key), f"revoked {_line(key)}")
        else:
            keys = client.list_keys(args.tenant)
            emit(args, {"keys": [_doc(k) for k in keys]},
                 "\n".join(_line(k) for k in keys) or "no keys")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="API keys: create, list, revoke (admin), generate")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    create = ksub.add_parser("create", help="a new key for a tenant (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", default="infer",
                        help=f"comma-separated, any of {','.join(SCOPES)} (default: infer)")
    create.add_argument("--description", default="", help="what the key is for")
    lst = ksub.add_parser("list", help="every key (ids and bindings, never the keys)")
    lst.add_argument("--tenant", default="", help="only this tenant's keys")
    revoke = ksub.add_parser("revoke", help="revoke a key: refused within seconds")
    revoke.add_argument("key_id")
    rotate = ksub.add_parser(
        "rotate-admin", help="a new admin key (tenant admin, every scope); revokes the admin "
        "keys it replaces (tenant admin's, the bootstrap key among them)")
    rotate.add_argument("--write", default=None, metavar="FILE",
                        help="write the new key to FILE (mode 0600) instead of printing it, "
                             "e.g. the file MAAS_ADMIN_KEY_FILE names")
    for p in (create, lst, revoke, rotate):
        add_client_flags(p)
        p.set_defaults(func=cmd_keys)
    rotate.set_defaults(func=cmd_rotate_admin)
    generate = ksub.add_parser("generate", help="print a fresh key without a server "
                               "(for MAAS_ADMIN_KEY_FILE)")
    generate.set_defaults(func=cmd_keys)
