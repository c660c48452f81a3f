"""maas.v1.KeyService: create, list and revoke API keys (the `admin` scope, checked by the
auth interceptor)."""

from __future__ import annotations

import grpc

from maas.api_keys import check_scopes, check_tenant
from maas.errors import FieldViolation, InvalidArgument
from maas.v1 import key_service_pb2 as pb
from maas.v1.key_service_pb2_grpc import KeyServiceServicer
from scheduler.auth import KeyStore

MAX_DESCRIPTION = 256


class KeyServicer(KeyServiceServicer):
    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def CreateKey(self, request: pb.CreateKeyRequest,
                        context: grpc.aio.ServicerContext) -> pb.CreateKeyResponse:
        check_tenant(request.tenant)
        scopes = check_scopes(list(request.scopes))
        if len(request.description) > MAX_DESCRIPTION:
            raise InvalidArgument(f"description: at most {MAX_DESCRIPTION} characters",
                                  violations=(FieldViolation("description", "too long"),))
        api_key, record = await self._store.create(request.tenant, scopes, request.description)
        return pb.CreateKeyResponse(key=record, api_key=api_key)

    async def ListKeys(self, request: pb.ListKeysRequest,
                       context: grpc.aio.ServicerContext) -> pb.ListKeysResponse:
        if request.tenant:
            check_tenant(request.tenant)
        return pb.ListKeysResponse(keys=await self._store.list(request.tenant))

    async def RevokeKey(self, request: pb.RevokeKeyRequest,
                        context: grpc.aio.ServicerContext) -> pb.RevokeKeyResponse:
        return pb.RevokeKeyResponse(key=await self._store.revoke(request.key_id))
