"""The columns a stored event is read from, in messages and hints alike: named and
ordered as RoomMessage's fields, so a row is RoomMessage(*row)."""

from typing import Final

from router.records import RoomMessage

EVENT_FIELDS: Final = RoomMessage.__struct_fields__
EVENT_COLUMNS: Final = ", ".join(EVENT_FIELDS)


def event_columns_of(table_alias: str) -> str:
    return ", ".join(f"{table_alias}.{field}" for field in EVENT_FIELDS)
