"""The seeded small fault scenario (SIGKILLs, a rebalance, a Postgres outage) in CI.

`make faults` runs the large profile; this one is small enough for every `make test`.
"""

from __future__ import annotations

import pytest

from tests.faults.harness import PROFILES, run_scenario

pytestmark = pytest.mark.integration


async def test_small_fault_scenario_converges_to_exact_totals():
    lines: list[str] = []
    summary = await run_scenario(PROFILES["small"], seed=20261123, log=lines.append)
    print(summary.line())
    assert summary.kills >= 3 and summary.rebalances >= 1 and summary.pg_outages >= 1, summary.line()
    assert summary.events >= 3000
    assert summary.mismatched == 0, "\n".join([summary.line(), *summary.problems])
    assert summary.dlq_expected > 0 and summary.dlq_found == summary.dlq_expected, summary.line()
    assert not summary.problems, summary.problems
    assert summary.late_rows > 0  # late charges after finalization were exercised
