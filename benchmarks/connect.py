"""What a CONNECT costs the broker: accounts hashed at 210,000 PBKDF2 iterations (before) and as now, in one run.

    python benchmarks/connect.py                          # 1,000 devices, 150 wrong passwords: 6-7 minutes
    python benchmarks/connect.py --devices 200 --rounds 2 # shorter, alternating twice

Mosquitto checks a password on its only event loop, so the hash's cost is
the broker's. For each hashing, alternating within each round (before, now):
- cost: the broker's CPU time per CONNECT (from /proc) naming an unknown
  user, a device with a wrong password and one with its right password;
- storm: a fresh broker with --devices device accounts; every device sends its
  CONNECT at once, each on its own TCP connection with its own client id;
  the figure is the time until the last CONNACK (target: all accepted in 5 s);
- flood: a fresh broker, three bridge workers and the simulator at the seed
  load (83 readings/s, `simulator --verify`); once a third of its readings are
  stored, --wrong CONNECTs with a wrong password for device-7 arrive at once;
  the figure is the simulator's publish->commit p99 (target: under 250 ms).
The device accounts of one run share one password and hash: the broker's work
per CONNECT depends on the iteration count only, and 1,000 hashes at 210,000
iterations would take this script minutes to make. One PostgreSQL serves all.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import harness  # benchmarks/ is on sys.path: this script's own folder

from devstack.connects import ACCEPTED, NOT_AUTHORIZED, Login, connect_all
from devstack.mosquitto import (
    MQTT_TEST_ACCOUNTS,
    TEST_MQTT_PASSWORD,
    TEST_MQTT_USER,
    MosquittoServer,
    write_test_accounts,
)
from devstack.postgres import BRIDGE_TEST_ROLE, PostgresServer, apply_schema
from devstack.processes import REPO_ROOT, wait_until
from devstack.simulator_process import simulator_env
from devstack.urls import login_url
from devstack.workers import start_online
from mosquitto import dynsec
from simulator.report import percentile

BEFORE = 210_000  # the iteration count of mosquitto/dynsec.py until this benchmark
SEED_RATE = 83  # readings/s: 5000 per minute
FIRST_DEVICE = 100_001  # clear of the test accounts' device-7
FLOODED = ("device-7", MQTT_TEST_ACCOUNTS["MQTT_DEVICES"].split(":", 1)[1])
STORM_TARGET_S, P99_TARGET_MS = 5.0, 250.0
COST_LOGINS = {BEFORE: 30}  # CONNECTs of each hashed kind in the cost phase; 1,000 for a cheap hash


@dataclass
class Figures:
    """One hashing's results in one round."""

    iterations: int
    cost_ms: dict[str, float] = field(default_factory=dict)  # broker CPU per CONNECT, by kind
    storm_accepted: int = 0
    storm_failed: dict[str, int] = field(default_factory=dict)  # logins with no CONNACK, by what happened
    storm_p50_s: float = 0.0
    storm_last_s: float = 0.0
    flood_refused: int = 0
    flood_last_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0


