"""`maas keys`: create, list and revoke API keys (admin), or generate one offline."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.json_format import MessageToDict

from maas.api_keys import SCOPES, new_api_key
from maas.cli.commands import add_client_flags, client_for, emit
from maas.v1 import key_service_pb2 as kpb


def _doc(key: kpb.ApiKey) -> dict[str, Any]:
    return MessageToDict(key, preserving_proto_field_name=True)


def _line(key: kpb.ApiKey) -> str:
    note = f"  ({key.description})" if key.description else ""
    return f"{key.key_id}  tenant {key.tenant}  scopes {','.join(key.scopes)}{note}"


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
    for p in (create, lst, revoke):
        add_client_flags(p)
        p.set_defaults(func=cmd_keys)
    generate = ksub.add_parser("generate", help="print a fresh key without a server "
                               "(for MAAS_ADMIN_KEY_FILE)")
    generate.set_defaults(func=cmd_keys)
