"""`maas up`'s flags for several gateways and their ports, and the core plan of
bench.scaling (no processes started)."""

from __future__ import annotations

import argparse

import pytest

from bench.scaling import plans, split
from maas.cli.main import build_parser
from maas.cli.ports import own_ports, port_env
from maas.cli.up import base_port, check_counts


def up_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["up", *argv])


def test_each_service_gets_its_own_port_from_the_base() -> None:
    names = ["scheduler", "gateway-1", "gateway-2", "worker-1"]
    metrics = own_ports(names, 9100)
    assert metrics == {"scheduler": 9100, "gateway-1": 9101, "gateway-2": 9102,
                       "worker-1": 9103}
    health = own_ports(["scheduler", "worker-1"], 9200)
    assert port_env(metrics, health, "gateway-2") == {"MAAS_METRICS_PORT": "9102",
                                                      "MAAS_HEALTH_PORT": "0"}
    assert port_env(metrics, health, "worker-1") == {"MAAS_METRICS_PORT": "9103",
                                                     "MAAS_HEALTH_PORT": "9201"}
    assert own_ports(names, 0) == {} and port_env({}, {}, "scheduler") == {}


def test_base_port_comes_from_the_flag_else_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_METRICS_PORT", "9300")
    assert base_port(None, "MAAS_METRICS_PORT") == 9300
    assert base_port(0, "MAAS_METRICS_PORT") == 0
    monkeypatch.setenv("MAAS_METRICS_PORT", "nine")
    with pytest.raises(SystemExit, match="is not a port"):
        base_port(None, "MAAS_METRICS_PORT")


def test_several_gateways_need_a_fixed_port() -> None:
    args = up_args("--gateways", "3", "--metrics-port", "9100")
    assert (args.gateways, args.metrics_port, args.health_port) == (3, 9100, None)
    check_counts(args)
    with pytest.raises(SystemExit, match="fixed --port"):
        check_counts(up_args("--gateways", "2", "--port", "0"))
    with pytest.raises(SystemExit, match="at least 1"):
        check_counts(up_args("--gateways", "0"))


def test_scaling_plans_cores_processes_and_refuses_a_small_host() -> None:
    args = argparse.Namespace(gateways_per_core=0.5, workers_per_core=0.5,
                              concurrency_per_core=64)
    todo = plans([8, 2, 4], list(range(16)), args)
    assert list(todo) == [1, 2, 4, 8]  # 1 always, first
    assert [(p.gateways, p.workers) for p in todo.values()] == [(1, 1), (1, 1), (2, 2), (4, 4)]
    assert todo[8].cores == list(range(8)) and todo[8].loadgen_cores == list(range(8, 16))
    assert todo[1].loadgen_cores == [1] and todo[8].concurrency == 512
    assert split(512, 8) == [64] * 8 and split(5, 2) == [3, 2]
    assert plans([1], [0, 1], args)[1].loadgen_cores == [1]
    with pytest.raises(SystemExit, match=r"--cores 2 needs 3 cores.*at most --cores 1"):
        plans([2], [0, 1], args)
