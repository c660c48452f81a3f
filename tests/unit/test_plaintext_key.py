"""Which gRPC targets are this machine (an API key sent there in plaintext stays local)."""

from __future__ import annotations

import pytest

from maas.rpc import is_loopback


@pytest.mark.parametrize("target", [
    "127.0.0.1:50051", "127.8.9.10:1", "localhost:50051", "LOCALHOST", "[::1]:50051", "::1",
    "dns:///localhost:50051", "ipv4:127.0.0.1:50051", "ipv6:[::1]:50051", "unix:/tmp/maas.sock",
    "0.0.0.0:50051",
])
def test_loopback_targets(target: str) -> None:
    assert is_loopback(target)


@pytest.mark.parametrize("target", [
    "10.0.0.7:50051", "192.0.2.1:443", "gateway.example.com:443", "maas-gateway:50051",
    "[2001:db8::1]:50051", "dns:///maas.example.com:443", "localhost.example.com:50051",
    "ipv4:127.0.0.1:50051,10.0.0.7:50051",  # every address must be local
])
def test_remote_targets(target: str) -> None:
    assert not is_loopback(target)
