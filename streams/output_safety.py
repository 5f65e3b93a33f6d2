"""How stored values leave the program: one policy for CSV files and terminals.

Why: account and user ids come from our users' users, so they are hostile input. A CSV cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to a spreadsheet
(`=cmd|' /C calc'!A0`), so such cells get a leading `'` (OWASP's rule for CSV injection). On a
terminal, an ESC or OSC 8 sequence in an id would recolour the screen or plant a hyperlink, and a
`[link=...]` would do the same through rich's markup; so stored text is shown as rich `Text`
(never markup) with every control or invisible formatting character written as an escape.
The dashboard escapes HTML in its page for the same reason.

It also decides how wide output is: to a terminal, its width; to a pipe or a file, unwrapped,
so that a URL or a command in a hint stays on one line and can be copied.
"""

from __future__ import annotations

import csv
import io
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import click
from rich.console import Console
from rich.text import Text

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Unicode categories shown escaped: controls (ESC, C1 CSI, newlines), format characters
#: (bidi overrides, zero-width), line and paragraph separators, unassigned and surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Cs"})
#: Width of output that is not a terminal: wide enough that rich never wraps a line.
UNWRAPPED_WIDTH = 10_000


def csv_cell(value: Any) -> Any:
    """A text value that a spreadsheet would run as a formula, prefixed with `'`; others as is."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def to_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text with every text cell neutralised by `csv_cell`. Lines end in CRLF (RFC 4180):
    then a CR or LF inside an id is quoted, so it cannot end a row early."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(h) for h in header])
    writer.writerows([csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with control and invisible formatting characters written as `\\x1b`, `\\u202e`...
    (`keep` names characters to leave alone, e.g. the newlines between lines of CSV)."""
    if text.isprintable() and not keep:
        return text
    return "".join(
        c if c in keep or unicodedata.category(c) not in _UNSAFE_CATEGORIES else _escape(c) for c in text
    )


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
