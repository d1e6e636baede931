"""A throwaway Mosquitto on a free port on 127.0.0.1, with the project's configuration and accounts.

Used by the fixtures in tests/fix_servers.py, the benchmarks and
scripts/local-stack. The broker runs the project's own mosquitto.conf (a site
broker: site.conf), with only the lines that name ports, paths and files
rewritten, and its dynamic-security accounts hashed as in production.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import re
import shutil
import signal as signals
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.lifecycle import Launch, ServerProcess
from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.processes import LOCALHOST, REPO_ROOT, chown, find_binary, free_port, read_tail, service_account
from devstack.urls import login_password, mqtt_url
from mosquitto import dynsec

MOSQUITTO_HINT = (
    "install Debian's `mosquitto` package (apt-get install -y mosquitto) or set TEST_MQTT_URL"
)
# The test passwords of the project's accounts (mosquitto/dynsec.py), plus `test`,
# a test account allowed everything, which fixtures use unless a test needs a
# role. Each is long enough for dynsec's password rule; @ / % : in them prove
# that URLs are encoded.


def _account_password(account: str) -> str:
    return f"{login_password(account)}-test"


MQTT_TEST_ACCOUNTS = {
    "MQTT_BRIDGE_PASSWORD": _account_password("bridge"),
    "MQTT_WATCHDOG_PASSWORD": _account_password("watchdog"),
    "MQTT_SIMULATOR_PASSWORD": _account_password("simulator"),
    "MQTT_ADMIN_PASSWORD": _account_password("admin"),
    "MQTT_HEALTH_PASSWORD": _account_password("health"),
    "MQTT_DEVICES": f"7:{_account_password('device-7')}",
    "MQTT_SITE_BRIDGE_PASSWORD": _account_password("site-bridge"),
}
TEST_MQTT_USER = "test"
# Every worker of the tests logs in with it through a URL.
TEST_MQTT_PASSWORD = login_password(TEST_MQTT_USER)
_DYNSEC_PLUGINS = ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so")
_EVERY_KIND = ("publishClientSend", "publishClientReceive", "subscribePattern")


def dynsec_plugin() -> str:
    """Path of Mosquitto's dynamic security plugin (Debian puts it under the multiarch folder)."""
    for pattern in _DYNSEC_PLUGINS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise RuntimeError(f"mosquitto_dynamic_security.so not found: {MOSQUITTO_HINT}")


def add_test_account(document: dict[str, Any], topics: Iterable[str]) -> None:
    """Give an accounts document the `test` account, allowed everything on `topics`."""
    everything = [dynsec.acl(kind, topic) for topic in topics for kind in _EVERY_KIND]
    document["roles"].append({"rolename": TEST_MQTT_USER, "acls": everything})
    document["clients"].append(dynsec.client(TEST_MQTT_USER, TEST_MQTT_PASSWORD, TEST_MQTT_USER,
                                             iterations=dynsec.ITERATIONS, salt=os.urandom(dynsec.SALT_BYTES)))


def write_test_accounts(path: Path) -> None:
    """The project's accounts with test passwords, plus the all-powerful `test` account."""
    document = dynsec.build(MQTT_TEST_ACCOUNTS)
    add_test_account(document, ("#", "$SYS/#", "$share/#"))
    path.write_text(json.dumps(document), encoding="utf-8")


def render_mosquitto_config(
    template: str, *, port: int, data_dir: Path, log_path: Path, dynsec_path: Path,
    rewrites: Sequence[tuple[str, str]] = (),
) -> str:
    """Rewrite the project's mosquitto.conf for a test broker; every other line stays as is.

    `rewrites` are more (pattern, line) pairs of the same kind (a site broker's
    bridge address and password). Raises RuntimeError if a line to rewrite is
    missing, so the fixtures never run a broker with a configuration the
    project does not use.
    """
    replacements = [*rewrites,
        (r"listener\s+1883", f"listener {port} {LOCALHOST}"),
        (r"persistence_location\s+\S+", f"persistence_location {data_dir}/"),
        (r"log_dest\s+stdout", f"log_dest file {log_path}"),
        (r"plugin\s+\S+", f"plugin {dynsec_plugin()}"),
        (r"plugin_opt_config_file\s+\S+", f"plugin_opt_config_file {dynsec_path}"),
    ]
    return _rewrite_lines(template, replacements)


def enable_tls_listener(config: str, *, port: int, files: TlsFiles) -> str:
    """Uncomment the TLS listener example of mosquitto.conf, on `port` and with `files`.

    Raises RuntimeError if the example is missing, so the tests exercise the
    block that the README tells users to uncomment, not one of their own.
    """
    return _rewrite_lines(config, [
        (r"#listener\s+8883", f"listener {port} {LOCALHOST}"),
        (r"#protocol\s+mqtt", "protocol mqtt"),
        (r"#certfile\s+\S+", f"certfile {files.certfile}"),
        (r"#keyfile\s+\S+", f"keyfile {files.keyfile}"),
        (r"#cafile\s+\S+", f"cafile {files.cafile}"),
        (r"#tls_version\s+tlsv1\.2", "tls_version tlsv1.2"),
    ])


def _rewrite_lines(template: str, replacements: list[tuple[str, str]]) -> str:
    """Replace the one whole line matching each pattern; RuntimeError unless there is exactly one."""
    for pattern, line in replacements:
        template, count = re.subn(rf"^{pattern}[ \t]*$", line, template, flags=re.MULTILINE)
        if count != 1:
            raise RuntimeError(
                f"mosquitto config template: expected one line matching {pattern!r}, found {count}"
            )
    return template


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a TLS listener: the broker's certificate and key, and the CA that signed it."""

    cafile: Path
    certfile: Path
    keyfile: Path


