"""How every `meshchat` command's --help reads: each option with its default, and the
command's example lines at the end (its epilog, kept as written)."""

import argparse
from collections.abc import Iterator
from typing import Any

EXAMPLES_HEADING = "examples:"


class CommandHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds "(default X)" to an option's help unless the help already speaks of its
    default, or it has none worth printing: an unset value's help says what happens."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or not shows_default(action):
            return text
        return f"{text} (default %(default)s)"


def shows_default(action: argparse.Action) -> bool:
    """Whether the default is a value worth printing: not None, an off switch or []."""
    default = action.default
    if action.required or default is None or default is False or default == []:
        return False
    if default is argparse.SUPPRESS:
        return False
    return bool(action.option_strings) or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser with that help; its subcommands are made of the same class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", CommandHelpFormatter)
        super().__init__(*args, **kwargs)


def examples(*lines: str) -> str:
    """An epilog of example command lines, printed as written at the end of --help."""
    assert lines, "a command's help ends with at least one example"
    return "\n".join([EXAMPLES_HEADING, *(f"  {line}" for line in lines)])


def command_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser of the command tree with its command words, the root's first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from command_parsers(subparser, (*path, name))
