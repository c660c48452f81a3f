"""Who is calling: API key → tenant and scopes, checked once per call by an interceptor.

The interceptor runs before ErrorInterceptor. It reads `authorization: Bearer <key>`, looks
the key up (KeyStore, cached for AUTH_CACHE_S so a revocation bites within seconds), checks
the scope the method needs, takes a token from the tenant's rate limit, and puts the caller's
`Identity` in a contextvar that servicers read with `caller()`. Health and reflection stay
open (Kubernetes probes), except health of `model/<name>`, which the health servicer admits
itself (`Admission.enter`). With MAAS_AUTH=off every call is tenant "" with every scope.
A refusal is a MaasError (Unauthenticated, PermissionDenied, QuotaExceeded, Unavailable),
answered through gateway/errors.py like any other (`refusal`).

A call that lasts (ModelStreamInfer, a health Watch) keeps its `CallGuard` (`call_guard()`):
it re-checks the key every RECHECK_S, so a revoked key ends it within about a second, and
takes a rate-limit token for each request it carries after the first.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from gateway.errors import refusal
from maas.api_keys import SCOPES
from maas.errors import (
    MaasError,
    PermissionDenied,
    QuotaExceeded,
    QuotaViolation,
    Unauthenticated,
    Unavailable,
)
from scheduler.auth import KeyStore, RateLimiter
from scheduler.connection import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

AUTH_CACHE_S = 1.0
# How often a call that lasts re-checks its key, and the oldest cached look-up it trusts.
RECHECK_S = 0.5
MAX_CACHED_KEYS = 10_000
ADMIN_TENANT = "admin"
# Services anyone may call: Kubernetes probes and tools that list what the server offers.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                           "grpc.reflection.v1.ServerReflection"})
SERVICE_SCOPES = {
    "inference.GRPCInferenceService": "infer",
    "maas.v1.InferenceService": "infer",
    "maas.v1.GenerationService": "infer",
    "maas.v1.ModelService": "infer",
    "maas.v1.TrainingService": "train",
    "maas.v1.DatasetService": "train",
    "maas.v1.KeyService": "admin",
    "maas.v1.QueueService": "admin",  # dead letters of any model: operators only
}
# Methods that need another scope than their service's: registering weights makes a model.
METHOD_SCOPES = {"/maas.v1.ModelService/RegisterModel": "train",
                 "/maas.v1.ModelService/UploadModel": "train",
                 "/maas.v1.ModelService/CreateModelUpload": "train",
                 "/maas.v1.ModelService/GetModelUpload": "train",
                 # ... or less: the team that calls a model sees its queue (only the models
                 # the key's tenant sees, gateway/plane/queues.py).
                 "/maas.v1.QueueService/GetQueueStats": "infer"}


@dataclass(frozen=True)
class Identity:
    """The caller of the current call."""

    tenant: str
    scopes: frozenset[str]
    key_id: str = ""

    def has(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Identity("", frozenset(SCOPES))  # auth off: one tenant, every scope
_CALLER: contextvars.ContextVar[Identity] = contextvars.ContextVar("maas_caller",
                                                                  default=ANONYMOUS)


def caller() -> Identity:
    """The identity of the call being served (ANONYMOUS when auth is off)."""
    return _CALLER.get()


def require(scope: str, what: str) -> None:
    """PERMISSION_DENIED unless the caller holds `scope`."""
    who = caller()
    if not who.has(scope):
        raise PermissionDenied(f"{what} needs an API key with the {scope!r} scope; key "
                               f"{who.key_id} of tenant {who.tenant!r} has "
                               f"{sorted(who.scopes)}")


def scope_of(method: str) -> str | None:
    """The scope a method needs; None for open services. Unknown services need admin."""
    service = method.split("/")[1] if method.count("/") >= 2 else method
    if service in OPEN_SERVICES:
        return None
    return METHOD_SCOPES.get(method) or SERVICE_SCOPES.get(service, "admin")


def bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str):
            kind, _, token = value.strip().partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authenticator:
    """Identities of API keys, cached for AUTH_CACHE_S (misses too, against floods)."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._cache: dict[str, tuple[float, Identity | None]] = {}

    async def identify(self, metadata: Any, method: str) -> Identity:
        token = bearer(metadata)
        if token is None:
            raise Unauthenticated(f"{method} needs an API key: send the metadata "
                                  "`authorization: Bearer <key>` (maas.Client(api_key=...), "
                                  "MAAS_API_KEY for the CLI)")
        identity = await self._lookup(token)
        if identity is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return identity

    async def recheck(self, token: str) -> None:
        """UNAUTHENTICATED when the key was revoked (a look-up at most RECHECK_S old)."""
        if await self._lookup(token, RECHECK_S) is None:
            raise Unauthenticated("the API key was revoked while this call was open")

    async def _lookup(self, token: str, max_age_s: float = AUTH_CACHE_S) -> Identity | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < max_age_s:
            return hit[1]
        record = await self._store.lookup(token)
        identity = None if record is None else Identity(
            record.tenant, frozenset(record.scopes), record.key_id)
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache.clear()
        self._cache[token] = (now, identity)
        return identity


