"""`make mutants`: flip each comparison of the exactness rules, and break each promise around
them (the partition lock, the fatal path, the read-only dashboard, LiteLLM's cache hits), and
show a test failing for each.

One mutant at a time, in a temporary copy of the tree (never in the working tree): the copy is
mutated, the rules' fast tests run against it (unit tests of the rules, the sink against the real
Postgres on BILLING_TEST_DATABASE_URL or 127.0.0.1:5432), and the first failing test is printed as
the mutant's killer. A mutant no test kills is a survivor; any survivor fails the run.

`python -m tests.mutants --faults WORDS` runs the small fault scenario instead, against each
mutant whose name contains WORDS: it shows that the harness, too, sees the mutant.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = (
    "tests/unit/rules/test_settle.py",
    "tests/unit/rules/test_closing.py",
    "tests/unit/rules/test_pricing.py",
    "tests/unit/rules/test_resume.py",
    "tests/integration/test_sink.py",
    "tests/integration/test_partition_lock.py",
    "tests/integration/test_dashboard_readonly.py",
    "tests/integration/test_fatal_sink.py",
    "tests/integration/test_litellm_attribution.py",
)


@dataclass(frozen=True)
class Mutant:
    path: str
    name: str
    original: str
    mutated: str


MUTANTS = (
    Mutant(
        "streams/rules/pricing.py",
        "cost: half rounds up, not to even",
        "if 2 * rest > scale or (2 * rest == scale and whole % 2):",
        "if 2 * rest >= scale:",
    ),
    Mutant(
        "streams/rules/pricing.py",
        "cost: cached reads at the input rate",
        "        + cached * read\n",
        "        + cached * i\n",
    ),
    Mutant(
        "streams/rules/settle.py",
        "admit: fence `<=` -> `<`",
        "if c.offset <= fences.get(",
        "if c.offset < fences.get(",
    ),
    Mutant(
        "streams/rules/settle.py",
        "admit: fence `<=` -> `>=`",
        "if c.offset <= fences.get(",
        "if c.offset >= fences.get(",
    ),
    Mutant(
        "streams/rules/settle.py", "too late: `>=` -> `>`", ").days >= horizon_days", ").days > horizon_days"
    ),
    Mutant(
        "streams/rules/settle.py",
        "too late: operator's acceptance ignored",
        "not charge.accept_late and ",
        "",
    ),
    Mutant(
        "streams/rules/settle.py",
        "settle: winner `!=` -> `==`",
        "if winners[c.dedup_key] != (source, c.offset, c.position):",
        "if winners[c.dedup_key] == (source, c.offset, c.position):",
    ),
    Mutant(
        "streams/rules/settle.py",
        "settle: winner ignores the position in the record",
        "if winners[c.dedup_key] != (source, c.offset, c.position):",
        "if winners[c.dedup_key][:2] != (source, c.offset):",
    ),
    Mutant(
        "streams/rules/settle.py",
        "settle: winner ignores the source",
        "if winners[c.dedup_key] != (source, c.offset, c.position):",
        "if winners[c.dedup_key][1:] != (c.offset, c.position):",
    ),
    Mutant(
        "streams/rules/settle.py",
        "settle: late `<=` -> `<`",
        "is_late = closed is not None and c.day <= closed",
        "is_late = closed is not None and c.day < closed",
    ),
    Mutant(
        "streams/rules/settle.py",
        "roll_up: a daily row keeps the larger of its models' values, not their sum",
        "by_day[key] = [a + b for a, b in zip(day, v, strict=True)]",
        "by_day[key] = [max(a, b) for a, b in zip(day, v, strict=True)]",
    ),
    Mutant(
        "streams/rules/resume.py",
        "resume: the fence no longer bounds where a partition resumes",
        "target = min(target, first_unapplied[partition])",
        "target = max(target, first_unapplied[partition])",
    ),
    Mutant(
        "streams/rules/resume.py",
        "resume: without a committed offset, resume at the fence, not the start",
        "target = committed.get(partition) or 0\n",
        "target = committed.get(partition) or first_unapplied.get(partition, 0)\n",
    ),
    Mutant(
        "streams/rules/settle.py",
        "first sightings: smallest -> largest",
        "if known is None or where < known:",
        "if known is None or where > known:",
    ),
    Mutant(
        "streams/rules/settle.py",
        "ClosureMarks.closed_before: bisect_left -> bisect_right",
        "bisect.bisect_left(self.applied, offset) - 1",
        "bisect.bisect_right(self.applied, offset) - 1",
    ),
    Mutant(
        "streams/rules/settle.py",
        "ClosureMarks.closed_before: `>= 0` -> `> 0`",
        "return self.through[at] if at >= 0 else None",
        "return self.through[at] if at > 0 else None",
    ),
    Mutant(
        "streams/rules/closing.py",
        "closing_target: `>` -> `>=`",
        "target > closed else None",
        "target >= closed else None",
    ),
    Mutant(
        "streams/rules/closing.py",
        "closing_target: grace ignored",
        "last_day_ended_by(now - grace, zone)",
        "last_day_ended_by(now, zone)",
    ),
    Mutant(
        "streams/rules/closing.py",
        "lagging: `<` -> `<=`",
        "if applied.get(p, -1) + 1 < end}",
        "if applied.get(p, -1) + 1 <= end}",
    ),
    Mutant(
        "streams/rules/closing.py",
        "lagging: off by one",
        "if applied.get(p, -1) + 1 < end}",
        "if applied.get(p, -1) < end}",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: revision never goes up",
        "CASE WHEN d.finalized_at IS NOT NULL THEN 1 ELSE 0 END",
        "CASE WHEN d.finalized_at IS NOT NULL THEN 0 ELSE 0 END",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: revision on provisional rows",
        "CASE WHEN d.finalized_at IS NOT NULL THEN 1 ELSE 0 END",
        "CASE WHEN d.finalized_at IS NULL THEN 1 ELSE 0 END",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: updated_at never moves",
        "    updated_at = now()\n",
        "    updated_at = d.updated_at\n",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: a row born after its close is provisional (`<=` -> `<`)",
        "CASE WHEN u.date <= {closed} THEN now() END",
        "CASE WHEN u.date < {closed} THEN now() END",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: a final row's finalized_at moves",
        "finalized_at = coalesce(d.finalized_at, EXCLUDED.finalized_at)",
        "finalized_at = coalesce(EXCLUDED.finalized_at, d.finalized_at)",
    ),
    Mutant(
        "streams/sink/sql.py",
        "UPSERT: sums replaced, not added",
        'added = ",\\n    ".join(f"{c} = d.{c} + EXCLUDED.{c}"',
        'added = ",\\n    ".join(f"{c} = EXCLUDED.{c}"',
    ),
    # The promises around the rules: the partition lock, the fatal path, a dashboard that cannot
    # write, and which LiteLLM calls are billed.
    Mutant(
        "streams/sink/sql.py",
        "partition lock: the flush reads the fences without locking them",
        "ORDER BY bp.partition FOR UPDATE",
        "ORDER BY bp.partition",
    ),
    Mutant(
        "streams/sink/connection.py",
        "fatal: a Postgres error no retry cures is blamed on a record (dead-lettered)",
        'raise SinkFatalError(\n                            f"postgres rejected the write:',
        'raise SinkDataError(\n                            f"postgres rejected the write:',
    ),
    Mutant(
        "streams/worker/run.py",
        "fatal: the worker exits 0 after a fatal error",
        "raise SystemExit(3) from None",
        "raise SystemExit(0) from None",
    ),
    Mutant(
        "streams/dashboard/server.py",
        "dashboard: its connections are not read-only",
        '"default_transaction_read_only": "on", ',
        "",
    ),
    Mutant(
        "streams/producer/litellm_callback.py",
        "LiteLLM: cache hits billed without bill_cache_hits",
        'if kwargs.get("cache_hit") and not self.bill_cache_hits:',
        "if False:",
    ),
    Mutant(
        "streams/producer/litellm_callback.py",
        "LiteLLM: cache hits never billed",
        'if kwargs.get("cache_hit") and not self.bill_cache_hits:',
        'if kwargs.get("cache_hit"):',
    ),
)

FAILED = re.compile(r"^FAILED (\S+)", re.MULTILINE)


def copy_tree(into: Path) -> None:
    for name in ("streams", "schemas", "tests"):
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")


def run_tests(tree: Path) -> tuple[bool, str]:
    """(passed, the first failing test or the tail of the output)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *TESTS],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    failed = FAILED.search(out.stdout)
    return out.returncode == 0, failed.group(1) if failed else out.stdout[-400:]


