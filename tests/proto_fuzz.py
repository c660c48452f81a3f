"""Hypothesis strategies for any protobuf message, built from its descriptor: every field,
recursively to a small depth, with the values that break servers (0, -1, 2**31, 2**63-1,
-2**63, NaN, 100 KiB strings, non-UTF-8 bytes, empty and duplicated repeated fields).

`Hints` mixes known-good values in by field name (a model that exists, a dataset, a job id)
and whole messages by type, so that requests get past the first lookup into validation.
`mutants` goes further: a valid request with one or two fields (at any depth) replaced by
fuzzed values, so that a check deep in a handler sees hostile input with all else right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

LONG_TEXT = "x" * (100 * 1024)
LONG_BYTES = b"\xff" * (100 * 1024)
F = FieldDescriptor

_SIGNED32 = (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)
_SIGNED64 = (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64)
_UNSIGNED32 = (F.TYPE_UINT32, F.TYPE_FIXED32)
_UNSIGNED64 = (F.TYPE_UINT64, F.TYPE_FIXED64)


def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, 100, 2**31 - 1, 2**31, -(2**31), 2**32 - 1,
                         2**63 - 1, -(2**63), 2**64 - 1) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


INTS: dict[int, st.SearchStrategy[int]] = {
    **{t: _ints(-(2**31), 2**31 - 1) for t in _SIGNED32},
    **{t: _ints(-(2**63), 2**63 - 1) for t in _SIGNED64},
    **{t: _ints(0, 2**32 - 1) for t in _UNSIGNED32},
    **{t: _ints(0, 2**64 - 1) for t in _UNSIGNED64},
}
TEXT: st.SearchStrategy[str] = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", " ", "\x00", "é✓🙂", "../../etc/passwd", "a/b", "a:b", "*", "%s",
                     LONG_TEXT]))
BYTES: st.SearchStrategy[bytes] = st.one_of(
    st.binary(max_size=64), st.sampled_from([b"", b"\xff\xfe\x00\x80", LONG_BYTES]))


@dataclass
class Hints:
    """Known values by field name (strings, bytes, numbers) and whole messages by type."""

    by_field: dict[str, list[Any]] = field(default_factory=dict)
    strategies: dict[str, st.SearchStrategy[Any]] = field(default_factory=dict)
    by_message: dict[str, list[Message]] = field(default_factory=dict)

    def scalar(self, fd: FieldDescriptor, generic: st.SearchStrategy[Any]
               ) -> st.SearchStrategy[Any]:
        extra: list[st.SearchStrategy[Any]] = []
        if self.by_field.get(fd.name):
            extra.append(st.sampled_from(self.by_field[fd.name]))
        if fd.name in self.strategies:
            extra.append(self.strategies[fd.name])
        # Known values twice as often as anything: most requests get past the first lookup.
        return st.one_of(*extra, *extra, generic) if extra else generic


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.type in INTS:
        return INTS[fd.type]
    if fd.type == F.TYPE_DOUBLE:
        return st.floats()
    if fd.type == F.TYPE_FLOAT:
        return st.floats(width=32)
    if fd.type == F.TYPE_BOOL:
        return st.booleans()
    if fd.type == F.TYPE_ENUM:
        known = [v.number for v in fd.enum_type.values]
        return st.sampled_from([*known, -1, 999, 2**31 - 1])
    if fd.type == F.TYPE_BYTES:
        return BYTES
    return TEXT


def _repeated(element: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Empty, a few, the same one twice, or the same one 200 times."""
    return st.one_of(st.lists(element, max_size=3), element.map(lambda x: [x, x]),
                     element.map(lambda x: [x] * 200))


def _assign(message: Message, fd: FieldDescriptor, value: Any) -> None:
    target = getattr(message, fd.name)
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value_fd = fd.message_type.fields_by_name["value"]
        for key, item in value.items():
            if value_fd.message_type is not None:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif fd.is_repeated:
        target.extend(value)
    elif fd.message_type is not None:
        target.CopyFrom(value)
    else:
        setattr(message, fd.name, value)


class MessageStrategies:
    """`of(descriptor)`: a strategy of that message, fields drawn independently (each set
    or left unset), nested messages down to `max_depth`."""

    def __init__(self, hints: Hints, max_depth: int = 3) -> None:
        self._hints = hints
        self._max_depth = max_depth

    def of(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = GetMessageClass(descriptor)
        fields = {fd.name: self._field(fd, depth) for fd in descriptor.fields
                  if fd.message_type is None or depth < self._max_depth}
        by_name = descriptor.fields_by_name

        def build(values: Mapping[str, Any]) -> Message:
            message = cls()
            for name, value in values.items():
                _assign(message, by_name[name], value)
            return message

        generic = st.fixed_dictionaries({}, optional=fields).map(build)
        known = self._hints.by_message.get(descriptor.full_name)
        return st.one_of(st.sampled_from(known), generic) if known else generic

    def mutants(self, valid: Message) -> st.SearchStrategy[Message]:
        """`valid` with one or two of its fields, at any depth, set to fuzzed values."""

        @st.composite
        def mutate(draw: st.DrawFn) -> Message:
            message = type(valid)()
            message.CopyFrom(valid)
            for _ in range(draw(st.integers(1, 2))):
                self._mutate_one(draw, message, depth=0)
            return message

        return mutate()

    def _mutate_one(self, draw: st.DrawFn, message: Message, depth: int) -> None:
        fd = draw(st.sampled_from(list(message.DESCRIPTOR.fields)))
        is_set_message = (fd.message_type is not None and not fd.is_repeated
                          and message.HasField(fd.name))
        if is_set_message and depth < self._max_depth and draw(st.booleans()):
            self._mutate_one(draw, getattr(message, fd.name), depth + 1)
            return
        value = draw(self._field(fd, depth))
        message.ClearField(fd.name)
        _assign(message, fd, value)

    def _field(self, fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        entry = fd.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key = self._element(entry.fields_by_name["key"], depth)
            value = self._element(entry.fields_by_name["value"], depth)
            return st.dictionaries(key, value, max_size=3)
        element = self._element(fd, depth)
        return _repeated(element) if fd.is_repeated else element

    def _element(self, fd: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
        if fd.message_type is not None:
            return st.deferred(self._deferred(fd.message_type, depth + 1))
        return self._hints.scalar(fd, _scalar(fd))

    def _deferred(self, descriptor: Descriptor,
                  depth: int) -> Callable[[], st.SearchStrategy[Message]]:
        return lambda: self.of(descriptor, depth)
