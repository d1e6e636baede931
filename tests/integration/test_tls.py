"""mqtts://: the bridge, simulator and watchdog over the TLS listener of mosquitto.conf, trusting a test CA.

One broker for the module runs the project's config with its commented TLS
listener turned on: the harness (status watching in `start`) uses the plain
listener, the code under test the TLS one. The CA and the broker's certificate
are made here with the openssl CLI and live only as long as the module.
"""

from __future__ import annotations

import re
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import traffic
from devstack.mosquitto import MOSQUITTO_HINT, TEST_MQTT_PASSWORD, TEST_MQTT_USER, MosquittoServer, TlsFiles
from devstack.mqtt_client import MqttTestClient
from devstack.processes import LOCALHOST, find_binary, wait_until
from devstack.simulator_process import simulate, simulator_env
from devstack.watchdog_process import WatchdogProcess
from devstack.workers import StartWorker

OPENSSL_HINT = "install Debian's `openssl` package (apt-get install -y openssl)"
# Extensions a strict verifier (Python 3.13's VERIFY_X509_STRICT) insists on.
OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    """The broker's files, signed by `ca`, and a second CA that signed nothing of the broker's."""

    broker: TlsFiles
    ca: Path
    other_ca: Path


def openssl(folder: Path, *args: str) -> None:
    """Run the openssl CLI in `folder`; fail with its output."""
    binary = find_binary("openssl", OPENSSL_HINT)
    result = subprocess.run([str(binary), *args], cwd=folder, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)} failed:\n{result.stderr}"


