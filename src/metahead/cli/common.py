"""Argument groups several commands share, and how their values are read."""

from __future__ import annotations

import argparse


def add_overrides(p: argparse.ArgumentParser, help: str, metavar: str = "SECTION.FIELD=VALUE") -> None:
    """--set, repeatable, collected in args.overrides (config.apply_overrides)."""
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar=metavar, help=help)


def add_device_and_amp(
    p: argparse.ArgumentParser,
    amp_help: str,
    amp_default: str = "none",
    amp_choices: tuple[str, ...] = ("none", "bf16", "auto"),
) -> None:
    """--device (resolved by resolve_device) and --amp."""
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    add_amp(p, amp_help, amp_default, amp_choices)


def add_amp(
    p: argparse.ArgumentParser,
    help: str,
    default: str = "none",
    choices: tuple[str, ...] = ("none", "bf16", "auto"),  # perf.AMP_MODES (this module does not import torch)
) -> None:
    """--amp: bf16 autocast or not (perf.autocast_context)."""
    p.add_argument("--amp", choices=list(choices), default=default, help=help)


def add_split_choice(p: argparse.ArgumentParser) -> None:
    """Which identities are test: --split-file, --test-identities or --test-fraction/--seed (split_of)."""
    p.add_argument("--split-file", help="identity splits: vox1_meta.csv / vox2_meta.csv, or 'id split' lines")
    p.add_argument("--test-identities", help="file listing test identities (all others train)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="without a split file: hold out this fraction of identities as test (0)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the --test-fraction split")


def split_of(args) -> dict[str, str] | None:
    """The named splits of add_split_choice's files, or None for --test-fraction."""
    from metahead.data import sources

    if args.split_file and args.test_identities:
        raise ValueError("give --split-file or --test-identities, not both")
    if args.split_file:
        return sources.read_split_file(args.split_file)
    if args.test_identities:
        return {name: "test" for name in sources.read_identity_list(args.test_identities)}
    return None


def resolve_device(name: str) -> str:
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name
