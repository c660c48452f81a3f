"""gateway.bounds: request ids, priorities, deadlines and pages are bounded, each refusal
INVALID_ARGUMENT naming its field (issue 12: a 16 MiB request_id became a 16 MiB Redis key;
deadline_ms 2**63-1 and page_token "abc" were INTERNAL)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from gateway.bounds import (
    MAX_DEADLINE_MS,
    MAX_PAGE_SIZE,
    MAX_PRIORITY,
    MAX_REQUEST_ID_BYTES,
    check_deadline_ms,
    check_page_token,
    check_priority,
    check_request_id,
    page_size,
)
from gateway.plane.training import PAGE_TOKEN
from gateway.validation import priority_of
from maas.errors import InvalidArgument
from maas.inference.grpc_service_pb2 import ModelInferRequest


def field_of(check: Callable[[], object]) -> str:
    with pytest.raises(InvalidArgument) as caught:
        check()
    [violation] = caught.value.violations
    assert len(caught.value.message) < 512
    return violation.field


def test_request_id_is_at_most_128_bytes() -> None:
    check_request_id("")
    check_request_id("r" * MAX_REQUEST_ID_BYTES)
    assert field_of(lambda: check_request_id("r" * (MAX_REQUEST_ID_BYTES + 1))) == "request_id"
    assert field_of(lambda: check_request_id("é" * 65, "id")) == "id"  # 130 bytes
    assert field_of(lambda: check_request_id("x" * (16 << 20))) == "request_id"


@pytest.mark.parametrize("value", [-1, MAX_PRIORITY + 1, 2**32 - 1, 2**63 - 1])
def test_priority_out_of_range(value: int) -> None:
    assert field_of(lambda: check_priority(value)) == "priority"


@pytest.mark.parametrize("value", [0, 1, 2, MAX_PRIORITY])
def test_priority_in_range(value: int) -> None:
    assert check_priority(value) == value


@pytest.mark.parametrize(("kind", "value"), [("uint64_param", MAX_PRIORITY + 1),
                                             ("int64_param", -1),
                                             ("uint64_param", 2**64 - 1)])
def test_v2_priority_has_the_same_range(kind: str, value: int) -> None:
    request = ModelInferRequest(model_name="mlp")
    setattr(request.parameters["priority"], kind, value)
    assert field_of(lambda: priority_of(request)) == "parameters.priority"
    setattr(request.parameters["priority"], kind, MAX_PRIORITY)
    assert priority_of(request) == MAX_PRIORITY


@pytest.mark.parametrize("value", [-1, MAX_DEADLINE_MS + 1, 2**63 - 1, -(2**63)])
def test_deadline_out_of_range(value: int) -> None:
    assert field_of(lambda: check_deadline_ms(value)) == "deadline_ms"


def test_deadline_says_its_range() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_deadline_ms(2**63 - 1)
    assert f"1..{MAX_DEADLINE_MS} ms (24 h)" in caught.value.message
    check_deadline_ms(0)
    check_deadline_ms(MAX_DEADLINE_MS)


def test_page_size() -> None:
    assert page_size(0, 50) == 50
    assert page_size(7, 50) == 7
    assert page_size(2**31 - 1, 50) == MAX_PAGE_SIZE
    assert field_of(lambda: page_size(-1, 50)) == "page_size"


@pytest.mark.parametrize("token", ["abc", "-1", "inf", "nan", "(5", "1.5", "9" * 21,
                                   "x" * 100_000])
def test_training_page_token_must_be_one_we_gave_out(token: str) -> None:
    assert field_of(lambda: check_page_token(token, PAGE_TOKEN)) == "page_token"


def test_page_tokens_we_give_out_pass() -> None:
    check_page_token("", PAGE_TOKEN)
    check_page_token("1765000000000", PAGE_TOKEN)
    check_page_token("digits", re.compile(r"[a-z]+"))
