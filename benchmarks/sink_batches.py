"""The sink alone: how many batches per second PostgresSink.write commits, without MQTT.

    python benchmarks/sink_batches.py                          # 1,000 batches of 10, then 400 of 100
    python benchmarks/sink_batches.py --batches 200 --size 500

What each batch transaction costs on top of its readings (the marker row of
bridge/store/indoubt.py, say) shows with small batches, where that per-batch part
dominates. To compare two checkouts, run it in each in turn, A B A B: the
machine's speed drifts more than the difference. It also times, alternately
in one session, a one-row transaction led by the statement the sink runs
first now (the marker swap) and by the one it ran before (txid_current()).
Starts its own throwaway PostgreSQL (devstack/servers.py); writes unique
readings as the bridge role.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from datetime import UTC, datetime

import psycopg

from bridge.model import Delivery, Limits
from bridge.store import Database, PostgresSink
from bridge.store.indoubt import CREATE_MARKER, swap_marker
from bridge.validation import parse_message
from devstack import traffic
from devstack.postgres import BRIDGE_TEST_ROLE, PostgresServer, apply_schema
from devstack.urls import login_url


def batches_of(count: int, size: int, *, first: int) -> list[list[Delivery]]:
    """`count` batches of `size` validated single-reading messages, unique from reading `first` on."""
    now = datetime.now(UTC)
    batches = []
    for b in range(count):
        messages = [traffic.reading(first + b * size + i)[:2] for i in range(size)]
        batches.append([
            Delivery(mid, 1, 1, topic, payload, now, parse_message(topic, payload, now=now, limits=Limits()))
            for mid, (topic, payload) in enumerate(messages, start=1)
        ])
    return batches


def batches_per_s(url: str, count: int, size: int, *, first: int) -> float:
    """Write the batches one after the other (the first, a warm-up, not counted); batches per second."""
    batches = batches_of(count + 1, size, first=first)
    sink = PostgresSink(Database(url, application_name="sink-bench", statement_timeout_ms=10_000),
                        client_id="sink-bench")
    try:
        sink.check()
        sink.write(batches[0])
        started = time.perf_counter()
        for batch in batches[1:]:
            sink.write(batch)
        return count / (time.perf_counter() - started)
    finally:
        sink.close()


_ONE_ROW = (
    'INSERT INTO readings (sensor_id, "timestamp", variable, value, unit) '
    "VALUES (1, clock_timestamp(), 't', 1, 'C') ON CONFLICT DO NOTHING"
)


def leading_statement_us(url: str, *, rounds: int = 6, transactions: int = 2000) -> dict[str, float]:
    """Median µs per one-row transaction led by txid_current() and by the marker swap, alternating rounds."""
    timings: dict[str, list[float]] = {"txid_current()": [], "marker swap": []}
    with psycopg.connect(url) as conn:
        conn.execute(CREATE_MARKER, ("sink-bench",))
        conn.commit()
        for _ in range(rounds):
            for name, lead in (("txid_current()", lambda: conn.execute("SELECT txid_current()").fetchone()),
                               ("marker swap", lambda: swap_marker(conn, client_id="sink-bench",
                                                                    batch_id=uuid.uuid4()))):
                started = time.perf_counter()
                for _ in range(transactions):
                    lead()
                    conn.execute(_ONE_ROW)
                    conn.commit()
                timings[name].append((time.perf_counter() - started) / transactions * 1e6)
    return {name: statistics.median(values) for name, values in timings.items()}


def main() -> None:
    """Start PostgreSQL, run each size, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 400])
    parser.add_argument("--size", type=int, nargs="+", default=[10, 100], help="readings per batch, one per --batches")
    args = parser.parse_args()
    server = PostgresServer()
    try:
        server.start()
        apply_schema(server.url())
        url = login_url(server.url(), BRIDGE_TEST_ROLE)
        first = 0
        for count, size in zip(args.batches, args.size, strict=True):
            rate = batches_per_s(url, count, size, first=first)
            first += (count + 1) * size
            print(f"{count} batches of {size}: {rate:,.0f} batches/s ({rate * size:,.0f} readings/s)")
        costs = leading_statement_us(url)
        print("one-row transaction led by " + ", by ".join(f"{name}: {us:.0f} µs" for name, us in costs.items()))
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
