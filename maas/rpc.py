"""The SDK's transport: one channel per client (TLS when asked, the API key on every call),
and maas errors rebuilt from the rich statuses the gateway sends.

A key sent without TLS to a host other than this machine raises `PlaintextKeyWarning` once
per process (`warnings.warn`: filter it like any warning).
"""

from __future__ import annotations

import collections
import ipaddress
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from maas import errors

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_DETAILS_KEY = "grpc-status-details-bin"

Pem = bytes | str | Path


def default_target() -> str:
    """MAAS_TARGET, else 127.0.0.1:50051."""
    return os.environ.get("MAAS_TARGET") or DEFAULT_TARGET


def default_api_key() -> str | None:
    """MAAS_API_KEY, else no key."""
    return os.environ.get("MAAS_API_KEY") or None


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]


def _pem(value: Pem | None) -> bytes | None:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def credentials(tls: bool | None, root_certificates: Pem | None, certificate_chain: Pem | None,
                private_key: Pem | None) -> grpc.ChannelCredentials | None:
    """TLS credentials (mutual with a client certificate and key); None for plaintext.

    `tls=None` means TLS exactly when a certificate option is given; `tls=True` alone trusts
    the system's roots.
    """
    given = (root_certificates, certificate_chain, private_key)
    if not (tls or (tls is None and any(v is not None for v in given))):
        return None
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    return grpc.ssl_channel_credentials(root_certificates=_pem(root_certificates),
                                        private_key=_pem(private_key),
                                        certificate_chain=_pem(certificate_chain))


def channel_setup(api_key: str | None, max_message_bytes: int, tls: bool | None,
                  root_certificates: Pem | None, certificate_chain: Pem | None,
                  private_key: Pem | None) -> tuple[Any, ...]:
    """Options, API key and credentials of a channel: the same for both clients."""
    return (channel_options(max_message_bytes), api_key or default_api_key(),
            credentials(tls, root_certificates, certificate_chain, private_key))


class _Details(collections.namedtuple("_Details", ("method", "timeout", "metadata",
                                                   "credentials", "wait_for_ready",
                                                   "compression")),
               grpc.ClientCallDetails):  # type: ignore[misc]
    pass


class _ApiKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds `authorization: Bearer <key>` to every call of a blocking channel."""

    def __init__(self, api_key: str) -> None:
        self._header = ("authorization", f"Bearer {api_key}")

    def _details(self, d: Any) -> _Details:
        return _Details(d.method, d.timeout, [*(d.metadata or ()), self._header], d.credentials,
                        d.wait_for_ready, getattr(d, "compression", None))

    def _call(self, continuation: Callable[[Any, Any], Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    intercept_unary_unary = intercept_unary_stream = _call
    intercept_stream_unary = intercept_stream_stream = _call


class _AsyncApiKey:
    """The same for an asyncio channel. grpc.aio files an interceptor under the first call
    kind it implements only, so each kind has its own class (`_async_api_key`)."""

    def __init__(self, api_key: str) -> None:
        self._header = ("authorization", f"Bearer {api_key}")

    async def _call(self, continuation: Callable[[Any, Any], Any], d: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(d.metadata or ()), self._header)
        details = grpc.aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials,
                                             d.wait_for_ready)
        return await continuation(details, request)


class _AsyncUnaryUnaryKey(_AsyncApiKey, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    intercept_unary_unary = _AsyncApiKey._call


class _AsyncUnaryStreamKey(_AsyncApiKey, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    intercept_unary_stream = _AsyncApiKey._call


class _AsyncStreamUnaryKey(_AsyncApiKey, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    intercept_stream_unary = _AsyncApiKey._call


class _AsyncStreamStreamKey(_AsyncApiKey, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    intercept_stream_stream = _AsyncApiKey._call


def _async_api_key(api_key: str) -> list[_AsyncApiKey]:
    """Interceptors that add the key to every call of an asyncio channel, streams included."""
    return [kind(api_key) for kind in (_AsyncUnaryUnaryKey, _AsyncUnaryStreamKey,
                                       _AsyncStreamUnaryKey, _AsyncStreamStreamKey)]


class PlaintextKeyWarning(UserWarning):
    """An API key is about to travel without TLS to a host that is not this machine."""


@dataclass
class _Warned:
    has_warned_plaintext: bool = False


_WARNED = _Warned()
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def target_hosts(target: str) -> list[str]:
    """The hosts of a gRPC target: `host:port`, `[v6]:port`, `dns:///host:port`,
    `ipv4:a.b.c.d:port,...`; none for a unix socket (it never leaves the machine)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return []
    rest = target.split("///", 1)[-1] if target.startswith("dns:") else target
    rest = rest.removeprefix("dns:").removeprefix("ipv4:").removeprefix("ipv6:")
    return [_host_of(address) for address in rest.split(",")]


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def is_loopback(target: str) -> bool:
    """Whether a target is this machine: 127.0.0.0/8, ::1, localhost, a unix socket (or
    0.0.0.0 and ::, which connect to this machine)."""
    return all(_is_local_host(host.lower()) for host in target_hosts(target))


