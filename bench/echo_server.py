"""The gRPC floor: a bare grpc.aio v2 server whose ModelInfer echoes its input as output.

`python -m bench.echo_server --port P` — no queue, no model: what a Python gRPC front end
costs per request on this machine.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc

from maas.inference import grpc_service_pb2 as v2
from maas.inference.grpc_service_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)


class Echo(GRPCInferenceServiceServicer):
    async def ServerReady(self, request: v2.ServerReadyRequest,
                          context: grpc.aio.ServicerContext) -> v2.ServerReadyResponse:
        return v2.ServerReadyResponse(ready=True)

    async def ModelInfer(self, request: v2.ModelInferRequest,
                         context: grpc.aio.ServicerContext) -> v2.ModelInferResponse:
        first = request.inputs[0]
        return v2.ModelInferResponse(
            model_name=request.model_name, id=request.id,
            outputs=[v2.ModelInferResponse.InferOutputTensor(
                name="output", datatype=first.datatype, shape=first.shape)],
            raw_output_contents=request.raw_input_contents[:1])


async def serve(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    add_GRPCInferenceServiceServicer_to_server(Echo(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo listening on {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
