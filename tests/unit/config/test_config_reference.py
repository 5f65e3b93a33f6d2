"""docs/operations.md's configuration table is generated from Settings and cannot drift, and
every BILLING_* name the code, compose file or docs mention is either a setting or in one of
the doc's other tables (internal variables, producer-side integrations)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from streams.config import reference as config_doc
from streams.config.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "operations.md"
_NAME = re.compile(r"\bBILLING_[A-Z0-9_]*[A-Z0-9]\b")


def test_every_field_has_a_description() -> None:
    missing = [n for n, f in Settings.model_fields.items() if not f.description]
    assert not missing, f"Settings fields without description (docs are generated from it): {missing}"


def test_operations_doc_table_is_current() -> None:
    assert config_doc.main(["--check", str(DOC)]) == 0, (
        "docs/operations.md is stale: run `python -m streams.config.reference --write docs/operations.md`"
    )


def test_durations_render_as_operators_write_them() -> None:
    assert config_doc.format_duration(timedelta(days=35)) == "35d"
    assert config_doc.format_duration(timedelta(seconds=90)) == "90s"
    assert config_doc.format_duration(timedelta(milliseconds=500)) == "500ms"


def other_documented_names() -> set[str]:
    """Names in the doc's hand-written tables (internal variables, producer-side integrations)."""
    return set(re.findall(r"^\| `(BILLING_[A-Z0-9_]+)`", DOC.read_text(), flags=re.MULTILINE))


def test_every_billing_variable_mentioned_anywhere_is_documented() -> None:
    documented = set(config_doc.env_names()) | other_documented_names()
    sources = [
        *ROOT.glob("streams/**/*.py"),
        *ROOT.glob("tests/**/*.py"),
        ROOT / "docker-compose.yml",
        ROOT / "Dockerfile",
    ]
    sources += [*ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("bench/**/*.py")]
    seen: dict[str, str] = {}
    for path in sources:
        if path.is_file():
            for name in _NAME.findall(path.read_text()):
                seen.setdefault(name, str(path.relative_to(ROOT)))
    # Prefix shorthands in prose ("BILLING_KAFKA_SASL_*") are not variables.
    unknown = {
        n: where
        for n, where in seen.items()
        if n not in documented and not any(d.startswith(f"{n}_") for d in documented)
    }
    assert not unknown, f"BILLING_* names that are neither settings nor documented internals: {unknown}"


def test_every_metric_is_documented() -> None:
    from streams.api import metrics as api_metrics
    from streams.worker import metrics

    sources = (Path(metrics.__file__).read_text(), Path(api_metrics.__file__).read_text())
    declared = {m for text in sources for m in re.findall(r'"(billing_[a-z0-9_]+)"', text)}
    text = DOC.read_text()
    missing = {m for m in declared if f"`{m}" not in text}
    assert not missing, f"metrics missing from docs/operations.md: {sorted(missing)}"
