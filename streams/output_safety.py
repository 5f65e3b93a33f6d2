"""How stored values leave the program: one policy for CSV files and terminals.

Why: account and user ids come from our users' users, so they are hostile input. A CSV cell that
starts with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to a spreadsheet
(`=cmd|' /C calc'!A0`), so such cells get a leading `'` (OWASP's rule for CSV injection). On a
terminal, an ESC or OSC 8 sequence in an id would recolour the screen or plant a hyperlink, and a
`[link=...]` would do the same through rich's markup; so stored text is shown as rich `Text`
(never markup) with every control or invisible formatting character written as an escape.
The dashboard escapes HTML in its page for the same reason.

The terminal half (rich `Text`, console width, `echo_data`) is `streams.cli.terminal`.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

#: First characters that make a spreadsheet evaluate a cell.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: Unicode categories shown escaped: controls (ESC, C1 CSI, newlines), format characters
#: (bidi overrides, zero-width), line and paragraph separators, unassigned and surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cn", "Cs"})


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
