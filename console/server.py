"""Runs the console: uvicorn serving the application on its host and port until SIGINT or
SIGTERM (open event streams get a short grace, then close)."""

from __future__ import annotations

import logging
import os

import uvicorn

from console.app import build_app
from console.settings import ConsoleSettings

log = logging.getLogger(__name__)
# How long open pages' event streams may go on after a stop was asked.
SHUTDOWN_GRACE_S = 2


def serve(settings: ConsoleSettings) -> None:
    """Serves until stopped. The process's own MAAS_API_KEY is dropped first: every call the
    console makes carries the key of the user it serves, never one of its own."""
    os.environ.pop("MAAS_API_KEY", None)
    config = uvicorn.Config(build_app(settings), host=settings.host, port=settings.port,
                            log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                            proxy_headers=False, server_header=False)
    log.info("maas console on http://%s:%d/ for gateway %s (auth %s)", settings.host,
             settings.port, settings.target, "on" if settings.is_auth else "off")
    uvicorn.Server(config).run()
