"""bridge.errors: one root, the errors the bridge raises under it (iotcommon.errors: test_iotcommon_errors.py)."""

from __future__ import annotations

from bridge.errors import BridgeError, SinkError, SinkMisconfigured, SinkRefused, SinkUnavailable


def test_the_bridge_s_errors_share_one_root() -> None:
    for error in (SinkUnavailable("down"), SinkRefused("bad data"), SinkMisconfigured("no schema")):
        assert isinstance(error, SinkError) and isinstance(error, BridgeError)
