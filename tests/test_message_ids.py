"""Message ids sort in time order, never repeat, and never go back, whatever the wall clock does."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.message_ids import COUNTER_MAX, HybridClock, MessageId, is_message_id


@given(st.lists(st.integers(min_value=0, max_value=2**40), min_size=1, max_size=300))
def test_ids_strictly_increase_as_strings_and_values_whatever_the_clock(walls: list[int]) -> None:
    clock = HybridClock("n1")
    ids = [clock.next_id(wall) for wall in walls]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    texts = [str(i) for i in ids]
    assert texts == sorted(texts)
    assert [MessageId.parse(text) for text in texts] == ids


def test_a_spent_counter_runs_the_logical_time_ahead() -> None:
    clock = HybridClock("n1", time_ms=1000, counter=COUNTER_MAX)
    assert clock.next_id(1000) == MessageId(1001, 0, "n1")


def test_observing_a_later_id_moves_the_clock_past_it() -> None:
    clock = HybridClock("n1")
    clock.observe(MessageId(5000, 7, "n2"))
    assert clock.next_id(10) > MessageId(5000, 7, "n2")


def test_ids_from_different_nodes_at_the_same_instant_differ_and_order() -> None:
    a, b = HybridClock("a").next_id(42), HybridClock("b").next_id(42)
    assert a != b and str(a) < str(b)


@pytest.mark.parametrize("text", ["", "0193a1b2c3d40000", "0193a1b2c3d4000g.n1", "x" * 20])
def test_malformed_ids_are_refused(text: str) -> None:
    assert not is_message_id(text)
    with pytest.raises(ValueError):
        MessageId.parse(text)
