"""bridge.errors and iotcommon.errors: one root each, the errors the code raises, their data as attributes."""

from __future__ import annotations

from bridge.errors import BridgeError, SinkError, SinkMisconfigured, SinkRefused, SinkUnavailable
from iotcommon.errors import BrokerTlsError, ConfigError, SetupError


def test_the_bridge_s_errors_share_one_root() -> None:
    for error in (SinkUnavailable("down"), SinkRefused("bad data"), SinkMisconfigured("no schema")):
        assert isinstance(error, SinkError) and isinstance(error, BridgeError)


def test_setup_errors_share_their_root_and_keep_their_data() -> None:
    config = ConfigError("BRIDGE_BATCH_SIZE", "must be at least 1")

    assert str(config) == "BRIDGE_BATCH_SIZE: must be at least 1"
    assert (config.variable, config.problem) == ("BRIDGE_BATCH_SIZE", "must be at least 1")
    assert isinstance(config, SetupError) and isinstance(BrokerTlsError("untrusted"), SetupError)
