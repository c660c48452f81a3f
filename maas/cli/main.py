"""`maas`: the command line. Client commands talk to a gateway; `up` runs a local cluster.

The client commands need only the base install; `up`, `gateway`, `scheduler` and `worker`
need the server parts and say so, with the pip command, when they are missing
(maas/cli/server_parts.py)."""

from __future__ import annotations

import argparse
import logging
import sys

from maas.cli import (
    commands,
    console,
    explain,
    generate,
    keys,
    models,
    queues,
    server_parts,
    training,
    up,
    workers,
)
from maas.errors import MaasError


def _service(module: str) -> None:
    import runpy

    sys.argv = [f"maas {module}", *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__")


def _refuse(message: str) -> int:
    """A server-only command in an install without the server parts: one line, exit 2."""
    print(message, file=sys.stderr)
    return server_parts.EXIT_MISSING


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maas", description="Model-as-a-Service")
    sub = parser.add_subparsers(dest="command", required=True)
    up.add_parser(sub)
    commands.add_parsers(sub)
    explain.add_parsers(sub)
    generate.add_parsers(sub)
    models.add_parsers(sub.choices["models"])  # lifecycle: upload, alias, delete-version
    training.add_parsers(sub)
    keys.add_parsers(sub)
    workers.add_parsers(sub)
    queues.add_parsers(sub)
    console.add_parsers(sub)
    for name, text in (("gateway", "run a gateway process"),
                       ("scheduler", "run the scheduler daemon"),
                       ("worker", "run a worker process")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.set_defaults(service=name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("gateway", "scheduler", "worker"):
        if refused := server_parts.refusal(argv[0]):
            return _refuse(refused)
        _service(argv[0])
        return 0
    args = build_parser().parse_args(argv)
    if refused := server_parts.refusal(args.command):
        return _refuse(refused)
    logging.basicConfig(level=logging.WARNING)
    try:
        return int(args.func(args))
    except MaasError as err:
        return commands.fail(f"{err.code.name}: {err.message}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the CLI's boundary: one line, not a traceback
        return commands.fail(f"{type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
