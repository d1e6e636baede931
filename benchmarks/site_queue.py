"""A site broker's queue while its link is down: memory, save and load times, and how fast it drains.

    python benchmarks/site_queue.py                               # 100,000 readings, no added latency
    python benchmarks/site_queue.py --readings 100000 --rtt-ms 50  # a WAN-like link: 25 ms each way
    python benchmarks/site_queue.py --rtt-ms 50 --inflight 20      # ... with Mosquitto's default window

Starts a central Mosquitto (the project's mosquitto.conf) and a site broker
(mosquitto/site.conf, as shipped) bridged to it through a TCP proxy; cuts
the link; publishes --readings readings to the site (QoS 1, each PUBACKed);
then measures the site's RSS per queued reading, its SIGTERM (saving the
queue) and start (loading it), and, with the link back, how long the bridge
takes to forward the queue to a subscriber on the central broker: the
backlog's drain rate, which site.conf's max_inflight_messages bounds per
round trip. Prints one table (docs/scaling.md, "Site brokers").
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence

from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.processes import memory_kb, wait_until
from devstack.proxy import TcpProxy
from devstack.site import site_broker
from iotcommon.contract import READINGS_FILTER, reading_topic


def reading(n: int) -> tuple[str, bytes]:
    """A reading as the simulator shapes it (about 130 bytes of JSON)."""
    sensor = n % 1000 + 1
    body = {"sensor_id": sensor, "timestamp": f"2026-01-01T00:00:00.{n:06d}Z", "variable": "temperature#rsitebnch",
            "value": 21.5, "unit": "°C"}
    return reading_topic(sensor), json.dumps(body).encode()


def main(argv: Sequence[str] | None = None) -> int:
    """Run once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip added by the link (half each way)")
    parser.add_argument("--inflight", type=int, default=None,
                        help="the site's max_inflight_messages instead of site.conf's (20: Mosquitto's default)")
    args = parser.parse_args(argv)
    rows: list[tuple[str, str]] = []
    central = MosquittoServer()
    central.start()
    proxy = TcpProxy(central.port, delay_s=args.rtt_ms / 2000)
    changes = [] if args.inflight is None else [
        (r"max_inflight_messages\s+\d+", f"max_inflight_messages {args.inflight}")]
    site = site_broker(central_port=proxy.port, name="site-bench", changes=changes)
    try:
        site.start()
        with MqttTestClient.from_url(central.url) as sink:
            sink.subscribe(READINGS_FILTER)
            proxy.refuse()
            proxy.cut()
            empty_kb = memory_kb(site.pid)
            started = time.monotonic()
            with MqttTestClient.from_url(site.url) as device:
                device.publish_many((reading(n) for n in range(args.readings)), timeout=3600)
            rows.append(("readings PUBACKed by the site, link down", f"{args.readings:,} in "
                         f"{time.monotonic() - started:.0f} s"))
            queued_kb = memory_kb(site.pid)
            rows.append(("site RSS: empty / with the queue / per queued reading",
                         f"{empty_kb / 1024:.0f} MB / {queued_kb / 1024:.0f} MB / "
                         f"{(queued_kb - empty_kb) * 1024 / args.readings:.0f} bytes"))
            rows += restart(site)
            proxy.admit()
            back = time.monotonic()
            wait_until(sink.received, 60, interval=0.01, message="the bridge connected again")
            first = time.monotonic()
            wait_until(lambda: len(sink.received()) >= args.readings, 3600, interval=0.2,
                       message="every queued reading at the central broker")
            took = time.monotonic() - first
            rows.append(("link back → the bridge's first reading at the central broker (its reconnect backoff)",
                         f"{first - back:.1f} s"))
            inflight = "site.conf's" if args.inflight is None else str(args.inflight)
            rows.append((f"the queue forwarded (RTT +{args.rtt_ms:g} ms, max_inflight_messages {inflight})",
                         f"{took:.1f} s: {args.readings / took:,.0f} readings/s"))
    finally:
        site.cleanup()
        proxy.close()
        central.cleanup()
    print("\n| figure | value |\n| --- | --- |")
    for figure, value in rows:
        print(f"| {figure} | {value} |")
    return 0


def restart(site: MosquittoServer) -> list[tuple[str, str]]:
    """SIGTERM (the queue is saved) and start (it is loaded): how long each takes, and the file's size."""
    stopping = time.monotonic()
    site.stop(signal.SIGTERM)
    saved_s = time.monotonic() - stopping
    size = site.persistence_file.stat().st_size
    starting = time.monotonic()
    site.start()
    return [("site SIGTERM with the queue → exited (saved) / persistence file",
             f"{saved_s:.2f} s / {size / 1e6:.0f} MB"),
            ("site start → accepting clients (queue loaded)", f"{time.monotonic() - starting:.2f} s")]


if __name__ == "__main__":
    sys.exit(main())