def make_ca(folder: Path, name: str) -> Path:
    """A self-signed CA: writes <name>.crt and <name>.key, returns the certificate."""
    openssl(folder, "req", "-x509", "-config", "openssl.cnf", "-extensions", "ca", *EC_KEY,
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=iot-bridge test {name}")
    return folder / f"{name}.crt"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a broker certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    (folder / "openssl.cnf").write_text(OPENSSL_CONFIG, encoding="utf-8")
    ca, other_ca = make_ca(folder, "ca"), make_ca(folder, "other-ca")
    openssl(folder, "req", "-new", "-config", "openssl.cnf", *EC_KEY,
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    openssl(folder, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "2",
            "-days", "2", "-extfile", "openssl.cnf", "-extensions", "server", "-out", "server.crt")
    return Pki(TlsFiles(cafile=ca, certfile=folder / "server.crt", keyfile=folder / "server.key"), ca, other_ca)


@pytest.fixture(scope="module")
def tls_broker(pki: Pki) -> Iterator[MosquittoServer]:
    """A Mosquitto with the project's config, its plain listener and its TLS listener turned on."""
    try:
        find_binary("mosquitto", MOSQUITTO_HINT)
    except RuntimeError as exc:
        pytest.skip(f"a TLS listener needs a local Mosquitto, not TEST_MQTT_URL or Docker: {exc}")
    broker = MosquittoServer(tls=pki.broker)
    try:
        broker.start()
        yield broker
    finally:
        broker.cleanup()


@pytest.fixture(scope="module")
def mqtt_url(tls_broker: MosquittoServer) -> str:
    """The plain listener of the TLS broker: `start` watches worker status there."""
    return tls_broker.url


def listener_port_of(broker: MosquittoServer, client_id: str) -> int:
    """The listener port a client's latest connection came in on, from the broker's connection messages."""
    log = broker.log_text()
    clients = re.findall(rf"New client connected from (\S+) as {re.escape(client_id)} ", log)
    assert clients, f"{client_id} never connected; broker log:\n{log[-3000:]}"
    ports = re.findall(rf"New connection from {re.escape(clients[-1])} on port (\d+)\.", log)
    assert ports, f"no connection line for {clients[-1]}"
    return int(ports[-1])


# --- the bridge ---------------------------------------------------------------------------------


def test_worker_over_tls_stores_readings_published_over_tls(
    start: StartWorker, tls_broker: MosquittoServer, pki: Pki, admin_database_url: str
) -> None:
    worker = start("tls", mqtt_url=tls_broker.tls_url, mqtt_ca_file=pki.ca)
    sent = traffic.build(300, duplicate_share=0.1, invalid_share=0.05)

    with MqttTestClient.from_url(tls_broker.tls_url, ca_file=str(pki.ca)) as publisher:
        publisher.publish_many(sent.messages)
    wanted = (len(sent.expected), sent.invalid)
    wait_until(lambda: traffic.counts(admin_database_url) == wanted, 30, interval=0.2, message=f"{wanted} stored")

    assert traffic.stored_rows(admin_database_url) == sent.expected
    assert listener_port_of(tls_broker, worker.client_id) == tls_broker.tls_port
    assert worker.terminate() == 0


@pytest.mark.parametrize("trusted", ["system CAs", "another CA"])
def test_worker_with_an_untrusted_broker_certificate_exits_1_naming_the_fix(
    start: StartWorker, tls_broker: MosquittoServer, pki: Pki, trusted: str
) -> None:
    ca_file = {"mqtt_ca_file": pki.other_ca} if trusted == "another CA" else {}
    worker = start("untrusted", ready=False, mqtt_url=tls_broker.tls_url, **ca_file)

    assert worker.wait(30) == 1
    log = worker.log_text()
    assert f"cannot start: the broker at {LOCALHOST}:{tls_broker.tls_port} (MQTT_URL) presented a certificate" in log
    assert re.search(r"failed verification \((unable to get local issuer|self-signed) certificate", log)
    assert "set MQTT_CA_FILE to the CA that signed it" in log
    assert (f"MQTT_CA_FILE={pki.other_ca}" if ca_file else "the system CAs (MQTT_CA_FILE unset)") in log
    assert TEST_MQTT_PASSWORD not in log
    assert "Traceback" not in log


def test_mqtts_url_on_the_plain_port_exits_1_asking_whether_it_speaks_tls(
    start: StartWorker, tls_broker: MosquittoServer, pki: Pki
) -> None:
    plain_port_over_tls = tls_broker.tls_url.replace(f":{tls_broker.tls_port}", f":{tls_broker.port}")
    worker = start("wrongport", ready=False, mqtt_url=plain_port_over_tls, mqtt_ca_file=pki.ca)

    assert worker.wait(30) == 1
    assert f"TLS handshake with the broker at {LOCALHOST}:{tls_broker.port} (MQTT_URL) failed" in worker.log_text()
    assert "is that port a TLS listener?" in worker.log_text()


def test_plain_mqtt_on_the_tls_port_gets_no_session(tls_broker: MosquittoServer) -> None:
    # The same CONNECT gets a successful CONNACK on the plain port, so the bytes are right.
    assert connect_reply(tls_broker.port)[:4] == b"\x20\x02\x00\x00"
    assert connect_reply(tls_broker.tls_port) == b""


def connect_reply(port: int) -> bytes:
    """What the broker answers an MQTT 3.1.1 CONNECT of the test account sent in the clear (b"" = closed)."""

    def field(text: str) -> bytes:
        return len(text).to_bytes(2, "big") + text.encode()

    body = field("MQTT") + bytes([4, 0xC2, 0, 30])  # level 4; user name, password, clean session; keep-alive
    body += field(f"plain-{uuid.uuid4().hex[:8]}") + field(TEST_MQTT_USER) + field(TEST_MQTT_PASSWORD)
    with socket.create_connection((LOCALHOST, port), timeout=10) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        try:
            return sock.recv(4)
        except ConnectionResetError:
            return b""


# --- the simulator and the watchdog --------------------------------------------------------------


def test_simulator_over_tls_is_verified_end_to_end(
    start: StartWorker, tls_broker: MosquittoServer, pki: Pki, admin_database_url: str
) -> None:
    start("simtls", mqtt_url=tls_broker.tls_url, mqtt_ca_file=pki.ca)
    env = {**simulator_env(tls_broker.tls_url, admin_database_url), "MQTT_CA_FILE": str(pki.ca)}

    result = simulate(["--messages", "40", "--rate", "max", "--verify", "--verify-timeout", "30"], env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: OK" in result.stdout
    assert traffic.counts(admin_database_url) == (40, 0)


def test_simulator_with_another_ca_exits_2_naming_the_fix(
    tls_broker: MosquittoServer, pki: Pki, admin_database_url: str
) -> None:
    env = {**simulator_env(tls_broker.tls_url, admin_database_url), "MQTT_CA_FILE": str(pki.other_ca)}

    result = simulate(["--messages", "5"], env)

    assert result.returncode == 2
    assert f"error: the broker at {LOCALHOST}:{tls_broker.tls_port} (MQTT_URL) presented a certificate" in result.stderr
    assert f"MQTT_CA_FILE={pki.other_ca}" in result.stderr


def test_watchdog_once_over_tls(
    tls_broker: MosquittoServer, pki: Pki, bridge_database_url: str, tmp_path: Path
) -> None:
    name = f"wd-tls-{uuid.uuid4().hex[:6]}"
    env = {
        "MQTT_URL": tls_broker.tls_url, "MQTT_CA_FILE": str(pki.ca), "DATABASE_URL": bridge_database_url,
        "WATCHDOG_CLIENT_ID": name, "WATCHDOG_HEALTH_FILE": str(tmp_path / f"{name}.health"),
        "WATCHDOG_MIN_WORKERS": "0", "WATCHDOG_BROKER_TIMEOUT_S": "5",
    }
    trusted = WatchdogProcess(env, folder=tmp_path).run("--once")
    untrusted = WatchdogProcess({**env, "MQTT_CA_FILE": str(pki.other_ca)}, folder=tmp_path).run("--once")

    assert trusted.returncode == 0, trusted.stdout + trusted.stderr
    table = {line.split()[0]: line.split()[1] for line in trusted.stdout.splitlines()[1:]}
    assert table["broker"] == "OK"
    assert listener_port_of(tls_broker, name) == tls_broker.tls_port
    assert untrusted.returncode == 1
    assert "cannot start: the broker at" in untrusted.stderr and "failed verification" in untrusted.stderr
