"""A fleet at the broker: N devices, each its own connection, client id and account; then a reconnect storm.

    python benchmarks/fleet.py --devices 10000               # about 3 minutes
    python benchmarks/fleet.py --devices 40000 --period 240  # the same 167 readings/s from more devices

Starts a throwaway PostgreSQL, Mosquitto (the project's mosquitto.conf, one
dynamic-security account per device, as production would have) and bridge
workers, and drives the devices from this one process (simulator/fleet.py:
asyncio, MQTT 3.1.1, QoS 1). Device k logs in as device-k and publishes one
reading every --period seconds on sensors/k/readings, the fleet spread
evenly over the period. Then:

1. **Connect**: every device connects at once (clean sessions); time until
   all are connected, and the broker's RSS per connection.
2. **Steady**: --steady seconds of readings; publish→commit lateness.
3. **Restart**: the broker is restarted (SIGTERM, start); every device sees
   its connection drop and reconnects (backoff from --reconnect-initial,
   full jitter, capped at 30 s). Time until all are connected again, the
   broker's CPU during the storm, and the lateness of the readings sent
   meanwhile. Readings the broker acknowledged but the database never got
   are counted (Mosquitto 2.0.11 drops what arrives before the workers'
   shared subscriptions are restored: docs/reliability.md, "Known limits").
4. **Persistent sessions**: a fresh broker, every device connects with a
   persistent session and leaves; the broker is restarted with their N
   sessions on disk: its RSS per offline session, the load time, and the
   time until all are connected again (a storm that resumes sessions).

Raises this process's and the broker's RLIMIT_NOFILE (as root up to
/proc/sys/fs/nr_open). More than ~28,000 connections from one source
address exhaust its ephemeral ports: devices are spread over --sources
local addresses (127.0.1.x), one per 20,000 devices by default.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import fleet_setup  # benchmarks/ is on sys.path: this script's own folder

from devstack.mosquitto import TEST_MQTT_PASSWORD, TEST_MQTT_USER, MosquittoServer
from devstack.processes import memory_kb
from simulator.fleet import DeviceLogin, Fleet, FleetOptions

SOURCES_EVERY = 20_000  # devices per local source address (an address has ~28,000 ephemeral ports)
SPARE_FILES = 256  # descriptors besides one per device: logs, persistence, workers, PostgreSQL


@dataclass
class Figures:
    """What one run measured, printed at the end."""

    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, figure: str, value: str) -> None:
        """Record one figure and print it at once (a long run shows progress)."""
        self.rows.append((figure, value))
        print(f"  {figure}: {value}", flush=True)


async def connect_all(fleet: Fleet, figures: Figures, what: str, *, timeout_s: float = 600) -> float:
    """Start the fleet (unless started) and wait until every device is connected; record the seconds it took."""
    started = time.monotonic()
    listen = fleet_setup.ListenCounters()
    if not fleet.started:
        await fleet.start()
    if not await fleet.wait_connected(len(fleet.devices), timeout_s):
        raise SystemExit(f"{what}: only {fleet.connected_count} of {len(fleet.devices)} devices connected "
                         f"within {timeout_s:.0f} s (refused: {fleet.counters.refused})")
    took = time.monotonic() - started
    figures.add(what, f"{took:.1f} s ({listen.since()})")
    return took


async def measure_memory(args: argparse.Namespace, options: FleetOptions, figures: Figures) -> int:
    """On a broker of its own with a single account (so that no freed account memory is reused):
    RSS per connection and per offline persistent session, and a storm of devices resuming their sessions."""
    mq = MosquittoServer(open_files=options_files(args))
    logins = [DeviceLogin(f"mem-{n}", TEST_MQTT_USER, TEST_MQTT_PASSWORD) for n in range(args.devices)]
    at = dataclasses.replace(options, port=mq.port)
    try:
        mq.start()
        empty_kb = memory_kb(mq.pid)
        fleet = Fleet(logins, at)
        await connect_all(fleet, figures, "memory broker: every device connected (clean sessions)")
        connected_kb = memory_kb(mq.pid)
        await fleet.close()
        figures.add("broker RSS: empty / every device connected / per connection",
                    f"{empty_kb / 1024:.0f} MB / {connected_kb / 1024:.0f} MB / {_per(connected_kb - empty_kb, args)}")
        persistent = dataclasses.replace(at, clean_session=False)
        fleet = Fleet(logins, persistent)
        await connect_all(fleet, figures, "memory broker: every device connected (persistent sessions)")
        await fleet.close()
        await asyncio.to_thread(mq.stop, signal.SIGTERM)
        size = mq.persistence_file.stat().st_size
        started = time.monotonic()
        await asyncio.to_thread(mq.start)
        loaded_kb = memory_kb(mq.pid)
        figures.add("persistence file with every session / broker start loading it",
                    f"{size / 1e6:.1f} MB / {time.monotonic() - started:.1f} s")
        figures.add("broker RSS: every session offline (just loaded) / per offline session",
                    f"{loaded_kb / 1024:.0f} MB / {_per(loaded_kb - empty_kb, args)}")
        fleet = Fleet(logins, persistent)
        await connect_all(fleet, figures, "every device resuming its session at once → all connected")
        figures.add("broker RSS with every session resumed / per connected persistent session",
                    f"{memory_kb(mq.pid) / 1024:.0f} MB / {_per(memory_kb(mq.pid) - empty_kb, args)}")
        await fleet.close()
    finally:
        await asyncio.to_thread(mq.cleanup)
    return empty_kb


def _per(kb: int, args: argparse.Namespace) -> str:
    return f"{kb * 1024 / args.devices:,.0f} bytes"


def options_files(args: argparse.Namespace) -> int:
    """Open files a broker (or this process) needs for the fleet: one per device and some to spare."""
    return int(args.devices + SPARE_FILES)


async def run(args: argparse.Namespace, stack: fleet_setup.Stack, figures: Figures) -> None:
    """Memory on its own broker, then the main stack: connect, steady readings, restart and storm."""
    options = FleetOptions(
        host=stack.mq.host, port=stack.mq.port, keepalive_s=60, window=10, connect_timeout_s=60,
        reconnect_initial_s=args.reconnect_initial, reconnect_max_s=30.0, reconnect_jitter=1.0,
        source_hosts=stack.sources,
    )
    empty_kb = await measure_memory(args, options, figures)
    figures.add("broker RSS with one account per device, at its start / per account",
                f"{stack.loaded_kb / 1024:.0f} MB / {_per(stack.loaded_kb - empty_kb, args)}")
    fleet = Fleet(stack.logins, options)
    cpu = fleet_setup.CpuWatch(stack.mq.pid)
    await connect_all(fleet, figures, f"{args.devices} devices with their own accounts, at once → all connected")
    figures.add("broker CPU for those CONNECTs", cpu.since())
    schedule = fleet_setup.Schedule(args.devices, period_s=args.period, tag=stack.tag)
    publishing = asyncio.get_running_loop().create_task(schedule.publish(fleet))
    await asyncio.sleep(args.steady)
    restart_at = time.time()
    cpu = await asyncio.to_thread(stack.restart_broker, figures)
    await connect_all(fleet, figures, "broker back → every device connected again")
    back_at = time.time()
    figures.add("broker CPU for the storm (from its start until all are connected)", cpu.since())
    await asyncio.sleep(args.settle)  # readings after the storm, to see lateness settle
    publishing.cancel()
    await fleet.wait_outstanding(0, 60)
    figures.add("reconnects / PUBLISHes sent again", f"{fleet.counters.reconnects} / {fleet.counters.resent}")
    await fleet.close()
    await asyncio.to_thread(stack.report_lateness, schedule, figures, restart_at=restart_at, back_at=back_at,
                            settle_s=args.settle)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=60.0, help="seconds between two readings of a device")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of readings before the restart")
    parser.add_argument("--workers", type=int, default=2, help="bridge workers (the capacity plan's 2)")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of readings after the storm")
    parser.add_argument("--reconnect-initial", type=float, default=1.0,
                        help="a device's first reconnect delay cap (full jitter), doubling up to 30 s")
    parser.add_argument("--sources", type=int, default=None, help="local source addresses (default: 1 per 20,000)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run once, print the figures."""
    args = parse_args(argv)
    sources = args.sources or max(1, math.ceil(args.devices / SOURCES_EVERY))
    files = options_files(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < files:
        raise SystemExit(f"{args.devices} devices need {files} open files; `ulimit -Hn` is {hard} (raise it, as root)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, files), hard))
    figures = Figures()
    print(f"fleet benchmark: {args.devices} devices, a reading every {args.period:g} s each "
          f"({args.devices / args.period:.0f}/s), {args.workers} workers, {sources} source addresses", flush=True)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        stack = fleet_setup.Stack(Path(tmp), devices=args.devices, workers=args.workers, sources=sources,
                                  open_files=files)
        try:
            stack.start(figures)
            asyncio.run(run(args, stack, figures))
        finally:
            stack.cleanup()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.add("this process (the devices): CPU / peak RSS",
                f"{usage.ru_utime + usage.ru_stime:.0f} s / {usage.ru_maxrss / 1024:.0f} MB")
    print("\n| figure | value |\n| --- | --- |")
    for figure, value in figures.rows:
        print(f"| {figure} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
