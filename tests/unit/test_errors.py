"""bridge.errors: one root, the errors the code raises, their data kept as attributes."""

from __future__ import annotations

from bridge.errors import BridgeError, ConfigError, SinkError, SinkMisconfigured, SinkRefused, SinkUnavailable


def test_errors_share_one_root_and_keep_their_data() -> None:
    config = ConfigError("BRIDGE_BATCH_SIZE", "must be at least 1")

    assert str(config) == "BRIDGE_BATCH_SIZE: must be at least 1"
    assert (config.variable, config.problem) == ("BRIDGE_BATCH_SIZE", "must be at least 1")
    for error in (config, SinkUnavailable("down"), SinkRefused("bad data"), SinkMisconfigured("no schema")):
        assert isinstance(error, BridgeError)
    for sink_error in (SinkUnavailable, SinkRefused, SinkMisconfigured):
        assert issubclass(sink_error, SinkError)
