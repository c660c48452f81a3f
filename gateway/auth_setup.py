"""How the gateway's admission is set up at start: auth on or off, the bootstrap admin key
(MAAS_ADMIN_KEY_FILE, installed once per cluster), and TLS credentials (MAAS_TLS_*)."""

from __future__ import annotations

import logging

import grpc

from gateway.auth import ADMIN_TENANT, Admission, Authenticator
from maas.api_keys import SCOPES, key_id_of, read_key_file
from runtime.settings import Settings
from scheduler.auth import Bootstrap, KeyStore, RateLimiter

log = logging.getLogger("gateway.auth")  # its warnings read as the auth module's


async def build_auth(settings: Settings, store: KeyStore,
                     limiter: RateLimiter | None) -> Admission:
    """The admission these settings ask for (open when auth is off and no rate limit: every
    caller is ANONYMOUS then); bootstraps MAAS_ADMIN_KEY_FILE's key first."""
    await store.adopt_untagged()  # keys an older gateway stored under untagged names
    if settings.admin_key_file:
        await bootstrap_admin_key(settings.admin_key_file, store)
    if not settings.is_auth_on:
        log.warning("MAAS_AUTH=off: every call is accepted without an API key (local "
                    "development only)")
    return Admission(Authenticator(store) if settings.is_auth_on else None, limiter)


async def bootstrap_admin_key(path: str, store: KeyStore) -> None:
    """Installs the key in MAAS_ADMIN_KEY_FILE as the cluster's first admin key, once: a
    later start leaves it as it is (revoked stays revoked)."""
    try:
        api_key = read_key_file(path)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"MAAS_ADMIN_KEY_FILE={path}: {exc}") from exc
    outcome = await store.bootstrap_admin(api_key, ADMIN_TENANT, SCOPES, "MAAS_ADMIN_KEY_FILE")
    key_id = key_id_of(api_key)
    if outcome is Bootstrap.INSTALLED:
        log.info("admin API key %s (tenant %r) is installed from MAAS_ADMIN_KEY_FILE",
                 key_id, ADMIN_TENANT)
    elif outcome is Bootstrap.ACTIVE:
        log.info("admin API key %s of MAAS_ADMIN_KEY_FILE is active (bootstrap done before)",
                 key_id)
    else:
        log.warning("MAAS_ADMIN_KEY_FILE holds key %s, which is revoked or unknown: the admin "
                    "key is installed only once per cluster and never again. Use a key from "
                    "`maas keys rotate-admin`", key_id)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS from MAAS_TLS_* (mutual TLS with a client CA); None for plaintext."""
    if not settings.is_tls_on:
        return None

    def read(name: str, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise SystemExit(f"{name}={path}: {exc}") from exc

    chain = read("MAAS_TLS_CERT_FILE", settings.tls_cert_file)
    key = read("MAAS_TLS_KEY_FILE", settings.tls_key_file)
    client_ca = (read("MAAS_TLS_CLIENT_CA_FILE", settings.tls_client_ca_file)
                 if settings.tls_client_ca_file else None)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)
