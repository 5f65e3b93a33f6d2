"""A broker that comes back empty (Tansu keeps topics in memory) restarts offsets at 0.

Without a guard, the per-key fences of the old topic would skip the new records as if they had
been counted already: revenue silently lost. The sink recognises the new incarnation by the
record at offset 0 and resets that partition's fences.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streams.embedded.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from tests.integration.test_pipeline import rows_match
from tests.support import (
    WorkerProcess,
    charge_dict,
    free_port,
    ground_truth,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_broker_restarted_empty_does_not_swallow_new_charges(database, tmp_path: Path):
    port = free_port()
    env = pipeline_env(f"127.0.0.1:{port}", database, tmp_path / "data")
    now = datetime.now(UTC)
    before = [charge_dict("reset", "u", "openai", "tool", now, 10 + i, 1) for i in range(12)]
    after = [charge_dict("reset", "u", "openai", "tool", now, 100 + i, 2) for i in range(3)]
    # The demo's case too: the same charges again after the restart must not count twice.
    again = before[:2]
    expected_before = ground_truth(before, ZoneInfo("UTC"))
    expected_all = ground_truth(before + after + again, ZoneInfo("UTC"))
    assert expected_all != expected_before

    for stage, (charges, expected) in enumerate([(before, expected_before), (after + again, expected_all)]):
        broker = EmbeddedBroker(tmp_path / f"broker-{stage}", "127.0.0.1", port)
        await broker.start()
        worker = None
        try:
            await ensure_topics(settings_from(env))
            records = [(b"reset", json.dumps(c).encode(), None) for c in charges]
            await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)
            worker = WorkerProcess(env, tmp_path / f"worker-{stage}.log").start()
            await wait_until(
                lambda e=expected: rows_match(database, e), 60, f"stage {stage}", on_timeout=worker.log_tail
            )
        finally:
            if worker:
                worker.stop()
            await broker.stop()
    assert "starts over at offset 0" in (tmp_path / "worker-1.log").read_text()
