"""watchdog.__main__: the log filter that keeps the Discord webhook's token out of every handler's output."""

from __future__ import annotations

import logging
import sys

import pytest
from pydantic import SecretStr

from watchdog.__main__ import RedactingFilter

TOKEN = "Zq9-s3cr3t-t0ken-for-tests_abcdef"
URL = SecretStr(f"https://discord.example/api/webhooks/42/{TOKEN}")


def test_redacting_filter_cleans_third_party_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    third_party = logging.getLogger("urllib3.connectionpool")
    caplog.handler.addFilter(RedactingFilter(URL))
    try:
        with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
            third_party.debug('%s "POST %s HTTP/1.1" 204 0', "https://discord.example:443", f"/api/webhooks/42/{TOKEN}")
    finally:
        caplog.handler.removeFilter(caplog.handler.filters[-1])

    assert "POST <webhook> HTTP/1.1" in caplog.text
    assert TOKEN not in caplog.text


def test_redacting_filter_cleans_tracebacks() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bug", None, None)
    try:
        raise RuntimeError(f"posting to {URL.get_secret_value()} failed")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    RedactingFilter(URL).filter(record)
    text = logging.Formatter().format(record)

    assert "posting to <webhook> failed" in text
    assert TOKEN not in text
