"""MkDocs hooks of the documentation site: the CLI reference, made from the commands' own
``--help`` at every build, so it never drifts from the code."""

from __future__ import annotations

import argparse
from typing import Any

from mkdocs.structure.files import File, Files

from khadem_nb.cli import build_parser


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    return files


def cli_reference() -> str:
    parser = build_parser()
    parts = ["# Command line\n",
             "Every command of `khadem-nb`, as its `--help` prints it (generated at each build).\n",
             "```text", parser.format_help().rstrip(), "```\n"]
    for name, command in _commands(parser).items():
        parts += [f"## `khadem-nb {name}`\n", "```text", command.format_help().rstrip(), "```\n"]
    return "\n".join(parts)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
