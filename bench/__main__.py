"""`python -m bench [--quick]`: run every measurement, print the table, the summary line last."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.infra import Bench
from bench.plan import MEASUREMENTS
from bench.report import markdown
from bench.run import Run

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller sizes, under 3 minutes")
    p.add_argument("--seed", type=int, default=42, help="seed of the synthetic data (default 42)")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(MEASUREMENTS)}")
    p.add_argument("--keep", action="store_true", help="keep the run's temp dir (logs, data)")
    p.add_argument(
        "--write-results",
        action="store_true",
        help="rewrite bench/RESULTS.md in --quick mode or with --only too",
    )
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, console: Console, workdir: Path) -> Run:
    run = Run(args, console)
    bench = Bench(workdir, console.log)
    try:
        console.log(f"starting a Tansu broker and a private Postgres under {workdir}")
        await bench.start()
        await run.main(bench)
    finally:
        await bench.stop()
        if args.keep:
            console.log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.ERROR)
    console = Console(stderr=True)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-"))
    workdir.chmod(0o755)  # the private Postgres runs as another OS user
    run = asyncio.run(amain(args, console, workdir))
    seconds = time.monotonic() - started
    table = Table(title=f"billing-streams bench ({run.report.mode}, {seconds / 60:.1f} min)")
    for column in ("measurement", "result", "notes"):
        table.add_column(column, overflow="fold")
    for row in run.report.rows:
        table.add_row(*row)
    console.print(table)
    for target, measured, met in run.report.targets():
        mark = "[dim]n/a[/]" if met is None else "[green]met[/]" if met else "[red]not met[/]"
        console.print(f"  {mark}  {target}: {measured}")
    # Only a full run of everything replaces the record, unless asked: a partial run would
    # leave RESULTS.md with n/a where the last full run had figures.
    if (not args.quick and not args.only) or args.write_results:
        RESULTS.write_text(markdown(run.report, run.postgres, seconds))
        console.log(f"wrote {RESULTS}")
    console.file.flush()
    print(run.report.summary_line(), flush=True)
    return 1 if any(row[1] == "FAILED" for row in run.report.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
