"""Hypothesis strategies shared by the property tests."""

from hypothesis import strategies as st

from peers.records import MemberRecord

node_ids = st.sampled_from(["n1", "n2", "n3", "n4"])
addresses = st.sampled_from(["127.0.0.1:7200", "127.0.0.1:7201", "10.0.0.9:7200"])
incarnations = st.integers(min_value=0, max_value=5)


@st.composite
def member_records(draw: st.DrawFn, node_id: str | None = None) -> MemberRecord:
    return MemberRecord(
        id=node_id if node_id is not None else draw(node_ids),
        address=draw(addresses),
        incarnation=draw(incarnations),
        left=draw(st.booleans()),
    )
