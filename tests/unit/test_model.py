"""bridge.model: the raw bytes of each array element (split_array) and of each reading of a delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.model import Delivery, Parsed, split_array


@pytest.mark.parametrize(
    ("payload", "elements"),
    [
        (b"[1,2,3]", [b"1", b"2", b"3"]),
        (b" \t[\n 1 ,\r\n\t2 ,3\n]\n ", [b"1", b"2", b"3"]),
        (b'[{"a" : [1, 2]} , "x,]"  ,null]', [b'{"a" : [1, 2]}', b'"x,]"', b"null"]),
        (b'[ {\n  "k": "\\"]"\n} ]', [b'{\n  "k": "\\"]"\n}']),
        ('["\u00e9", {"\u6e29": "\U0001f321"}]'.encode(), ['"\u00e9"'.encode(), '{"\u6e29": "\U0001f321"}'.encode()]),
        (b"[]", []),
        (b" [ \n\t ] ", []),
    ],
)
def test_split_array_returns_exact_raw_slices(payload: bytes, elements: list[bytes]) -> None:
    result = split_array(payload)

    assert result == elements
    for element in result:
        assert element in payload


@pytest.mark.parametrize("payload", [b"", b"{}", b"1", b"[1 2]", b"[1,]", b"[1,", b"\xff"])
def test_split_array_refuses_what_is_not_an_array(payload: bytes) -> None:
    with pytest.raises(ValueError):
        split_array(payload)


def delivery(payload: bytes, *, elements: tuple[bytes, ...] = ()) -> Delivery:
    return Delivery(mid=1, qos=1, generation=1, topic="sensors/5/readings", payload=payload,
                    received_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC), parsed=Parsed(elements=elements))


def test_a_single_object_is_its_own_one_reading() -> None:
    payload = b' {"sensor_id": 5} '

    assert delivery(payload).raw_readings() == (payload,)


def test_an_array_is_split_into_its_readings_when_validation_did_not_split_it() -> None:
    assert delivery(b' \n[{"a": 1}, {"b": [2, 3]}]').raw_readings() == [b'{"a": 1}', b'{"b": [2, 3]}']


def test_the_elements_validation_split_are_used_as_they_are() -> None:
    elements = (b'{"a": 1}', b'"kept"')

    assert delivery(b"[not split again]", elements=elements).raw_readings() == elements
