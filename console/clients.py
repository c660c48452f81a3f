"""The SDK clients the console calls the gateway with: one `maas.AsyncClient` per API key in
use (each user's own key, from their cookie; none when auth is off), the least recently used
closed past a bound. The console never calls with a key of its own."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from console.settings import ConsoleSettings
from maas import AsyncClient

# Distinct keys whose channel stays open; the least recently used one past this is closed.
MAX_CLIENTS = 32


class ClientPool:
    def __init__(self, settings: ConsoleSettings, max_clients: int = MAX_CLIENTS) -> None:
        self._settings = settings
        self._max_clients = max_clients
        self._clients: OrderedDict[str, AsyncClient] = OrderedDict()

    async def verify(self, api_key: str) -> None:
        """Raises the gateway's error (Unauthenticated, ...) unless the key may list models;
        a key that fails leaves no channel behind."""
        client = self._open(api_key)
        try:
            await client.list_models()
        finally:
            await client.close()

    async def get(self, api_key: str | None) -> AsyncClient:
        """The client that sends `api_key` (a channel opened on first use)."""
        slot = hashlib.sha256((api_key or "").encode()).hexdigest()
        client = self._clients.get(slot)
        if client is not None:
            self._clients.move_to_end(slot)
            return client
        client = self._clients[slot] = self._open(api_key)
        while len(self._clients) > self._max_clients:
            _, oldest = self._clients.popitem(last=False)
            await oldest.close()
        return client

    def _open(self, api_key: str | None) -> AsyncClient:
        s = self._settings
        # An empty key would fall back to MAAS_API_KEY: the console's process never has one
        # (console.server drops it), and with auth on no call is made without a user's key.
        return AsyncClient(s.target, api_key=api_key, timeout_s=s.timeout_s,
                           root_certificates=s.ca_file, certificate_chain=s.cert_file,
                           private_key=s.key_file)

    async def close(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            await client.close()
