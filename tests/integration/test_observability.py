"""End to end: /metrics counts exactly what was sent, /ready tells the truth, logs are JSON.

One real worker on the real broker and Postgres, reached through a TCP proxy that the test can
cut, so "Postgres is unreachable" is real without stopping the shared server. The Grafana
dashboard is checked against this worker's scrape, so a panel cannot query a metric that
does not exist.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from streams.kafka.topics import ensure_topics
from tests.integration.tcp_proxy import TcpProxy
from tests.support import (
    WorkerProcess,
    charge_dict,
    encode_batch,
    fetch_rows,
    ground_truth,
    mismatches,
    pipeline_env,
    produce_raw,
    settings_from,
    wait_until,
)
from tests.unit.test_deploy_files import dashboard_metric_names, healthcheck_command, scrape_names

pytestmark = pytest.mark.integration
DB_PASSWORD = "pg-Pa55word-never-logged"
SASL_PASSWORD = "sasl-Pa55word-never-logged"


def http(url: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None, ""


def samples(text: str) -> dict[str, float]:
    """`name{labels}` -> value of every sample in a Prometheus text scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_metrics_ready_and_json_logs(broker, database, tmp_path: Path) -> None:
    proxy = TcpProxy(database.split("@", 1)[1].split("/", 1)[0])
    await proxy.start()
    user, rest = database.split("://", 1)[1].split("@", 1)
    proxied = f"postgresql://{user}:{DB_PASSWORD}@127.0.0.1:{proxy.port}/{rest.split('/', 1)[1]}"
    env = pipeline_env(
        broker,
        proxied,
        tmp_path / "data",
        log_format="json",
        kafka_sasl_password=SASL_PASSWORD,
        pg_command_timeout="3s",
    )
    await ensure_topics(settings_from(env))
    base = f"http://127.0.0.1:{env['BILLING_WEB_PORT']}"
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        # /ready: 503 once the web server answers, 200 after the assignment.
        first: list[tuple[int | None, str]] = []

        async def ready() -> bool:
            status, body = http(f"{base}/ready")
            if status is not None and not first:
                first.append((status, body))
            return status == 200

        await wait_until(ready, 60, "/ready 200", interval=0.1, on_timeout=worker.log_tail)
        assert first[0][0] == 503 and json.loads(first[0][1])["assigned"] is False, first
        assert http(f"{base}/health")[0] == 200
        # The Dockerfile's HEALTHCHECK, run as the container would run it.
        check = [sys.executable, *healthcheck_command()[1:]]
        assert (
            subprocess.run(check, env={"BILLING_WEB_PORT": env["BILLING_WEB_PORT"]}, timeout=10).returncode
            == 0
        )
        for hidden in ("/table", "/router", "/graph", "/stats", "/assignment/", "/performance/"):
            assert http(f"{base}{hidden}")[0] == 404, hidden

        # A late charge needs a final day: wait for the first closure (the wall-clock rule).
        async def closed() -> bool:
            return samples(http(f"{base}/metrics")[1]).get("billing_closed_through_seconds", 0) > 0

        await wait_until(closed, 30, "a closed day", on_timeout=worker.log_tail)

        now = datetime.now(UTC) - timedelta(minutes=1)
        valid = [charge_dict(f"obs-{i}", "u", "openai", "completion", now, i, 1) for i in range(50)]
        late = [
            charge_dict(f"obs-late-{i}", "u", "openai", "completion", now - timedelta(days=3), 5, 5)
            for i in range(2)
        ]
        bad = [
            b"{not json",
            encode_batch([charge_dict("obs-bad", "u", "openai", "completion", now, 1, 1, total_tokens=9)]),
            encode_batch([charge_dict("obs-bad", "u", "openai", "completion", now, -1, 1)]),
        ]
        records = [(c["account_id"].encode(), encode_batch([c]), None) for c in valid + late]
        records += [(c["account_id"].encode(), encode_batch([c]), None) for c in valid[:5]]  # re-sent
        records += [(b"obs-bad", value, None) for value in bad]
        await produce_raw(env["BILLING_KAFKA_BOOTSTRAP"], env["BILLING_CHARGES_TOPIC"], records)

        expected = ground_truth(valid + late, ZoneInfo("UTC"))

        async def done() -> bool:
            got = samples(http(f"{base}/metrics")[1])
            rows = await fetch_rows(database, {k[0] for k in expected})
            return got.get("billing_records_total") == 60 and not mismatches(expected, rows)

        await wait_until(done, 60, "60 records flushed", on_timeout=worker.log_tail)

        async def gauges_refreshed() -> bool:  # lag and open days are refreshed every 5 s
            got = samples(http(f"{base}/metrics")[1])
            lag = any(k.startswith("billing_consumer_lag{") for k in got)
            return lag and got.get("billing_open_days", 0) >= 1

        await wait_until(gauges_refreshed, 20, "lag and open-days gauges", on_timeout=worker.log_tail)
        text = http(f"{base}/metrics")[1]
        got = samples(text)
        assert got["billing_charges_accepted_total"] == 52
        assert got["billing_charges_duplicate_total"] == 5
        assert got["billing_charges_late_total"] == 2
        assert got["billing_rows_flushed_total"] == 52  # one row per key: every key is distinct
        assert got["billing_faust_messages_received_total"] == 60
        dlq = {k: v for k, v in got.items() if k.startswith("billing_dlq_records_total")}
        assert dlq == {
            'billing_dlq_records_total{reason="invalid_json"}': 1,
            'billing_dlq_records_total{reason="total_mismatch"}': 1,
            'billing_dlq_records_total{reason="negative_count"}': 1,
        }
        assert got["billing_flush_duration_seconds_count"] >= 1
        assert got["billing_ready"] == 1 and got["billing_postgres_up"] == 1
        assert got["billing_assigned_partitions"] == 8
        assert got["billing_open_days"] >= 1
        stamps = [v for k, v in got.items() if k.startswith("billing_partition_event_time_seconds{")]
        assert stamps and max(stamps) == pytest.approx(now.timestamp(), abs=1)
        assert all(v >= 0 for k, v in got.items() if k.startswith("billing_consumer_lag{"))
        rows = await fetch_rows(database, {k[0] for k in expected})
        assert sum(r["late_charge_count"] for r in rows.values()) == 2

        # Postgres unreachable: /ready goes 503, retries are counted; back: 200 again.
        await proxy.cut()
        await wait_until(lambda: _status_is(f"{base}/ready", 503), 30, "/ready 503 while Postgres is away")
        await wait_until(lambda: _has_retries(base), 30, "retries counted", on_timeout=worker.log_tail)
        assert samples(http(f"{base}/metrics")[1])["billing_postgres_up"] == 0
        assert http(f"{base}/health")[0] == 200
        await proxy.resume()
        await wait_until(lambda: _status_is(f"{base}/ready", 200), 60, "/ready 200 again")

        # Postgres stops answering with its sockets open (packets dropped): no hang. The stuck
        # statement passes its deadline, /ready goes 503, and when it thaws the flushes resume.
        proxy.freeze()
        frozen = [charge_dict(f"obs-frozen-{i}", "u", "openai", "completion", now, 3, 3) for i in range(5)]
        await produce_raw(
            env["BILLING_KAFKA_BOOTSTRAP"],
            env["BILLING_CHARGES_TOPIC"],
            [(c["account_id"].encode(), encode_batch([c]), None) for c in frozen],
        )
        await wait_until(lambda: _status_is(f"{base}/ready", 503), 30, "/ready 503 while Postgres is frozen")
        proxy.thaw()
        await wait_until(lambda: _status_is(f"{base}/ready", 200), 60, "/ready 200 after the thaw")
        everything = ground_truth(valid + late + frozen, ZoneInfo("UTC"))

        async def thawed_exact() -> bool:
            return not mismatches(everything, await fetch_rows(database, {k[0] for k in everything}))

        await wait_until(thawed_exact, 60, "frozen charges flushed", on_timeout=worker.log_tail)

        missing = dashboard_metric_names() - scrape_names(http(f"{base}/metrics")[1])
        assert not missing, f"the dashboard queries metrics no worker exports: {sorted(missing)}"
    finally:
        worker.stop()
        await proxy.stop()

    lines = [line for line in (tmp_path / "worker.log").read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message", "app"} <= e.keys() for e in entries)
    assert {e["app"] for e in entries} == {env["BILLING_APP_ID"]}
    assert any(e["logger"].startswith("faust.") for e in entries), "Faust's own lines are JSON too"
    rejected = [e for e in entries if e["message"].startswith("rejected")]
    assert len(rejected) == 3 and all("partition" in e and "offset" in e for e in rejected)
    log_text = "\n".join(lines)
    assert DB_PASSWORD not in log_text and SASL_PASSWORD not in log_text
    assert "obs-bad" not in log_text  # payloads stay in the DLQ


async def _status_is(url: str, status: int) -> bool:
    return http(url)[0] == status


async def _has_retries(base: str) -> bool:
    got = samples(http(f"{base}/metrics")[1])
    return sum(v for k, v in got.items() if k.startswith("billing_postgres_retries_total")) > 0
