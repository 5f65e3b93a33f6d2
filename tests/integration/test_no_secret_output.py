"""Planted passwords (URL userinfo, `?password=`, `?sslpassword=`, SASL, dashboard token) appear
in no output of any command, `--help` included, in JSON logs at debug level, in tracebacks of
`--debug`, nor in the files commands write (worker logs). Postgres trusts local connections
here, so every command runs for real with the passwords in its configuration."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.cli.main import main
from tests.conftest import drop_database
from tests.integration.test_demo_isolation import demo_databases
from tests.support import ROOT, charge_dict, free_port, pipeline_env
from tests.unit.cli.test_cli_secrets import command_paths

pytestmark = pytest.mark.integration
PLANTED = ("PlantedUserPW1", "PlantedQueryPW2", "PlantedSslPW3", "PlantedSasl4", "PlantedToken5")
#: How each command runs for real (beyond `--help`); a command missing here fails the test.
RUNS: dict[tuple[str, ...], list[list[str]]] = {
    (): [["--version"]],
    ("dev",): [["dev"]],
    ("dev", "status"): [["dev", "status"]],
    ("dev", "up"): [["dev", "up"]],
    ("dev", "down"): [["dev", "down"]],
    ("migrate",): [["migrate"]],
    ("produce",): [["produce", "{charges}"]],
    ("totals",): [["totals"], ["totals", "--format", "csv"]],
    ("dlq",): [["dlq"]],
    ("dlq", "list"): [["dlq", "list"]],
    ("dlq", "show"): [["dlq", "show", "--format", "jsonl"]],
    ("dlq", "redrive"): [["dlq", "redrive", "--all", "--dry-run"]],
    ("dlq", "skip"): [["dlq", "skip", "nowhere:0:999999"]],
    ("dlq", "resolve"): [["dlq", "resolve", "--partition", "0", "--offset", "999999"]],
    ("replay",): [["replay", "--to-offsets", "all:earliest", "--dry-run"]],
    ("rebuild",): [["rebuild", "--from", "2026-11-30", "--to", "2026-11-30", "--dry-run"]],
    ("reprice",): [["reprice", "--from", "2026-11-30", "--to", "2026-11-30", "--dry-run"]],
    ("prices",): [["prices"]],
    ("prices", "list"): [["prices", "list"]],
    ("prices", "show"): [["prices", "show", "--model", "gpt-4o"]],
    ("prices", "set"): [
        ["prices", "set", "--provider", "acme-ai", "--model", "m1", "--input", "1", "--output", "2"]
    ],
    ("prices", "import"): [["prices", "import", "--defaults"]],
    ("demo",): [["demo", "--charges", "300", "--accounts", "3"]],
    ("worker",): [],  # long-running: started and stopped below
    ("dashboard",): [],  # long-running: started and stopped below
    ("api",): [],  # long-running: started and stopped below
    ("keys",): [["keys"]],
    ("keys", "create"): [["keys", "create", "--scope", "read:all", "--name", "planted"]],
    ("keys", "list"): [["keys", "list", "--all"]],
    ("keys", "revoke"): [["keys", "revoke", "000000000000"]],
}


def planted_env(database: str, broker: str, data_dir: Path) -> dict[str, str]:
    host_part = database.removeprefix("postgresql://postgres@")
    url = f"postgresql://postgres:{PLANTED[0]}@{host_part}?password={PLANTED[1]}&sslpassword={PLANTED[2]}"
    return pipeline_env(
        broker,
        url,
        data_dir,
        LOG_FORMAT="json",
        LOG_LEVEL="debug",
        KAFKA_SASL_PASSWORD=PLANTED[3],
        DASHBOARD_TOKEN=PLANTED[4],
        DASHBOARD_PORT=str(free_port()),
        API_PORT=str(free_port()),
    )


def leaks(text: str) -> list[str]:
    return [p for p in PLANTED if p in text]


def run(env: dict[str, str], args: list[str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return out.stdout + out.stderr


def run_until(env: dict[str, str], args: list[str], ready: Callable[[], bool]) -> str:
    """Start a long-running command, wait (with a deadline) until `ready`, stop it, return output.

    The output goes to a file, not a pipe: at debug level a worker on a broker with many topics
    writes more than a pipe holds before it is ready, and would block on a pipe nobody reads yet.
    """
    with tempfile.TemporaryFile() as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", *args], env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 240  # a loaded machine: this test is about secrets, not speed
            while not ready():
                assert proc.poll() is None, f"billing {' '.join(args)} exited early"
                assert time.monotonic() < deadline, f"billing {' '.join(args)} never became ready"
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        sink.seek(0)
        return sink.read().decode("utf-8", "replace")


def answers(url: str) -> Callable[[], bool]:
    import urllib.error
    import urllib.request

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            return False

    return check


@pytest.mark.timeout(900)  # every command of the CLI, the demo included, one after another
async def test_no_command_prints_a_planted_password(
    database: str, broker: str, pg_server: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = planted_env(database, broker, data_dir)
    charges = tmp_path / "charges.jsonl"
    charges.write_text(
        json.dumps(charge_dict("acme", "u", "openai", "completion", datetime.now(UTC), 5, 5)) + "\n"
    )
    paths = command_paths(main)
    assert set(paths) == set(RUNS), "a new command needs a real run in RUNS"
    outputs: dict[str, str] = {}
    demo_output = ""
    for path in paths:
        outputs[" ".join([*path, "--help"])] = await asyncio.to_thread(run, env, [*path, "--help"])
        for args in RUNS[path]:
            args = [a.format(charges=charges) for a in args]
            outputs[" ".join(args)] = text = await asyncio.to_thread(run, env, args)
            demo_output += text if path == ("demo",) else ""
    outputs["worker"] = await asyncio.to_thread(
        run_until, env, ["worker"], answers(f"http://127.0.0.1:{env['BILLING_WEB_PORT']}/health")
    )
    outputs["dashboard"] = await asyncio.to_thread(
        run_until, env, ["dashboard"], answers(f"http://127.0.0.1:{env['BILLING_DASHBOARD_PORT']}/healthz")
    )
    outputs["api"] = await asyncio.to_thread(
        run_until, env, ["api"], answers(f"http://127.0.0.1:{env['BILLING_API_PORT']}/ready")
    )
    dead = env | {"BILLING_DATABASE_URL": env["BILLING_DATABASE_URL"].replace(":5432/", f":{free_port()}/")}
    dead |= {"BILLING_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}
    for args in (["--debug", "migrate"], ["--debug", "totals"], ["--debug", "worker"], ["dlq", "list"]):
        outputs["unreachable: " + " ".join(args)] = await asyncio.to_thread(run, dead, args)
    for name in demo_databases(demo_output):
        await drop_database(pg_server, pg_server.rsplit("/", 1)[0] + "/" + name)

    # The commands really ran with the planted configuration, not just failed early.
    assert "schema up to date" in outputs["migrate"] and "produced 1 charges" in outputs[f"produce {charges}"]
    assert "exact against what was produced" in demo_output, demo_output[-3000:]
    assert "postgresql://postgres:***@" in outputs["dev status"]
    assert '"level": "DEBUG"' in outputs["worker"]  # JSON logs at debug level were checked
    assert "bk_" in outputs["keys create --scope read:all --name planted"]  # a key was made
    assert "prices added or changed" in outputs["prices import --defaults"]  # the book was written
    assert "Traceback" in outputs["unreachable: --debug migrate"]
    for label, text in outputs.items():
        assert not leaks(text), (label, leaks(text), text[-2000:])
    for file in (p for p in data_dir.rglob("*") if p.is_file() and p.stat().st_size < 50_000_000):
        assert not leaks(file.read_bytes().decode("utf-8", "replace")), file
