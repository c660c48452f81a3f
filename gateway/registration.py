"""Which methods grpc.aio serves on its registered-method path: the hot ones only.

grpc.aio keeps one pending request per registered method and, for every call that arrives,
waits on all of them (`asyncio.wait` over one task per method). The generated
`add_*Servicer_to_server` functions register every method of a service, so the gateway's
48 methods made each call pay for 48 tasks (~60 µs against ~12 µs for 2 in a microbenchmark
on this kind of machine; ~10 % of cnn's throughput at c=64: docs/scaling.md). Every method
is also served through the generic handlers, which is how grpc served all methods before it
had a registered path; only the methods in HOT_METHODS keep the registered one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc

# service -> the methods registered (the rest go through the generic handlers)
HOT_METHODS: Mapping[str, frozenset[str]] = {
    "inference.GRPCInferenceService": frozenset({"ModelInfer", "ModelStreamInfer"}),
}


class HotMethodsOnly:
    """The server as the generated `add_*_to_server` functions see it: generic handlers go
    through; registered handlers only for HOT_METHODS."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str,
                                       handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        hot = HOT_METHODS.get(service, frozenset())
        kept = {name: handler for name, handler in handlers.items() if name in hot}
        if kept:
            self._server.add_registered_method_handlers(service, kept)
