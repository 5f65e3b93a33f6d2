"""Hostile ids leave as data: CSV cells cannot become formulas, terminals get no escapes or markup,
URLs lose every secret, and the exit codes in docs/operations.md are the ones the code uses."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from streams.cli.errors import EXIT_CODES
from streams.cli.totals import render_table
from streams.ops.totals import METRICS, to_csv
from streams.output_safety import csv_cell, escape_controls
from streams.redaction import redact_text, redact_url, url_secrets

ROOT = Path(__file__).resolve().parents[3]
HOSTILE_NAME = "\x1b[31m[/bold][link=x]y[/link]"
FORMULAS = ["=cmd|' /C calc'!A0", "+SUM(1+1)*cmd|' /C calc'!A0", "@SUM(1)", "-2+3", "\tx", "\rx"]


def row(account: str, **counts: int) -> dict[str, object]:
    base = {
        "date": date(2026, 11, 30),
        "account_id": account,
        "provider": "openai",
        "charge_type": "completion",
    }
    numbers = dict.fromkeys(METRICS, 1) | {"late_charge_count": 0, "rows": 1, "unpriced_charge_count": 0}
    money = {"cost": Decimal("0.25"), "currency": "USD"}
    return base | numbers | money | counts | {"final": True}


def test_csv_formula_cells_are_neutralised_as_the_csv_module_reads_them() -> None:
    text = to_csv([row(name) for name in [*FORMULAS, "acme", "o'brien"]])
    accounts = [line["account_id"] for line in csv.DictReader(io.StringIO(text, newline=""))]
    assert accounts == ["'" + name for name in FORMULAS] + ["acme", "o'brien"]
    assert accounts[0] == "'=cmd|' /C calc'!A0"


def test_csv_cell_leaves_numbers_and_plain_text_alone() -> None:
    assert csv_cell(-5) == -5 and csv_cell("a=b") == "a=b" and csv_cell("") == ""


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred", "\\x1b[31mred"),
        (
            "\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\",
            "\\x1b]8;;https://evil.example\\x1b\\click",
        ),
        ("a\u202eb", "a\\u202eb"),  # right-to-left override
        ("\x9b2J", "\\x9b2J"),  # C1 CSI
        ("two\nlines", "two\\x0alines"),
        ("Zoë 東京 [b]", "Zoë 東京 [b]"),
    ],
)
def test_escape_controls(raw: str, shown: str) -> None:
    assert escape_controls(raw).startswith(shown)
    assert not any(c in escape_controls(raw) for c in "\x1b\x9b\u202e\n")


def test_table_prints_markup_and_escapes_in_ids_literally() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=200)
    render_table([row(HOSTILE_NAME)], console)  # `[/bold]` raised MarkupError here before
    text = out.getvalue()
    assert "\\x1b[31m[/bold][link=x]y[/link]" in text
    assert "\x1b]8;" not in text  # no hyperlink was made
    assert "\x1b[31m" not in text  # the id's own escape did not reach the terminal


def test_table_limit_lists_first_rows_but_totals_all() -> None:
    out = io.StringIO()
    rows = [row(f"acct-{i:03d}") for i in range(7)]
    render_table(rows, Console(file=out, width=300), limit=3)
    text = out.getvalue()
    assert "acct-002" in text and "acct-003" not in text
    assert "first 3 of 7 rows" in text and re.search(r"TOTAL .*│\s+7 │", text)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:PlantedPW9@db:5432/billing",
        "postgresql://postgres@db/billing?password=PlantedPW9",
        "postgresql://postgres@db/billing?sslmode=require&sslpassword=PlantedPW9",
        "postgresql://u:Planted%40PW9@db/billing?PASSWORD=PlantedPW9",
    ],
)
def test_redact_url_masks_userinfo_and_query_secrets(url: str) -> None:
    shown = redact_url(url)
    assert "PlantedPW9" not in shown and "Planted@PW9" not in shown and "***" in shown
    assert "@db" in shown and "/billing" in shown
    assert "PlantedPW9" in url_secrets(url) or "Planted@PW9" in url_secrets(url)
    message = f"connection to {url} failed; password=PlantedPW9 rejected"
    assert "PlantedPW9" not in redact_text(message)


def test_redact_url_keeps_what_is_not_secret() -> None:
    url = "postgresql://postgres@db:5432/billing?sslmode=verify-full&sslrootcert=/ca.pem"
    assert redact_url(url) == url


def test_dashboard_script_never_parses_data_as_html() -> None:
    script = (ROOT / "streams" / "dashboard" / "static" / "app.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink


def test_exit_codes_are_documented_in_operations_md() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", doc, re.M))
    assert {int(k): v for k, v in table.items()} == EXIT_CODES
