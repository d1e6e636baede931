"""Write the hostile-payload corpus: one file per case under cases/, and the index cases.json.

Run `python tests/corpus/make_corpus.py` after changing a case here; the files
and the index are committed. Cases larger than SMALL_BYTES are not committed:
the tests call `write_large(folder)` to make them in a temporary folder.

Every case has its own sensor id (so its own topic), which lets the full-path
test attribute stored and rejected rows to the message that caused them.
Each index entry says what must happen: `rows` readings stored (listed in
`stored`, exactly), `rejected` rejections whose reasons contain, in order, the
substrings in `reasons`; `broker_refuses` marks payloads over the test broker's
max_packet_size (131072 bytes), which never reach the bridge.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SMALL_BYTES = 100_000
FIRST_SENSOR_ID = 900_001
TIMESTAMP = "2025-06-01T12:00:00Z"
SQL = "'; DROP TABLE readings; --"
NOT_JSON = "payload is not valid JSON"
NOT_UTF8 = "payload is not valid UTF-8"
TOO_BIG = "the limit is BRIDGE_MAX_PAYLOAD_BYTES="
NOT_OBJECT = "must be a JSON object"


def raw_reading(sensor_id: int, /, **fields: str) -> str:
    """JSON text of a valid reading; each keyword replaces a field's raw JSON text (None-free)."""
    values = {
        "sensor_id": str(sensor_id),
        "timestamp": json.dumps(TIMESTAMP),
        "variable": '"t"',
        "value": "1.5",
        "unit": '"C"',
    }
    values.update(fields)
    return "{" + ", ".join(f'"{name}": {text}' for name, text in values.items() if text != "<absent>") + "}"


def stored(sensor_id: int, *, timestamp: str = TIMESTAMP, variable: str = "t", value: str = "1.5",
           unit: str = "C", revision: int = 0) -> list[Any]:
    """An expected row: [sensor_id, ISO timestamp, variable, repr of the float value, unit(, revision)].

    The revision is listed only when it is not the default 0, so the rows of
    the cases older than the field read as they always did.
    """
    return [sensor_id, timestamp, variable, value, unit, *([revision] if revision else [])]


