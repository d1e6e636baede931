"""How every paho client of the project reaches the broker: credentials and TLS from MQTT_URL.

Shared by the bridge, the watchdog and the simulator, so that `mqtts://` and
MQTT_CA_FILE mean the same thing to all three.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Protocol

from iotcommon.errors import BrokerTlsError
from iotcommon.settings import MqttEndpoint

logger = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 5.0
# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH: the CA is
# trusted, but the certificate is for another name, so MQTT_CA_FILE is not the fix.
_NAME_MISMATCH = {62, 64}


class TransportClient(Protocol):
    """The part of paho's Client that apply_endpoint configures."""

    def username_pw_set(self, username: str | None, password: str | None = None) -> None: ...

    def tls_set_context(self, context: ssl.SSLContext | None = None) -> None: ...


def apply_endpoint(client: TransportClient, endpoint: MqttEndpoint) -> None:
    """Give a paho client the endpoint's credentials and, for mqtts://, its TLS context."""
    if endpoint.username is not None:
        password = endpoint.password.get_secret_value() if endpoint.password else None
        client.username_pw_set(endpoint.username, password)
    if endpoint.tls:
        client.tls_set_context(tls_context(endpoint))


def tls_context(endpoint: MqttEndpoint) -> ssl.SSLContext:
    """A client context that verifies the broker's certificate and host name (TLS 1.2 or newer).

    It trusts MQTT_CA_FILE only when set, else the system CAs, as paho's tls_set() would;
    building it here lets check_broker_tls() handshake with exactly the same trust.
    """
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_broker_tls(endpoint: MqttEndpoint, *, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Handshake once and raise BrokerTlsError if it fails; an unreachable or slow broker is left to paho.

    paho retries a failed TLS handshake forever and tells its callbacks nothing
    of the reason, so without this a wrong CA looks like a broker that is down.
    """
    if not endpoint.tls:
        return
    try:
        raw = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
    except OSError as exc:
        logger.debug("no TLS check: broker %s:%d unreachable (%s)", endpoint.host, endpoint.port, exc)
        return
    try:
        with raw, tls_context(endpoint).wrap_socket(raw, server_hostname=endpoint.host):
            pass  # wrap_socket handshakes on entry: verifying the certificate is the whole check
    except OSError as exc:
        failure = handshake_failure(endpoint, exc)
        if failure is None:
            logger.warning("TLS check of broker %s:%d inconclusive: %s", endpoint.host, endpoint.port, exc)
            return
        raise failure from exc


def handshake_failure(endpoint: MqttEndpoint, exc: OSError) -> BrokerTlsError | None:
    """The BrokerTlsError naming the broker, the variable to fix and the reason; None if `exc` is no TLS failure.

    A broker without TLS on that port resets the connection at the first
    handshake bytes, so a reset on an mqtts:// endpoint counts as a failure.
    """
    if not endpoint.tls or not isinstance(exc, ssl.SSLError | ConnectionResetError):
        return None
    where = f"the broker at {endpoint.host}:{endpoint.port} (MQTT_URL)"
    if not isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.strerror or exc
        return BrokerTlsError(f"TLS handshake with {where} failed ({reason}); is that port a TLS listener?")
    if exc.verify_code in _NAME_MISMATCH:
        fix = "put a host name or IP address that the certificate names in MQTT_URL"
    else:
        trusted = f"MQTT_CA_FILE={endpoint.ca_file}" if endpoint.ca_file else "the system CAs (MQTT_CA_FILE unset)"
        fix = f"it is checked against {trusted}; set MQTT_CA_FILE to the CA that signed it"
    return BrokerTlsError(f"{where} presented a certificate that failed verification ({exc.verify_message}): {fix}")
