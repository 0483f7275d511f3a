"""`meshchat completion bash|zsh|fish`: a completion script made by shtab from the very
parser the commands run with, so it never lags behind their options."""

import argparse
from pathlib import Path

import shtab

from mesh.cli.help_format import command_parsers, examples

SHELLS = ("bash", "zsh", "fish")


def add_completion_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script",
        epilog=examples(
            "source <(meshchat completion bash)             # this bash session",
            "meshchat completion bash > ~/.local/share/bash-completion/completions/meshchat",
            "meshchat completion zsh > ~/.zfunc/_meshchat   # a directory in $fpath",
            "meshchat completion fish > ~/.config/fish/completions/meshchat.fish",
        ),
    )
    completion.add_argument("shell", choices=SHELLS, help="the shell the script is for")


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The script for `shell`; file and directory arguments complete as paths."""
    if shell not in shtab.SUPPORTED_SHELLS:  # fish came in a later shtab than bash and zsh
        raise ValueError(f"shtab {shtab.__version__} cannot write {shell} completion: upgrade it")
    for _, command in command_parsers(parser):
        for action in command._actions:
            if action.type is Path:
                directory = action.metavar == "DIR"
                # shtab reads this attribute; argparse has no field for it.
                action.complete = shtab.DIRECTORY if directory else shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)
