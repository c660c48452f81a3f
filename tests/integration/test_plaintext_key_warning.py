"""The SDK and CLI warn once per process when an API key would cross the network in
plaintext (each case runs in its own interpreter: "once" is per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(60)

KEY = "maas_" + "0" * 16 + "_" + "1" * 64
# TEST-NET-1 (RFC 5737): never routed, so nothing is ever sent; channels connect lazily.
REMOTE = "192.0.2.1:50051"


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "default", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_sdk_warns_once_per_process() -> None:
    done = python(f"""
        import asyncio, maas
        for _ in range(3):
            maas.Client({REMOTE!r}, api_key={KEY!r}).close()
        asyncio.run(maas.AsyncClient({REMOTE!r}, api_key={KEY!r}).close())
        """)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("PlaintextKeyWarning") == 1, done.stderr
    assert f"the API key goes to {REMOTE} without TLS" in done.stderr
    assert KEY not in done.stderr


@pytest.mark.parametrize("options", [
    "api_key=KEY",  # loopback
    "api_key=None",  # no key to leak
    "api_key=KEY, tls=True",  # TLS
])
def test_no_warning_when_the_key_stays_safe(options: str) -> None:
    target = "127.0.0.1:50051" if options == "api_key=KEY" else REMOTE
    done = python(f"""
        import maas, warnings
        warnings.simplefilter("error")
        KEY = {KEY!r}
        maas.Client({target!r}, {options}).close()
        """)
    assert done.returncode == 0, done.stderr
    assert "PlaintextKeyWarning" not in done.stderr


def test_the_cli_warns_once() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "maas.cli.main", "models", "list", "--target", REMOTE,
         "--api-key", KEY, "--timeout", "0.2"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1  # nothing answers there
    assert done.stderr.count("PlaintextKeyWarning") == 1, done.stderr
