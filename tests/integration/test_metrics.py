"""A worker's Prometheus endpoint reflects what it stored and rejected."""

from __future__ import annotations

import requests

from devstack import traffic
from devstack.mqtt_client import MqttTestClient
from devstack.processes import free_port, wait_until
from devstack.workers import StartWorker


def scrape(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_worker_metrics_count_stored_and_rejected(
    start_worker: StartWorker, mqtt_client: MqttTestClient, admin_database_url: str, share_group: str
) -> None:
    port = free_port()
    start_worker(f"metrics-{share_group}", bridge_metrics_port=port)
    sent = traffic.build(100, invalid_share=0.1)
    mqtt_client.publish_many(sent.messages)
    wait_until(lambda: traffic.counts(admin_database_url) == (90, 10), 30, message="all stored")

    def stored_all() -> str | None:
        text = scrape(port)
        return text if "bridge_readings_stored_total 90.0" in text else None

    text = wait_until(stored_all, 10, message="metrics showing 90 stored")
    assert "bridge_messages_received_total 100.0" in text
    assert "bridge_rejected_total 10.0" in text
    assert "bridge_database_up 1.0" in text
    assert "bridge_in_flight 0.0" in text
    assert 'bridge_rejected_by_code_total{code="not_json"}' in text
    assert "bridge_commit_seconds_count" in text
