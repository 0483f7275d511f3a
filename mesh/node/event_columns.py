"""The columns a stored event is read from, in messages and hints alike: named and
ordered as RoomMessage's fields, so a row is RoomMessage(*row)."""

from typing import Final

from router.records import RoomMessage
from router.room_state import STATE_KINDS

EVENT_FIELDS: Final = RoomMessage.__struct_fields__
EVENT_COLUMNS: Final = ", ".join(EVENT_FIELDS)


def event_columns_of(table_alias: str) -> str:
    return ", ".join(f"{table_alias}.{field}" for field in EVENT_FIELDS)


# The rows of state events (router/room_state.py): the very text of the partial index
# messages_of_state, which SQLite uses only for a query that names it alike.
STATE_KINDS_SQL: Final = "kind IN ({})".format(
    ", ".join(f"'{kind}'" for kind in sorted(STATE_KINDS))
)
