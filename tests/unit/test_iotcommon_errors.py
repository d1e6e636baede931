"""iotcommon.errors: the set-up errors every program raises, under one root, their data as attributes."""

from __future__ import annotations

from iotcommon.errors import BrokerTlsError, ConfigError, SetupError


def test_setup_errors_share_their_root_and_keep_their_data() -> None:
    config = ConfigError("BRIDGE_BATCH_SIZE", "must be at least 1")

    assert str(config) == "BRIDGE_BATCH_SIZE: must be at least 1"
    assert (config.variable, config.problem) == ("BRIDGE_BATCH_SIZE", "must be at least 1")
    assert isinstance(config, SetupError) and isinstance(BrokerTlsError("untrusted"), SetupError)
