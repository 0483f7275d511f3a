"""Merging what several replicas returned for one page, and finding what each one lacks.

Each replica answers the same query (a page forward from `after`, backward from `before`,
or the newest page), cut short by count or by bytes (router/page_bytes.py). A replica's
answer that was cut short speaks only for the range up to its last message (down to its
first, paging backward): beyond that point another replica's messages may not be all
there are. So the merged page is the union ordered by id, up to the nearest such point
over all the answers, cut to the limit and to the byte budget on the side the query pages
towards; its cursor then resumes from the point every replica spoke for, and walking the
pages hides nothing. A replica lacks a message when the message lies inside the range
that replica's answer covers yet is not in its answer; those are read-repaired.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import reduce

from router.event_rules import MessageState, Relations, merge, relations_of, state_of
from router.page_bytes import cut_page
from router.records import RoomMessage


@dataclass(frozen=True, slots=True)
class ReplicaPage:
    messages: list[RoomMessage]  # oldest first
    more: bool
    late: list[RoomMessage] = field(default_factory=list)  # late arrivals it recorded
    relations: list[Relations] = field(default_factory=list)  # what they made of `messages`


@dataclass(frozen=True, slots=True)
class MergedPage:
    messages: list[RoomMessage]
    more: bool
    repairs: dict[str, list[RoomMessage]]  # replica -> messages it is missing
    late: list[RoomMessage] = field(default_factory=list)  # oldest first, not in `messages`
    # What relations made of the chosen messages, over every replica's answer (router/
    # event_rules.py merge): only messages they touched.
    relations: dict[str, MessageState] = field(default_factory=dict)


def merge_pages(
    pages: dict[str, ReplicaPage], *, forward: bool, limit: int, bytes_max: int | None = None
) -> MergedPage:
    """Merge replica answers to one query. `forward` is true for queries with `after`;
    `bytes_max` bounds the merged messages by router/page_bytes.py message_bytes."""
    horizon = _horizon(pages.values(), forward=forward)
    # The horizon cuts before twins merge: a send must show from a page that spoke for it.
    ordered = _once_per_send(
        message
        for page in pages.values()
        for message in page.messages
        if horizon is None or (message.id <= horizon if forward else message.id >= horizon)
    )
    chosen = ordered[:limit] if forward else ordered[-limit:]
    relations = _merged_relations(pages.values(), chosen)
    cut = False
    if bytes_max is not None:
        made = {
            message_id: relations_of(message_id, state) for message_id, state in relations.items()
        }
        told = {message_id: made for message_id, made in made.items() if made is not None}
        chosen, cut = cut_page(chosen, bytes_max, keep_oldest=forward, relations=told)
    more = cut or len(ordered) > limit or any(page.more for page in pages.values())
    repairs: dict[str, list[RoomMessage]] = {}
    for replica, page in pages.items():
        held = {message.id for message in page.messages}
        missing = [
            message
            for message in chosen
            if message.id not in held and _covers(page, message.id, forward=forward)
        ]
        if missing:
            repairs[replica] = missing
    shown = {message.key for message in chosen}
    late = _once_per_send(message for page in pages.values() for message in page.late)
    late = [message for message in late if message.key not in shown]
    chosen_ids = {message.id for message in chosen}
    kept = {key: state for key, state in relations.items() if key in chosen_ids}
    return MergedPage(chosen, more, repairs, late, kept)


def _merged_relations(
    pages: Iterable[ReplicaPage], chosen: list[RoomMessage]
) -> dict[str, MessageState]:
    by_id = {message.id: message for message in chosen}
    told: dict[str, list[MessageState]] = {}
    for page in pages:
        for made in page.relations:
            message = by_id.get(made.id)
            if message is not None:
                told.setdefault(made.id, []).append(state_of(message, made))
    return {message_id: reduce(merge, states) for message_id, states in told.items()}


def _horizon(pages: Iterable[ReplicaPage], *, forward: bool) -> str | None:
    """The last id every answer speaks for (the first, paging backward): the nearest end
    of an answer that was cut short; None when none was. A cut-short answer without
    messages speaks for nothing and bounds nothing (a replica never sends one: a page
    always holds at least one message)."""
    ends = [
        page.messages[-1].id if forward else page.messages[0].id
        for page in pages
        if page.more and page.messages
    ]
    if not ends:
        return None
    return min(ends) if forward else max(ends)


def _once_per_send(messages: Iterable[RoomMessage]) -> list[RoomMessage]:
    """Each message once, by id. Twins (one send stored under two ids by two
    coordinators, until replicas converge) show once, under the smaller id, the one every
    replica will keep."""
    union: dict[str, RoomMessage] = {}
    for message in messages:
        held = union.setdefault(message.id, message)
        if held.body and not message.body:
            union[message.id] = message  # a copy a delete has erased: no reader gets the text
    by_send: dict[tuple[str, str], RoomMessage] = {}
    for key in sorted(union):
        by_send.setdefault(union[key].key, union[key])
    return sorted(by_send.values(), key=lambda message: message.id)


def _covers(page: ReplicaPage, message_id: str, *, forward: bool) -> bool:
    """Whether a replica's answer speaks for this id: had it held it, it would have said so."""
    if not page.more:
        return True  # the answer reached the end of the queried range
    if not page.messages:
        return False
    if forward:
        return message_id < page.messages[-1].id
    return message_id > page.messages[0].id
