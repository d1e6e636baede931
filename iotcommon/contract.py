"""The contract between the processes: topics, status words, the heartbeat, rejection codes.

Defined once and typed, imported by every side: the devices publish on
reading topics, the bridge workers publish their status and heartbeat, the
watchdog reads them, and operators group dead letters by their code.
"""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

# The filters are what subscribers ask for and what the broker's ACLs
# (mosquitto/dynsec.py) grant; the functions below build single topics.
READINGS_FILTER = "sensors/+/readings"  # every sensor's readings
_READING_TOPIC = re.compile(r"sensors/([^/]+)/readings")  # fullmatch: "$" would allow a trailing newline
STATUS_PREFIX = "bridge/status/"
HEARTBEAT_PREFIX = "bridge/heartbeat/"
STATUS_FILTER = f"{STATUS_PREFIX}+"  # every worker's retained status
HEARTBEAT_FILTER = f"{HEARTBEAT_PREFIX}+"  # every worker's heartbeat
WORKER_TOPICS = "bridge/#"  # all that bridge workers publish: status and heartbeat
PROBE_PREFIX = "watchdog/probe/"
PROBE_FILTER = f"{PROBE_PREFIX}#"  # the watchdog's probes to itself, round-tripped through the broker
# A site broker's bridge (mosquitto/site.conf, `notifications true`) reports its link on
# both brokers at $SYS/broker/connection/<remote_clientid>/state: "1" connected, "0"
# disconnected (on the central broker, its Will). mosquitto/dynsec.py grants the filter.
SITE_BRIDGE_STATES = "$SYS/broker/connection/+/state"
_SITE_BRIDGE_STATE = re.compile(r"\$SYS/broker/connection/([^/]+)/state")


def reading_topic(sensor_id: int) -> str:
    """Where a device publishes the readings of one sensor."""
    return f"sensors/{sensor_id}/readings"


def shared_subscription(group: str, topic_filter: str = READINGS_FILTER) -> str:
    """The MQTT 5 shared subscription of `group` to `topic_filter`: each message goes to one member."""
    return f"$share/{group}/{topic_filter}"


def topic_sensor_segment(topic: str) -> str | None:
    """The <sensor_id> segment of sensors/<sensor_id>/readings as sent (not yet checked), or None."""
    match = _READING_TOPIC.fullmatch(topic)
    return match.group(1) if match else None


def status_topic(client_id: str) -> str:
    """The retained status of a bridge worker (its Last Will goes there too)."""
    return f"{STATUS_PREFIX}{client_id}"


def heartbeat_topic(client_id: str) -> str:
    """Where a bridge worker publishes its heartbeat (retained)."""
    return f"{HEARTBEAT_PREFIX}{client_id}"


def probe_topic(client_id: str) -> str:
    """Where the watchdog `client_id` sends itself probe messages."""
    return f"{PROBE_PREFIX}{client_id}"


def client_id_of(topic: str, prefix: str) -> str | None:
    """The client id at the end of a status or heartbeat topic, or None for another topic."""
    return topic.removeprefix(prefix) if topic.startswith(prefix) and len(topic) > len(prefix) else None


def site_bridge_state_topic(name: str) -> str:
    """Where the site bridge `name` (its remote_clientid) reports its link, on both brokers."""
    return SITE_BRIDGE_STATES.replace("+", name)


def site_bridge_of(topic: str) -> str | None:
    """The site bridge's name (its remote_clientid) in a link-state topic, or None for another topic."""
    match = _SITE_BRIDGE_STATE.fullmatch(topic)
    return match.group(1) if match else None


