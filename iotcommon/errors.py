"""Errors of the shared plumbing, raised alike in the bridge, the watchdog and the simulator."""

from __future__ import annotations


class SetupError(Exception):
    """Base class: a program cannot start as it is set up (its settings, or what they point at)."""


class ConfigError(SetupError):
    """A setting is missing or invalid; raised at start-up, names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class BrokerTlsError(SetupError):
    """The TLS handshake with the broker failed: its certificate is not trusted, or no TLS there."""
