"""`python -m tests.faults --profile small|large [--seed S]` (`make faults` runs the large one).

Prints progress, the producers used, then one summary line last; exits non-zero on any
mismatch or on a fault the logs do not show.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from tests.faults.harness import run_scenario
from tests.faults.summary import PROFILES


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs of every worker)")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"fault scenario '{args.profile}' seed={args.seed}: {PROFILES[args.profile]}", flush=True)
    summary = asyncio.run(run_scenario(PROFILES[args.profile], args.seed, keep=args.keep))
    for problem in summary.problems:
        print(f"  problem: {problem}")
    print(
        f"  late rows: {summary.late_rows}, revised rows: {summary.revised_rows}; "
        f"took {time.monotonic() - started:.0f}s"
    )
    print(summary.producers_line())
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
