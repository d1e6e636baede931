"""simulator.__main__: a bad setting is a usage error before anything is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.__main__ import UsageError, parse_args, run


def test_a_bad_setting_is_a_usage_error_before_anything_is_published(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^MQTT_PASSWORD_FILE: cannot read"):
        run(parse_args([]), {"MQTT_URL": "mqtt://simulator@127.0.0.1:1", "MQTT_PASSWORD_FILE": str(tmp_path / "no")})