class Admission:
    """Who may make a call: its API key (when auth is on), the scope its method needs, and a
    token of its tenant's rate limit (when one is set)."""

    def __init__(self, authenticator: Authenticator | None, limiter: RateLimiter | None) -> None:
        self._authenticator = authenticator
        self._limiter = limiter

    @property
    def is_open(self) -> bool:
        """Every call is ANONYMOUS and unlimited: no interceptor needed."""
        return self._authenticator is None and self._limiter is None

    @property
    def is_checking_keys(self) -> bool:
        return self._authenticator is not None

    def interceptors(self) -> list[AuthInterceptor]:
        return [] if self.is_open else [AuthInterceptor(self)]

    async def enter(self, metadata: Any, method: str, scope: str) -> CallGuard:
        """Admits the call being served and makes it the caller (`caller()`, `call_guard()`)."""
        identity = ANONYMOUS
        if self._authenticator is not None:
            identity = await self._authenticator.identify(metadata, method)
            if not identity.has(scope):
                raise PermissionDenied(
                    f"{method} needs the {scope!r} scope; API key {identity.key_id} of tenant "
                    f"{identity.tenant!r} has {sorted(identity.scopes)}")
        await self.take(identity)
        guard = CallGuard(identity, bearer(metadata), self)
        _CALLER.set(identity)
        _GUARD.set(guard)
        return guard

    async def take(self, identity: Identity) -> None:
        """RESOURCE_EXHAUSTED + QuotaFailure when the tenant is over its rate."""
        if self._limiter is None:
            return
        wait_s = await self._limiter.take(identity.tenant)
        if wait_s > 0:
            rate = self._limiter.rate_per_s
            raise QuotaExceeded(
                f"tenant {identity.tenant!r} is over its rate limit of {rate:g} calls/s "
                f"(MAAS_TENANT_RATE_PER_S); retry in {wait_s:.3f}s", retry_delay_s=wait_s,
                quota_violations=(QuotaViolation(
                    f"tenant:{identity.tenant}",
                    f"MAAS_TENANT_RATE_PER_S={rate:g} calls per second"),))

    async def recheck(self, token: str | None) -> None:
        """UNAUTHENTICATED when auth is on and the key was revoked since the call began."""
        if self._authenticator is not None and token is not None:
            await self._authenticator.recheck(token)


@dataclass(frozen=True)
class CallGuard:
    """The admission of one call, for calls that last: `check_key` ends them once their key
    is revoked, `take` rate-limits each request they carry (the call's own token pays for
    its first)."""

    identity: Identity
    token: str | None = None
    admission: Admission | None = None

    @property
    def has_key(self) -> bool:
        """The call was admitted by an API key (auth on): `check_key` has work to do."""
        return (self.token is not None and self.admission is not None
                and self.admission.is_checking_keys)

    async def check_key(self) -> None:
        if self.admission is not None:
            await self.admission.recheck(self.token)

    async def take(self) -> None:
        if self.admission is not None:
            await self.admission.take(self.identity)


UNGUARDED = CallGuard(ANONYMOUS)  # auth off, no rate limit: nothing to check
_GUARD: contextvars.ContextVar[CallGuard] = contextvars.ContextVar("maas_call_guard",
                                                                  default=UNGUARDED)


def call_guard() -> CallGuard:
    """The guard of the call being served (one that checks nothing when auth is off)."""
    return _GUARD.get()


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates (when on), authorizes and rate-limits every call but the open ones."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = details.method
        scope = scope_of(method)
        if scope is None:
            return await continuation(details)
        try:
            await self._admission.enter(details.invocation_metadata, method, scope)
        except MaasError as err:
            return refusal(await continuation(details), err, method)
        except TRANSIENT_ERRORS as exc:
            log.warning("%s: cannot check the API key, Redis unavailable: %s", method, exc)
            return refusal(await continuation(details), _unreachable(exc), method)
        return await continuation(details)


def _unreachable(exc: BaseException) -> Unavailable:
    err = Unavailable("cannot check the API key: the queue (Redis) is unreachable right now; "
                      "retry shortly", retry_delay_s=1.0)
    err.__cause__ = exc
    return err
