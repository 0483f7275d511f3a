"""The ids a room's sessions were given: kept by time, as far back as a catch-up reads,
the latest few thousand beyond that too, with a hard bound whose early evictions are
counted."""

from router.delivered_ids import DeliveredIds
from router.limits import PAST_REACH_IDS_MAX
from router.message_ids import at_time
from router.stats import EngineStatistics


def id_at(time_ms: int, counter: int = 0) -> str:
    return f"{time_ms:012x}{counter:04x}.n1"


def test_an_id_is_given_once_until_it_is_long_past_reach() -> None:
    delivered = DeliveredIds(100_000, EngineStatistics())
    assert delivered.first_time(id_at(1_000))
    assert not delivered.first_time(id_at(1_000))
    delivered.forget_before(1_001)
    assert not delivered.first_time(id_at(1_000)), "past reach, and still among the latest"
    for counter in range(PAST_REACH_IDS_MAX):
        delivered.first_time(id_at(2_000, counter))
    delivered.forget_before(2_001)
    assert delivered.first_time(id_at(1_000)), "pushed out by the ids after it"


def test_forgetting_goes_by_time_not_by_count() -> None:
    delivered = DeliveredIds(1_000_000, EngineStatistics())
    for counter in range(50_000):
        delivered.first_time(id_at(5_000, counter))
    delivered.first_time(id_at(9_000))
    delivered.forget_before(5_000)
    assert len(delivered) == 50_001, "all within reach of a catch-up are kept"
    delivered.forget_before(5_001)
    assert len(delivered) == 1 + PAST_REACH_IDS_MAX
    assert not delivered.first_time(id_at(9_000))
    assert not delivered.first_time(id_at(5_000, 49_999)), "the latest past reach"
    assert delivered.first_time(id_at(5_000, 0)), "long past reach"


def test_one_given_out_of_order_waits_for_its_turn() -> None:
    delivered = DeliveredIds(100, EngineStatistics())
    for time_ms in (2_000, 1_000, 3_000):  # a late arrival in the middle
        delivered.first_time(id_at(time_ms))
    delivered.forget_before(1_500)
    assert not any(delivered.first_time(id_at(t)) for t in (1_000, 2_000, 3_000))


def test_the_hard_bound_evicts_the_oldest_and_counts_it() -> None:
    stats = EngineStatistics()
    delivered = DeliveredIds(3, stats)
    for time_ms in range(1, 6):
        delivered.first_time(id_at(time_ms))
    assert len(delivered) == 3 and stats.delivered_ids_evicted == 2
    assert delivered.first_time(id_at(1)), "evicted early: a repeat would pass (counted)"
    assert not delivered.first_time(id_at(5))


def test_text_that_is_not_an_id_is_put_past_reach_first() -> None:
    delivered = DeliveredIds(10, EngineStatistics())
    delivered.first_time("not an id")
    delivered.first_time(at_time(10_000))
    delivered.forget_before(1)
    assert not delivered.first_time(at_time(10_000))
