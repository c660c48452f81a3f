"""What the SDK's two clients share: the calls they send, written once, sans I/O.

Every method of `maas.Client` is an *operation* (maas/operations.py, and the training ones in
maas/training_client.py): a generator that builds and validates the request messages, yields
one action at a time (`Unary`, `Consume`, `Sleep`), gets each reply (or the maas error the
call failed with, thrown in at the `yield`) and returns the decoded result. `Client` runs an
operation with blocking calls, `AsyncClient` with awaited ones; that is all they differ in.

    def get_model(name):                               # maas/operations.py
        reply = yield Unary("models", "GetModel", mpb.GetModelRequest(name=name))
        return reply.model

    client.get_model("cnn")   ==  client._run(operations.get_model("cnn"))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.v1.dataset_service_pb2_grpc import DatasetServiceStub
from maas.v1.generation_service_pb2_grpc import GenerationServiceStub
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from maas.v1.key_service_pb2_grpc import KeyServiceStub
from maas.v1.model_service_pb2_grpc import ModelServiceStub
from maas.v1.queue_service_pb2_grpc import QueueServiceStub
from maas.v1.training_service_pb2_grpc import TrainingServiceStub

T = TypeVar("T")

# The stubs of ServiceStubs, by the name an action gives (`_v2`, `_models`, ...).
Service = Literal["v2", "models", "training", "datasets", "jobs", "queue", "keys",
                  "generation"]
# A call's timeout_s: None is the client's timeout_s; NO_DEADLINE is none at all.
NO_DEADLINE = float("inf")


@dataclass(frozen=True)
class Unary:
    """One call with one reply: `request` is a message, or an iterator of messages for a
    client-streaming method (UploadModel)."""

    service: Service
    method: str
    request: Any
    timeout_s: float | None = None


@dataclass(frozen=True)
class Stream:
    """A server-streaming call; each reply is passed through `decode`."""

    service: Service
    method: str
    request: Any
    timeout_s: float | None = None
    decode: Callable[[Any], Any] = lambda reply: reply


@dataclass(frozen=True)
class Consume:
    """A server-streaming call whose replies go to `sink` one by one (a file being written);
    the operation gets None back when the stream ends."""

    stream: Stream
    sink: Callable[[Any], None]


@dataclass(frozen=True)
class Sleep:
    """A pause (a backoff before another attempt)."""

    seconds: float


Action = Unary | Consume | Sleep
# An SDK method: yields actions, is sent each one's reply, returns the method's result.
Operation = Generator[Action, Any, T]


class ServiceStubs:
    """Every service's stub over one channel: blocking or asyncio, the generated stubs take
    either. Both clients are one of these."""

    def __init__(self, channel: Any) -> None:
        self._v2 = GRPCInferenceServiceStub(channel)
        self._models = ModelServiceStub(channel)
        self._training = TrainingServiceStub(channel)
        self._datasets = DatasetServiceStub(channel)
        self._jobs = InferenceServiceStub(channel)
        self._queue = QueueServiceStub(channel)
        self._keys = KeyServiceStub(channel)
        self._generation = GenerationServiceStub(channel)

    def _rpc(self, call: Unary | Stream) -> Any:
        """The stub's callable of a call."""
        return getattr(getattr(self, f"_{call.service}"), call.method)


class Runner(Protocol):
    """What a blocking handle (TrainingJobHandle) needs of its client."""

    def _run(self, operation: Operation[T]) -> T: ...

    def _stream(self, call: Stream) -> Iterator[Any]: ...


class AsyncRunner(Protocol):
    """What an asyncio handle (AsyncTrainingJobHandle) needs of its client."""

    async def _run(self, operation: Operation[T]) -> T: ...

    def _stream(self, call: Stream) -> AsyncIterator[Any]: ...
