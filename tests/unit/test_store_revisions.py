"""bridge.store.revisions: what each version of one key becomes, in arrival order (README, "Corrections")."""

from __future__ import annotations

import itertools

import pytest

from bridge.store.revisions import STORED_BEFORE, Verdict, Version, resolve

R0, R1, R2, R3 = (Version(float(n), "C", n) for n in range(4))
R2_OTHER = Version(2.5, "C", 2)


def test_the_first_version_of_a_new_key_is_stored() -> None:
    result = resolve(None, (), [R0])

    assert result.verdicts == [Verdict.STORED]
    assert (result.final, result.replaced, result.against) == (0, [], [None])


def test_a_higher_revision_replaces_the_stored_one() -> None:
    result = resolve(R0, (), [R1])

    assert result.verdicts == [Verdict.REVISED]
    assert (result.final, result.replaced, result.against) == (0, [STORED_BEFORE], [R0])


def test_copies_of_the_current_or_a_replaced_version_are_duplicates() -> None:
    result = resolve(R2, [R0, R1], [R2, R1, R0])

    assert result.verdicts == [Verdict.DUPLICATE] * 3
    assert (result.final, result.replaced) == (STORED_BEFORE, [])


def test_the_same_revision_with_another_value_is_a_conflict() -> None:
    assert resolve(R2, (), [R2_OTHER]).verdicts == [Verdict.CONFLICT]
    assert resolve(R2, (), [Version(2.0, "K", 2)]).verdicts == [Verdict.CONFLICT], "the unit counts too"


def test_a_lower_revision_never_current_is_stale() -> None:
    result = resolve(R2, [R0], [R1])

    assert result.verdicts == [Verdict.STALE]
    assert result.against == [R2]


def test_within_a_batch_each_version_is_judged_against_the_one_before_it() -> None:
    result = resolve(None, (), [R0, R2, R1, R2, R2_OTHER, R0, R3])

    assert result.verdicts == [Verdict.STORED, Verdict.REVISED, Verdict.STALE, Verdict.DUPLICATE, Verdict.CONFLICT,
                               Verdict.DUPLICATE, Verdict.REVISED]
    assert result.replaced == [0, 1], "R0, then R2, stopped being current"
    assert result.final == 6
    assert result.against == [None, R0, R2, R2, R2, R2, R2]


@pytest.mark.parametrize("order", list(itertools.permutations([R0, R1, R2, R3])))
def test_the_highest_revision_ends_current_and_every_other_is_replaced_or_stale(order: tuple[Version, ...]) -> None:
    result = resolve(None, (), list(order))

    assert order[result.final] == R3
    replaced = {order[index] for index in result.replaced}
    stale = {version for version, verdict in zip(order, result.verdicts, strict=True) if verdict is Verdict.STALE}
    assert replaced | stale | {R3} == {R0, R1, R2, R3}
    assert not replaced & stale
    assert [version.revision for version in (order[index] for index in result.replaced)] == sorted(
        version.revision for version in replaced), "replaced in rising order"


def test_one_batch_and_one_batch_each_agree() -> None:
    arrivals = [R1, R0, R3, R2_OTHER, R1]
    whole = resolve(None, (), arrivals)

    current: Version | None = None
    history: list[Version] = []
    verdicts = []
    for arrival in arrivals:
        step = resolve(current, history, [arrival])
        verdicts += step.verdicts
        if step.final == 0:
            history += [current] if current is not None else []
            current = arrival

    assert verdicts == whole.verdicts
    assert current == arrivals[whole.final]
    assert history == [arrivals[index] for index in whole.replaced]
