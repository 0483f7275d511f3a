"""A schema validator's complaint about a request, as one sentence a person can act on.

msgspec says `Expected \\`str\\` of length <= 64 - at \\`$.room\\``; a user should read
"room must be at most 64 characters"."""

import re

from mesh.wire.bodies import TEXT_RULE
from mesh.wire.names import ROOM_NAME_RULE, USER_NAME_RULE

# Fields whose pattern has a rule in words.
FIELD_RULES = {
    "room": ROOM_NAME_RULE,
    "user": USER_NAME_RULE,
    "rooms": ROOM_NAME_RULE,
    "body": TEXT_RULE,
}
TYPE_WORDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
    "bytes": "bytes",
}
# Messages beyond this are cut: they may quote what the client sent.
QUOTED_MAX = 80

_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_LENGTH = re.compile(r"^Expected `(?:str|array)` of length (?P<op><=|>=) (?P<n>\d+)$")
_BOUND = re.compile(r"^Expected `(?:int|float)` (?P<op><=|>=|<|>) (?P<n>[-\d.e]+)$")
_TYPE = re.compile(r"^Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_INVALID = re.compile(r"^Invalid (?:enum )?value (?P<value>.+)$")
_BOUND_WORDS = {"<=": "at most", ">=": "at least", "<": "less than", ">": "more than"}


def in_words(complaint: str, field: str | None = None) -> str:
    """The complaint as a sentence naming the field (from the complaint's path, or
    `field`); unknown shapes keep the validator's words after the field's name."""
    match = _AT.match(complaint)
    assert match is not None  # the pattern matches any text
    what, field = match["what"], field or _field_name(match["path"])
    if found := _MISSING.match(what):
        return f"the request has no {found['field']}"
    subject = field or "the request"
    if found := _LENGTH.match(what):
        unit = "characters" if "str" in what else "items"
        return f"{subject} must be {_BOUND_WORDS[found['op']]} {found['n']} {unit} long"
    if found := _BOUND.match(what):
        return f"{subject} must be {_BOUND_WORDS[found['op']]} {found['n']}"
    if what.startswith("Expected `str` matching regex"):
        rule = FIELD_RULES.get(_base_field(field))
        return f"{subject} must be {rule}" if rule else f"{subject} has characters it may not have"
    if found := _TYPE.match(what):
        want = " or ".join(TYPE_WORDS.get(kind, kind) for kind in found["want"].split(" | "))
        return f"{subject} must be {want}, not {TYPE_WORDS.get(found['got'], found['got'])}"
    if found := _INVALID.match(what):
        return f"{subject} cannot be {found['value'][:QUOTED_MAX]}"
    return f"{subject}: {what[:QUOTED_MAX]}"


def _field_name(path: str | None) -> str:
    """`.rooms[0]` -> `rooms[0]`, `.type` -> `the request's type`."""
    if not path:
        return ""
    name = path.removeprefix(".")
    return "the request's type" if name == "type" else name


def _base_field(field: str) -> str:
    return field.split("[", 1)[0].rsplit(".", 1)[-1]
