"""The fleet benchmark's stack, schedule and measurements (benchmarks/fleet.py drives them)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import psycopg

from devstack.mosquitto import MosquittoServer, write_test_accounts
from devstack.postgres import BRIDGE_TEST_ROLE, PostgresServer, apply_schema
from devstack.processes import memory_kb, wait_until_steady
from devstack.urls import login_url
from devstack.workers import WorkerProcess, start_online, worker_env
from iotcommon.contract import reading_topic
from mosquitto import dynsec
from simulator.fleet import DeviceLogin, Fleet, Outgoing

SHARE_GROUP = "fleet"
YIELD_EVERY = 200  # readings published between two turns of the event loop when catching up


class Recorder(Protocol):
    """Where figures go (benchmarks/fleet.py's Figures)."""

    def add(self, figure: str, value: str) -> None: ...


class CpuWatch:
    """A process's CPU time (user + system) since the watch began."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._start = self._seconds()

    def _seconds(self) -> float:
        fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def since(self) -> str:
        """The CPU seconds used since the watch began, as text."""
        return f"{self._seconds() - self._start:.1f} s"


class ListenCounters:
    """The kernel's TCP listen-queue counters (system-wide, so other work on the machine adds to them)."""

    NAMES = ("ListenOverflows", "ListenDrops", "SyncookiesSent")

    def __init__(self) -> None:
        self._start = self._read()

    @classmethod
    def _read(cls) -> dict[str, int]:
        text = Path("/proc/net/netstat").read_text()
        lines = [line.split() for line in text.splitlines() if line.startswith("TcpExt:")]
        values = dict(zip(lines[0][1:], (int(v) for v in lines[1][1:]), strict=True))
        return {name: values.get(name, 0) for name in cls.NAMES}

    def since(self) -> str:
        """Each counter's rise since the watch began, as text."""
        now = self._read()
        return ", ".join(f"{name} {now[name] - self._start[name]}" for name in self.NAMES)


def device_accounts(passwords: dict[str, str]) -> Callable[[Path], None]:
    """The test accounts plus one account per device (device-k may publish sensors/k/readings only)."""

    def write(path: Path) -> None:
        write_test_accounts(path)
        document = json.loads(path.read_text(encoding="utf-8"))
        # The test accounts have a device-7 already: ours replaces it (the plugin would take the first).
        document["clients"] = [c for c in document["clients"] if c["username"] not in passwords]
        document["roles"] = [r for r in document["roles"] if r["rolename"] not in passwords]
        for user, password in passwords.items():
            document["clients"].append(dynsec.client(user, password, user, iterations=dynsec.ITERATIONS,
                                                     salt=os.urandom(dynsec.SALT_BYTES)))
        ids = [int(user.removeprefix("device-")) for user in passwords]
        document["roles"] += [role for role in dynsec.roles(SHARE_GROUP, ids) if role["rolename"] in passwords]
        path.write_text(json.dumps(document), encoding="utf-8")

    return write


@dataclass
class Reading:
    """One scheduled reading: its key in the database and what happened to it."""

    sensor_id: int
    at: datetime
    due_wall: float
    message: Outgoing


class Schedule:
    """Reading r is due at start + r x period / devices, from device r mod devices (sensor r mod devices + 1)."""

    def __init__(self, devices: int, *, period_s: float, tag: str) -> None:
        self._devices = devices
        self._interval_s = period_s / devices
        self._variable = f"temperature#{tag}"
        self.readings: list[Reading] = []

    async def publish(self, fleet: Fleet) -> None:
        """Hand each reading to its device when due, until cancelled."""
        start, wall0 = time.monotonic(), time.time()
        r = 0
        while True:
            delay = start + r * self._interval_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif r % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            device = r % self._devices
            micros = round((wall0 + r * self._interval_s) * 1_000_000)
            at = datetime.fromtimestamp(micros // 1_000_000, UTC).replace(microsecond=micros % 1_000_000)
            payload = json.dumps({"sensor_id": device + 1, "timestamp": at.isoformat(), "variable": self._variable,
                                  "value": 21.5, "unit": "°C"}).encode()
            message = fleet.publish(device, reading_topic(device + 1), payload, r)
            self.readings.append(Reading(device + 1, at, micros / 1e6, message))
            r += 1

    @property
    def variable(self) -> str:
        """The variable every reading of this run carries."""
        return self._variable


class Stack:
    """PostgreSQL, the broker with one account per device, and the bridge workers."""

    def __init__(self, tmp: Path, *, devices: int, workers: int, sources: int, open_files: int) -> None:
        self.tmp = tmp
        self.tag = secrets.token_hex(4)
        passwords = {f"device-{k}": secrets.token_urlsafe(24) for k in range(1, devices + 1)}
        self.logins = [DeviceLogin(user, user, password) for user, password in passwords.items()]
        self.sources = [f"127.0.1.{n}" for n in range(1, sources + 1)]
        self.pg = PostgresServer()
        self.mq = MosquittoServer(accounts=device_accounts(passwords), open_files=open_files)
        self._worker_count = workers
        self.workers: list[WorkerProcess] = []

    def start(self, figures: Recorder) -> None:
        """Start the servers and the workers."""
        self.pg.start()
        apply_schema(self.pg.url())
        started = time.monotonic()
        self.mq.start()
        self.loaded_kb = memory_kb(self.mq.pid)  # every account loaded, no client yet
        figures.add("broker start with every device's account", f"{time.monotonic() - started:.1f} s")
        for n in range(1, self._worker_count + 1):
            env = worker_env(f"fleet-bridge-{n}", database_url=login_url(self.pg.url(), BRIDGE_TEST_ROLE),
                             mqtt_url=self.mq.url, share_group=SHARE_GROUP, health_dir=self.tmp,
                             bridge_log_level="WARNING")
            self.workers.append(WorkerProcess(f"fleet-bridge-{n}", env, log_dir=self.tmp))
        start_online(self.workers, self.mq.url, timeout_s=60)

    def restart_broker(self, figures: Recorder) -> CpuWatch:
        """SIGTERM, start again; return a CPU watch of the new broker process from its start."""
        stopped = time.monotonic()
        self.mq.stop(signal.SIGTERM)
        down_s = time.monotonic() - stopped
        self.mq.start()
        watch = CpuWatch(self.mq.pid)
        figures.add("broker restart: SIGTERM → exited / → accepting again",
                    f"{down_s:.1f} s / {time.monotonic() - stopped:.1f} s")
        return watch

    def report_lateness(
        self, schedule: Schedule, figures: Recorder, *, restart_at: float, back_at: float, settle_s: float,
    ) -> None:
        """Publish→commit of the readings due before the restart and during the storm; what was lost.

        Publish is a reading's last PUBLISH, the one the broker took (one in flight when the
        broker went down goes again after the reconnect): the broker's and the bridge's lateness.
        Due→commit adds what the device waited out.
        """
        stored = self._stored(schedule.variable)
        steady = [r for r in schedule.readings if r.due_wall < restart_at]
        storm = [r for r in schedule.readings if restart_at <= r.due_wall < back_at + settle_s]
        for name, window in (("steady", steady), (f"storm (restart → all back + {settle_s:g} s)", storm)):
            late = [(stored[(r.sensor_id, r.at)] - r.message.sent_at) for r in window if (r.sensor_id, r.at) in stored]
            lost = sum(1 for r in window if r.message.acked and (r.sensor_id, r.at) not in stored)
            figures.add(f"{name}: readings / lost / publish→commit (its last PUBLISH)",
                        f"{len(window)} / {lost} / {_percentiles(late)}")
        due = [(stored[(r.sensor_id, r.at)] - r.due_wall) for r in storm if (r.sensor_id, r.at) in stored]
        figures.add("storm: due→commit (the device's view, waiting out the restart included)", _percentiles(due))

    def _stored(self, variable: str) -> dict[tuple[int, datetime], float]:
        def count() -> int:
            with psycopg.connect(self.pg.url()) as conn:
                row = conn.execute("SELECT count(*) FROM readings WHERE variable = %s", (variable,)).fetchone()
            return int(row[0]) if row else 0

        wait_until_steady(count, 5, 120, message="the last readings stored")
        with psycopg.connect(self.pg.url()) as conn:
            rows: list[Any] = conn.execute(
                'SELECT sensor_id, "timestamp", ingested_at FROM readings WHERE variable = %s', (variable,)
            ).fetchall()
        return {(int(sensor), at): ingested.timestamp() for sensor, at, ingested in rows}

    def cleanup(self) -> None:
        """Stop everything started."""
        for worker in self.workers:
            if worker.is_running():
                worker.terminate()
        self.mq.cleanup()
        self.pg.cleanup()


def _percentiles(values: list[float]) -> str:
    """p50 / p99 / max in ms, or "none"."""
    if not values:
        return "none"
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return f"p50 {at(0.5) * 1000:.0f} ms, p99 {at(0.99) * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
