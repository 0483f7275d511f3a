"""Edits, deletes and reactions on the lines the chat tool shows.

A history page brings each message's view as the room's replicas hold it; after that,
`relation` events arrive live and are folded into the line by the same rules the nodes
keep (docs/events.md): the latest edit by (time, id) from the sender, a delete from the
sender that is final, and per (key, user) the latest reaction or unreaction. A relation
whose target is not on screen is left to the next history page, which brings its view.
"""

from dataclasses import dataclass, field

from mesh.wire.protocol import Message, RelationEvent

# What a mark from a history page is ordered by: before every live event.
FROM_HISTORY = (0, "")


@dataclass(slots=True)
class Changes:
    """What relations made of one line."""

    edited_at: tuple[int, str] | None = None  # the shown edit's (time, id)
    deleted_by: str | None = None
    # (key, user) -> ((time, id), stands): a reaction that stands, or one taken back
    marks: dict[tuple[str, str], tuple[tuple[int, str], bool]] = field(default_factory=dict)

    def reactions(self) -> dict[str, int]:
        """key -> how many users' reactions stand, in key order."""
        counts: dict[str, int] = {}
        for (key, _), (_, stands) in sorted(self.marks.items()):
            if stands:
                counts[key] = counts.get(key, 0) + 1
        return counts

    def reacted(self, user: str) -> set[str]:
        return {key for (key, who), (_, stands) in self.marks.items() if stands and who == user}


def changes_of(message: Message) -> Changes:
    """What a message's view says relations made of it."""
    changes = Changes()
    if message.edited_at_ms is not None:
        changes.edited_at = (message.edited_at_ms, "")
    if message.deleted is not None:
        changes.deleted_by = message.deleted.by
    for key, users in message.reactions.items():
        for user in users:
            changes.marks[(key, user)] = (FROM_HISTORY, True)
    return changes


def fold(changes: Changes, sender: str, event: RelationEvent) -> str | None:
    """Fold a live relation into the changes of a line sent by `sender`; returns the new
    body for an edit that wins ("" for a delete), None when the body stays."""
    if changes.deleted_by is not None:
        return None  # final
    order = (event.time_ms, event.id)
    match event.kind:
        case "edit" if event.sender == sender:
            if changes.edited_at is None or changes.edited_at < order:
                changes.edited_at = order
                return event.body
        case "delete" if event.sender == sender:
            changes.deleted_by = event.sender
            changes.marks.clear()
            return ""
        case "reaction" | "unreaction" if event.key:
            held = changes.marks.get((event.key, event.sender))
            if held is None or held[0] < order:
                changes.marks[(event.key, event.sender)] = (order, event.kind == "reaction")
    return None
