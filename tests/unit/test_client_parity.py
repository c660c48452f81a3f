"""`AsyncClient` offers every public method of `Client` with the same parameters, awaited (and
the same for their training-job handles): a method added to one without its twin fails here."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import maas
from maas.training_client import AsyncTrainingJobHandle, TrainingJobHandle

PAIRS = [(maas.Client, maas.AsyncClient), (TrainingJobHandle, AsyncTrainingJobHandle)]


def public_methods(cls: type) -> dict[str, Any]:
    return {name: value for name, value in vars(cls).items()
            if not name.startswith("_") and callable(value)}


def parameters(function: Any) -> list[tuple[str, Any, Any, Any]]:
    return [(p.name, p.kind, p.default, p.annotation)
            for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(("blocking", "asynchronous"), PAIRS)
def test_the_same_public_methods(blocking: type, asynchronous: type) -> None:
    assert set(public_methods(asynchronous)) == set(public_methods(blocking))
    assert {n for n, v in vars(blocking).items() if isinstance(v, property)} == {
        n for n, v in vars(asynchronous).items() if isinstance(v, property)}


@pytest.mark.parametrize(("blocking", "asynchronous"), PAIRS)
def test_the_same_parameters(blocking: type, asynchronous: type) -> None:
    for name, method in public_methods(blocking).items():
        assert parameters(getattr(asynchronous, name)) == parameters(method), name


def test_the_clients_take_the_same_options() -> None:
    assert parameters(maas.AsyncClient.__init__) == parameters(maas.Client.__init__)


@pytest.mark.parametrize(("blocking", "asynchronous"), PAIRS)
def test_every_async_method_is_awaited_or_iterated(blocking: type, asynchronous: type) -> None:
    """Generators become async iterators; every other method a coroutine function."""
    for name, method in public_methods(asynchronous).items():
        if inspect.isgeneratorfunction(getattr(blocking, name)):
            assert inspect.isasyncgenfunction(method), name
        else:
            assert inspect.iscoroutinefunction(method), name
