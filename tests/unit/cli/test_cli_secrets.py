"""No secret appears in any `--help` output, nor in the errors the commands print."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from streams.cli.main import main
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[3]
SECRETS = {
    "BILLING_DATABASE_URL": "postgresql://billing:pg-help-secret-77@127.0.0.1:{port}/billing",
    "BILLING_KAFKA_SASL_PASSWORD": "sasl-help-secret-88",
    "BILLING_KAFKA_SSL_KEY_PASSWORD": "key-help-secret-99",
}
NEEDLES = ("pg-help-secret-77", "sasl-help-secret-88", "key-help-secret-99")


def secret_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
    env.update({k: v.format(port=free_port()) for k, v in SECRETS.items()})
    env["BILLING_DATA_DIR"] = str(tmp_path / "data")  # no recorded dev Postgres URL
    env["BILLING_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{free_port()}"
    return env


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_every_help_output_is_free_of_secrets(tmp_path: Path) -> None:
    env = secret_env(tmp_path)
    runner = CliRunner()
    paths = command_paths(main)
    assert {("worker",), ("migrate",), ("produce",), ("totals",)} <= set(paths)
    for path in paths:
        result = runner.invoke(main, [*path, "--help"], env=env)
        assert result.exit_code == 0, (path, result.output)
        assert not any(n in result.output for n in NEEDLES), path


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        cwd=tmp_cwd(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def tmp_cwd(env: dict[str, str]) -> str:
    return str(Path(env["BILLING_DATA_DIR"]).parent)  # no .env file there


def test_real_entry_point_help_is_free_of_secrets(tmp_path: Path) -> None:
    env = secret_env(tmp_path)
    for args in (["--help"], ["worker", "--help"]):
        out = run(args, env)
        assert out.returncode == 0, out.stderr
        assert not any(n in out.stdout + out.stderr for n in NEEDLES)


@pytest.mark.parametrize("args", [["migrate"], ["totals"]])
def test_connection_errors_do_not_print_the_database_password(tmp_path: Path, args: list[str]) -> None:
    out = run(args, secret_env(tmp_path))  # nothing listens on the URL's port
    assert out.returncode != 0
    assert not any(n in out.stdout + out.stderr for n in NEEDLES), out.stdout + out.stderr


def test_bad_configuration_error_names_the_variable_only(tmp_path: Path) -> None:
    env = secret_env(tmp_path) | {"BILLING_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}  # no mechanism
    out = run(["migrate"], env)
    assert out.returncode != 0 and "BILLING_KAFKA_SASL_MECHANISM" in out.stderr
    assert not any(n in out.stdout + out.stderr for n in NEEDLES)
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
