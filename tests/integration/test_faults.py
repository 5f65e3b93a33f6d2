"""The seeded small fault scenario in every test run; `make faults` runs the large one.

Kills aimed at phases (after a take's dead letters are durable and before its flush, inside a
flush, between the commit and the acknowledgement, during a rebalance, while Postgres is down) and a rebalance, each shown by the workers' logs; every
worker stopped across a day's close; producers of four kinds; every column of every row
compared with ground truth, twice (the second time after the group caught up and sat idle).
"""

from __future__ import annotations

import pytest

from tests.faults.harness import run_scenario
from tests.faults.summary import PHASES, PROFILES

pytestmark = pytest.mark.integration


@pytest.mark.timeout(900)
async def test_small_fault_scenario_is_exact_in_every_column():
    lines: list[str] = []
    summary = await run_scenario(PROFILES["small"], seed=20261123, log=lines.append)
    report = "\n".join([*lines, *summary.problems, summary.producers_line(), summary.line()])
    print(report)
    assert all(summary.kills[phase] >= 1 for phase in PHASES), report
    assert summary.rebalances >= 1 and summary.pg_outages >= 1, report
    assert len(summary.producers) >= 4 and summary.resends > 0 and summary.moved_resends > 0, report
    assert summary.events >= 3000
    assert summary.mismatched == 0 and summary.late_mismatched == 0, report
    assert summary.state_mismatched == 0, report
    assert summary.dlq_expected > 0 and summary.dlq_found == summary.dlq_expected, report
    assert not summary.problems, report
    assert summary.late_rows > 0 and summary.revised_rows > 0, report  # late charges were exercised
    assert summary.ok
