"""runtime.settings: MAAS_* variables parsed once into a frozen object."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from runtime.settings import MIB, Settings

README = Path(__file__).resolve().parents[2] / "README.md"
# Read by the SDK and CLI (the console's by `maas console`), not by Settings.
SDK_ONLY = {"MAAS_TARGET", "MAAS_API_KEY", "MAAS_CONSOLE_PORT", "MAAS_CONSOLE_HOST"}


def test_defaults_without_any_variable() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.max_message_bytes == 64 * MIB
    assert s.gateway_target == "127.0.0.1:50051"
    assert s.artifact_dir == Path("./maas-data") / "artifacts"


def test_each_type_is_parsed() -> None:
    s = Settings.from_env({
        "MAAS_REDIS_URL": "redis://r:6380/2", "MAAS_DATA_DIR": "/srv/maas",
        "MAAS_GATEWAY_PORT": "7001", "MAAS_DEFAULT_DEADLINE_S": "2.5",
        "MAAS_MAX_QUEUE_DELAY_MICROSECONDS": "0", "MAAS_LOG_FORMAT": "json"})
    assert s.redis_url == "redis://r:6380/2"
    assert s.data_dir == Path("/srv/maas") and isinstance(s.data_dir, Path)
    assert s.artifact_dir == Path("/srv/maas/artifacts")
    assert s.gateway_port == 7001 and isinstance(s.gateway_port, int)
    assert s.default_deadline_s == 2.5
    assert s.max_queue_delay_microseconds == 0
    assert s.log_format == "json"
    assert s.gateway_target == "127.0.0.1:7001"


def test_a_float_setting_takes_an_integer() -> None:
    s = Settings.from_env({"MAAS_RESULT_TTL_S": "60"})
    assert s.result_ttl_s == 60.0 and isinstance(s.result_ttl_s, float)


def test_empty_and_foreign_variables_are_ignored() -> None:
    s = Settings.from_env({"MAAS_GATEWAY_PORT": "", "GATEWAY_PORT": "1", "maas_gateway_port": "2",
                           "MAAS_NO_SUCH_SETTING": "3"})
    assert s == Settings()


def test_overrides_beat_the_environment() -> None:
    env = {"MAAS_GATEWAY_PORT": "7001", "MAAS_MAX_BATCH_SIZE": "8"}
    s = Settings.from_env(env, gateway_port=9000, max_batch_size=None)
    assert s.gateway_port == 9000
    assert s.max_batch_size == 8  # None means "not given"


def test_unknown_override_is_an_error() -> None:
    with pytest.raises(TypeError):
        Settings.from_env({}, no_such_setting=1)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_MAX_ATTEMPTS", "5")
    assert Settings.from_env().max_attempts == 5


def test_read_at_call_time_not_import_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAAS_TORCH_THREADS", "3")
    first = Settings.from_env()
    monkeypatch.setenv("MAAS_TORCH_THREADS", "4")
    assert (first.torch_threads, Settings.from_env().torch_threads) == (3, 4)


@pytest.mark.parametrize(("name", "value"), [
    ("MAAS_GATEWAY_PORT", "abc"), ("MAAS_MAX_MESSAGE_BYTES", "1.5"),
    ("MAAS_MAX_MESSAGE_BYTES", "64MiB"), ("MAAS_DEFAULT_DEADLINE_S", "soon"),
    ("MAAS_INFER_LEASE_MS", " "),
])
def test_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{name}={value!r}")):
        Settings.from_env({name: value})


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.gateway_port = 1  # type: ignore[misc]


def test_every_setting_is_in_the_readme_table() -> None:
    """README's settings table and Settings name the same variables (but the SDK's own)."""
    documented = set(re.findall(r"^\| `(MAAS_[A-Z0-9_]+)` \|", README.read_text(), re.M))
    fields = {"MAAS_" + f.name.upper() for f in dataclasses.fields(Settings)}
    assert documented - SDK_ONLY == fields


def test_the_readme_table_follows_the_dataclass() -> None:
    documented = re.findall(r"^\| `(MAAS_[A-Z0-9_]+)` \|", README.read_text(), re.M)
    fields = ["MAAS_" + f.name.upper() for f in dataclasses.fields(Settings)]
    assert [d for d in documented if d not in SDK_ONLY] == fields


@pytest.mark.parametrize(("name", "value", "says"), [
    ("MAAS_MAX_MESSAGE_BYTES", "0", ">= 1"),
    ("MAAS_MAX_MESSAGE_BYTES", "-1", ">= 1"),
    ("MAAS_INFER_LEASE_MS", "0", ">= 1"),
    ("MAAS_MAX_ATTEMPTS", "0", ">= 1"),
    ("MAAS_TRAIN_LEASE_MS", "-5", ">= 1"),
    ("MAAS_TRAIN_MAX_ATTEMPTS", "0", ">= 1"),
    ("MAAS_TRAIN_MAX_PARAMS", "0", ">= 1"),
    ("MAAS_REAPER_INTERVAL_MS", "0", ">= 1"),
    ("MAAS_MAX_BATCH_SIZE", "0", ">= 1"),
    ("MAAS_TRAINING_SLOTS", "-1", ">= 0"),
    ("MAAS_MAX_QUEUE_DELAY_MICROSECONDS", "-1", ">= 0"),
    ("MAAS_TORCH_THREADS", "-2", ">= 0"),
    ("MAAS_DEFAULT_DEADLINE_S", "0", "> 0"),
    ("MAAS_DEFAULT_DEADLINE_S", "inf", "finite"),
    ("MAAS_RESULT_TTL_S", "nan", "finite"),
    ("MAAS_SHUTDOWN_GRACE_S", "-1", ">= 0"),
    ("MAAS_GATEWAY_PORT", "-1", ">= 0"),
    ("MAAS_GATEWAY_PORT", "65536", "0-65535"),
    ("MAAS_METRICS_PORT", "-1", ">= 0"),
    ("MAAS_METRICS_PORT", "65536", "0-65535"),
    ("MAAS_HEALTH_PORT", "70000", "0-65535"),
    ("MAAS_LOG_FORMAT", "xml", "text"),
    ("MAAS_LOG_LEVEL", "loud", "INFO"),
])
def test_out_of_range_names_the_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(name)) as caught:
        Settings.from_env({name: value})
    assert says in str(caught.value)


def test_overrides_are_checked_too() -> None:
    with pytest.raises(ValueError, match="MAAS_MAX_BATCH_SIZE=0"):
        Settings.from_env({}, max_batch_size=0)


def test_zero_where_it_means_something() -> None:
    s = Settings.from_env({
        "MAAS_GATEWAY_PORT": "0", "MAAS_TRAINING_SLOTS": "0",
        "MAAS_MAX_QUEUE_DELAY_MICROSECONDS": "0", "MAAS_TORCH_THREADS": "0",
        "MAAS_SHUTDOWN_GRACE_S": "0", "MAAS_LOG_LEVEL": "debug"})
    assert (s.gateway_port, s.training_slots, s.max_queue_delay_microseconds,
            s.torch_threads, s.shutdown_grace_s) == (0, 0, 0, 0, 0.0)


def test_metrics_and_health_are_off_by_default_and_take_any_port() -> None:
    assert (Settings().metrics_port, Settings().health_port) == (0, 0)  # 0: off
    s = Settings.from_env({"MAAS_METRICS_PORT": "9090", "MAAS_HEALTH_PORT": "65535"})
    assert (s.metrics_port, s.health_port) == (9090, 65535)


def test_model_shards_are_parsed_and_checked() -> None:
    s = Settings.from_env({"MAAS_MODEL_SHARDS": " cnn=4, acme/big=2 ,"})
    assert s.model_shard_counts == {"cnn": 4, "acme/big": 2}
    assert Settings().model_shard_counts == {}
    for bad in ("cnn", "cnn=0", "cnn=65", "=3", "cnn#1=2", "cnn=x", "cnn=-1", "a b=2",
                "cnn=٣"):
        with pytest.raises(ValueError, match=r"MAAS_MODEL_SHARDS: .* is not model=N"):
            Settings.from_env({"MAAS_MODEL_SHARDS": bad})