class MosquittoServer(ServerProcess):
    """A Mosquitto using the project's mosquitto.conf, on a free port on 127.0.0.1.

    By default a throwaway with the test accounts (write_test_accounts). With
    `tls`, it also has the config's TLS listener (mqtts://) on a second free
    port. `accounts` writes the accounts file, or brings the one already
    there up to date, before the broker starts (the broker owns it
    afterwards). scripts/local-stack passes a `root` that outlives it, its own
    `accounts` writer and the account that proves it is ready.
    A site broker (devstack/site.py) passes mosquitto/site.conf and the
    `rewrites` of its bridge lines; a fleet benchmark raises `open_files`.
    """

    name = "mosquitto"

    def __init__(
        self,
        config_template: Path = REPO_ROOT / "mosquitto" / "mosquitto.conf",
        *,
        tls: TlsFiles | None = None,
        root: Path | None = None,
        port: int | None = None,
        accounts: Callable[[Path], None] = write_test_accounts,
        ready_account: tuple[str, str] = (TEST_MQTT_USER, TEST_MQTT_PASSWORD),
        rewrites: Sequence[tuple[str, str]] = (),
        open_files: int | None = None,
    ) -> None:
        self._binary = find_binary("mosquitto", MOSQUITTO_HINT)
        # Started as root, mosquitto drops privileges to the `mosquitto` user
        # before it writes its log and persistence files.
        account = service_account("mosquitto")
        template = config_template.read_text(encoding="utf-8")
        self._ready_account = ready_account
        super().__init__(root, port=port, temp_prefix="bridge-test-mqtt-")
        self._data_dir = self._root / "data"
        self._log_path = self._root / "mosquitto.log"
        self._output_path = self._root / "mosquitto.out"
        self._config_path = self._root / "mosquitto.conf"
        self._dynsec_path = self._root / "dynamic-security.json"
        self._tls_port: int | None = None
        self._open_files = open_files
        try:
            config = render_mosquitto_config(
                template, port=self._port, data_dir=self._data_dir, log_path=self._log_path,
                dynsec_path=self._dynsec_path, rewrites=rewrites,
            )
            if tls is not None:
                self._tls_port = free_port()
                config = enable_tls_listener(config, port=self._tls_port, files=self._copy_tls_files(tls, account))
        except RuntimeError:
            if root is None:
                shutil.rmtree(self._root)
            raise
        self._config_path.write_text(config, encoding="utf-8")
        accounts(self._dynsec_path)
        self._data_dir.mkdir(exist_ok=True)
        self._log_path.touch()
        chown(account, self._root, self._data_dir, self._log_path, self._dynsec_path)

    def _copy_tls_files(self, files: TlsFiles, account: pwd.struct_passwd | None) -> TlsFiles:
        """Copies in our folder, owned by the user the broker drops to (the key is private to it)."""
        folder = self._root / "tls"
        folder.mkdir()
        chown(account, folder)

        def copy(source: Path, name: str) -> Path:
            target = folder / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            chown(account, target)
            return target

        return TlsFiles(
            cafile=copy(files.cafile, "ca.crt"),
            certfile=copy(files.certfile, "server.crt"),
            keyfile=copy(files.keyfile, "server.key"),
        )

    @property
    def url(self) -> str:
        """mqtt:// URL of the broker, as the all-powerful test account."""
        return self.url_as(TEST_MQTT_USER, TEST_MQTT_PASSWORD)

    def url_as(self, username: str, password: str, *, tls: bool = False) -> str:
        """mqtt:// (or the TLS listener's mqtts://) URL of the broker for an account, its password percent-encoded."""
        return mqtt_url(self.tls_port if tls else self.port, username, password, tls=tls, host=self.host)

    @property
    def log_path(self) -> Path:
        """The broker's log file (what it wrote before its logging started goes to mosquitto.out)."""
        return self._log_path

    @property
    def persistence_file(self) -> Path:
        """The broker's saved state (sessions, subscriptions, queued messages), written at each autosave."""
        return self._data_dir / "mosquitto.db"

    @property
    def tls_port(self) -> int:
        """TCP port of the TLS listener; RuntimeError if the broker was built without `tls`."""
        if self._tls_port is None:
            raise RuntimeError("this Mosquitto has no TLS listener: pass tls=TlsFiles(...)")
        return self._tls_port

    @property
    def tls_url(self) -> str:
        """mqtts:// URL of the TLS listener, as the all-powerful test account."""
        return self.url_as(TEST_MQTT_USER, TEST_MQTT_PASSWORD, tls=True)

    def stop(self, sig: int = signals.SIGTERM) -> None:
        """Stop the broker: SIGTERM saves the persistence file first, SIGKILL does not."""
        self._stop_with(sig)

    def log_text(self) -> str:
        """The broker's log file followed by anything it wrote to stdout or stderr."""
        return read_tail(self._log_path, lines=10_000) + "\n" + read_tail(self._output_path)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log file, then of what it wrote to stdout or stderr."""
        return read_tail(self._log_path, lines=lines) + "\n" + read_tail(self._output_path, lines=lines)

    def _launch(self) -> Launch:
        return Launch([str(self._binary), "-c", str(self._config_path)], self._output_path,
                      open_files=self._open_files)

    def _is_ready(self) -> bool:
        """Whether a TCP connect and an MQTT CONNECT/CONNACK round trip succeed right now."""
        try:
            socket.create_connection((self.host, self.port), timeout=1).close()
            MqttTestClient.from_url(self.url_as(*self._ready_account)).connect(timeout=2).close()
        except (OSError, MqttTestError):
            return False
        return True
