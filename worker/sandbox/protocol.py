"""Framing of the worker ↔ runner protocol (internal/protos/maas/queue/v1/runner.proto): a 4-byte
big-endian length, then the serialized message."""

from __future__ import annotations

import asyncio
import struct
from typing import BinaryIO

import numpy as np

from maas import tensors
from runtime.queue.v1.queue_pb2 import Tensor

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 31  # 2 GiB: a frame is one batch's tensors


class ProtocolError(RuntimeError):
    """The other side sent something that is not a frame, or went away mid-frame."""


def frame(payload: bytes) -> bytes:
    if len(payload) >= MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {len(payload)} bytes is over the 2 GiB limit")
    return HEADER.pack(len(payload)) + payload


def read_frame(stream: BinaryIO) -> bytes | None:
    """The next frame's payload; None at a clean end of stream."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ProtocolError("the stream ended inside a frame header")
    (size,) = HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        raise ProtocolError("the stream ended inside a frame")
    return payload


async def read_frame_async(stream: asyncio.StreamReader) -> bytes:
    """The next frame's payload; ProtocolError when the stream ends."""
    try:
        header = await stream.readexactly(HEADER.size)
        (size,) = HEADER.unpack(header)
        return await stream.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError("the runner's output ended") from exc


def to_tensor(name: str, array: np.ndarray) -> Tensor:
    return Tensor(name=name, datatype=tensors.datatype_of(array), shape=array.shape,
                  raw=tensors.to_raw(array))


def from_tensor(tensor: Tensor) -> np.ndarray:
    return tensors.from_raw(tensor.raw, tensor.datatype, tensor.shape)
