"""The simulator against real Mosquitto, PostgreSQL and bridge workers; and a smoke run of the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from devstack import traffic
from devstack.processes import REPO_ROOT, free_port, wait_until
from devstack.proxy import TcpProxy
from devstack.simulator_process import simulate, simulator_env
from devstack.workers import StartWorker
from iotcommon.contract import reading_topic
from simulator import wire


def summary(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_every_unique_valid_reading_is_verified_through_three_workers(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path
) -> None:
    for n in (1, 2, 3):
        start(f"sim{n}")
    out = tmp_path / "summary.json"
    args = ["--messages", "500", "--duration", "5", "--duplicates", "0.1", "--invalid", "0.05", "--seed", "4",
            "--verify", "--verify-timeout", "30", "--json", str(out)]
    result = simulate(args, simulator_env(mqtt_url, admin_database_url))
    assert result.returncode == 0, result.stdout + result.stderr
    data = summary(out)
    publish, verify = data["publish"], data["verify"]
    assert (publish["messages"], publish["duplicates"], publish["invalid"], publish["readings"]) == (500, 50, 25, 425)
    assert (publish["published"], publish["confirmed"], publish["failed"]) == (500, 500, 0)
    assert 4.5 <= publish["elapsed_s"] < 15  # paced over 5 s, not a burst
    assert publish["puback_latency"]["p99_ms"] is not None
    assert (verify["expected"], verify["found"], verify["missing"], verify["unexpected"]) == (425, 425, 0, 0)
    assert (verify["rejected_expected"], verify["rejected_found"], verify["ok"]) == (25, 25, True)
    latency = verify["commit_latency"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert traffic.counts(admin_database_url) == (425, 25)
    assert "verdict: OK" in result.stdout and "progress: 500/500 sent" in result.stderr


def test_arrays_at_full_speed_are_counted_per_reading(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path
) -> None:
    start("arr1")
    out = tmp_path / "summary.json"
    args = ["--messages", "200", "--array", "10", "--rate", "max", "--verify", "--verify-timeout", "30",
            "--json", str(out)]
    result = simulate(args, simulator_env(mqtt_url, admin_database_url))
    assert result.returncode == 0, result.stdout + result.stderr
    data = summary(out)
    assert data["publish"]["readings"] == 2000 and data["verify"]["found"] == 2000
    assert traffic.counts(admin_database_url) == (2000, 0)


def test_missing_readings_fail_the_run_and_are_counted(mqtt_url: str, admin_database_url: str, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    args = ["--messages", "20", "--duration", "0.5", "--verify", "--verify-timeout", "1", "--json", str(out)]
    result = simulate(args, simulator_env(mqtt_url, admin_database_url))  # no worker is running
    assert result.returncode == 1, result.stdout + result.stderr
    assert "missing 20" in result.stdout and "verdict: FAILED" in result.stdout
    assert summary(out)["verify"]["missing"] == 20
    assert summary(out)["publish"]["confirmed"] == 20  # the broker took them; the database did not


def test_an_unreachable_broker_is_named_and_exits_2(admin_database_url: str) -> None:
    port = free_port()
    result = simulate(["--messages", "5"], simulator_env(f"mqtt://127.0.0.1:{port}", admin_database_url))
    assert result.returncode == 2
    assert f"cannot reach the broker at 127.0.0.1:{port} (MQTT_URL)" in result.stderr


def test_a_dropped_connection_mid_run_is_survived_with_an_honest_verdict(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path
) -> None:
    start("cut1")
    proxy = TcpProxy(urlsplit(mqtt_url).port or 1883)
    out = tmp_path / "summary.json"
    command = [sys.executable, "-m", "simulator", "--progress", "none", "--messages", "400", "--duration", "4",
               "--invalid", "0.05", "--verify", "--verify-timeout", "40", "--json", str(out)]
    env = simulator_env(proxy.url_for(mqtt_url), admin_database_url)
    try:
        with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) as process:
            wait_until(lambda: traffic.counts(admin_database_url)[0] >= 50, 20, message="first readings stored")
            assert proxy.cut() == 1
            stdout, stderr = process.communicate(timeout=90)
    finally:
        proxy.close()
    assert process.returncode == 0, stdout + stderr
    data = summary(out)
    assert data["publish"]["reconnects"] == 1 and "reconnected to the broker" in stderr
    assert (data["publish"]["confirmed"], data["publish"]["failed"]) == (400, 0)
    assert (data["verify"]["found"], data["verify"]["missing"], data["verify"]["unexpected"]) == (380, 0, 0)
    assert data["verify"]["rejected_found"] >= 20  # QoS 1 may store a re-sent invalid message twice
    assert traffic.counts(admin_database_url)[0] == 380


def _connections(proxy: TcpProxy) -> list[tuple[str, set[str]]]:
    """(client id, topics published) of each connection the proxy carried, from the bytes the clients sent."""
    result = []
    for sent, _ in proxy.recorded:
        client_id, topics = "", set()
        for packet in wire.PacketReader().feed(bytes(sent)):
            if packet.kind == wire.CONNECT:
                at = 10  # after the protocol name, level, flags and keep-alive
                client_id = packet.body[at + 2:at + 2 + int.from_bytes(packet.body[at:at + 2], "big")].decode()
            elif packet.kind == wire.PUBLISH:
                topics.add(packet.body[2:2 + int.from_bytes(packet.body[:2], "big")].decode())
        result.append((client_id, topics))
    return result


def test_a_fleet_spreads_its_readings_over_its_devices_connections_and_survives_a_cut(
    start: StartWorker, mqtt_url: str, admin_database_url: str, tmp_path: Path
) -> None:
    """--devices 50: 50 connections, 50 client ids, each publishing only its own sensors; all of them cut once."""
    start("fleet1")
    out = tmp_path / "summary.json"
    command = [sys.executable, "-m", "simulator", "--progress", "none", "--devices", "50", "--sensors", "100",
               "--messages", "1000", "--duration", "4", "--invalid", "0.02", "--verify", "--verify-timeout", "40",
               "--json", str(out)]
    with TcpProxy(urlsplit(mqtt_url).port or 1883, record=True) as proxy, subprocess.Popen(
        command, cwd=REPO_ROOT, env=simulator_env(proxy.url_for(mqtt_url), admin_database_url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        wait_until(lambda: traffic.counts(admin_database_url)[0] >= 200, 20, message="first readings stored")
        assert proxy.cut() == 50
        stdout, stderr = process.communicate(timeout=90)

    assert process.returncode == 0, stdout + stderr
    data = summary(out)
    assert (data["publish"]["confirmed"], data["publish"]["failed"], data["publish"]["reconnects"]) == (1000, 0, 50)
    assert (data["verify"]["found"], data["verify"]["missing"], data["verify"]["unexpected"]) == (980, 0, 0)
    connections = _connections(proxy)
    ids = sorted({client_id for client_id, _ in connections}, key=lambda cid: int(cid.rsplit("-", 1)[1]))
    assert len(connections) == 100 and len(ids) == 50, "each device connected twice, with its own client id"
    for client_id, topics in connections:
        device = int(client_id.rsplit("-", 1)[1])
        assert topics <= {reading_topic(device + 1), reading_topic(device + 51)}, client_id


def test_a_fleet_refused_by_the_broker_is_named_and_exits_2(admin_database_url: str, mqtt_url: str) -> None:
    parts = urlsplit(mqtt_url)
    wrong = f"mqtt://simulator:wrong-password@{parts.hostname}:{parts.port}"
    result = simulate(["--devices", "5", "--messages", "5"], simulator_env(wrong, admin_database_url))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused the devices' connections: not authorized" in result.stderr and "MQTT_URL" in result.stderr


def test_benchmark_smoke_run_prints_the_table() -> None:
    command = [sys.executable, "benchmarks/bench.py", "--messages", "300", "--array", "5", "--array-messages", "60",
               "--naive-messages", "60", "--live-messages", "300", "--latency-seconds", "2", "--rounds", "2",
               "--prefill-rows", "8000", "--on-conflict", "keep", "update"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ceiling: bare paho, 2 consumers", "ceiling: mosquitto_sub, 2 consumers", "bridge, 1 worker",
                 "bridge, 2 workers", "bridge (update mode), 1 worker", "bridge (update mode), 2 workers",
                 "bridge (update mode: corrections), 2 workers",
                 "naive INSERT+commit, 1 consumer", "live: simulator + bridge, 2 workers",
                 "publish->commit latency at 83 readings/s", "worker peak RSS (VmHWM)", "Over 2 rounds",
                 "into one of 8,000 rows", "primary key index"):
        assert line in result.stdout, result.stdout
    assert "| ÷ paho | ÷ mosquitto_sub | ÷ naive |" in result.stdout


def test_latency_benchmark_smoke_run_compares_two_trees() -> None:
    command = [sys.executable, "benchmarks/latency.py", "--before", "HEAD", "--seed-seconds", "2",
               "--messages", "200", "--workers", "1", "--variant", "linger:BRIDGE_LINGER_MS=20"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| figure | before | after | linger | after ÷ before | linger ÷ before |" in result.stdout
    for row in ("| publish->commit p99 at 83 readings/s, 3 workers |", "| commits/s at 83 readings/s, 3 workers |",
                "| store + COMMIT of one batch, mean, at 83 readings/s, 3 workers |",
                "| drain, 1 worker (readings/s) |"):
        assert row in result.stdout, result.stdout
    assert "n/a" not in result.stdout, result.stdout


def test_partitioning_benchmark_smoke_run_prints_its_figures() -> None:
    command = [sys.executable, "benchmarks/partitioning.py", "--messages", "300", "--rounds", "1",
               "--day-rows", "2000"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("- retention of a day of 2,000 readings: DELETE", "- drain into empty tables, 300 messages x 1 rounds",
                 "partitioned/plain", "- dashboard 'Readings'"):
        assert line in result.stdout, result.stdout


def test_fleet_benchmark_smoke_run_prints_the_table() -> None:
    command = [sys.executable, "benchmarks/fleet.py", "--devices", "20", "--period", "2", "--steady", "1",
               "--settle", "1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    for row in ("| broker RSS: empty / every device connected / per connection |",
                "| broker RSS with one account per device", "| broker back → every device connected again |",
                "| broker CPU for the storm", "| steady: readings / lost / publish→commit",
                "| every device resuming its session at once → all connected |"):
        assert row in result.stdout, result.stdout
