"""bridge.replay.command: the options of replay-rejected, and the criteria they make."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.replay.command import build_parser, criteria_from
from iotcommon.contract import RejectionCode


def test_parser_builds_criteria_and_treats_a_bare_time_as_utc() -> None:
    args = build_parser().parse_args(
        ["--since", "2026-11-01", "--until", "2026-11-02T00:00:00+01:00", "--reason", "future",
         "--topic", "sensors/+/readings", "--limit", "10", "--again", "--dry-run",
         "--code", "future_timestamp", "--code", "naive_timestamp"]
    )

    criteria = criteria_from(args)

    assert criteria.since == datetime(2026, 11, 1, tzinfo=UTC)
    assert criteria.until == datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
    assert (criteria.reason, criteria.topic) == ("future", "sensors/+/readings")
    assert (criteria.limit, criteria.again) == (10, True)
    assert criteria.codes == {RejectionCode.FUTURE_TIMESTAMP, RejectionCode.NAIVE_TIMESTAMP}
    assert args.dry_run is True


@pytest.mark.parametrize("argv", [["--since", "yesterday"], ["--limit", "0"], ["--limit", "many"],
                                  ["--code", "conflicts"]])
def test_parser_rejects_bad_options(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert "error: argument" in capsys.readouterr().err
