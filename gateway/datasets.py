"""maas.v1.DatasetService: translation only; gateway/plane/datasets.py does the work."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from gateway.auth import caller
from gateway.plane.datasets import BUILTIN as BUILTIN  # re-exported: the built-in datasets
from gateway.plane.datasets import Datasets
from maas.v1 import dataset_service_pb2 as pb
from maas.v1.dataset_service_pb2_grpc import DatasetServiceServicer


class DatasetServicer(DatasetServiceServicer):
    def __init__(self, plane: Datasets) -> None:
        self._plane = plane

    async def UploadDataset(self, request_iterator: AsyncIterator[pb.UploadDatasetRequest],
                            context: grpc.aio.ServicerContext) -> pb.UploadDatasetResponse:
        return pb.UploadDatasetResponse(
            dataset=await self._plane.upload(request_iterator, caller().tenant))

    async def GetDataset(self, request: pb.GetDatasetRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetDatasetResponse:
        return pb.GetDatasetResponse(dataset=await self._plane.get(request.name, caller().tenant))

    async def ListDatasets(self, request: pb.ListDatasetsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListDatasetsResponse:
        found, token = await self._plane.list_page(request.page_size, request.page_token,
                                                   caller().tenant)
        return pb.ListDatasetsResponse(datasets=found, next_page_token=token)

    async def DeleteDataset(self, request: pb.DeleteDatasetRequest,
                            context: grpc.aio.ServicerContext) -> pb.DeleteDatasetResponse:
        await self._plane.delete(request.name, caller().tenant)
        return pb.DeleteDatasetResponse()
