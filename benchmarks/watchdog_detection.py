"""Watchdog detection times: failure -> DOWN alert received by a local Discord stand-in.

Starts a throwaway PostgreSQL and Mosquitto (like the integration tests), one
bridge worker and the watchdog, then for each component injects the failure at
a random point of the check cycle, times until the stub receives the DOWN
alert, repairs it and waits for RECOVERED.

    python benchmarks/watchdog_detection.py --interval 10 2 --repeat 3

Prints one line per sample and a summary table (min / median / max seconds).
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devstack.discord_stub import DiscordStub
from devstack.mosquitto import MosquittoServer
from devstack.mqtt_client import MqttTestClient
from devstack.postgres import BRIDGE_TEST_ROLE, PostgresServer, apply_schema
from devstack.processes import wait_until
from devstack.urls import login_url
from devstack.watchdog_process import WatchdogProcess
from devstack.workers import WorkerProcess, start_online, worker_env
from iotcommon.contract import heartbeat_topic

WORKER = "bench-worker-1"


def bridge_url(pg: PostgresServer) -> str:
    """The test server's URL for the role with only the bridge's privileges (the watchdog's too)."""
    return login_url(pg.url(), BRIDGE_TEST_ROLE)


class Stack:
    """The servers, one worker and the stub, shared by every sample."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg, self.mq = PostgresServer(), MosquittoServer()
        self.discord = DiscordStub()
        self.worker: WorkerProcess | None = None

    def start(self) -> None:
        self.pg.start()
        self.mq.start()
        apply_schema(self.pg.url())
        self.discord.__enter__()
        self.start_worker()

    def start_worker(self) -> None:
        # BRIDGE_HEARTBEAT_S stays at its 5 s default
        env = worker_env(WORKER, database_url=bridge_url(self.pg), mqtt_url=self.mq.url, share_group="bench",
                         health_dir=self.tmp, bridge_log_level="WARNING")
        self.worker = WorkerProcess(WORKER, env, log_dir=self.tmp)
        with MqttTestClient.from_url(self.mq.url) as status:
            status.subscribe(heartbeat_topic(WORKER), qos=0)
            start_online([self.worker], self.mq.url)
            # Its first heartbeat of its own: until then the watchdog sees its predecessor's.
            wait_until(lambda: any(not m.retain for m in status.received(heartbeat_topic(WORKER))), 30,
                       message="a heartbeat from the new worker")

    def stop(self) -> None:
        if self.worker and self.worker.is_running():
            self.worker.terminate()
        self.discord.__exit__(None, None, None)
        self.mq.cleanup()
        self.pg.cleanup()


def measure(stack: Stack, watchdog: WatchdogProcess, name: str, component: str, *,
            break_it: Callable[[], None], repair: Callable[[], None], interval_s: float) -> float:
    """Seconds from break_it() to the stub receiving DOWN for `component`; repairs and waits for RECOVERED."""
    watchdog.wait_until_all_ok(90)
    time.sleep(random.uniform(0, interval_s))  # noqa: S311 - a random phase of the check cycle
    before = len(stack.discord.accepted())
    started = time.monotonic()
    break_it()

    def down_post() -> float | None:
        for post in stack.discord.accepted()[before:]:
            if "DOWN" in post.content and f"`{component}`" in post.content:
                return post.at
        return None

    at = wait_until(down_post, 120, interval=0.05, message=f"DOWN for {component}")
    content = next(p.content for p in stack.discord.accepted()[before:] if f"`{component}`" in p.content)
    repair()
    wait_until(lambda: any("RECOVERED" in p.content and f"`{component}`" in p.content
                           for p in stack.discord.accepted()[before:]), 120, message=f"RECOVERED for {component}")
    seconds = at - started
    print(f"  {name:<22} {seconds:5.1f} s  {content}", flush=True)
    return seconds


def run(stack: Stack, interval_s: float, repeat: int) -> dict[str, list[float]]:
    """Samples per failure kind with WATCHDOG_INTERVAL_S=interval_s and every other setting at its default."""
    env = {
        "MQTT_URL": stack.mq.url, "DATABASE_URL": bridge_url(stack.pg),
        "DISCORD_WEBHOOK_URL": stack.discord.url, "WATCHDOG_CLIENT_ID": f"wd-bench-{interval_s:g}",
        "WATCHDOG_HEALTH_FILE": str(stack.tmp / f"wd-{interval_s:g}.health"), "WATCHDOG_INTERVAL_S": str(interval_s),
        "WATCHDOG_BRIDGE_WORKERS": WORKER,
    }
    watchdog = WatchdogProcess(env, folder=stack.tmp)
    watchdog.start()

    def kill_worker() -> None:
        assert stack.worker is not None
        stack.worker.kill()

    def hang_worker() -> None:
        assert stack.worker is not None
        stack.worker.signal(signal.SIGSTOP)

    def unhang_worker() -> None:
        assert stack.worker is not None
        stack.worker.signal(signal.SIGCONT)

    kinds: list[tuple[str, str, Callable[[], None], Callable[[], None]]] = [
        ("broker (SIGTERM)", "broker", lambda: stack.mq.stop(signal.SIGTERM), stack.mq.start),
        ("database (fast stop)", "database", lambda: stack.pg.stop("fast"), stack.pg.start),
        ("worker (SIGKILL)", WORKER, kill_worker, stack.start_worker),
        ("worker (SIGSTOP, hung)", WORKER, hang_worker, unhang_worker),
    ]
    samples: dict[str, list[float]] = {name: [] for name, *_ in kinds}
    print(f"WATCHDOG_INTERVAL_S={interval_s:g}", flush=True)
    try:
        for _ in range(repeat):
            for name, component, break_it, repair in kinds:
                samples[name].append(
                    measure(stack, watchdog, name, component, break_it=break_it, repair=repair, interval_s=interval_s)
                )
    finally:
        watchdog.terminate()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, nargs="+", default=[10.0, 2.0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    stack = Stack(Path(tempfile.mkdtemp(prefix="watchdog-bench-")))
    stack.start()
    results: dict[float, dict[str, list[float]]] = {}
    try:
        for interval_s in args.interval:
            results[interval_s] = run(stack, interval_s, args.repeat)
    finally:
        stack.stop()
    print("\n| WATCHDOG_INTERVAL_S | failure | samples | min s | median s | max s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for interval_s, samples in results.items():
        for name, values in samples.items():
            print(f"| {interval_s:g} | {name} | {len(values)} | {min(values):.1f} | "
                  f"{statistics.median(values):.1f} | {max(values):.1f} |")


if __name__ == "__main__":
    main()
