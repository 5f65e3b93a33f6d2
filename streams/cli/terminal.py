"""Stored values on a terminal: literal rich `Text`, controls escaped, sensible widths.

To a terminal, output is as wide as it; to a pipe or a file, unwrapped, so that a URL or a
command in a hint stays on one line and can be copied. Why ids are escaped at all:
`streams.output_safety`.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click
from rich.console import Console
from rich.text import Text

from streams.output_safety import escape_controls

#: Width of output that is not a terminal: wide enough that rich never wraps a line.
UNWRAPPED_WIDTH = 10_000


def plain(value: Any, **options: Any) -> Text:
    """A stored value for a rich table or line: literal text (no markup), controls escaped;
    `options` go to rich's Text (e.g. overflow="fold")."""
    return Text(escape_controls(str(value)), **options)


def console(stderr: bool = False) -> Console:
    """A rich Console: the terminal's width on a terminal, unwrapped lines anywhere else."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)


def echo_data(text: str, err: bool = False, nl: bool = True) -> None:
    """Print machine-readable output (CSV, JSON lines, payloads) as it is to a pipe or file, and
    with control characters escaped when it reaches a terminal."""
    stream: TextIO = sys.stderr if err else sys.stdout
    click.echo(escape_controls(text, keep="\r\n") if stream.isatty() else text, err=err, nl=nl)
