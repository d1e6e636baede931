"""The bridge's own exception hierarchy: every error its worker raises is a BridgeError.

Settings and TLS errors (ConfigError, BrokerTlsError) come from the shared
plumbing and live in iotcommon/errors.py.
"""

from __future__ import annotations

from iotcommon.contract import RejectionCode


class BridgeError(Exception):
    """Base class for the errors raised by the bridge."""


class SinkError(BridgeError):
    """The database could not store a batch."""


class SinkUnavailable(SinkError):
    """The database is unreachable or timed out: retry the same batch later."""


class SinkMisconfigured(SinkError):
    """The database refuses us in a way no waiting fixes (credentials, schema, grants): stop, naming the fix."""


class SinkRefused(SinkError):
    """The database refused the batch's data: retrying it unchanged would fail again."""

    def __init__(self, message: str, *, code: RejectionCode = RejectionCode.DATABASE_REFUSED) -> None:
        super().__init__(message)
        self.code = code  # what a message refused for this reason is dead-lettered as
