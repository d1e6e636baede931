"""The message plan: exact fractions of duplicates and invalid messages, reproducible, contract-valid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.model import Limits
from bridge.validation import parse_message
from simulator.readings import VARIABLES, Kind, MessageFactory, plan_kinds

NOW = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)


def build_all(kinds: list[Kind], *, array: int = 1, sensors: int = 50, seed: int = 1) -> list[Any]:
    factory = MessageFactory(kinds, sensors=sensors, array=array, run_id="rtest123", seed=seed)
    return [factory.build(i, lambda: NOW) for i in range(len(kinds))]


@pytest.mark.parametrize(("messages", "duplicates", "invalid"), [(5000, 0.1, 0.05), (500, 0.2, 0.1), (7, 0.3, 0.0)])
def test_mix_has_exactly_the_requested_fractions(messages: int, duplicates: float, invalid: float) -> None:
    kinds = plan_kinds(messages, duplicates=duplicates, invalid=invalid, seed=3)
    assert len(kinds) == messages
    assert kinds.count(Kind.DUPLICATE) == round(messages * duplicates)
    assert kinds.count(Kind.INVALID) == round(messages * invalid)
    assert kinds[0] is Kind.UNIQUE or Kind.DUPLICATE not in kinds[: kinds.index(Kind.UNIQUE)]


def test_mix_is_shuffled_and_reproducible_with_the_seed() -> None:
    first = plan_kinds(1000, duplicates=0.1, invalid=0.1, seed=5)
    assert first == plan_kinds(1000, duplicates=0.1, invalid=0.1, seed=5)
    assert first != plan_kinds(1000, duplicates=0.1, invalid=0.1, seed=6)
    assert Kind.INVALID in first[:500] and Kind.INVALID in first[500:]  # spread, not a block at the end


def test_a_duplicate_never_comes_before_any_unique_message() -> None:
    for seed in range(50):
        kinds = plan_kinds(4, duplicates=0.5, invalid=0.25, seed=seed)
        assert kinds.index(Kind.UNIQUE) < kinds.index(Kind.DUPLICATE)


def test_fractions_that_leave_no_unique_message_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one unique"):
        plan_kinds(10, duplicates=0.5, invalid=0.5, seed=1)


def test_messages_obey_the_contract_exactly_as_planned() -> None:
    kinds = plan_kinds(600, duplicates=0.1, invalid=0.1, seed=2)
    messages = build_all(kinds)
    limits = Limits()
    uniques = {m.payload for m in messages if m.kind is Kind.UNIQUE}
    for message in messages:
        parsed = parse_message(message.topic, message.payload, now=NOW, limits=limits)
        if message.kind is Kind.INVALID:
            assert parsed.rows == () and len(parsed.rejections) == 1, message.payload
            assert b"#rtest123" in message.payload  # the marker finds it in rejected_messages
        else:
            assert parsed.rejections == () and len(parsed.rows) == 1
        if message.kind is Kind.DUPLICATE:
            assert message.payload in uniques and message.readings == ()


def test_every_reading_has_its_own_key_and_a_realistic_unit() -> None:
    messages = build_all([Kind.UNIQUE] * 300, array=10, sensors=3)
    keys = [key for m in messages for key, _ in m.readings]
    assert len(keys) == len(set(keys)) == 3000
    units = {v.name: v.unit for v in VARIABLES}
    assert {"temperature", "humidity", "pressure", "co2"} <= set(units)
    for message in messages:
        parsed = parse_message(message.topic, message.payload, now=NOW + timedelta(seconds=1), limits=Limits())
        assert len(parsed.rows) == 10 and not parsed.rejections
        for row in parsed.rows:
            assert row.variable.endswith("#rtest123")
            assert units[row.variable.split("#")[0]] == row.unit


def test_values_are_the_same_for_the_same_seed() -> None:
    first = [m.payload for m in build_all([Kind.UNIQUE] * 20, seed=9)]
    assert first == [m.payload for m in build_all([Kind.UNIQUE] * 20, seed=9)]