class Corpus:
    """Collects cases; each gets the next sensor id."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.payloads: dict[str, bytes] = {}
        self.large: dict[str, Callable[[], bytes]] = {}
        self._next_id = FIRST_SENSOR_ID

    def sid(self) -> int:
        """The sensor id of the case being added."""
        return self._next_id

    def add(self, name: str, payload: bytes | Callable[[], bytes], *, rows: list[list[Any]] | None = None,
            reasons: list[str] | None = None, codes: list[str] | None = None, topic: str | None = None,
            note: str = "", broker_refuses: bool = False) -> None:
        """Add one case: either `rows` stored or one rejection per entry of `reasons`, with its code in `codes`."""
        if len(codes or []) != len(reasons or []):
            raise ValueError(f"case {name}: one code per reason")
        entry: dict[str, Any] = {
            "name": name,
            "file": f"cases/{name}.bin",
            "topic": topic or f"sensors/{self._next_id}/readings",
            "rows": len(rows or []),
            "stored": rows or [],
            "rejected": len(reasons or []),
            "reasons": reasons or [],
            "codes": codes or [],
        }
        if callable(payload):
            entry["generated"] = True
            self.large[name] = payload
        else:
            self.payloads[name] = payload
        if broker_refuses:
            entry["broker_refuses"] = True
        if note:
            entry["note"] = note
        self.entries.append(entry)
        self._next_id += 1


def build() -> Corpus:
    """Every case of the corpus."""
    c = Corpus()
    valid = raw_reading(c.sid()).encode()
    # --- truncated and malformed JSON
    c.add("truncated_json", valid[:-5], reasons=[NOT_JSON], codes=["not_json"])
    c.add("truncated_in_string", raw_reading(c.sid()).encode()[:40], reasons=[NOT_JSON], codes=["not_json"])
    c.add("trailing_garbage", raw_reading(c.sid()).encode() + b" garbage", reasons=[NOT_JSON], codes=["not_json"])
    c.add("two_objects", (raw_reading(c.sid()) * 2).encode(), reasons=[NOT_JSON], codes=["not_json"])
    c.add("bom_prefix", b"\xef\xbb\xbf" + raw_reading(c.sid()).encode(), reasons=[NOT_JSON], codes=["not_json"],
          note="a UTF-8 byte order mark is not JSON whitespace")
    c.add("single_quotes", raw_reading(c.sid()).replace('"', "'").encode(), reasons=[NOT_JSON], codes=["not_json"])
    c.add("nan_literal", raw_reading(c.sid(), value="NaN").encode(), reasons=["value: Input should be a finite"],
          codes=["not_finite"])
    # --- invalid UTF-8
    for name, bad in (
        ("utf8_lone_continuation", b"\x80"),
        ("utf8_overlong_slash", b"\xc0\xaf"),
        ("utf8_overlong_nul", b"\xc0\x80"),
        ("utf8_encoded_surrogate", b"\xed\xa0\x80"),
        ("utf8_truncated_sequence", b"\xe2\x82"),
        ("utf8_latin1", b"caf\xe9"),
        ("utf8_above_u10ffff", b"\xf4\x90\x80\x80"),
    ):
        c.add(name, raw_reading(c.sid(), variable='"@"').encode().replace(b"@", bad), reasons=[NOT_UTF8],
              codes=["not_utf8"])
    # --- deep nesting (10,000 levels)
    c.add("deep_arrays", b"[" * 10_000 + b"]" * 10_000, reasons=[NOT_JSON], codes=["not_json"])
    c.add("deep_objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, reasons=[NOT_JSON], codes=["not_json"])
    c.add("deep_in_extra_field", raw_reading(c.sid(), extra="[" * 10_000 + "]" * 10_000).encode(),
          reasons=[NOT_JSON], codes=["not_json"], note="unknown fields are ignored, but they must still parse")
    c.add("deep_array_element", f"[{raw_reading(c.sid())}, {'[' * 10_000}{']' * 10_000}]".encode(),
          reasons=[NOT_JSON], codes=["not_json"])
    # --- huge numbers
    c.add("value_1e400", raw_reading(c.sid(), value="1e400").encode(), reasons=["value: Input should be a finite"],
          codes=["not_finite"])
    c.add("value_minus_1e400", raw_reading(c.sid(), value="-1e400").encode(),
          reasons=["value: Input should be a finite"], codes=["not_finite"])
    c.add("value_10e1000_integer", raw_reading(c.sid(), value="1" + "0" * 1000).encode(),
          reasons=["value: Input should be a finite"], codes=["not_finite"])
    c.add("sensor_id_10e1000", raw_reading(c.sid(), sensor_id="1" + "0" * 1000).encode(),
          reasons=["sensor_id: Input should be less than or equal to 2147483647"], codes=["out_of_range"])
    c.add("sensor_id_5000_digits", raw_reading(c.sid(), sensor_id="1" + "0" * 5000).encode(), reasons=[NOT_JSON],
          codes=["not_json"],
          note="the JSON parser refuses integers this long before any field rule")
    c.add("sensor_id_2_pow_31", raw_reading(c.sid(), sensor_id="2147483648").encode(),
          reasons=["sensor_id: Input should be less than or equal to 2147483647"], codes=["out_of_range"])
    sid = c.sid()
    c.add("value_underflow_1e-400", raw_reading(sid, value="1e-400").encode(), rows=[stored(sid, value="0.0")],
          note="an underflowing literal is the float 0.0, as in every JSON parser")
    sid = c.sid()
    c.add("value_max_double", raw_reading(sid, value="1.7976931348623157e308").encode(),
          rows=[stored(sid, value="1.7976931348623157e+308")])
    c.add("value_2e308", raw_reading(c.sid(), value="2e308").encode(), reasons=["value: Input should be a finite"],
          codes=["not_finite"])
    sid = c.sid()
    c.add("negative_zero", raw_reading(sid, value="-0.0").encode(), rows=[stored(sid, value="-0.0")])
    sid = c.sid()
    c.add("negative_zero_integer", raw_reading(sid, value="-0").encode(), rows=[stored(sid, value="0.0")])
    # --- NUL bytes
    c.add("nul_raw_in_string", raw_reading(c.sid(), variable='"a\x00b"').encode(), reasons=[NOT_JSON],
          codes=["not_json"])
    c.add("nul_escaped_variable", raw_reading(c.sid(), variable='"a\\u0000b"').encode(),
          reasons=["variable: must not contain control characters"], codes=["invalid_text"])
    c.add("nul_escaped_unit", raw_reading(c.sid(), unit='"\\u0000"').encode(),
          reasons=["unit: must not contain control characters"], codes=["invalid_text"])
    c.add("nul_after_payload", raw_reading(c.sid()).encode() + b"\x00", reasons=[NOT_JSON], codes=["not_json"])
    c.add("nul_only", b"\x00", reasons=[NOT_JSON], codes=["not_json"])
    # --- SQL text: valid by the contract, stored verbatim
    sid = c.sid()
    c.add("sql_in_variable_and_unit", raw_reading(sid, variable=json.dumps(SQL), unit=json.dumps(SQL)).encode(),
          rows=[stored(sid, variable=SQL, unit=SQL)])
    c.add("sql_as_sensor_id", raw_reading(c.sid(), sensor_id=json.dumps("1; " + SQL)).encode(),
          reasons=["sensor_id: Input should be a valid integer"], codes=["wrong_type"])
    # --- size limits
    sid = c.sid()
    c.add("payload_1mb", functools.partial(_large, sid, 1_048_576),
          reasons=[TOO_BIG], codes=["payload_too_large"], broker_refuses=True,
          note="over the broker's max_packet_size: the broker disconnects the publisher")
    sid = c.sid()
    c.add("payload_100kb", functools.partial(_large, sid, 100_000),
          reasons=[TOO_BIG], codes=["payload_too_large"],
          note="between BRIDGE_MAX_PAYLOAD_BYTES and the broker's limit: the bridge's own check")
    sid = c.sid()
    c.add("array_10000_readings", functools.partial(_array_of, sid, 10_000),
          reasons=[TOO_BIG], codes=["payload_too_large"], broker_refuses=True,
          note="over the byte limit too (about 1 MB): the byte limit is checked first; the broker refuses it")
    c.add("array_10000_numbers", ("[" + ",".join("1" * 10_000) + "]").encode(),
          reasons=["payload is an array of 10000 readings; the limit is 1000"], codes=["array_too_long"])
    c.add("array_1001_objects", ("[" + ",".join(["{}"] * 1001) + "]").encode(),
          reasons=["payload is an array of 1001 readings; the limit is 1000"], codes=["array_too_long"])
    c.add("variable_60000_chars", raw_reading(c.sid(), variable=json.dumps("x" * 60_000)).encode(),
          reasons=["variable: String should have at most 64 characters"], codes=["out_of_range"])
    c.add("unit_33_chars", raw_reading(c.sid(), unit=json.dumps("u" * 33)).encode(),
          reasons=["unit: String should have at most 32 characters"], codes=["out_of_range"])
    sid = c.sid()
    c.add("variable_64_emoji", raw_reading(sid, variable=json.dumps("\U0001f600" * 64, ensure_ascii=False)).encode(),
          rows=[stored(sid, variable="\U0001f600" * 64)], note="the limit counts characters, not bytes")
    # --- wrong types in every field, and missing fields
    # (raw JSON text, the code it is rejected with): a string that is not a time is
    # bad_timestamp, a time without offset naive_timestamp, an empty variable out_of_range.
    wrong = {
        "sensor_id": [(text, "wrong_type") for text in ('"5"', "5.0", "true", "null", "[5]", '{"id": 5}')],
        "timestamp": [("1717243200", "wrong_type"), ("null", "wrong_type"), ("true", "wrong_type"),
                      ('"2025-06-01T12:00:00"', "naive_timestamp"), ('"yesterday"', "bad_timestamp"),
                      ('"2025-06-01"', "bad_timestamp"), ("[]", "wrong_type")],
        "variable": [("1", "wrong_type"), ("null", "wrong_type"), ('""', "out_of_range"), ('["t"]', "wrong_type"),
                     ("false", "wrong_type")],
        "value": [(text, "wrong_type") for text in ('"1.5"', "true", "null", "{}", "[1.5]")],
        "unit": [(text, "wrong_type") for text in ("1", "null", "false", '["C"]')],
    }
    for field, cases in wrong.items():
        for n, (text, code) in enumerate(cases):
            c.add(f"wrong_type_{field}_{n}", raw_reading(c.sid(), **{field: text}).encode(), reasons=[f"{field}: "],
                  codes=[code])
        c.add(f"missing_{field}", raw_reading(c.sid(), **{field: "<absent>"}).encode(),
              reasons=[f"{field}: is required"], codes=["missing_field"])
    for n, text in enumerate(("null", '"reading"', "42", "true", '""')):
        c.add(f"not_an_object_{n}", text.encode(), reasons=[NOT_OBJECT], codes=["not_object_or_array"])
    c.add("empty_payload", b"", reasons=["payload is empty"], codes=["empty_payload"])
    c.add("whitespace_payload", b" \n\t ", reasons=["payload is empty"], codes=["empty_payload"])
    # --- duplicate keys: the last one wins, as in Python's json
    sid = c.sid()
    c.add("duplicate_key_last_valid", raw_reading(sid, value='"x", "value": 2.5').encode(),
          rows=[stored(sid, value="2.5")], note="RFC 8259 leaves duplicate names to the parser; last wins")
    c.add("duplicate_key_last_invalid", raw_reading(c.sid(), value='2.5, "value": "x"').encode(),
          reasons=["value: Input should be a valid number"], codes=["wrong_type"])
    # --- arrays
    c.add("empty_array", b"[]", reasons=["payload is an empty array"], codes=["empty_array"])
    c.add("empty_array_spaced", b" [ \n ] ", reasons=["payload is an empty array"], codes=["empty_array"])
    c.add("array_of_non_objects", b'[1, "x", null, true, []]',
          reasons=[f"element {n}: {NOT_OBJECT}" for n in range(5)], codes=["not_object_or_array"] * 5)
    sid = c.sid()
    elements = (raw_reading(sid), "1", raw_reading(sid, variable='"u"', value="true"), raw_reading(sid, variable='"w"'))
    c.add("array_mixed", ("[" + ", ".join(elements) + "]").encode(),
          rows=[stored(sid), stored(sid, variable="w")],
          reasons=[f"element 1: {NOT_OBJECT}", "element 2: value: Input should be a valid number"],
              codes=["not_object_or_array", "wrong_type"])
    c.add("array_trailing_comma", f"[{raw_reading(c.sid())},]".encode(), reasons=[NOT_JSON], codes=["not_json"])
    # --- surrogates and long strings
    c.add("lone_high_surrogate", raw_reading(c.sid(), variable='"\\ud800"').encode(), reasons=[NOT_JSON],
          codes=["not_json"])
    c.add("lone_low_surrogate", raw_reading(c.sid(), variable='"x\\udc00"').encode(), reasons=[NOT_JSON],
          codes=["not_json"])
    sid = c.sid()
    c.add("escaped_surrogate_pair", raw_reading(sid, variable='"\\ud83d\\ude00"').encode(),
          rows=[stored(sid, variable="\U0001f600")])
    # --- timestamps
    timestamp_cases: tuple[tuple[str, str, str | None], ...] = (  # code None: stored
        ("offset_plus_14", "2025-06-01T12:00:00+14:00", None),
        ("offset_minus_12", "2025-06-01T12:00:00-12:00", None),
        ("offset_plus_05_45", "2025-06-01T12:00:00.5+05:45", None),
        ("offset_plus_24", "2025-06-01T12:00:00+24:00", "bad_timestamp"),
        ("leap_second", "2016-12-31T23:59:60Z", "bad_timestamp"),
        # Before BRIDGE_MIN_TIMESTAMP (2020-01-01): a clock that was never set.
        ("year_0001", "0001-01-01T00:00:00Z", "past_timestamp"),
        ("year_0001_plus_1h", "0001-01-01T00:00:00+01:00", "past_timestamp"),
        ("year_9999", "9999-12-31T23:59:59Z", "future_timestamp"),
        ("microseconds", "2025-06-01T12:00:00.000001Z", None),
        ("month_13", "2025-13-01T12:00:00Z", "bad_timestamp"),
        ("february_30", "2025-02-30T12:00:00Z", "bad_timestamp"),
    )
    for name, text, refused_as in timestamp_cases:
        sid = c.sid()
        payload = raw_reading(sid, timestamp=json.dumps(text)).encode()
        if refused_as is None:
            c.add(f"timestamp_{name}", payload, rows=[stored(sid, timestamp=text)])
        else:
            c.add(f"timestamp_{name}", payload, reasons=["timestamp: "], codes=[refused_as])
    # --- topics
    sid = c.sid()
    c.add("topic_leading_zero", raw_reading(sid).encode(), topic=f"sensors/0{sid}/readings", reasons=["topic: "],
          codes=["bad_topic"])
    c.add("topic_sensor_mismatch", raw_reading(c.sid() + 1).encode(),
          reasons=["does not match the topic's sensor id"], codes=["topic_mismatch"])
    sid = c.sid()
    c.add("extra_fields_ignored", raw_reading(sid, extra='{"nested": [1, 2, {"x": null}]}', more='"y"').encode(),
          rows=[stored(sid)])
    # --- revision (optional, default 0): a JSON integer 0 ... 2147483647, nothing coerced
    for name, text in (("revision_3", "3"), ("revision_max", "2147483647")):
        sid = c.sid()
        c.add(name, raw_reading(sid, revision=text).encode(), rows=[stored(sid, revision=int(text))])
    for name, text in (("revision_2_pow_31", "2147483648"), ("revision_negative", "-1")):
        c.add(name, raw_reading(c.sid(), revision=text).encode(), reasons=["revision: Input should be"],
              codes=["out_of_range"])
    for n, text in enumerate(('"1"', "1.0", "true", "null", "1e2")):
        c.add(f"wrong_type_revision_{n}", raw_reading(c.sid(), revision=text).encode(),
              reasons=["revision: Input should be a valid integer"], codes=["wrong_type"])
    # A device whose clock was never set (no RTC battery): before BRIDGE_MIN_TIMESTAMP.
    c.add("timestamp_unix_epoch", raw_reading(c.sid(), timestamp='"1970-01-01T00:00:00Z"').encode(),
          reasons=["BRIDGE_MIN_TIMESTAMP"], codes=["past_timestamp"])
    return c


def _large(sensor_id: int, size: int) -> bytes:
    """A valid reading carrying an unknown field of `size` characters."""
    return raw_reading(sensor_id, extra=json.dumps("x" * size)).encode()


def _array_of(sensor_id: int, count: int) -> bytes:
    """An array of `count` valid readings of one sensor."""
    return ("[" + ", ".join(raw_reading(sensor_id, variable=f'"v{n}"') for n in range(count)) + "]").encode()


def write_small(folder: Path = HERE) -> None:
    """Write the committed files: cases/*.bin for the small cases, and cases.json."""
    corpus = build()
    (folder / "cases").mkdir(exist_ok=True)
    for name, payload in corpus.payloads.items():
        if len(payload) > SMALL_BYTES:
            raise ValueError(f"case {name} is {len(payload)} bytes; generate it at test time instead")
        (folder / "cases" / f"{name}.bin").write_bytes(payload)
    text = json.dumps(corpus.entries, indent=1, ensure_ascii=True) + "\n"
    (folder / "cases.json").write_text(text, encoding="ascii")


def write_large(folder: Path) -> None:
    """Write the generated (large) cases into folder/cases/."""
    (folder / "cases").mkdir(exist_ok=True)
    for name, make in build().large.items():
        (folder / "cases" / f"{name}.bin").write_bytes(make())


def load(large_folder: Path) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Every case with its payload; generated cases are written to `large_folder` first."""
    write_large(large_folder)
    entries = json.loads((HERE / "cases.json").read_text(encoding="ascii"))
    for entry in entries:
        folder = large_folder if entry.get("generated") else HERE
        yield entry, (folder / entry["file"]).read_bytes()


if __name__ == "__main__":
    write_small()
