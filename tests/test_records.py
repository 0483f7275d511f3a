"""The membership merge is a join: order, grouping and repetition of merges never matter."""

from hypothesis import given
from hypothesis import strategies as st

from peers.records import MemberRecord, merge_record, merge_tables
from tests.strategies import member_records

same_node = member_records(node_id="n1")


@given(same_node, same_node)
def test_merge_is_commutative(a: MemberRecord, b: MemberRecord) -> None:
    assert merge_record(a, b) == merge_record(b, a)


@given(same_node, same_node, same_node)
def test_merge_is_associative(a: MemberRecord, b: MemberRecord, c: MemberRecord) -> None:
    assert merge_record(merge_record(a, b), c) == merge_record(a, merge_record(b, c))


@given(same_node)
def test_merge_is_idempotent(a: MemberRecord) -> None:
    assert merge_record(a, a) == a


@given(same_node, same_node)
def test_newest_incarnation_wins(a: MemberRecord, b: MemberRecord) -> None:
    merged = merge_record(a, b)
    assert merged.incarnation == max(a.incarnation, b.incarnation)
    if a.incarnation != b.incarnation:
        assert merged == (a if a.incarnation > b.incarnation else b)


@given(same_node, same_node)
def test_left_is_final_within_an_incarnation(a: MemberRecord, b: MemberRecord) -> None:
    merged = merge_record(a, b)
    if a.incarnation == b.incarnation and (a.left or b.left):
        assert merged.left


@given(st.lists(member_records(), max_size=12), st.randoms())
def test_tables_converge_whatever_the_order(records: list[MemberRecord], rng) -> None:
    shuffled = list(records)
    rng.shuffle(shuffled)
    half = len(shuffled) // 2
    in_one_go = merge_tables({}, records)
    in_two_views = merge_tables(merge_tables({}, shuffled[:half]), shuffled[half:])
    twice = merge_tables(in_one_go, records)
    assert in_one_go == in_two_views == twice
    # Exactly one record per node: a node never shows up twice.
    assert sorted(in_one_go) == sorted({record.id for record in records})