def fault_scenario(tree: Path) -> tuple[bool, str]:
    """(exact, its summary line): the small fault profile, workers running the mutated copy."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "tests.faults", "--profile", "small"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("faults:")]
    return out.returncode == 0, (lines[-1] if lines else out.stdout[-400:] + out.stderr[-400:])


def main() -> int:
    started = time.monotonic()
    only = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--faults" else None
    check = fault_scenario if only else run_tests
    mutants = [m for m in MUTANTS if only is None or only in m.name]
    with tempfile.TemporaryDirectory(prefix="billing-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        probe = subprocess.run(
            [sys.executable, "-c", "import streams; print(streams.__path__[0])"],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True,
            text=True,
        )
        assert probe.stdout.strip() == str(tree / "streams"), f"the copy is not what runs: {probe.stdout}"
        if only is None:
            passed, detail = run_tests(tree)
            if not passed:
                print(f"the tests fail without any mutant: {detail}")
                return 2
        survivors = 0
        for m in mutants:
            path = tree / m.path
            source = path.read_text()
            if source.count(m.original) != 1:
                print(f"mutant {m.name!r}: {m.original!r} is not found exactly once in {m.path}")
                return 2
            path.write_text(source.replace(m.original, m.mutated))
            try:
                passed, detail = check(tree)
            finally:
                path.write_text(source)
            survivors += passed
            print(
                f"{'SURVIVED' if passed else 'killed  '} {m.path}: {m.name}"
                + ("" if passed else f"  <- {detail}"),
                flush=True,
            )
    print(
        f"mutants: {len(mutants)} tried, {len(mutants) - survivors} killed, {survivors} survived ({time.monotonic() - started:.0f}s)"
    )
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