class LinkState(StrEnum):
    """The retained words a Mosquitto bridge publishes on its link-state topic."""

    UP = "1"
    DOWN = "0"

    @classmethod
    def parse(cls, payload: bytes) -> LinkState | None:
        """The state a payload says, or None (cleared, or not a state)."""
        try:
            return cls(payload.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None


class WorkerStatus(StrEnum):
    """The retained words on bridge/status/<client_id>."""

    ONLINE = "online"  # subscribed and working
    OFFLINE = "offline"  # stopped cleanly (SIGTERM): it said goodbye
    CRASHED = "crashed"  # its Last Will: it died, froze or lost the broker without saying goodbye

    @classmethod
    def parse(cls, payload: bytes) -> WorkerStatus | None:
        """The status a retained payload says, or None (cleared, or a word this version does not know)."""
        try:
            return cls(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None


class Heartbeat(BaseModel):
    """A worker's heartbeat: its counters and state, published every BRIDGE_HEARTBEAT_S (and its health file).

    Extra fields are ignored, so a newer worker's heartbeat still reads in an older watchdog.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: str
    at: AwareDatetime
    received: int = Field(ge=0)
    stored: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    conflicts: int = Field(ge=0)
    rejected: int = Field(ge=0)
    handler_errors: int = Field(ge=0)
    batches: int = Field(ge=0)
    db_errors: int = Field(ge=0)
    in_flight: int = Field(ge=0)
    inbox_peak: int = Field(ge=0)
    last_commit_at: AwareDatetime | None
    db_ok: bool
    mqtt_connected: bool
    # Added with corrections (BRIDGE_ON_CONFLICT=update): defaults, so that the
    # heartbeat of a worker of the release before still validates.
    revised: int = Field(default=0, ge=0)
    stale: int = Field(default=0, ge=0)
    # Most messages one read of the broker's socket brought (at most 64 KiB of
    # them), held by the network thread until they go into the inbox together.
    read_peak: int = Field(default=0, ge=0)
    # How long the COMMIT in progress has waited so far (0 when none): a
    # synchronous standby that is away holds it for as long as it is away.
    # commit_stalled: longer than the worker's BRIDGE_COMMIT_WAIT_WARN_S.
    commit_wait_s: float = Field(default=0.0, ge=0)
    commit_stalled: bool = False


class MalformedHeartbeat(ValueError):
    """A heartbeat payload that is not the contract's: what was wrong, in one line."""


def parse_heartbeat(payload: bytes) -> Heartbeat | None:
    """The heartbeat, None for an empty (cleared) payload; MalformedHeartbeat for anything else."""
    if not payload:
        return None
    try:
        return Heartbeat.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "payload"
        raise MalformedHeartbeat(f"{where}: {first['msg']}") from None


class RejectionCode(StrEnum):
    """Why a message (or an array element) was stored in rejected_messages: a closed set, in reason_code.

    The human sentence stays in `reason`; the code is for grouping, alerting
    and replaying by cause. README, "Rejection codes", has an example of each.
    """

    BAD_TOPIC = "bad_topic"
    EMPTY_PAYLOAD = "empty_payload"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT_OR_ARRAY = "not_object_or_array"
    EMPTY_ARRAY = "empty_array"
    ARRAY_TOO_LONG = "array_too_long"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    OUT_OF_RANGE = "out_of_range"
    NOT_FINITE = "not_finite"
    INVALID_TEXT = "invalid_text"
    BAD_TIMESTAMP = "bad_timestamp"
    NAIVE_TIMESTAMP = "naive_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    PAST_TIMESTAMP = "past_timestamp"  # before BRIDGE_MIN_TIMESTAMP: a clock that was never set (1970, 2000)
    TOPIC_MISMATCH = "topic_mismatch"
    CONFLICT = "conflict"
    STALE_REVISION = "stale_revision"  # update mode: a lower revision than the stored one, never current
    NO_PARTITION = "no_partition"  # partitioned readings: no partition holds its time (maintenance behind)
    DATABASE_REFUSED = "database_refused"
    INTERNAL_ERROR = "internal_error"
    UNKNOWN = "unknown"  # dead letters stored before codes existed whose reason matched no pattern

