"""TLS and mutual TLS on a real gateway, with certificates made here by `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import maas
from maas.api_keys import ensure_key_file
from tests.inprocess import running_gateway

pytestmark = pytest.mark.timeout(60)


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           signer: ec.EllipticCurvePrivateKey, *, is_ca: bool = False,
           usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "srv", "cli", "other")}
    ca = _issue("maas test CA", keys["ca"], _name("maas test CA"), keys["ca"], is_ca=True)
    other = _issue("another CA", keys["other"], _name("another CA"), keys["other"], is_ca=True)
    server = _issue("localhost", keys["srv"], ca.subject, keys["ca"],
                    usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _issue("acme-service", keys["cli"], ca.subject, keys["ca"],
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(_write(tmp / "ca.pem", ca), _write(tmp / "server.pem", server, keys["srv"]),
               tmp / "server.key", _write(tmp / "client.pem", client, keys["cli"]),
               tmp / "client.key", _write(tmp / "other-ca.pem", other))


def tls_settings(pki: Pki, *, mutual: bool) -> dict[str, object]:
    settings: dict[str, object] = {"tls_cert_file": str(pki.server_cert),
                                   "tls_key_file": str(pki.server_key)}
    if mutual:
        settings["tls_client_ca_file"] = str(pki.ca)
    return settings


@pytest.fixture
def tls_target(redis_url: str, tmp_path: Path, pki: Pki) -> Iterator[str]:
    with running_gateway(redis_url, tmp_path / "data", **tls_settings(pki, mutual=False)) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
def mtls_target(redis_url: str, tmp_path: Path, pki: Pki) -> Iterator[tuple[str, str]]:
    key_file = tmp_path / "admin.key"
    admin_key = ensure_key_file(key_file)
    with running_gateway(redis_url, tmp_path / "data", auth="on", admin_key_file=str(key_file),
                         **tls_settings(pki, mutual=True)) as port:
        yield f"127.0.0.1:{port}", admin_key


def test_tls_handshake_with_the_servers_ca(tls_target: str, pki: Pki) -> None:
    with maas.Client(tls_target, root_certificates=pki.ca, timeout_s=5) as client:
        assert client.is_ready()
        assert client.list_models() == []


def test_tls_refuses_plaintext_and_unknown_cas(tls_target: str, pki: Pki) -> None:
    with maas.Client(tls_target, timeout_s=3) as plaintext, pytest.raises(maas.Unavailable):
        plaintext.is_ready()
    with maas.Client(tls_target, root_certificates=pki.other_ca.read_bytes(),
                     timeout_s=3) as untrusted, pytest.raises(maas.Unavailable):
        untrusted.is_ready()


async def test_async_client_over_tls(tls_target: str, pki: Pki) -> None:
    async with maas.AsyncClient(tls_target, root_certificates=pki.ca, timeout_s=5) as client:
        with pytest.raises(maas.ModelNotFound):
            await client.get_model("nothing")


def test_mutual_tls_with_a_client_certificate(mtls_target: tuple[str, str], pki: Pki) -> None:
    target, admin_key = mtls_target
    with maas.Client(target, api_key=admin_key, root_certificates=pki.ca,
                     certificate_chain=pki.client_cert, private_key=pki.client_key,
                     timeout_s=5) as client:
        assert client.is_ready()
        made = client.create_key("acme", ["infer"])
    with maas.Client(target, api_key=made.api_key, root_certificates=pki.ca,
                     certificate_chain=pki.client_cert, private_key=pki.client_key,
                     timeout_s=5) as client:
        assert client.list_models() == []


def test_mutual_tls_refuses_a_client_without_a_certificate(mtls_target: tuple[str, str],
                                                            pki: Pki) -> None:
    target, admin_key = mtls_target
    with maas.Client(target, api_key=admin_key, root_certificates=pki.ca,
                     timeout_s=3) as client, pytest.raises(maas.Unavailable):
        client.is_ready()


def test_health_over_tls_needs_no_key(mtls_target: tuple[str, str], pki: Pki) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    creds = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(),
                                         pki.client_cert.read_bytes())
    with grpc.secure_channel(mtls_target[0], creds) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                          timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
