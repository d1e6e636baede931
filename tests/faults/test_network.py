"""A slow and lossy link between the workers and the broker.

Two ways to make one: `tc netem` on the loopback interface, for the broker's
port only (needs root and a kernel with the netem qdisc; skipped with the
reason otherwise), and a user-space proxy that adds latency and cuts the
connections, which runs everywhere.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fix_measure import Measure

from devstack import traffic
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import BackgroundPublisher, MqttTestClient
from devstack.proxy import TcpProxy
from devstack.workers import StartWorker

NETEM = "delay 20ms 10ms loss 3%"


def _tc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, timeout=10, check=False)


def _netem_unavailable() -> str | None:
    """Why netem cannot be used on this machine, or None when it can."""
    if shutil.which("tc") is None or shutil.which("ip") is None:
        return "tc or ip (Debian's iproute2) is not installed"
    # Try netem in a throwaway network namespace first, so the probe itself
    # never touches the machine's loopback interface.
    namespace = f"netem-probe-{time.monotonic_ns()}"
    made = subprocess.run(["ip", "netns", "add", namespace], capture_output=True, text=True, timeout=10, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace to probe netem ({made.stderr.strip()}): needs root/CAP_NET_ADMIN"
    try:
        probe = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", "lo", "root",
                                "netem", "delay", "1ms"], capture_output=True, text=True, timeout=10, check=False)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        return f"tc netem refused ({probe.stderr.strip()}): the kernel has no netem qdisc (sch_netem)"
    current = _tc("qdisc", "show", "dev", "lo").stdout
    if "noqueue" not in current:
        return f"the loopback interface already has a queueing discipline, left alone: {current.strip()}"
    return None


@contextlib.contextmanager
def _netem_on_port(port: int) -> Iterator[None]:
    """Delay and drop packets to and from 127.0.0.1:<port> only; every other loopback flow is untouched."""
    # A prio qdisc with a fourth band no priority maps to: only the filters
    # below send packets there, and that band is netem.
    commands = [
        ("qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "4",
         "priomap", *["1"] * 16),
        ("qdisc", "add", "dev", "lo", "parent", "1:4", "handle", "40:", "netem", *NETEM.split()),
        ("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "dport", str(port), "0xffff", "flowid", "1:4"),
        ("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
         "match", "ip", "sport", str(port), "0xffff", "flowid", "1:4"),
    ]
    try:
        for command in commands:
            done = _tc(*command)
            assert done.returncode == 0, f"tc {' '.join(command)}: {done.stderr}"
        yield
    finally:
        _tc("qdisc", "del", "dev", "lo", "root")


def test_netem_slow_lossy_loopback_loses_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, restartable_mosquitto: MosquittoServer,
    measure: Measure,
) -> None:
    reason = _netem_unavailable()
    if reason is not None:
        pytest.skip(f"tc netem unavailable here: {reason}; test_slow_link_cut_again_and_again covers the bad link")
    workers = [start(name) for name in ("n1", "n2")]
    sent = traffic.build(2000, duplicate_share=0.1, invalid_share=0.02)
    with _netem_on_port(restartable_mosquitto.port):
        began = time.monotonic()
        BackgroundPublisher(mqtt_url, sent.messages, chunk=100).join()
        traffic.assert_stored_exactly(admin_database_url, sent, timeout=120, redelivered=True)
        took_s = time.monotonic() - began
    assert all(worker.is_running() for worker in workers)
    measure(f"netem {NETEM}: {len(sent.messages)} messages stored exactly", f"{took_s:.1f} s")


def test_slow_link_cut_again_and_again_loses_nothing(
    start: StartWorker, mqtt_url: str, admin_database_url: str, measure: Measure,
) -> None:
    # 40-80 ms each way between the workers and the broker; readings go out in
    # 8 bursts and every connection is cut at a random moment after each one.
    rhythm = random.Random(3)
    with TcpProxy(urlsplit(mqtt_url).port or 1883, delay_s=0.04, jitter_s=0.04) as link:
        workers = [start(name, mqtt_url=link.url_for(mqtt_url)) for name in ("c1", "c2")]
        sent = traffic.build(3000, duplicate_share=0.1, invalid_share=0.02)
        cuts = 0
        with MqttTestClient.from_url(mqtt_url) as publisher:
            for burst in range(8):
                publisher.publish_many(sent.messages[burst::8])
                threading.Event().wait(rhythm.uniform(0.05, 0.6))  # the fault's rhythm, not a synchronisation
                cuts += link.cut()
        last_cut = time.monotonic()
        traffic.assert_stored_exactly(admin_database_url, sent, timeout=90, redelivered=True)
        settled_s = time.monotonic() - last_cut

    assert cuts >= 4, "connections really were cut (a worker still reconnecting has none to cut)"
    assert all(worker.is_running() for worker in workers)
    assert all(w.log_text().count("connected to broker as") >= 2 for w in workers), "every worker reconnected"
    measure("connections cut", cuts)
    measure("last cut → all stored", f"{settled_s:.1f} s")
