"""The chat tool's key bindings: the defaults, and a person's keys.toml over them.

    # ~/.config/meshchat/keys.toml ($XDG_CONFIG_HOME/meshchat/keys.toml)
    next_room = ["ctrl+n", "alt+right"]
    previous_room = "ctrl+b"

An action named in the file gets exactly the keys given there; the others keep their
defaults. A file that cannot be read, an unknown action or a bad key is told in one line
at start, and the defaults stand for what it got wrong: a typo never costs the keyboard.
"""

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from textual._xterm_parser import XTermParser
from textual.keys import Keys, _character_to_key, key_to_character

ROOM_KEYS_MAX = 9

# Action name (in keys.toml) -> (the app's action, what it does, its default keys).
ACTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "next_room": ("step_room(1)", "next room", ("ctrl+n", "alt+right")),
    "previous_room": ("step_room(-1)", "previous room", ("ctrl+p", "alt+left")),
    **{
        f"room_{n}": (f"jump_room({n})", f"room {n}", (f"alt+{n}",))
        for n in range(1, ROOM_KEYS_MAX + 1)
    },
    "scroll_up": ("scroll_log('page_up')", "scroll the messages up a page", ("pageup",)),
    "scroll_down": ("scroll_log('page_down')", "scroll the messages down a page", ("pagedown",)),
    "scroll_top": ("scroll_log('home')", "to the oldest message loaded", ("ctrl+home",)),
    "scroll_bottom": ("scroll_log('end')", "to the newest message", ("ctrl+end",)),
    "help": ("help", "the keys and commands", ("f1",)),
    "quit": ("quit", "quit", ("ctrl+q",)),
}
MODIFIERS = frozenset({"ctrl", "alt", "shift", "meta", "super", "hyper"})
# Named keys, and the names Textual gives printable characters ("slash", "space").
_NAMED_KEYS = frozenset(key.value for key in Keys if "+" not in key.value) | frozenset(
    _character_to_key(chr(code)) for code in range(0x20, 0x7F)
)


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")) / ".config")
    return Path(base).expanduser() / "meshchat" / "keys.toml"


@dataclass(frozen=True, slots=True)
class KeyMap:
    keys: dict[str, tuple[str, ...]]  # action name -> keys, every action present
    problem: str | None = None  # one line for the screen, if the file had mistakes


def key_problem(key: str) -> str | None:
    """Why `key` is no key Textual can report ("ctrl+", "hyper+zz"); None if it is one."""
    *modifiers, base = key.split("+")
    if unknown := [modifier for modifier in modifiers if modifier not in MODIFIERS]:
        return f"{key!r}: {unknown[0]!r} is no modifier ({', '.join(sorted(MODIFIERS))})"
    if len(base) == 1 or base in _NAMED_KEYS or key_to_character(base) is not None:
        return None
    return f"{key!r}: {base!r} is no key name (e.g. a, f1, pageup, left, home, tab)"


def default_key_map() -> KeyMap:
    return KeyMap({name: action[2] for name, action in ACTIONS.items()})


def load_key_map(path: Path) -> KeyMap:
    defaults = default_key_map().keys
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return KeyMap(defaults)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        return KeyMap(defaults, f"{path}: not read ({error}); the default keys stand")
    problems: list[str] = []
    keys = dict(defaults)
    for name, given in document.items():
        if name not in ACTIONS:
            problems.append(f"unknown action {name!r}")
            continue
        listed = [given] if isinstance(given, str) else given
        if not isinstance(listed, list) or not all(isinstance(key, str) for key in listed):
            problems.append(f"{name}: give a key or a list of keys, as strings")
            continue
        bad = [problem for key in listed if (problem := key_problem(key.strip().lower()))]
        if bad:
            problems.append(f"{name}: {'; '.join(bad)}")
            continue
        keys[name] = tuple(key.strip().lower() for key in listed)
    if not problems:
        return KeyMap(keys)
    told = "; ".join(problems)
    return KeyMap(keys, f"{path}: {told} (the default keys stand for those; see /help)")


@cache
def escape_key(character: str) -> str | None:
    """The key Textual reports for ESC then `character`, as a terminal without extended
    keys (tmux, screen) sends Alt-`character`; None if that is the plain alt+ key.
    Textual reads ESC 1 as macOS's Option-1 (the key for "¡"), so Alt-1 needs both."""
    # Textual's own parser (private), so the key is what this Textual version reports.
    events = list(XTermParser().feed("\x1b" + character))
    if len(events) == 1 and (key := getattr(events[0], "key", None)):
        return None if key == f"alt+{character}" else str(key)
    return None


def bound_keys(keys: tuple[str, ...]) -> str:
    """The keys to bind for an action: each alt+X also as the key ESC X arrives as."""
    bound = list(keys)
    for key in keys:
        modifier, _, character = key.partition("+")
        if modifier == "alt" and len(character) == 1 and (also := escape_key(character)):
            bound.append(also)
    return ",".join(dict.fromkeys(bound))


def keys_help(key_map: KeyMap) -> list[str]:
    """One line per action: its keys, then what it does."""
    return [
        f"{' / '.join(key_map.keys[name]) or '(none)'}: {description}"
        for name, (_, description, _) in ACTIONS.items()
    ]
