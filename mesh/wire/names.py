"""Room and user names: which are valid, as patterns that every regex engine reads alike.

Python's `$` also matches just before a final newline, and msgspec checks a `pattern`
with `re.search`, so a plain `^...$` lets "lobby\\n" through. Each pattern here ends in
`$(?!\\n)`: the end of the text, not a newline before it. JSON Schema's (ECMAScript) `$`
already means only the end, where the lookahead always holds, so the same text serves the
msgspec schemas, the OpenAPI document and Python code (which matches with `fullmatch`).
"""

import re
from typing import Final

ROOM_NAME_LENGTH_MAX: Final = 64
USER_NAME_LENGTH_MAX: Final = 64
_END: Final = r"$(?!\n)"
ROOM_NAME_PATTERN: Final = rf"^[A-Za-z0-9_.#-]{{1,{ROOM_NAME_LENGTH_MAX}}}{_END}"
# A user name is printed to other people: no white space, no control characters (C0,
# DEL, C1), no bidi controls or line separators that could reorder or break their lines.
USER_NAME_PATTERN: Final = (
    r"^[^\s\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
    rf"{{1,{USER_NAME_LENGTH_MAX}}}{_END}"
)
ROOM_NAME_RULE: Final = f"1-{ROOM_NAME_LENGTH_MAX} of A-Z a-z 0-9 _ . # -"
USER_NAME_RULE: Final = f"1-{USER_NAME_LENGTH_MAX} characters without spaces or control characters"
_ROOM_NAME: Final = re.compile(ROOM_NAME_PATTERN)
_USER_NAME: Final = re.compile(USER_NAME_PATTERN)
# Lone surrogates (a JSON token may carry "\ud800") cannot be encoded or printed; JSON
# Schema's regex engines refuse them in a pattern, so Python checks them on its own.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def is_room_name(text: str) -> bool:
    return _ROOM_NAME.fullmatch(text) is not None


def is_user_name(text: str) -> bool:
    return _USER_NAME.fullmatch(text) is not None and _SURROGATE.search(text) is None
