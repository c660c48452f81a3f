"""The console's settings, read once at start (flags over MAAS_* variables)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from maas.cli.console import DEFAULT_PORT

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ConsoleSettings:
    """Where the gateway is and how to reach it; where the console listens; whether users
    must log in with an API key (MAAS_AUTH=on)."""

    target: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    is_auth: bool = False
    timeout_s: float = 30.0
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def port_from(raw: str | int | None, env: Mapping[str, str]) -> int:
    """A flag's port, else MAAS_CONSOLE_PORT, else 8265."""
    value = raw if raw is not None else env.get("MAAS_CONSOLE_PORT") or DEFAULT_PORT
    try:
        port = int(value)
    except ValueError:
        raise SystemExit(f"maas console: MAAS_CONSOLE_PORT={value!r} is not a port") from None
    if not 0 <= port <= 65535:
        raise SystemExit(f"maas console: {port} is not a port (0-65535)")
    return port


def is_auth_on(env: Mapping[str, str] | None = None) -> bool:
    """MAAS_AUTH=on, as the gateway reads it ("on" or "off")."""
    return (env if env is not None else os.environ).get("MAAS_AUTH", "off") == "on"
