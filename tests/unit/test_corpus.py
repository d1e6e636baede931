"""The hostile-payload corpus (tests/corpus/cases.json) through parse_message: each case as its index says."""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from corpus import make_corpus

from bridge.model import Limits, Parsed, Row
from bridge.validation import parse_message
from iotcommon.contract import RejectionCode

CORPUS_DIR = Path(__file__).resolve().parents[1] / "corpus"

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = Limits()  # the defaults a worker runs with: 65,536 bytes, 300 s, nothing before 2020
ENTRIES: list[dict[str, Any]] = json.loads((CORPUS_DIR / "cases.json").read_text(encoding="ascii"))


def expected_row(stored: list[Any]) -> Row:
    """An index row ([sensor_id, ISO time, variable, repr of value, unit(, revision)]) as parse_message gives it."""
    sensor_id, timestamp, variable, value, unit, *revision = stored
    return Row(sensor_id, datetime.fromisoformat(timestamp), variable, float(value), unit, *revision)


def same_row(actual: Row, expected: Row) -> bool:
    """Equal, with the timestamp's instant and offset and the float's bits (so -0.0 is not 0.0)."""
    return (
        actual._replace(value=0.0) == expected._replace(value=0.0)
        and actual.timestamp.utcoffset() == expected.timestamp.utcoffset()
        and struct.pack("<d", actual.value) == struct.pack("<d", expected.value)
    )


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every case's payload by name; the large ones generated into a temporary folder."""
    folder = tmp_path_factory.mktemp("corpus")
    return {entry["name"]: payload for entry, payload in make_corpus.load(folder)}


def test_the_committed_index_and_files_match_the_generator(tmp_path: Path) -> None:
    make_corpus.write_small(tmp_path)
    assert (tmp_path / "cases.json").read_bytes() == (CORPUS_DIR / "cases.json").read_bytes()
    for entry in ENTRIES:
        if not entry.get("generated"):
            assert (tmp_path / entry["file"]).read_bytes() == (CORPUS_DIR / entry["file"]).read_bytes(), entry["name"]


def test_every_rejecting_case_states_a_code_and_the_codes_cover_validation() -> None:
    assert all(len(entry["codes"]) == entry["rejected"] for entry in ENTRIES)
    used = {code for entry in ENTRIES for code in entry["codes"]}
    # The codes the database step and bugs give are covered by the sink's and the consumer's tests.
    assert used == {code.value for code in RejectionCode} - {
        "conflict", "stale_revision", "no_partition", "database_refused", "internal_error", "unknown"}


def test_the_corpus_covers_the_hostile_kinds_and_stays_small() -> None:
    names = {entry["name"] for entry in ENTRIES}
    for kind in ("truncated", "utf8_", "deep_", "1e400", "10e1000", "nul_", "sql_", "1mb", "10000", "wrong_type_",
                 "duplicate_key", "bom", "trailing_garbage", "empty_array", "non_objects", "surrogate",
                 "60000_chars", "offset_plus_14", "offset_plus_24", "leap_second", "year_0001", "year_9999",
                 "negative_zero", "revision_"):
        assert any(kind in name for name in names), kind
    assert len({entry["topic"] for entry in ENTRIES}) == len(ENTRIES), "each case has its own topic"
    committed = [CORPUS_DIR / entry["file"] for entry in ENTRIES if not entry.get("generated")]
    assert max(path.stat().st_size for path in committed) <= make_corpus.SMALL_BYTES


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["name"] for entry in ENTRIES])
def test_corpus_case(entry: dict[str, Any], payloads: dict[str, bytes]) -> None:
    payload = payloads[entry["name"]]

    parsed = parse_message(entry["topic"], payload, now=NOW, limits=LIMITS)

    assert isinstance(parsed, Parsed)
    assert parsed.rows or parsed.rejections, "every message has an outcome"
    assert len(parsed.rows) == entry["rows"] == len(parsed.indexes)
    assert len(parsed.rejections) == entry["rejected"]
    for actual, stored in zip(parsed.rows, entry["stored"], strict=True):
        assert same_row(actual, expected_row(stored)), (actual, stored)
    for rejection, reason, code in zip(parsed.rejections, entry["reasons"], entry["codes"], strict=True):
        assert reason in rejection.reason, (rejection.reason, reason)
        assert rejection.code == code, (rejection.reason, code)
    if parsed.rows or any(r.reason.startswith("element ") for r in parsed.rejections):
        assert_elements_are_exact_slices(payload, parsed)
    else:
        assert parsed.rejections[0].payload == payload, "a message rejected whole keeps all its bytes"


def assert_elements_are_exact_slices(payload: bytes, parsed: Parsed) -> None:
    """Rows and rejected elements together are the whole array, each rejection the element's own bytes."""
    elements = json.loads(payload)
    rejected_indexes = [int(r.reason.split(":")[0].removeprefix("element ")) for r in parsed.rejections]
    if isinstance(elements, dict):
        assert parsed.indexes == (0,)
        return
    assert sorted(list(parsed.indexes) + rejected_indexes) == list(range(len(elements)))
    for index, rejection in zip(rejected_indexes, parsed.rejections, strict=True):
        assert rejection.payload in payload
        assert json.loads(rejection.payload) == elements[index]


def test_sql_text_is_kept_verbatim() -> None:
    entry = next(entry for entry in ENTRIES if entry["name"] == "sql_in_variable_and_unit")
    parsed = parse_message(entry["topic"], (CORPUS_DIR / entry["file"]).read_bytes(), now=NOW, limits=LIMITS)
    assert parsed.rows[0].variable == parsed.rows[0].unit == "'; DROP TABLE readings; --"


def test_negative_zero_keeps_its_sign() -> None:
    entry = next(entry for entry in ENTRIES if entry["name"] == "negative_zero")
    parsed = parse_message(entry["topic"], (CORPUS_DIR / entry["file"]).read_bytes(), now=NOW, limits=LIMITS)
    assert math.copysign(1.0, parsed.rows[0].value) == -1.0
