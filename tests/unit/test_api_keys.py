"""API key format, scopes of each method, tenant ids, and the security settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.auth import OPEN_SERVICES, SERVICE_SCOPES, bearer, scope_of
from gateway.server import SERVICES
from maas.api_keys import (
    check_scopes,
    check_tenant,
    ensure_key_file,
    key_id_of,
    key_sha256,
    new_api_key,
)
from maas.errors import InvalidArgument
from runtime.settings import Settings
from scheduler import keys


def test_keys_are_random_and_carry_their_id() -> None:
    one, two = new_api_key(), new_api_key()
    assert one != two and len(one) == 5 + 16 + 1 + 64
    assert key_id_of(one) == one.split("_")[1]
    assert len(key_sha256(one)) == 64 and one not in key_sha256(one)


@pytest.mark.parametrize("text", ["", "maas_", "Bearer x", "maas_XYZ_abc", new_api_key() + "x",
                                  new_api_key().upper()])
def test_anything_else_has_no_key_id(text: str) -> None:
    assert key_id_of(text) is None


def test_bearer_reads_the_authorization_header() -> None:
    assert bearer([("authorization", "Bearer abc")]) == "abc"
    assert bearer([("x", "y"), ("authorization", "bearer  abc ")]) == "abc"
    assert bearer([("authorization", "Basic abc")]) is None
    assert bearer([("authorization", "Bearer ")]) is None
    assert bearer(None) is None


def test_every_served_method_has_a_scope() -> None:
    assert set(SERVICES) == set(SERVICE_SCOPES)
    assert scope_of("/inference.GRPCInferenceService/ModelInfer") == "infer"
    assert scope_of("/inference.GRPCInferenceService/ServerReady") == "infer"
    assert scope_of("/maas.v1.ModelService/GetModel") == "infer"
    assert scope_of("/maas.v1.ModelService/RegisterModel") == "train"
    assert scope_of("/maas.v1.TrainingService/CreateTrainingJob") == "train"
    assert scope_of("/maas.v1.DatasetService/UploadDataset") == "train"
    assert scope_of("/maas.v1.KeyService/CreateKey") == "admin"
    assert scope_of("/maas.v1.QueueService/ListDeadLetters") == "admin"
    assert scope_of("/maas.v1.QueueService/GetQueueStats") == "infer"  # own models only
    assert scope_of("/grpc.health.v1.Health/Check") is None
    assert scope_of("/maas.v9.Unknown/Anything") == "admin"  # closed by default
    assert "grpc.health.v1.Health" in OPEN_SERVICES


def test_scopes_and_tenants_are_checked() -> None:
    assert check_scopes(["train", "infer", "infer"]) == ("infer", "train")
    for bad in ([], ["root"], ["infer", "everything"]):
        with pytest.raises(InvalidArgument):
            check_scopes(bad)
    check_tenant("acme-1.eu")
    for bad in ("", "a/b", "-x", "x" * 65, "ünï"):
        with pytest.raises(InvalidArgument):
            check_tenant(bad)


def test_model_ids_split_one_way() -> None:
    assert keys.model_id("", "cnn") == "cnn"
    assert keys.model_id("acme", "cnn") == "acme/cnn"
    assert keys.split_model_id("acme/cnn") == ("acme", "cnn")
    assert keys.split_model_id("cnn") == ("", "cnn")
    assert keys.split_model_id("acme/cnn:3") == ("acme", "cnn:3")
    assert keys.stream("acme/cnn") == "maas:{m:acme/cnn}:stream"  # one slot per model


def test_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    key = ensure_key_file(path)
    assert key_id_of(key) is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_key_file(path) == key
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="maas keys generate"):
        ensure_key_file(path)


def test_security_settings() -> None:
    assert Settings().auth == "off" and not Settings().is_auth_on
    assert Settings.from_env({"MAAS_AUTH": "on"}).is_auth_on
    with pytest.raises(ValueError, match="MAAS_AUTH='yes'"):
        Settings.from_env({"MAAS_AUTH": "yes"})
    with pytest.raises(ValueError, match="MAAS_TLS_CERT_FILE and MAAS_TLS_KEY_FILE"):
        Settings.from_env({"MAAS_TLS_CERT_FILE": "/x.pem"})
    with pytest.raises(ValueError, match="MAAS_TLS_CLIENT_CA_FILE"):
        Settings.from_env({"MAAS_TLS_CLIENT_CA_FILE": "/ca.pem"})
    assert Settings.from_env({"MAAS_TENANT_RATE_PER_S": "0"}).tenant_rate_per_s == 0
    with pytest.raises(ValueError, match="MAAS_TENANT_RATE_PER_S"):
        Settings.from_env({"MAAS_TENANT_RATE_PER_S": "-1"})


def test_the_redis_url_never_shows_in_a_repr() -> None:
    settings = Settings(redis_url="rediss://:s3cret@redis:6380/0")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
