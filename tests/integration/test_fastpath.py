"""bridge.mqtt.fastpath on the wire: PUBACKs only after commit, in arrival order, none for another connection's message.

The worker reaches the broker through a proxy that records both directions of
every connection; the test decodes the MQTT packets and compares the message
ids the broker delivered with the ones the worker acknowledged.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from devstack import traffic
from devstack.mqtt_client import MqttTestClient
from devstack.processes import wait_until
from devstack.proxy import TcpProxy
from devstack.workers import StartWorker

PUBLISH, PUBACK = 3, 4


def packets(stream: bytes | bytearray) -> list[tuple[int, int, bytes]]:
    """(type, flags, body) of each whole MQTT control packet in a recorded byte stream."""
    found: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos + 2 <= len(stream):
        header, length, shift, cursor = stream[pos], 0, 0, pos + 1
        while True:
            if cursor >= len(stream):
                return found
            byte = stream[cursor]
            cursor += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if cursor + length > len(stream):
            return found
        found.append((header >> 4, header & 0x0F, bytes(stream[cursor : cursor + length])))
        pos = cursor + length
    return found


def delivered_mids(connection: tuple[bytearray, bytearray]) -> list[int]:
    """Message ids of the QoS 1 PUBLISHes the broker sent on this connection, in order."""
    mids = []
    for kind, flags, body in packets(bytes(connection[1])):
        if kind == PUBLISH and (flags >> 1) & 3 == 1:
            topic_length = int.from_bytes(body[:2], "big")
            mids.append(int.from_bytes(body[2 + topic_length : 4 + topic_length], "big"))
    return mids


def acked_mids(connection: tuple[bytearray, bytearray]) -> list[int]:
    """Message ids the worker PUBACKed on this connection, in order."""
    return [int.from_bytes(body[:2], "big") for kind, _, body in packets(bytes(connection[0])) if kind == PUBACK]


def test_pubacks_only_after_commit_in_order_and_never_across_connections(
    start: StartWorker, mqtt_url: str, admin_database_url: str,
) -> None:
    with TcpProxy(urlsplit(mqtt_url).port or 1883, record=True) as proxy:
        worker = start("fp", mqtt_url=proxy.url_for(mqtt_url), bridge_batch_size=50, bridge_linger_ms=20)
        # The connection the worker is subscribed on: the last one it opened (under load an
        # attempt before it may have failed, and it is recorded too).
        live = len(proxy.recorded) - 1
        first, second = traffic.build(200), traffic.build(200, first=10_000)
        with psycopg.connect(admin_database_url) as locker, MqttTestClient.from_url(mqtt_url) as publisher:
            # While readings is locked nothing commits, so nothing may be acknowledged.
            locker.execute("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
            publisher.publish_many(first.messages)
            wait_until(lambda: len(delivered_mids(proxy.recorded[live])) == 200, 30, message="200 delivered")
            assert acked_mids(proxy.recorded[live]) == [], "acknowledged before the commit"
            # The connection dies holding 200 uncommitted messages; the broker
            # sends them again on the next one, with their ids.
            proxy.cut()
            wait_until(lambda: len(proxy.recorded) > live + 1 and len(delivered_mids(proxy.recorded[live + 1])) >= 200,
                       30,
                       message="the 200 sent again on the new connection")
            publisher.publish_many(second.messages)
            locker.rollback()  # releases the lock: the batches commit
        expected = first.expected | second.expected
        traffic.wait_for_counts(admin_database_url, len(expected))
        later = proxy.recorded[live + 1]
        wait_until(lambda: len(acked_mids(later)) >= len(delivered_mids(later)), 30, message="every delivery acked")

    assert traffic.stored_rows(admin_database_url) == expected
    assert acked_mids(proxy.recorded[live]) == [], "the dead connection's ids were never acknowledged"
    assert acked_mids(later) == delivered_mids(later), "each delivery of the connection acked once, in order"
    assert "fast path off" not in worker.log_text()
