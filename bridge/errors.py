"""The bridge's exception hierarchy: every error it raises is a BridgeError."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class for the errors raised by the bridge."""


class ConfigError(BridgeError):
    """A setting is missing or invalid; raised at start-up, names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class SinkError(BridgeError):
    """The database could not store a batch."""


class SinkUnavailable(SinkError):
    """The database is unreachable or timed out: retry the same batch later."""


class SinkMisconfigured(SinkError):
    """The database refuses us in a way no waiting fixes (credentials, schema, grants): stop, naming the fix."""


class SinkRefused(SinkError):
    """The database refused the batch's data: retrying it unchanged would fail again."""


class BrokerTlsError(BridgeError):
    """The TLS handshake with the broker failed: its certificate is not trusted, or no TLS there."""
