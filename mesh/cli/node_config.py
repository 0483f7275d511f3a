"""A node's options from a TOML file and MESHCHAT_* variables, under its flags.

Every `meshchat node` option is a key of the file, spelled as the flag without its dashes
(`client-port = 7100`, `seed = ["10.0.0.1:7200"]`, `insecure-peers = true`), and a
variable of the environment (`MESHCHAT_CLIENT_PORT=7100`, `MESHCHAT_SEED=a:7200,b:7200`).
A flag beats a variable, which beats the file, which beats the default; a list given at a
higher level replaces the lower one's. The values are checked by the same argparse types
as the flags, so a file says no more and no less than a command line.
"""

import argparse
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from mesh.cli.help_format import examples
from mesh.node.doors.auth import load_secret
from mesh.node.doors.token_keys import read_key_set
from mesh.node.tls import server_context

CONFIG_FILE_BYTES_MAX: Final = 1 << 20
ENV_PREFIX: Final = "MESHCHAT_"
# The options a node cannot start without, wherever they come from.
REQUIRED: Final = ("id", "peer-port", "client-port", "data")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})
# Options that are about the configuration itself, not settings.
_NOT_SETTINGS: Final = frozenset({"help", "config"})


class ConfigError(ValueError):
    """A configuration with problems: one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The node's settings by key: each option's long flag without its dashes."""
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if flags and flags[0][2:] not in _NOT_SETTINGS:
            found[flags[0][2:]] = action
    return found


def read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            raw = file.read(CONFIG_FILE_BYTES_MAX + 1)
    except OSError as error:
        raise ConfigError([f"{path}: {error.strerror or error}"]) from error
    if len(raw) > CONFIG_FILE_BYTES_MAX:
        raise ConfigError([f"{path}: larger than {CONFIG_FILE_BYTES_MAX} bytes"])
    try:
        return tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError([f"{path}: not TOML: {error}"]) from error


def from_environment(
    environ: Mapping[str, str], options: Mapping[str, argparse.Action]
) -> dict[str, Any]:
    """The settings MESHCHAT_* variables give, as the file would hold them."""
    found: dict[str, Any] = {}
    for key, action in options.items():
        text = environ.get(ENV_PREFIX + key.upper().replace("-", "_"))
        if text is None:
            continue
        if isinstance(action, argparse._StoreTrueAction):
            word = text.strip().lower()
            # A word that is neither stays a word, for problems_of to name.
            found[key] = word in _TRUE if word in _TRUE | _FALSE else text
        elif isinstance(action, argparse._AppendAction):
            found[key] = [item.strip() for item in text.split(",") if item.strip()]
        else:
            found[key] = text
    return found


