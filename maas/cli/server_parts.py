"""What the server-only commands (`maas up`, `maas gateway|scheduler|worker`) need beyond the
base install (the SDK and the client commands), and the one line that names the missing
extra when it is not installed:

    maas up needs the server parts: pip install 'maas-cluster[server,worker]' (missing: redis)
"""

from __future__ import annotations

import importlib.util
import sys

# The modules each extra of pyproject.toml provides, by the distribution that installs them
# (tests/unit/test_server_parts.py checks this against pyproject.toml).
EXTRA_MODULES: dict[str, dict[str, str]] = {
    "server": {"redis": "redis", "prometheus_client": "prometheus-client", "boto3": "boto3",
               **({} if sys.platform == "win32" else {"uvloop": "uvloop"}),
               "grpc_status": "grpcio-status", "grpc_health": "grpcio-health-checking",
               "grpc_reflection": "grpcio-reflection"},
    "worker": {"torch": "torch", "safetensors": "safetensors", "sklearn": "scikit-learn",
               "captum": "captum"},
    "console": {"starlette": "starlette", "jinja2": "jinja2", "uvicorn": "uvicorn"},
}
# The extras each server-only command needs: `maas up` runs every service and the demo.
COMMAND_EXTRAS: dict[str, tuple[str, ...]] = {
    "up": ("server", "worker"),  # server brings the console's extra
    "console": ("console",),
    "gateway": ("server",),
    "scheduler": ("server",),
    "worker": ("server", "worker"),
}
EXIT_MISSING = 2
# The missing distributions a refusal names (then: "and N more").
SHOWN_MISSING = 4


def missing_distributions(extras: tuple[str, ...]) -> list[str]:
    """The distributions of `extras` whose modules cannot be found (none is imported)."""
    return [distribution for extra in extras
            for module, distribution in EXTRA_MODULES[extra].items()
            if importlib.util.find_spec(module) is None]


def refusal(command: str) -> str | None:
    """Why `maas <command>` cannot run here, with the pip command that fixes it; None when it
    can (or when it is a client command)."""
    extras = COMMAND_EXTRAS.get(command)
    if extras is None:
        return None
    missing = missing_distributions(extras)
    if not missing:
        return None
    shown = ", ".join(missing[:SHOWN_MISSING])
    more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
    return (f"maas {command} needs the server parts: pip install "
            f"'maas-cluster[{','.join(extras)}]' (missing: {shown}{more})")
