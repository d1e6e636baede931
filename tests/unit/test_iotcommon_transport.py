"""iotcommon.transport: credentials and TLS applied to a paho client, and the TLS failure messages."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import pytest
from pydantic import SecretStr

from iotcommon.errors import SetupError
from iotcommon.settings import MqttEndpoint
from iotcommon.transport import apply_endpoint, check_broker_tls, handshake_failure, tls_context

CA_BUNDLE = certifi.where()


class FakeClient:
    """Records what apply_endpoint asks of paho."""

    def __init__(self) -> None:
        self.credentials: list[tuple[str | None, str | None]] = []
        self.contexts: list[ssl.SSLContext | None] = []

    def username_pw_set(self, username: str | None, password: str | None = None) -> None:
        self.credentials.append((username, password))

    def tls_set_context(self, context: ssl.SSLContext | None = None) -> None:
        self.contexts.append(context)


def test_plain_endpoint_without_user_configures_nothing() -> None:
    client = FakeClient()

    apply_endpoint(client, MqttEndpoint(host="broker", port=1883))

    assert client.credentials == [] and client.contexts == []


def test_credentials_and_tls_are_applied_once() -> None:
    client = FakeClient()
    endpoint = MqttEndpoint(host="broker", port=8883, username="bridge", password=SecretStr("pw"), tls=True)

    apply_endpoint(client, endpoint)

    assert client.credentials == [("bridge", "pw")]
    assert len(client.contexts) == 1


@pytest.mark.parametrize("ca_file", [None, CA_BUNDLE])
def test_tls_context_verifies_certificate_and_host_name(ca_file: str | None) -> None:
    context = tls_context(MqttEndpoint(host="broker", port=8883, tls=True, ca_file=ca_file))

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_mqtt_ca_file_replaces_the_system_cas(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str | None] = []
    real = ssl.create_default_context

    def spy(*, cafile: str | None = None) -> ssl.SSLContext:
        asked.append(cafile)
        return real(cafile=cafile)

    monkeypatch.setattr(ssl, "create_default_context", spy)

    with_file = tls_context(MqttEndpoint(host="broker", port=8883, tls=True, ca_file=CA_BUNDLE))
    tls_context(MqttEndpoint(host="broker", port=8883, tls=True))

    assert asked == [CA_BUNDLE, None], "the file when MQTT_CA_FILE is set, else the system's store"
    bundle = Path(CA_BUNDLE).read_text(encoding="ascii").count("BEGIN CERTIFICATE")
    assert with_file.cert_store_stats()["x509_ca"] == bundle, "every CA of the file, and only those, trusted"


def test_plain_endpoint_opens_no_connection_for_a_tls_check(monkeypatch: pytest.MonkeyPatch) -> None:
    dialled: list[object] = []

    def refuse(address: tuple[str, int], **kwargs: object) -> None:
        dialled.append(address)
        raise ConnectionRefusedError(111, "Connection refused")  # an unreachable broker is paho's business

    monkeypatch.setattr("iotcommon.transport.socket.create_connection", refuse)

    check_broker_tls(MqttEndpoint(host="broker", port=1883, tls=False))
    assert dialled == [], "mqtt:// needs no handshake"
    check_broker_tls(MqttEndpoint(host="broker", port=8883, tls=True))
    assert dialled == [("broker", 8883)], "mqtts:// is checked"


def _verification_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.verify_code, error.verify_message = code, message
    return error


def test_untrusted_certificate_names_the_trusted_cas_and_the_fix() -> None:
    untrusted = _verification_error(20, "unable to get local issuer certificate")
    with_file = MqttEndpoint(host="broker", port=8883, tls=True, ca_file="/etc/ca.pem")
    system = MqttEndpoint(host="broker", port=8883, tls=True)

    assert str(handshake_failure(with_file, untrusted)) == (
        "the broker at broker:8883 (MQTT_URL) presented a certificate that failed verification "
        "(unable to get local issuer certificate): it is checked against MQTT_CA_FILE=/etc/ca.pem; "
        "set MQTT_CA_FILE to the CA that signed it"
    )
    assert "the system CAs (MQTT_CA_FILE unset)" in str(handshake_failure(system, untrusted))
    assert isinstance(handshake_failure(system, untrusted), SetupError)


def test_host_name_mismatch_points_at_the_url_not_the_ca() -> None:
    mismatch = _verification_error(62, "Hostname mismatch, certificate is not valid for 'broker'.")

    message = str(handshake_failure(MqttEndpoint(host="broker", port=8883, tls=True, ca_file=CA_BUNDLE), mismatch))

    assert "Hostname mismatch" in message
    assert "names in MQTT_URL" in message and "set MQTT_CA_FILE" not in message


@pytest.mark.parametrize(
    "error",
    [
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        ConnectionResetError(104, "Connection reset by peer"),  # how Mosquitto greets TLS on a plain port
    ],
)
def test_other_handshake_failure_asks_whether_the_port_speaks_tls(error: OSError) -> None:
    failure = handshake_failure(MqttEndpoint(host="broker", port=1883, tls=True), error)

    assert failure is not None
    assert str(failure).startswith("TLS handshake with the broker at broker:1883 (MQTT_URL) failed")
    assert str(failure).endswith("is that port a TLS listener?")


@pytest.mark.parametrize(
    ("error", "tls"),
    [
        (ConnectionRefusedError(111, "Connection refused"), True),
        (TimeoutError("timed out"), True),
        (ConnectionResetError(104, "Connection reset by peer"), False),
    ],
)
def test_unreachable_slow_or_plain_broker_is_no_tls_failure(error: OSError, tls: bool) -> None:
    assert handshake_failure(MqttEndpoint(host="broker", port=8883, tls=tls), error) is None