def problems_of(
    settings: Mapping[str, Any], options: Mapping[str, argparse.Action]
) -> list[tuple[str, str]]:
    """What is wrong with these settings, by key: unknown keys, values of the wrong kind,
    values the option's own type or choices refuse."""
    found: list[tuple[str, str]] = []
    for key, value in settings.items():
        action = options.get(key)
        if action is None:
            close = difflib.get_close_matches(key, list(options), n=1)
            found.append(
                (key, "no such option" + (f" (did you mean {close[0]}?)" if close else ""))
            )
            continue
        try:
            for text in _texts(value, action):
                _convert(action, text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
            found.append((key, str(error)))
    return found


def _texts(value: Any, action: argparse.Action) -> list[str]:
    """A setting's value as the words of its flag's arguments."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ValueError(f"true or false, not {value!r}")
        return []
    if isinstance(action, argparse._AppendAction):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"a list of strings, not {value!r}")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"a string or a number, not {value!r}")
    return [str(value)]


def _convert(action: argparse.Action, text: str) -> None:
    kind: Any = action.type
    try:
        converted: Any = text if kind is None else kind(text)
    except ValueError:
        if kind in (int, float):
            raise ValueError(f"invalid {kind.__name__} value: {text!r}") from None
        raise
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{text!r} is not one of {', '.join(map(str, action.choices))}")


def as_arguments(settings: Mapping[str, Any], options: Mapping[str, argparse.Action]) -> list[str]:
    """Checked settings as the flags that say the same."""
    arguments: list[str] = []
    for key, value in settings.items():
        action = options[key]
        if isinstance(action, argparse._StoreTrueAction):
            arguments += [f"--{key}"] if value else []
            continue
        for text in _texts(value, action):
            arguments += [f"--{key}", text]
    return arguments


def given_on_command_line(
    arguments: Sequence[str], options: Mapping[str, argparse.Action]
) -> set[str]:
    return {
        key
        for key in options
        for word in arguments
        if word == f"--{key}" or word.startswith(f"--{key}=")
    }


def settle(
    parser: argparse.ArgumentParser,
    arguments: Sequence[str],
    environ: Mapping[str, str],
    config: Path | None,
) -> argparse.Namespace:
    """The node's options: the file's, then the environment's, then the flags'. Raises
    ConfigError listing every problem of the file and the environment."""
    options = options_of(parser)
    settings = effective_settings(options, environ, config)
    for key in given_on_command_line(arguments, options):
        settings.pop(key, None)
    args = parser.parse_args([*as_arguments(settings, options), *arguments])
    missing = [key for key in REQUIRED if getattr(args, options[key].dest) is None]
    if missing:
        raise ConfigError(
            [f"{key}: required (--{key}, {key} in --config, or {variable(key)})" for key in missing]
        )
    return args


def effective_settings(
    options: Mapping[str, argparse.Action], environ: Mapping[str, str], config: Path | None
) -> dict[str, Any]:
    settings = {} if config is None else read_file(config)
    from_env = from_environment(environ, options)
    problems = [f"{config}: {key}: {what}" for key, what in problems_of(settings, options)]
    problems += [f"{variable(key)}: {what}" for key, what in problems_of(from_env, options)]
    if problems:
        raise ConfigError(problems)
    return settings | from_env


def variable(key: str) -> str:
    return ENV_PREFIX + key.upper().replace("-", "_")


def show(args: argparse.Namespace, options: Mapping[str, argparse.Action]) -> str:
    """The effective configuration, as a TOML file that gives it."""
    lines = []
    for key, action in sorted(options.items()):
        value = getattr(args, action.dest)
        if value is None:
            continue
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped) + '"'


def check(parser: argparse.ArgumentParser, path: Path, environ: Mapping[str, str]) -> list[str]:
    """Every problem of a configuration file, with the environment it will run in: one
    line each (`meshchat config check`)."""
    options = options_of(parser)
    try:
        settings = read_file(path)
    except ConfigError as error:
        return error.problems
    from_env = from_environment(environ, options)
    in_file, in_env = problems_of(settings, options), problems_of(from_env, options)
    problems = [f"{path}: {key}: {what}" for key, what in in_file]
    problems += [f"{variable(key)}: {what}" for key, what in in_env]
    broken = {key for key, _ in in_file + in_env}
    usable = {key: value for key, value in (settings | from_env).items() if key not in broken}
    args = parser.parse_args(as_arguments(usable, options))
    problems += [
        f"{path}: {key}: required here, as --{key} or as {variable(key)}"
        for key in REQUIRED
        if key not in broken and getattr(args, options[key].dest) is None
    ]
    return problems + [f"{path}: {line}" for line in file_problems(args)]


def file_problems(args: argparse.Namespace) -> list[str]:
    """What is wrong with the files the settings name: unreadable, or not what they must be."""
    found: list[str] = []
    checks: list[tuple[str, Path | None, Any]] = [
        ("secret-file", args.secret_file, load_secret),
        ("token-keys", args.token_keys, read_key_set),
        ("node-key", args.node_key, _readable_file),
        ("trusted-keys", args.trusted_keys, _readable_dir),
    ]
    for key, path, check in checks:
        if path is None:
            continue
        try:
            check(path)
        except (OSError, ValueError) as error:
            found.append(f"{key}: {error}")
    if (args.tls_cert is None) != (args.tls_key is None):
        found.append("tls-cert and tls-key go together")
    elif args.tls_cert is not None:
        try:
            server_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as error:
            found.append(f"tls-cert: {error}")
    return found


def _readable_file(path: Path) -> None:
    with path.open("rb") as file:
        file.read(1)  # the node reads it: a read that fails is the problem to report


def _readable_dir(path: Path) -> None:
    if not path.is_dir():
        raise ValueError(f"{path}: not a directory")
    next(path.iterdir(), None)


def add_config_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    config = commands.add_parser(
        "config",
        help="check a node's configuration, or show it",
        epilog=examples(
            "meshchat config check /etc/meshchat/node.toml",
            "meshchat config show --config /etc/meshchat/node.toml --log-level DEBUG",
        ),
    )
    config_actions = config.add_subparsers(
        dest="config_command", required=True, metavar="ACTION", help="check or show"
    )
    check = config_actions.add_parser(
        "check",
        help="check a TOML file of node options",
        epilog=examples(
            "meshchat config check /etc/meshchat/node.toml",
            "meshchat config check node.toml || exit 2   # before a restart",
        ),
    )
    check.add_argument("file", type=Path, help="the TOML file")
    show = config_actions.add_parser(
        "show",
        help="print the effective configuration of `meshchat node` with these options",
        epilog=examples(
            "meshchat config show --config /etc/meshchat/node.toml",
            "MESHCHAT_CLIENT_PORT=7101 meshchat config show --id n2",
        ),
    )
    show.add_argument(
        "node_arguments",
        nargs=argparse.REMAINDER,
        metavar="NODE OPTIONS",
        help="as `meshchat node` takes them (default: only the file and MESHCHAT_* variables)",
    )