def raise_fd_limit(needed: int) -> None:
    """A socket per device here, and as many in the broker (it inherits the limit): raise the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"connect.py: {needed} file descriptors needed, the hard limit is {hard}: "
                 f"raise it (ulimit -Hn {needed}, as root) or pass a smaller --devices")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def accounts_at(iterations: int, devices: int, device_password: str) -> Callable[[Path], None]:
    """The test accounts re-hashed at `iterations`, plus `devices` device accounts sharing one hash."""

    def write(path: Path) -> None:
        write_test_accounts(path)
        passwords = {**dynsec.accounts(MQTT_TEST_ACCOUNTS), TEST_MQTT_USER: TEST_MQTT_PASSWORD}
        document = dynsec.update(json.loads(path.read_text()), passwords, iterations=iterations)
        shared = dynsec.client("", device_password, "", iterations=iterations, salt=os.urandom(dynsec.SALT_BYTES))
        for n in range(FIRST_DEVICE, FIRST_DEVICE + devices):
            document["clients"].append({**shared, "username": f"device-{n}", "roles": [{"rolename": f"device-{n}"}]})
            document["roles"].append(dynsec.device_role(n))
        path.write_text(json.dumps(document))

    return write


def broker_cpu_s(pid: int) -> float:
    """User + system CPU time the broker process has used (proc(5), fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cost(figures: Figures) -> None:
    """The broker's CPU per CONNECT for each kind of login, in batches of 100 at once."""
    kinds: dict[str, Callable[[int], Login]] = {
        "unknown user": lambda n: Login(f"cost-u-{n}", f"nobody-{n}", "wrong"),
        "wrong password": lambda n: Login(f"cost-w-{n}", FLOODED[0], f"wrong-{n}"),
        "right password": lambda n: Login(f"cost-r-{n}", *FLOODED),
    }
    broker = MosquittoServer(accounts=accounts_at(figures.iterations, 0, ""))
    try:
        broker.start()
        for kind, login in kinds.items():
            count = 1000 if kind == "unknown user" else COST_LOGINS.get(figures.iterations, 1000)  # no hash
            before = broker_cpu_s(broker.pid)
            for first in range(0, count, 100):
                connect_all(broker.host, broker.port, [login(n) for n in range(first, min(first + 100, count))],
                            timeout_s=600)
            figures.cost_ms[kind] = (broker_cpu_s(broker.pid) - before) * 1000 / count
    finally:
        broker.cleanup()


def storm(figures: Figures, devices: int, timeout_s: float) -> None:
    """Every device connects at once to a fresh broker; when was the last accepted?"""
    password = secrets.token_urlsafe(24)
    broker = MosquittoServer(accounts=accounts_at(figures.iterations, devices, password))
    try:
        broker.start()
        logins = [Login(f"storm-{n}", f"device-{n}", password) for n in range(FIRST_DEVICE, FIRST_DEVICE + devices)]
        result = connect_all(broker.host, broker.port, logins, timeout_s=timeout_s)
    finally:
        broker.cleanup()
    figures.storm_accepted = len(result.with_code(ACCEPTED))
    figures.storm_failed = dict(Counter(answer.error for answer in result.unanswered))
    figures.storm_p50_s = percentile([answer.at_s for answer in result.with_code(ACCEPTED)], 50) or 0.0
    figures.storm_last_s = result.last_s(ACCEPTED)


def flood(figures: Figures, postgres: PostgresServer, *, wrong: int, seconds: int, tmp: Path) -> None:
    """The seed load through three workers; `wrong` bad CONNECTs at once when a third of it is stored."""
    admin = postgres.url()
    harness.truncate(admin)
    broker = MosquittoServer(accounts=accounts_at(figures.iterations, 0, ""))
    workers: list[harness.GroupMember] = []
    try:
        broker.start()
        workers = [harness.bridge_worker(f"connect-{n}", "connect", mqtt_url=broker.url,
                                         database_url=login_url(admin, BRIDGE_TEST_ROLE), tmp=tmp) for n in range(3)]
        start_online(workers, broker.url, timeout_s=120)
        messages, summary = SEED_RATE * seconds, tmp / "flood.json"
        command = [sys.executable, "-m", "simulator", "--progress", "none", "--messages", str(messages),
                   "--duration", str(seconds), "--verify", "--verify-timeout", "600", "--json", str(summary)]
        with subprocess.Popen(command, cwd=REPO_ROOT, env=simulator_env(broker.url, admin),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as simulator:
            wait_until(lambda: harness.stored(admin) >= messages // 3, 120, interval=0.05,
                       message="a third of the readings stored")
            logins = [Login(f"wrong-{n}", FLOODED[0], f"wrong-{n}") for n in range(wrong)]
            refused = connect_all(broker.host, broker.port, logins, timeout_s=600)
            _, stderr = simulator.communicate(timeout=900)
        if simulator.returncode != 0:
            raise RuntimeError(f"simulator exited {simulator.returncode}: {stderr[-2000:]}")
    finally:
        harness.stop_all(workers)
        broker.cleanup()
    latency = json.loads(summary.read_text())["verify"]["commit_latency"]
    figures.flood_refused = len(refused.with_code(NOT_AUTHORIZED))
    figures.flood_last_s = refused.last_s(NOT_AUTHORIZED)
    figures.p50_ms, figures.p99_ms, figures.max_ms = latency["p50_ms"], latency["p99_ms"], latency["max_ms"]


def label(iterations: int) -> str:
    """How a hashing is named in the output."""
    return f"{'before' if iterations == BEFORE else 'now'} (PBKDF2, {iterations:,} iter.)"


def report(results: list[Figures], args: argparse.Namespace) -> bool:
    """Print the table and the targets' verdicts; True if every `now` run met both targets."""
    print(f"\n{'hashing':31} | broker CPU per CONNECT: unknown user / wrong password / right password")
    for f in results:
        print(f"{label(f.iterations):31} | " + " / ".join(f"{ms:8.3f} ms" for ms in f.cost_ms.values()))
    print(f"\n{'hashing':31} | storm: {args.devices} devices, accepted after p50 / last | "
          f"flood: {args.wrong} wrong, refused after | publish->commit p50 / p99 / max")
    for f in results:
        print(f"{label(f.iterations):31} | {f.storm_accepted:5} accepted, {f.storm_p50_s:7.3f} / "
              f"{f.storm_last_s:7.3f} s{'':8} | {f.flood_refused:4} refused, {f.flood_last_s:7.2f} s{'':5} | "
              f"{f.p50_ms:7.1f} / {f.p99_ms:8.1f} / {f.max_ms:8.1f} ms")
    for f in results:
        if f.storm_failed:
            print(f"{label(f.iterations)}: storm logins with no CONNACK: "
                  + ", ".join(f"{count} {error}" for error, count in f.storm_failed.items()))
    now = [f for f in results if f.iterations != BEFORE]
    before = [f for f in results if f.iterations == BEFORE]
    if now and before:
        storm_x = min(f.storm_last_s for f in before) / max(*(f.storm_last_s for f in now), 1e-9)
        p99_x = min(f.p99_ms for f in before) / max(*(f.p99_ms for f in now), 1e-9)
        print(f"before / now (best before, worst now): storm {storm_x:,.0f}x, flood p99 {p99_x:,.0f}x")
    storm_ok = all(f.storm_accepted == args.devices and f.storm_last_s < STORM_TARGET_S for f in now)
    p99_ok = all(f.p99_ms < P99_TARGET_MS for f in now)
    print(f"targets (now): all {args.devices} accepted within {STORM_TARGET_S:.0f} s: {'yes' if storm_ok else 'NO'}; "
          f"p99 under {P99_TARGET_MS:.0f} ms with the flood: {'yes' if p99_ok else 'NO'}")
    return storm_ok and p99_ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000, help="device CONNECTs in the storm (1000)")
    parser.add_argument("--wrong", type=int, default=150, help="wrong-password CONNECTs in the flood (150)")
    parser.add_argument("--seconds", type=int, default=30, help="length of the seed load in the flood (30)")
    parser.add_argument("--rounds", type=int, default=1, help="before/now pairs, alternated (1)")
    parser.add_argument("--iterations", type=int, default=dynsec.ITERATIONS, help="now: dynsec's count")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # unwind: the servers are cleaned up
    raise_fd_limit(2 * args.devices + 256)
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    postgres, tmp = PostgresServer(), Path(tempfile.mkdtemp(prefix="connect-bench-"))
    results: list[Figures] = []
    started = time.monotonic()
    try:
        postgres.start()
        apply_schema(postgres.url())
        for round_ in range(args.rounds):
            pair = [Figures(BEFORE), Figures(args.iterations)]
            for figures in pair:
                print(f"round {round_ + 1}: cost, {label(figures.iterations)} ...", flush=True)
                cost(figures)
            for figures in pair:
                print(f"round {round_ + 1}: storm, {label(figures.iterations)} ...", flush=True)
                storm(figures, args.devices, timeout_s=max(600.0, args.devices * 1.0))
            for figures in pair:
                print(f"round {round_ + 1}: flood, {label(figures.iterations)} ...", flush=True)
                flood(figures, postgres, wrong=args.wrong, seconds=args.seconds, tmp=tmp)
            results += pair
    finally:
        postgres.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    ok = report(results, args)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"took {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"results": [asdict(f) for f in results], "targets_met": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
