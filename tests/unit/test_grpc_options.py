"""The gateway's gRPC server options: a maximum connection age, so that clients behind a
Kubernetes Service (one TCP connection, balanced once) move onto new gateways."""

from __future__ import annotations

from gateway.server import grpc_options
from runtime.settings import Settings

MIB = 1 << 20


def test_connection_age_is_set_with_an_unbounded_grace() -> None:
    options = dict(grpc_options(64 * MIB, 300))
    assert options["grpc.max_connection_age_ms"] == 300_000
    # In-flight calls (long streams) finish on the old connection; only new calls move.
    assert options["grpc.max_connection_age_grace_ms"] == 2**31 - 1


def test_zero_age_sets_no_connection_age() -> None:
    for options in (dict(grpc_options(64 * MIB, 0)), dict(grpc_options(64 * MIB))):
        assert "grpc.max_connection_age_ms" not in options
        assert "grpc.max_connection_age_grace_ms" not in options
        assert options["grpc.max_receive_message_length"] == 2 * 64 * MIB + MIB


def test_a_huge_age_stays_within_grpcs_int32() -> None:
    assert dict(grpc_options(MIB, 10**9))["grpc.max_connection_age_ms"] == 2**31 - 1


def test_the_setting_defaults_to_five_minutes_and_zero_is_off() -> None:
    assert Settings().max_connection_age_s == 300
    assert Settings.from_env({"MAAS_MAX_CONNECTION_AGE_S": "0"}).max_connection_age_s == 0
    age = Settings.from_env({"MAAS_MAX_CONNECTION_AGE_S": "60"}).max_connection_age_s
    assert dict(grpc_options(MIB, age))["grpc.max_connection_age_ms"] == 60_000