def _is_local_host(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def warn_plaintext_key(target: str, api_key: str | None,
                       creds: grpc.ChannelCredentials | None) -> None:
    """PlaintextKeyWarning, once per process, when a key would cross the network in clear."""
    if not api_key or creds is not None or is_loopback(target) or _WARNED.has_warned_plaintext:
        return
    _WARNED.has_warned_plaintext = True
    warnings.warn(f"the API key goes to {target} without TLS: anyone on the path can read and "
                  "reuse it. Turn TLS on (tls=True or root_certificates=...; the CLI's "
                  "--ca-file)", PlaintextKeyWarning, stacklevel=4)


def open_channel(target: str, options: list[tuple[str, Any]], api_key: str | None,
                 creds: grpc.ChannelCredentials | None) -> grpc.Channel:
    warn_plaintext_key(target, api_key, creds)
    channel = (grpc.secure_channel(target, creds, options) if creds is not None
               else grpc.insecure_channel(target, options))
    return grpc.intercept_channel(channel, _ApiKey(api_key)) if api_key else channel


def open_aio_channel(target: str, options: list[tuple[str, Any]], api_key: str | None,
                     creds: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    warn_plaintext_key(target, api_key, creds)
    interceptors = _async_api_key(api_key) if api_key else None
    if creds is not None:
        return grpc.aio.secure_channel(target, creds, options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options, interceptors=interceptors)


def _unpack(detail: Any, found: dict[str, Any]) -> None:
    """Reads one google.rpc detail into `found` (reason, violations, quota, retry_s)."""
    kinds = {error_details_pb2.ErrorInfo: "reason", error_details_pb2.BadRequest: "violations",
             error_details_pb2.QuotaFailure: "quota", error_details_pb2.RetryInfo: "retry_s"}
    for kind, slot in kinds.items():
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found[slot] = message


def from_rpc_error(err: grpc.RpcError) -> errors.MaasError:
    """The maas error a failed call carries (ErrorInfo reason, BadRequest, QuotaFailure,
    RetryInfo)."""
    code: grpc.StatusCode = err.code()
    message: str = err.details() or ""
    found: dict[str, Any] = {}
    for key, value in err.trailing_metadata() or ():
        if key == _DETAILS_KEY:
            for detail in status_pb2.Status.FromString(value).details:
                _unpack(detail, found)
    reason = found["reason"].reason if "reason" in found else code.name
    violations = tuple(errors.FieldViolation(v.field, v.description)
                       for v in getattr(found.get("violations"), "field_violations", ()))
    quota = tuple(errors.QuotaViolation(v.subject, v.description)
                  for v in getattr(found.get("quota"), "violations", ()))
    retry_s = (found["retry_s"].retry_delay.ToMilliseconds() / 1000
               if "retry_s" in found else None)
    cls = errors.error_class_for(code, reason)
    exc = cls(message, reason=reason, violations=violations, retry_delay_s=retry_s,
              quota_violations=quota)
    exc.code = code
    return exc
