"""Drain benchmark: how fast do N workers store a QoS 1 backlog?

Starts a throwaway PostgreSQL and Mosquitto (like the integration tests),
registers the workers' persistent sessions, publishes a backlog while they are
stopped, then starts them and times until every reading is committed.

    python benchmarks/drain.py --messages 100000 --workers 1 2

Prints one line per run: workers, messages, seconds, readings/s.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import psycopg
import traffic
from mqtt_client import MqttTestClient
from processes import wait_until
from servers import MosquittoServer, PostgresServer, apply_schema
from workers import WorkerProcess


def run(workers: int, messages: int, pg: PostgresServer, mq: MosquittoServer, tmp: Path) -> float:
    """Seconds for `workers` workers to drain a backlog of `messages` readings."""
    admin = pg.url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, rejected_messages")
    group = f"bench{workers}x{messages}"
    env = {
        "DATABASE_URL": pg.url(user="bridge_test", password="bridge_test"),
        "MQTT_URL": mq.url,
        "BRIDGE_SHARE_GROUP": group,
        "BRIDGE_LOG_LEVEL": "WARNING",
    }
    procs = [
        WorkerProcess(f"{group}-{n}", {**env, "BRIDGE_CLIENT_ID": f"{group}-{n}",
                                        "BRIDGE_HEALTH_FILE": str(tmp / f"{group}-{n}.health")}, log_dir=tmp)
        for n in range(workers)
    ]
    for proc in procs:  # register the sessions and their subscription, then stop
        proc.start()
    with MqttTestClient.from_url(mq.url) as status:
        for proc in procs:
            status.subscribe(f"bridge/status/{proc.client_id}")
        wait_until(lambda: len({m.topic for m in status.received() if m.payload == b"online"}) == workers, 30)
    for proc in procs:
        proc.signal(signal.SIGTERM)
        proc.wait(30)
    sent = traffic.build(messages)
    with MqttTestClient.from_url(mq.url) as publisher:
        publisher.publish_many(sent.messages, timeout=600)
    started = time.monotonic()
    for proc in procs:
        proc.start()
    wait_until(lambda: traffic.counts(admin)[0] >= messages, 600, interval=0.05)
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.terminate(30)
    return elapsed


def main() -> None:
    """Parse arguments, start the servers, run each worker count once."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    pg, mq = PostgresServer(), MosquittoServer()
    tmp = Path(__import__("tempfile").mkdtemp(prefix="bench-"))
    try:
        pg.start()
        mq.start()
        apply_schema(pg.url())
        print(f"{'workers':>7} {'messages':>9} {'seconds':>8} {'readings/s':>11}")
        for workers in args.workers:
            seconds = run(workers, args.messages, pg, mq, tmp)
            print(f"{workers:>7} {args.messages:>9} {seconds:>8.2f} {args.messages / seconds:>11,.0f}")
    finally:
        mq.cleanup()
        pg.cleanup()


if __name__ == "__main__":
    main()
