"""`maas up` protects the redis-server it starts: a generated password (kept in the data
directory, mode 0600, reused) with `requirepass`, never on a command line or printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from maas.cli.up import REDIS_PASSWORD_FILE, LocalCluster, masked_url, start_redis

pytestmark = pytest.mark.timeout(60)


def started(data_dir: Path) -> tuple[LocalCluster, str]:
    cluster = LocalCluster(dict(os.environ), data_dir)
    return cluster, start_redis(cluster)


def test_redis_needs_the_generated_password(tmp_path: Path,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    cluster, url = started(tmp_path)
    try:
        password = (tmp_path / REDIS_PASSWORD_FILE).read_text().strip()
        assert len(password) >= 32
        assert (tmp_path / REDIS_PASSWORD_FILE).stat().st_mode & 0o777 == 0o600
        assert url.startswith(f"redis://:{password}@127.0.0.1:")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        anonymous = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        client = redis.Redis.from_url(url)
        client.set("kept", "1")
        client.close()
        [server] = cluster.services
        assert server.proc is not None
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline  # `ps` would show it to every user
        assert masked_url(url) == f"redis://:****@127.0.0.1:{port}/0"
    finally:
        cluster.stop(grace_s=5)
    cluster, again = started(tmp_path)  # the next start: the same password, the same data
    try:
        assert again.partition("@")[0] == url.partition("@")[0]
        client = redis.Redis.from_url(again)
        assert client.get("kept") == b"1"
        client.close()
    finally:
        cluster.stop(grace_s=5)
    out, err = capfd.readouterr()
    assert password not in out + err
