"""bench.serving's ratios: maas against the floor for every model it measured, and each point's
ceiling (the floor's request + the forward of the batch + the Redis CPU measured) computed from
the numbers of the same run."""

from __future__ import annotations

from typing import Any

import pytest

from bench.loadgen import Result
from bench.serving import ceiling, forward_us, ratios

pytestmark = pytest.mark.timeout(30)

SAMPLES_PER_S = {"1": 5_000.0, "8": 16_000.0, "32": 20_000.0, "64": 20_000.0}


def point(target: str, model: str, c: int, req_per_s: float, batch: float,
          cpu_us: dict[str, float]) -> Result:
    costs: dict[str, Any] = {"cpu_us": cpu_us, "total_cpu_us": sum(cpu_us.values())}
    return Result(target, model, "closed", c, 0.0, 5.0, int(req_per_s * 5), 0, req_per_s,
                  1.0, 2.0, 3.0, batch, 0.0, [], costs)


def test_forward_us_interpolates_between_the_measured_batches() -> None:
    assert forward_us(SAMPLES_PER_S, 1) == 200.0
    assert forward_us(SAMPLES_PER_S, 8) == 62.5
    assert forward_us(SAMPLES_PER_S, 20) == pytest.approx(62.5 + (50.0 - 62.5) * 12 / 24)
    assert forward_us(SAMPLES_PER_S, 0.5) == 200.0  # below the smallest: the smallest
    assert forward_us(SAMPLES_PER_S, 500) == 50.0  # above the largest: the largest


def test_the_ceiling_is_the_floor_over_floor_forward_and_redis() -> None:
    assert ceiling(150.0, 50.0, 100.0) == 0.5
    assert ceiling(100.0, 0.0, 0.0) == 1.0


def test_ratios_cover_every_model_and_give_each_point_its_ceiling() -> None:
    results = [point("echo", "cnn", 64, 6_000.0, 0.0, {"echo": 150.0}),
               point("maas", "cnn", 64, 1_500.0, 32.0,
                     {"redis": 100.0, "gateway": 300.0, "worker": 150.0}),
               point("maas", "mlp", 64, 2_000.0, 8.0,
                     {"redis": 87.5, "gateway": 300.0, "worker": 100.0})]
    got = ratios(results, {"cnn": SAMPLES_PER_S, "mlp": SAMPLES_PER_S})
    assert got["cnn_c64_throughput_vs_echo"] == 0.25
    assert got["mlp_c64_throughput_vs_echo"] == pytest.approx(1 / 3)
    assert got["cnn_c64_cpu_per_request_vs_echo"] == pytest.approx(550 / 150)
    assert got["cnn_c64_ceiling_vs_echo"] == pytest.approx(150 / (150 + 50 + 100))
    assert got["mlp_c64_ceiling_vs_echo"] == pytest.approx(150 / (150 + 62.5 + 87.5))
    assert "cnn_c64_ceiling_vs_echo" not in ratios(results)  # no in-process numbers: none
