"""Fixture: a site broker (mosquitto/site.conf) bridged to the test broker through a TCP proxy (a pytest plugin).

The proxy is the link: `refuse()` + `cut()` take it down (the central broker
sees the bridge's connection drop and publishes its Will), `admit()` brings
it back (the bridge reconnects within its restart_timeout).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devstack.mosquitto import MQTT_TEST_ACCOUNTS, MosquittoServer
from devstack.mqtt_client import MqttTestClient, MqttTestError
from devstack.processes import wait_until
from devstack.proxy import TcpProxy
from devstack.site import site_broker
from iotcommon.contract import site_bridge_state_topic

LINK_TIMEOUT_S = 20.0  # the bridge retries every 1-10 s (restart_timeout in site.conf)


@dataclass
class SiteLink:
    """A site broker, the proxy it reaches the central broker through, and its bridge's name."""

    site: MosquittoServer
    proxy: TcpProxy
    name: str
    central_url: str

    @property
    def device_url(self) -> str:
        """The site's URL as the simulator account, which may publish any sensor's readings."""
        return self.site.url_as("simulator", MQTT_TEST_ACCOUNTS["MQTT_SIMULATOR_PASSWORD"])

    @property
    def state_topic(self) -> str:
        """Where the bridge reports its link on the central broker."""
        return site_bridge_state_topic(self.name)

    def take_down(self) -> None:
        """Cut the link and keep it cut."""
        self.proxy.refuse()
        self.proxy.cut()

    def bring_up(self) -> None:
        """Let the bridge reconnect."""
        self.proxy.admit()

    def wait_for_state(self, state: bytes, timeout: float = LINK_TIMEOUT_S) -> None:
        """Wait until the central broker's retained link state is `state` (b"1" up, b"0" down)."""

        wait_until(lambda: self.state() == state, timeout, interval=0.2,
                   message=f"link state {state!r} on {self.state_topic}")

    def state(self) -> bytes | None:
        """The retained link state on the central broker now; None if there is none or the broker is down."""
        try:
            with MqttTestClient.from_url(self.central_url) as client:
                client.subscribe(self.state_topic)
                return bytes(client.wait_for_messages(1, topic=self.state_topic, timeout=1)[-1].payload)
        except (OSError, MqttTestError):
            return None


@pytest.fixture
def site_link(restartable_mosquitto: MosquittoServer) -> Iterator[SiteLink]:
    """A started site broker named site-<random>, its link up (state "1" seen on the central broker)."""
    name = f"site-{uuid.uuid4().hex[:8]}"
    proxy = TcpProxy(restartable_mosquitto.port)
    site = site_broker(central_port=proxy.port, name=name)
    link = SiteLink(site, proxy, name, restartable_mosquitto.url)
    try:
        site.start()
        link.wait_for_state(b"1")
        yield link
    finally:
        print(f"--- site broker {name} log tail ---\n{site.log_text()[-4000:]}")  # shown only on failure
        site.cleanup()
        proxy.close()

