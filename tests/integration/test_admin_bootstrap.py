"""The bootstrap admin key (MAAS_ADMIN_KEY_FILE) is installed once per cluster, and
`maas keys rotate-admin` replaces it (a real gateway, restarted on one redis-server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

import maas
from maas.api_keys import ensure_key_file
from tests.inprocess import running_gateway

pytestmark = pytest.mark.timeout(90)

MAAS = [sys.executable, "-m", "maas.cli.main"]


def gateway(redis_url: str, tmp_path: Path, key_file: Path) -> AbstractContextManager[int]:
    return running_gateway(redis_url, tmp_path / "data", auth="on",
                           admin_key_file=str(key_file))


def is_accepted(target: str, api_key: str) -> bool:
    with maas.Client(target, api_key=api_key, timeout_s=10) as client:
        try:
            client.list_keys()
        except maas.Unauthenticated:
            return False
    return True


def wait_refused(target: str, api_key: str) -> None:
    """Until the gateway refuses the key (it caches a look-up for at most a second)."""
    deadline = time.monotonic() + 3
    while is_accepted(target, api_key):
        assert time.monotonic() < deadline, "the key is still accepted 3 s after its revoke"
        time.sleep(0.1)


def test_a_revoked_bootstrap_key_stays_revoked_across_restarts(redis_url: str,
                                                                 tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    bootstrap = ensure_key_file(key_file)
    with gateway(redis_url, tmp_path, key_file) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=bootstrap) as admin:
            ops = admin.create_key("admin", ["admin"], "ops").api_key
        with maas.Client(target, api_key=ops) as admin:
            [record] = [k for k in admin.list_keys("admin") if k.description != "ops"]
            assert record.description == "MAAS_ADMIN_KEY_FILE"
            admin.revoke_key(record.key_id)
        wait_refused(target, bootstrap)
    with gateway(redis_url, tmp_path, key_file) as port:  # the same file, a new start
        target = f"127.0.0.1:{port}"
        assert not is_accepted(target, bootstrap)
        assert is_accepted(target, ops)


def test_no_bootstrap_once_an_admin_key_exists(redis_url: str, tmp_path: Path) -> None:
    first = ensure_key_file(tmp_path / "first.key")
    with gateway(redis_url, tmp_path, tmp_path / "first.key"):
        pass
    other = ensure_key_file(tmp_path / "other.key")  # e.g. a Secret replaced by mistake
    with gateway(redis_url, tmp_path, tmp_path / "other.key") as port:
        target = f"127.0.0.1:{port}"
        assert is_accepted(target, first)
        assert not is_accepted(target, other)


def rotate(target: str, api_key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MAAS, "keys", "rotate-admin", "--target", target, "--json", *args],
                          env={**os.environ, "MAAS_API_KEY": api_key}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_rotate_admin_replaces_the_bootstrap_key(redis_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    bootstrap = ensure_key_file(key_file)
    with gateway(redis_url, tmp_path, key_file) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=bootstrap) as admin:
            tenant_key = admin.create_key("acme", ["infer"]).api_key
        rotated = tmp_path / "rotated.key"
        done = rotate(target, bootstrap, "--write", str(rotated))
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert rotated.stat().st_mode & 0o777 == 0o600
        new_key = rotated.read_text().strip()
        assert new_key not in done.stdout and "api_key" not in doc  # only the file holds it
        assert [k["description"] for k in doc["revoked"]] == ["MAAS_ADMIN_KEY_FILE"]
        assert doc["key"]["tenant"] == "admin"
        assert doc["key"]["scopes"] == ["infer", "train", "admin"]
        wait_refused(target, bootstrap)
        assert is_accepted(target, new_key)
        with maas.Client(target, api_key=tenant_key) as acme:
            assert acme.list_models() == []  # other tenants' keys are left alone
        printed = rotate(target, new_key)  # no --write: the key is printed, once
        assert printed.returncode == 0, printed.stderr
        again = json.loads(printed.stdout)
        assert printed.stdout.count(again["api_key"]) == 1
        assert [k["key_id"] for k in again["revoked"]] == [doc["key"]["key_id"]]
    with gateway(redis_url, tmp_path, key_file) as port:  # the old file, a new start
        target = f"127.0.0.1:{port}"
        assert not is_accepted(target, bootstrap)
        assert is_accepted(target, again["api_key"])
