"""`maas console`: the web console (console/, the `console` extra) for a gateway, on
http://HOST:PORT/ (default 127.0.0.1:8265, MAAS_CONSOLE_PORT). `maas up` starts one."""

from __future__ import annotations

import argparse
import os

# The console's port unless told (MAAS_CONSOLE_PORT, --port / `maas up --console-port`).
DEFAULT_PORT = 8265


def cmd_console(args: argparse.Namespace) -> int:
    from console.server import serve
    from console.settings import ConsoleSettings, is_auth_on, port_from
    from maas.rpc import default_target

    settings = ConsoleSettings(
        target=args.target or default_target(),
        host=args.host or os.environ.get("MAAS_CONSOLE_HOST") or "127.0.0.1",
        port=port_from(args.port, os.environ), is_auth=args.auth == "on" or (
            args.auth is None and is_auth_on()),
        timeout_s=args.timeout, ca_file=args.ca_file, cert_file=args.cert_file,
        key_file=args.key_file)
    print(f"serving http://{settings.host}:{settings.port}/ for gateway {settings.target} "
          f"(auth {'on' if settings.is_auth else 'off'})", flush=True)
    serve(settings)
    return 0


def main(argv: list[str]) -> int:
    """`python -m console` (what `maas up` runs): the flags of `maas console`."""
    parser = argparse.ArgumentParser(prog="maas console", description="the maas web console")
    add_flags(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    add_flags(sub.add_parser("console", help="serve the web console for a gateway"))


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default=None,
                   help="gateway HOST:PORT (default: MAAS_TARGET, else 127.0.0.1:50051)")
    p.add_argument("--host", default=None,
                   help="listen address (default: MAAS_CONSOLE_HOST, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=None,
                   help=f"listen port (default: MAAS_CONSOLE_PORT, else {DEFAULT_PORT})")
    p.add_argument("--auth", choices=("on", "off"), default=None,
                   help="ask each user for an API key (default: MAAS_AUTH, as the gateway)")
    p.add_argument("--ca-file", default=None, help="TLS: the gateway's CA (PEM); turns TLS on")
    p.add_argument("--cert-file", default=None, help="mutual TLS: client certificate (PEM)")
    p.add_argument("--key-file", default=None, help="mutual TLS: client private key (PEM)")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="deadline of each call to the gateway, seconds")
    p.set_defaults(func=cmd_console)
