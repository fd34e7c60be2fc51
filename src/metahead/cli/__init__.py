"""`metahead <command>`: parses arguments into configs and calls the layers below. Nothing imports this.

One module per family of commands (data, train, avatars, evaluate, serve), each registering its
sub-commands with `add_commands`; the argument groups they share are in common.py."""

from __future__ import annotations

import argparse
import sys

from metahead.cli import avatars, data, evaluate, serve, train

COMMAND_FAMILIES = (data, train, avatars, evaluate, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metahead", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for family in COMMAND_FAMILIES:
        family.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, KeyError) as err:
        print(f"metahead {args.command}: error: {err}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser"]
