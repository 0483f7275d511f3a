"""Other people's text made safe to print: one line, and nothing that can steer a terminal.

Message bodies, user names and room names come from other users. Printed raw, an ESC
starts an escape sequence (move the cursor, rewrite the screen, set the window title),
BEL rings, a C1 control (U+0080-U+009F) acts as ESC on some terminals, and a bidi
override or isolate reorders the rest of the line, so the text shown is not the text
sent. Everything printed to a person that another user wrote goes through
`terminal_safe` (the CLI's `history` and `tail`, `chat --plain`, the chat tool):

- a line break (LF, or CR LF) becomes `⏎`, so a message stays on its own line;
- tab and CR become `\\t` and `\\r`; every other C0 control, DEL and C1 control `\\xNN`;
- bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), the line and
  paragraph separators (U+2028, U+2029) and lone surrogates become `\\uNNNN`.

Everything else is printed as sent. `json_safe` escapes the same characters in a JSON
document with JSON's own `\\uNNNN`, so `--json` output stays exact JSON.
"""

import re
from typing import Final

LINE_BREAK_MARK: Final = "⏎"
# The characters no terminal should get from another user, as one regex class.
_UNSAFE_CLASS: Final = (
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE: Final = re.compile("\r\n|" + _UNSAFE_CLASS)
_NAMED: Final = {"\n": LINE_BREAK_MARK, "\r\n": LINE_BREAK_MARK, "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    named = _NAMED.get(found)
    if named is not None:
        return named
    code = ord(found)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def terminal_safe(text: str) -> str:
    """`text` as one line without control, bidi or unprintable characters (see above)."""
    return _UNSAFE.sub(_escape, text)


# json.dumps already escapes C0 controls; these are what it leaves raw (with
# ensure_ascii=False), and outside strings a JSON document has none of them.
_JSON_UNSAFE: Final = re.compile(_UNSAFE_CLASS)


def json_safe(document: str) -> str:
    """A JSON document from json.dumps with the unsafe characters as `\\uNNNN` escapes;
    it decodes to the same value."""
    return _JSON_UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", document)
