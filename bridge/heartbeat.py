"""Periodic heartbeat: counters to bridge/heartbeat/<client_id> and the health file."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from bridge.stats import Stats
from iotcommon.contract import Heartbeat as HeartbeatPayload
from iotcommon.contract import heartbeat_topic
from iotcommon.health import write_health_text

logger = logging.getLogger(__name__)


class Heartbeat:
    """Publishes the worker's counters every interval_s, retained so a new watcher sees them."""

    def __init__(
        self,
        publish: Callable[[str, str], object],
        stats: Stats,
        *,
        client_id: str,
        interval_s: float,
        health_path: str,
        now: Callable[[], datetime],
        commit_wait_warn_s: float | None = None,
    ) -> None:
        self._publish = publish
        self._stats = stats
        self._client_id = client_id
        self._interval_s = interval_s
        self._health_path = health_path
        self._now = now
        self._commit_wait_warn_s = commit_wait_warn_s
        self._stalled = False
        # One beat at a time: the last beat at shutdown (after the drain) must not be
        # overwritten by the heartbeat thread's beat, begun earlier with older counters.
        self._beating = threading.Lock()

    def run(self, stop: threading.Event) -> None:
        """Beat until `stop` is set."""
        while True:
            self.beat()
            if stop.wait(self._interval_s):
                return

    def beat(self) -> HeartbeatPayload:
        """Publish one heartbeat and refresh the health file (the same JSON); never raises."""
        with self._beating:
            return self._beat()

    def _beat(self) -> HeartbeatPayload:
        payload = self._stats.heartbeat(
            client_id=self._client_id, at=self._now(), commit_wait_warn_s=self._commit_wait_warn_s
        )
        self._say_if_stalled(payload)
        text = payload.model_dump_json()
        try:
            self._publish(heartbeat_topic(self._client_id), text)
        except Exception:
            logger.exception("could not publish heartbeat of %s", self._client_id)
        try:
            write_health_text(self._health_path, text)
        except OSError:
            logger.exception("could not write health file %s", self._health_path)
        return payload

    def _say_if_stalled(self, payload: HeartbeatPayload) -> None:
        """Log once when a COMMIT has waited past BRIDGE_COMMIT_WAIT_WARN_S: the writer, blocked in it, cannot."""
        if payload.commit_stalled and not self._stalled:
            logger.warning(
                "COMMIT has waited %.1f s for the database (BRIDGE_COMMIT_WAIT_WARN_S=%s): a synchronous standby "
                "away? The batch stays unacknowledged until the COMMIT is confirmed", payload.commit_wait_s,
                self._commit_wait_warn_s,
            )
        self._stalled = payload.commit_stalled
